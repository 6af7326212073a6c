"""The budget study of seed 003 as one command: variants x datasets x seeds, with and without a teacher.

    kiln study budget --family microseg --variants micronet,hwnet,mininet \
        --datasets seg_objects,seg_polyps,seg_leaves,seg_cracks,seg_damage --seeds 0,1,2 \
        --teacher 'models:/edgnet_{dataset}@production' --set img_size=64 --set epochs=20

One parent run holds the study; every (variant, dataset, seed[, teacher]) cell trains in a child run of its own
(the family's normal training, so each cell is a complete, registered run). On the parent: a table of mean +- std
of the metric per variant and dataset, the mean over datasets, the parameter counts, as `study/summary.csv`,
`study/cells.csv` and `study/summary.png`; and, with `--teacher`, the effect of distillation: the mean of the
paired differences (with - without, same variant, dataset and seed) with its 95% t-interval.

A dataset is a generated sample kind (`kiln data sample`; the family's `sample` option) or a folder with
images/ + masks/ (its `data` option). `--teacher` may hold `{dataset}`, replaced by each dataset's name, so each
dataset can have its own teacher. The metric defaults to `test_iou` (images no training step or model choice saw)
and falls back to the family's ranking metric for cells without a test set.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import math
import os
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from core import vocab
from core.errors import ConfigError, KilnError, UserError
from projects.common.families import get_family, train_family


@dataclass(frozen=True)
class StudyPlan:
    family: str
    variants: tuple[str, ...]
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    teacher: str = ""  # "" = no distillation arm; may contain {dataset}
    overrides: Mapping[str, Any] = field(default_factory=dict)  # config values for every cell
    metric: str = "test_iou"  # what the table reports; falls back to the family's ranking metric

    @property
    def arms(self) -> tuple[bool, ...]:
        return (False, True) if self.teacher else (False,)

    def cells(self) -> Iterator[tuple[str, str, int, bool]]:
        for variant in self.variants:
            for dataset in self.datasets:
                for seed in self.seeds:
                    for distilled in self.arms:
                        yield variant, dataset, seed, distilled

    @property
    def size(self) -> int:
        return len(self.variants) * len(self.datasets) * len(self.seeds) * len(self.arms)


@dataclass
class Cell:
    variant: str
    dataset: str
    seed: int
    distilled: bool
    value: float
    metric: str
    parameters: float
    run_id: str
    seconds: float


@dataclass
class StudyResult:
    parent_run_id: str
    cells: list[Cell]
    summary: list[dict[str, Any]]
    effects: list[dict[str, Any]]
    files: list[Path]


def check_plan(plan: StudyPlan) -> dict[str, int]:
    """Refuse a plan that cannot run before any run exists: unknown family, option, variant, or a variant over
    the budget. Returns each variant's parameter count where the family can tell it."""
    for name, items in {"--variants": plan.variants, "--datasets": plan.datasets, "--seeds": plan.seeds}.items():
        if not items:
            raise ConfigError(f"{name} must name at least one")
    family = get_family(plan.family)
    fields = {f for f in family.config_cls.__dataclass_fields__}
    if "variant" not in fields:
        raise ConfigError(f"family {plan.family!r} has no 'variant' option; a budget study compares variants")
    for variant in plan.variants:
        family.resolve(None, None, {**plan.overrides, "variant": variant})  # unknown keys and values named here
    if plan.teacher and "teacher" not in fields:
        raise ConfigError(f"family {plan.family!r} has no 'teacher' option; it cannot be distilled")
    for label in sorted({dataset_label(d) for d in plan.datasets} if plan.teacher else ()):
        check_teacher(plan.teacher.replace("{dataset}", label))
    return _variant_counts(plan, family)


def check_teacher(source: str) -> None:
    """Load the teacher a distilled cell will use now, so a wrong name stops the study before the first cell
    trains rather than after it."""
    from serving.runtime.predictor import Predictor

    try:
        Predictor.load(source)
    except Exception as err:  # the predictor names what is missing; keep its words
        raise ConfigError(f"--teacher {source}: {getattr(err, 'message', err)}", field="teacher") from None


def _variant_counts(plan: StudyPlan, family: Any) -> dict[str, int]:
    try:
        model = importlib.import_module(f"projects.{family.name}.model")
    except ImportError:
        return {}
    if not hasattr(model, "create_model") or not hasattr(model, "count_parameters"):
        return {}
    budget = int(family.resolve(None, None, dict(plan.overrides)).__dict__.get("max_params", 0) or 0)
    counts = {}
    for variant in plan.variants:
        built = model.create_model(variant, max_params=budget) if budget else model.create_model(variant)
        counts[variant] = int(model.count_parameters(built))  # over budget: BudgetError naming count and budget
    return counts


def dataset_options(dataset: str, fields: set[str]) -> dict[str, Any]:
    """A sample kind goes to `sample`; an existing folder to `data`."""
    folder = Path(dataset).expanduser()
    if folder.is_dir():
        return {"data": str(folder)}
    from data.samples import sample_kinds

    if dataset in sample_kinds() and "sample" in fields:
        return {"sample": dataset}
    raise ConfigError(f"dataset {dataset!r} is neither a folder nor a sample kind; kinds: {sorted(sample_kinds())}")


def dataset_label(dataset: str) -> str:
    return Path(dataset).name if Path(dataset).expanduser().is_dir() else dataset


@contextlib.contextmanager
def child_run(client: MlflowClient, parent: Any, name: str, tags: Mapping[str, str]) -> Iterator[str]:
    """A run nested under `parent` that the family's training joins through MLFLOW_RUN_ID, as under `mlflow run`."""
    run = client.create_run(parent.info.experiment_id, run_name=name,
                            tags={vocab.PARENT_TAG: parent.info.run_id, **tags})  # fmt: skip
    previous = os.environ.get("MLFLOW_RUN_ID")
    os.environ["MLFLOW_RUN_ID"] = run.info.run_id
    try:
        yield run.info.run_id
    except BaseException:
        if client.get_run(run.info.run_id).info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "FAILED")
        raise
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_RUN_ID", None)
        else:
            os.environ["MLFLOW_RUN_ID"] = previous


def run_cell(client: MlflowClient, parent: Any, plan: StudyPlan, cell: tuple[str, str, int, bool]) -> Cell:
    variant, dataset, seed, distilled = cell
    family = get_family(plan.family)
    fields = set(family.config_cls.__dataclass_fields__)
    label = dataset_label(dataset)
    overrides = {**plan.overrides, **dataset_options(dataset, fields), "variant": variant, "seed": seed}
    overrides.setdefault("model_name", f"{plan.family}_{variant}_{label}")
    if distilled:
        overrides["teacher"] = plan.teacher.replace("{dataset}", label)
    name = cell_name(variant, dataset, seed, distilled)
    tags = {vocab.STUDY: parent.info.run_id, vocab.CELL: name}
    start = time.perf_counter()
    with child_run(client, parent, name, tags) as run_id:
        final = train_family(plan.family, overrides)
    metric = plan.metric if plan.metric in final else family.ranking.metric
    if metric not in final:
        raise UserError(f"cell {name}: training returned neither {plan.metric!r} nor {family.ranking.metric!r}")
    params = final.get("num_parameters", float("nan"))
    return Cell(variant, label, seed, distilled, float(final[metric]), metric, params, run_id,
                time.perf_counter() - start)  # fmt: skip


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def t_interval(diffs: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of `diffs` and its two-sided t-interval (a single difference gives an unbounded interval)."""
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, -math.inf, math.inf
    from scipy import stats

    half = float(stats.t.ppf(0.5 + level / 2, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def summarise(cells: Sequence[Cell], plan: StudyPlan, counts: Mapping[str, int]) -> list[dict[str, Any]]:
    """One row per (variant, arm): mean +- std over seeds per dataset, and over seeds of the dataset mean."""
    rows = []
    labels = [dataset_label(d) for d in plan.datasets]
    for variant in plan.variants:
        for distilled in plan.arms:
            mine = [c for c in cells if c.variant == variant and c.distilled == distilled]
            if not mine:
                continue
            row: dict[str, Any] = {"variant": variant, "distilled": distilled,
                                   "parameters": counts.get(variant, int(mine[0].parameters))}  # fmt: skip
            for label in labels:
                row[label] = mean_std([c.value for c in mine if c.dataset == label])
            per_seed = [statistics.fmean(c.value for c in mine if c.seed == s) for s in plan.seeds]
            row["mean"] = mean_std(per_seed)
            rows.append(row)
    return rows


def distillation_effects(cells: Sequence[Cell], plan: StudyPlan) -> list[dict[str, Any]]:
    """Paired (distilled - plain) differences per variant and over all, each with its 95% t-interval."""
    if not plan.teacher:
        return []
    plain = {(c.variant, c.dataset, c.seed): c.value for c in cells if not c.distilled}
    pairs = [(c.variant, c.value - plain[(c.variant, c.dataset, c.seed)]) for c in cells
             if c.distilled and (c.variant, c.dataset, c.seed) in plain]  # fmt: skip
    effects = []
    for variant in [*plan.variants, "all"]:
        diffs = [d for v, d in pairs if variant in ("all", v)]
        if diffs:
            mean, low, high = t_interval(diffs)
            effects.append({"variant": variant, "pairs": len(diffs), "effect": mean, "ci_low": low, "ci_high": high})
    return effects


def render(summary: Sequence[dict[str, Any]], effects: Sequence[dict[str, Any]], plan: StudyPlan,
           metric: str) -> str:  # fmt: skip
    labels = [dataset_label(d) for d in plan.datasets]
    head = f"{'variant':<14}{'params':>9}  " + "".join(f"{lab[:14]:>16}" for lab in labels) + f"{'mean':>16}"
    lines = [f"{metric}, mean +- std over seeds {list(plan.seeds)}", head]
    for row in summary:
        name = row["variant"] + (" +KD" if row["distilled"] else "")
        cells = "".join(f"{row[lab][0]:>9.4f}+-{row[lab][1]:<5.3f}" for lab in [*labels, "mean"])
        lines.append(f"{name:<14}{row['parameters']:>9,}  {cells}")
    for e in effects:
        lines.append(f"distillation effect ({e['variant']}, {e['pairs']} pairs): {e['effect']:+.4f} "
                     f"[95% CI {e['ci_low']:+.4f}, {e['ci_high']:+.4f}]")  # fmt: skip
    return "\n".join(lines)


def write_files(result_dir: Path, cells: Sequence[Cell], summary: Sequence[dict[str, Any]],
                effects: Sequence[dict[str, Any]], plan: StudyPlan) -> list[Path]:  # fmt: skip
    result_dir.mkdir(parents=True, exist_ok=True)
    cells_csv = result_dir / "cells.csv"
    with cells_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(cells[0])))
        writer.writeheader()
        writer.writerows(asdict(c) for c in cells)
    labels = [dataset_label(d) for d in plan.datasets]
    summary_csv = result_dir / "summary.csv"
    with summary_csv.open("w", newline="") as handle:
        rows = csv.writer(handle)  # plain rows; `writer` above is a DictWriter
        rows.writerow(["variant", "distilled", "parameters"] + [f"{k}_{s}" for k in [*labels, "mean"]
                                                                for s in ("mean", "std")])  # fmt: skip
        for row in summary:
            values = [f"{v:.6f}" for k in [*labels, "mean"] for v in row[k]]
            rows.writerow([row["variant"], row["distilled"], row["parameters"], *values])
    files = [cells_csv, summary_csv, plot_summary(summary, labels, result_dir / "summary.png")]
    if effects:
        effects_csv = result_dir / "distillation.csv"
        with effects_csv.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(effects[0]))
            writer.writeheader()
            writer.writerows(effects)
        files.append(effects_csv)
    return files


def plot_summary(summary: Sequence[dict[str, Any]], labels: Sequence[str], path: Path) -> Path:
    """Grouped bars: one group per dataset (and the mean), one bar per variant (and arm), std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [*labels, "mean"]
    width = 0.8 / max(len(summary), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(groups)), 4))
    for i, row in enumerate(summary):
        xs = [g + i * width for g in range(len(groups))]
        name = f"{row['variant']}{' +KD' if row['distilled'] else ''} ({row['parameters']:,})"
        ax.bar(xs, [row[g][0] for g in groups], width, yerr=[row[g][1] for g in groups], label=name, capsize=2)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=15)
    ax.set_ylabel("IoU (mean +- std over seeds)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def experiment_id() -> str:
    """The experiment MLflow's environment names (MLFLOW_EXPERIMENT_NAME, then _ID), else the default one."""
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    experiment = mlflow.get_experiment_by_name(name) if name else None
    if name and experiment is None:
        raise ConfigError(f"MLFLOW_EXPERIMENT_NAME={name!r}: no such experiment")
    return experiment.experiment_id if experiment else os.environ.get("MLFLOW_EXPERIMENT_ID", "0")


def run_study(
    plan: StudyPlan, out_dir: Path | None = None, log: Any = print, resume: str | None = None, retries: int = 1
) -> StudyResult:
    """Run every cell under one parent run; log the tables and files to it; return everything.

    `resume` (a parent run id) reopens that study and reuses its finished cells. A cell that fails with anything
    but a KilnError (a user error stops the study) is run again up to `retries` times.
    """
    counts = check_plan(plan)
    client = MlflowClient()
    parent = _reopen(client, resume, plan) if resume else _open(client, plan, counts)
    parent_id = parent.info.run_id
    done = finished_cells(client, parent_id, plan) if resume else {}
    try:
        cells = []
        for index, spec in enumerate(plan.cells(), start=1):
            cell = done.get(cell_name(*spec)) or _run_with_retries(client, parent, plan, spec, retries, log)
            cells.append(cell)
            log(
                f"[{index}/{plan.size}] {cell.variant}/{cell.dataset}/seed{cell.seed}"
                f"{' +KD' if cell.distilled else ''}: {cell.metric}={cell.value:.4f} ({cell.seconds:.0f}s)"
                + (" (resumed)" if cell_name(*spec) in done else "")
            )
        result = _finish(client, parent_id, plan, cells, counts, out_dir, log)
    except BaseException:
        client.set_terminated(parent_id, "FAILED")
        raise
    client.set_terminated(parent_id, "FINISHED")
    return result


def cell_name(variant: str, dataset: str, seed: int, distilled: bool) -> str:
    return f"{variant}/{dataset_label(dataset)}/seed{seed}{'/distilled' if distilled else ''}"


def _run_with_retries(
    client: MlflowClient, parent: Any, plan: StudyPlan, spec: tuple[str, str, int, bool], retries: int, log: Any
) -> Cell:
    for attempt in range(retries + 1):
        try:
            return run_cell(client, parent, plan, spec)
        except KilnError:
            raise
        except Exception as err:
            if attempt == retries:
                raise
            log(f"cell {cell_name(*spec)} failed ({type(err).__name__}: {err}); running it again")
    raise AssertionError("unreachable")


def _open(client: MlflowClient, plan: StudyPlan, counts: Mapping[str, int]) -> Any:
    parent = client.create_run(experiment_id(), run_name=f"study-budget-{plan.family}",
                               tags={vocab.STUDY: "budget", vocab.FAMILY: plan.family})  # fmt: skip
    _log_plan(client, parent.info.run_id, plan, counts)
    return parent


def _reopen(client: MlflowClient, run_id: str, plan: StudyPlan) -> Any:
    """The study run `run_id`, running again; refused unless it is a budget study of the same plan."""
    from registry.lookup import get_run

    parent = get_run(client, run_id)
    if parent.data.tags.get(vocab.STUDY) != "budget":
        raise ConfigError(f"--resume {run_id}: not a budget study's parent run")
    wanted = _plan_params(plan)
    keys = set(wanted) | {k for k in parent.data.params if k.startswith("set.")}
    differs = sorted(k for k in keys if parent.data.params.get(k, "") != wanted.get(k, ""))
    if differs:
        raise ConfigError(f"--resume {run_id}: the study was run with other {', '.join(differs)}; "
                          f"its plan: {', '.join(f'{k}={parent.data.params.get(k)!r}' for k in differs)}")  # fmt: skip
    client.update_run(run_id, status="RUNNING")
    return parent


def finished_cells(client: MlflowClient, parent_id: str, plan: StudyPlan) -> dict[str, Cell]:
    """The cells of study `parent_id` whose child run finished, by cell name."""
    family = get_family(plan.family)
    runs = client.search_runs([client.get_run(parent_id).info.experiment_id],
                              f"tags.kiln.study = '{parent_id}' and attributes.status = 'FINISHED'")  # fmt: skip
    cells: dict[str, Cell] = {}
    for run in runs:
        name, metrics = run.data.tags.get(vocab.CELL, ""), run.data.metrics
        metric = plan.metric if plan.metric in metrics else family.ranking.metric
        if metric not in metrics or not name:
            continue
        variant, label, seed, *rest = name.split("/")
        seconds = ((run.info.end_time or 0) - (run.info.start_time or 0)) / 1000
        cells[name] = Cell(variant, label, int(seed.removeprefix("seed")), bool(rest), float(metrics[metric]), metric,
                           float(metrics.get("num_parameters", math.nan)), run.info.run_id, seconds)  # fmt: skip
    return cells


def _plan_params(plan: StudyPlan) -> dict[str, str]:
    return {"family": plan.family, "variants": ",".join(plan.variants), "datasets": ",".join(plan.datasets),
            "seeds": ",".join(map(str, plan.seeds)), "teacher": plan.teacher or "", "metric": plan.metric,
            **{f"set.{k}": str(v) for k, v in plan.overrides.items()}}  # fmt: skip


def _log_plan(client: MlflowClient, run_id: str, plan: StudyPlan, counts: Mapping[str, int]) -> None:
    for key, value in _plan_params(plan).items():
        client.log_param(run_id, key, value)
    for variant, count in counts.items():
        client.log_metric(run_id, f"params_{variant}", float(count))


def _finish(client: MlflowClient, run_id: str, plan: StudyPlan, cells: list[Cell], counts: Mapping[str, int],
            out_dir: Path | None, log: Any) -> StudyResult:  # fmt: skip
    import tempfile

    summary = summarise(cells, plan, counts)
    effects = distillation_effects(cells, plan)
    metric = cells[0].metric
    text = render(summary, effects, plan, metric)
    log(text)
    folder = out_dir or Path(tempfile.mkdtemp(prefix="kiln-study-"))
    files = write_files(folder, cells, summary, effects, plan)
    (folder / "summary.txt").write_text(text + "\n")
    files.append(folder / "summary.txt")
    for path in files:
        client.log_artifact(run_id, str(path), "study")
    for row in summary:
        arm = "_kd" if row["distilled"] else ""
        client.log_metric(run_id, f"{row['variant']}{arm}_mean_{metric}", row["mean"][0])
        client.log_metric(run_id, f"{row['variant']}{arm}_std_{metric}", row["mean"][1])
    for effect in effects:
        client.log_metric(run_id, f"distill_effect_{effect['variant']}", effect["effect"])
    client.set_tag(run_id, vocab.NOTE_TAG, "```\n" + text + "\n```")
    return StudyResult(run_id, cells, summary, effects, files)
