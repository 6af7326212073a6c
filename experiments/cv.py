"""`kiln cv`: k-fold cross-validation or multi-seed runs of any registered family, with statistics on the parent.

    kiln cv skinmodel --folds 5
    kiln cv edgnet --seeds 0,1,2 --set epochs=10 --set img_size=128
    mlflow run . -e cv --env-manager local -P target=skinmodel -P folds=5

Folds are stratified by class where the family has classes (skinmodel), by image otherwise (edgnet, through the
`projects.common.folds` hook in their splits); YOLO pools train and val and writes one dataset YAML per fold.
Each fold or seed is a nested child run. The parent logs, for every final metric the children share,
`cv/<metric>/mean|std|n|ci95_low|ci95_high`, the raw values in the tag `kiln.cv.values.<metric>` (what the
promotion significance gate reads), `folds.csv` and a plot of the per-fold values. One version is registered:
the fold or seed model closest to the mean, exported from its own run and best weights (or booster) without training
again, so K folds are K trainings; or, with `--refit`, the family's usual training on all its data, trained once
more. Either run is a child of the parent, so `kiln promote --significance` finds the statistics.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml
from mlflow import MlflowClient

from core import vocab
from core.errors import ConfigError, UserError, cli_errors
from experiments.options import flag_value, optional_number, parse_overrides
from experiments.runs import (
    NOTE_TAG,
    close_parent,
    create_child,
    experiment_id,
    finish_in_run,
    mark_failed,
    open_parent,
    stamp,
)
from experiments.runs import train_in_run as _train
from experiments.stats import Summary, closest_to_mean, cv_metrics, cv_value_tags, shared_metrics, summarize

FOLD_FAMILIES = ("skinmodel", "edgnet", "yolo")  # families whose split honours a fold (or, YOLO, a fold YAML)
BOOKKEEPING = ("registered_version", "onnx_max_abs_diff", "fuse_max_abs_diff")


@dataclass(frozen=True)
class Part:
    """One fold or seed: its label, the overrides it trains with, and the fold spec (None for a seed)."""

    label: str  # "fold-2" or "seed-7"
    overrides: dict[str, Any]
    fold: Any = None  # projects.common.folds.FoldSpec
    tags: dict[str, str] | None = None


@dataclass(frozen=True)
class CVResult:
    parent_run_id: str
    kind: str  # "folds" or "seeds"
    metric: str
    summary: Summary
    values: list[float]  # the metric per completed fold or seed
    child_runs: list[str]
    failed: list[str]  # labels of parts that failed
    registered_version: int | None = None
    registered_run_id: str | None = None
    note: str = ""


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected integers separated by commas, e.g. 0,1,2") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: give at least two different seeds")
    return seeds


def plan(target: str, folds: int | None, seeds: Sequence[int] | None, sets: Mapping[str, Any], seed: int) -> list[Part]:
    """The parts to train; checks the flags and the family's support before anything runs."""
    from projects.common.families import resolve_family_config
    from projects.common.folds import FoldSpec

    if (folds is None) == (not seeds):
        raise ConfigError("give exactly one of --folds K or --seeds A,B,...")
    family, cfg = resolve_family_config(target, dict(sets))
    if seeds:
        if "seed" in sets:
            raise ConfigError("--seeds and --set seed=... contradict each other; drop one")
        return [Part(f"seed-{s}", {**sets, "seed": s}, tags={vocab.CV_SEED: str(s)}) for s in seeds]
    assert folds is not None
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    if family.name not in FOLD_FAMILIES:
        raise ConfigError(f"{family.name} has no fold hook yet (folds work for {list(FOLD_FAMILIES)}); use --seeds")
    if family.name == "yolo":
        return _yolo_parts(cfg, folds, seed, sets)
    return [Part(f"fold-{i}", dict(sets), FoldSpec(folds, i, seed), {vocab.CV_FOLD: str(i)}) for i in range(folds)]


def _yolo_parts(cfg: Any, k: int, seed: int, sets: Mapping[str, Any]) -> list[Part]:
    """Pool the dataset's train and val images and write one dataset YAML per fold (split by image)."""
    import tempfile

    from projects.common.folds import FoldSpec, fold_indices
    from projects.yolo.data import resolve_dataset
    from projects.yolo.train import get_preset

    dataset = resolve_dataset(cfg.data, get_preset(cfg.preset).sample)
    pooled = sorted({*dataset.splits.get("train", []), *dataset.splits.get("val", [])})
    folder = Path(tempfile.mkdtemp(prefix="kiln-cv-yolo-"))
    parts = []
    for i in range(k):
        train_idx, val_idx = fold_indices(len(pooled), FoldSpec(k, i, seed))
        lists = {}
        for split, idx in (("train", train_idx), ("val", val_idx)):
            lists[split] = folder / f"fold{i}_{split}.txt"
            lists[split].write_text("".join(f"{pooled[j]}\n" for j in idx))
        data_yaml = folder / f"fold{i}.yaml"
        spec = {"path": str(dataset.root), "train": str(lists["train"]), "val": str(lists["val"]),
                "names": dict(enumerate(dataset.names))}  # fmt: skip
        data_yaml.write_text(yaml.safe_dump(spec))
        parts.append(Part(f"fold-{i}", {**sets, "data": str(data_yaml)}, None, {vocab.CV_FOLD: str(i)}))
    return parts


def _run_part(
    client: MlflowClient, parent: str, target: str, part: Part, export: bool, label: str
) -> tuple[str, dict[str, float]]:
    from projects.common.folds import using_fold

    child = create_child(client, parent, label, part.tags or {})
    try:
        if part.fold is not None:
            with using_fold(part.fold):
                return child, _train(client, child, target, part.overrides, export=export)
        return child, _train(client, child, target, part.overrides, export=export)
    except Exception as err:
        mark_failed(client, child, err)
        raise


def cv(
    target: str,
    *,
    folds: int | None = None,
    seeds: Sequence[int] | None = None,
    sets: Mapping[str, Any] | None = None,
    metric: str | None = None,
    refit: bool = False,
    register: bool = True,
    experiment: str | None = None,
    seed: int = 0,
) -> CVResult:
    """Train every fold or seed as a child run, log the statistics on the parent, register one version."""
    from projects.common.families import get_family

    sets = dict(sets or {})
    parts = plan(target, folds, seeds, sets, seed)
    family = get_family(target)
    metric = metric or family.ranking.metric
    kind = "folds" if folds else "seeds"
    client = MlflowClient()
    tags = {vocab.CV_KIND: kind, vocab.CV_N: str(len(parts)), vocab.CV_TARGET: target, vocab.FAMILY: family.name,
            vocab.METRIC: metric, vocab.MODE: family.ranking.mode}  # fmt: skip
    parent = open_parent(client, experiment_id(client, experiment), f"cv-{target}-{stamp()}", tags, None)
    status = "FAILED"
    try:
        from projects.common.datacache import sharing

        with sharing():  # the folds (or seeds) decode the data once
            result = _run(client, parent, target, parts, kind, metric, sets, refit, register)
        status = "FINISHED"
        return result
    finally:
        close_parent(client, parent, status)


def _run(client: MlflowClient, parent: str, target: str, parts: list[Part], kind: str, metric: str,
         sets: Mapping[str, Any], refit: bool, register: bool) -> CVResult:  # fmt: skip
    finals: list[dict[str, float]] = []
    children: list[str] = []
    done: list[Part] = []
    failed: list[str] = []
    for part in parts:
        print(f"[cv] {part.label} ({len(done) + len(failed) + 1}/{len(parts)})", flush=True)
        try:
            child, final = _run_part(client, parent, target, part, export=False, label=part.label)
        except Exception as err:  # a failed part is recorded; the statistics use the others
            print(f"[cv] {part.label} failed: {type(err).__name__}: {err}", flush=True)
            failed.append(part.label)
            continue
        children.append(child)
        done.append(part)
        finals.append(final)
    values = [f[metric] for f in finals if metric in f and math.isfinite(f[metric])]
    if len(values) < 2 or len(values) != len(finals):
        raise UserError(
            f"kiln cv needs {metric} from at least two {kind}; got it from {len(values)} of {len(parts)} "
            f"(failed: {failed or 'none'}; final metrics: {sorted(finals[0]) if finals else 'none'})"
        )
    _log_stats(client, parent, finals, done, children, metric)
    summary = summarize(values, metric)
    result = CVResult(parent, kind, metric, summary, values, children, failed)
    if register:
        result = _register(client, parent, target, done, values, sets, refit, result)
    note = _note(result, target)
    client.set_tag(parent, NOTE_TAG, note)
    print(f"[cv] {note}", flush=True)
    return CVResult(**{**result.__dict__, "note": note})


def _log_stats(client: MlflowClient, parent: str, finals: list[dict[str, float]], parts: list[Part],
               children: list[str], metric: str) -> None:  # fmt: skip
    for key, value in cv_metrics(finals, skip=BOOKKEEPING).items():
        client.log_metric(parent, key, value)
    for key, tag in cv_value_tags(finals, skip=BOOKKEEPING).items():
        client.set_tag(parent, key, tag)
    shared = shared_metrics(finals)
    header = ["part", "run_id", *[k for k in shared if k not in BOOKKEEPING]]
    rows = [
        [p.label, c, *[f"{f[k]:.10g}" for k in header[2:]]] for p, c, f in zip(parts, children, finals, strict=True)
    ]
    client.log_text(parent, "\n".join(",".join(r) for r in [header, *rows]) + "\n", "folds.csv")
    client.log_figure(parent, _plot(parts, [f[metric] for f in finals], metric), f"plots/cv_{_safe(metric)}.png")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _plot(parts: list[Part], values: list[float], metric: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarize(values, metric)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(values) + 2), 3.5))
    ax.bar([p.label for p in parts], values, color="#3b7dd8")
    ax.axhline(s.mean, color="black", lw=1, label=f"mean {s.mean:.4g}")
    ax.axhspan(
        s.ci95_low, s.ci95_high, color="orange", alpha=0.3, label=f"95% CI [{s.ci95_low:.4g}, {s.ci95_high:.4g}]"
    )
    spread = max(values) - min(values) or abs(s.mean) * 0.05 or 1.0
    ax.set_ylim(min(values) - spread, max(values) + spread)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per part (n={s.n}, std {s.std:.3g})")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


def _register(client: MlflowClient, parent: str, target: str, parts: list[Part], values: list[float],
              sets: Mapping[str, Any], refit: bool, result: CVResult) -> CVResult:  # fmt: skip
    """Register the part closest to the mean from its own run (no training). `--refit`, the user's choice, trains the
    family's usual run on all the data instead and registers that."""
    if not refit:
        return _register_from_run(client, parent, target, parts, values, result)
    part = Part("refit", dict(sets), tags={vocab.CV_ROLE: "refit"})
    print("[cv] training the refit on all the data with export to register it", flush=True)
    child, final = _run_part(client, parent, target, part, export=True, label="refit")
    version = final.get("registered_version")
    if version is None:
        return result
    client.set_tag(parent, vocab.CV_REGISTERED_VERSION, str(int(version)))
    client.set_tag(parent, vocab.CV_REGISTERED_RUN, child)
    return CVResult(**{**result.__dict__, "registered_version": int(version), "registered_run_id": child})


def _register_from_run(client: MlflowClient, parent: str, target: str, parts: list[Part], values: list[float],
                       result: CVResult) -> CVResult:  # fmt: skip
    """Export and register the part closest to the mean in its own run, from its best weights."""
    from projects.common.folds import using_fold

    index = closest_to_mean(values)
    chosen, run = parts[index], result.child_runs[index]
    print(f"[cv] registering {chosen.label} from its own run {run}", flush=True)
    with using_fold(chosen.fold) if chosen.fold is not None else contextlib.nullcontext():
        final = finish_in_run(client, run, target, chosen.overrides)  # the fold's validation part, as it trained
    client.set_tag(run, vocab.CV_ROLE, "registered")
    version = final.get("registered_version")
    if version is None:
        return result
    client.set_tag(parent, vocab.CV_REGISTERED_VERSION, str(int(version)))
    client.set_tag(parent, vocab.CV_REGISTERED_RUN, run)
    return CVResult(**{**result.__dict__, "registered_version": int(version), "registered_run_id": run})


def _note(result: CVResult, target: str) -> str:
    s = result.summary
    text = (f"{s.n} {result.kind} of {target}: {result.metric} {s.mean:.4g} ± {s.std:.2g} "
            f"(95% CI {s.ci95_low:.4g} .. {s.ci95_high:.4g})")  # fmt: skip
    if result.failed:
        text += f"; failed: {', '.join(result.failed)}"
    if result.registered_version is not None:
        text += f"; registered version {result.registered_version} (run {result.registered_run_id})"
    return text + "."


# ---------------------------------------------------------------- the MLproject entry point `cv`
# MLproject parameters cannot be absent, so every optional value arrives as a string and "" means "not given".


@click.command("cv")
@click.option("--target", required=True, help="Family or preset to cross-validate.")
@click.option("--folds", default="", help="K folds ('' = use --seeds).")
@click.option("--seeds", "seeds_text", default="", help="Comma-separated seeds ('' = use --folds).")
@click.option("--metric", default="", help="Metric that picks the registered part ('' = the family's).")
@click.option("--fold-seed", default="0", help="Shuffle seed for dealing items into folds.")
@click.option("--refit", default="false", help="true: register a refit instead of the fold closest to the mean.")
@click.option("--register", default="true", help="false: register nothing.")
@click.option("--sets", "joined", default="", help="Space-separated key=value config overrides.")
@cli_errors
def main(target: str, folds: str, seeds_text: str, metric: str, fold_seed: str, refit: str, register: str,
         joined: str) -> None:  # fmt: skip
    """`mlflow run . -e cv`: the same run as `kiln cv`, in the run `mlflow run` created (the parent)."""
    result = cv(
        target, folds=optional_number(folds, "--folds", int), seeds=parse_seeds(seeds_text) if seeds_text else None,
        sets=parse_overrides((), joined), metric=metric or None, refit=flag_value(refit, "--refit"),
        register=flag_value(register, "--register"), seed=optional_number(fold_seed, "--fold-seed", int) or 0,
    )  # fmt: skip
    click.echo(result.note)


if __name__ == "__main__":
    main()
