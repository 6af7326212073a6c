"""The efficiency leaderboard: registered versions by quality against parameters and latency, the Pareto frontier,
and the best version under each budget.

    kiln leaderboard --task segmentation --metric best_val_iou --max-params 10000
    kiln leaderboard --name 'microseg_*' --json
    kiln leaderboard --measure --plot frontier.png

Each version's quality is its run's ranking metric (the version's `kiln.metric` tag, or `--metric`); its size and
speed are the footprint metrics logged on its run when it was registered (`serving/runtime/footprint.py`:
onnx_parameters, onnx_size_bytes, flops, latency_p50_ms, latency_p99_ms). Parameters are the run's
`num_parameters` where training logged it (PyTorch's count), else the ONNX graph's. `--measure` profiles versions
that have no footprint yet (those registered before the hook) on this machine and logs it to their runs.

A version is on the frontier when no other version is at least as good on all three of metric, parameters and
p50 latency and strictly better on one (latencies within 10% of each other count as equal: timing noise).
Versions are only compared within their task and ranking metric: an AUC and an IoU are not on one scale, so
there is one frontier (and one best-under-budget ladder) per (task, metric, mode). int8 versions (registered by
`kiln optimize`) are placed like any other version, with their own metric and footprint, labelled "int8 of vN".
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from core import vocab
from core.errors import UserError
from registry.lookup import all_registered_models, run_metrics, tags_of

DEFAULT_PARAM_BUDGETS = (10_000, 50_000, 1_000_000, 10_000_000)
LATENCY_TOLERANCE = 0.1  # p50 latencies within 10% of each other are treated as equal when ranking
FOOTPRINT_KEYS = ("onnx_parameters", "onnx_size_bytes", "flops", "latency_p50_ms", "latency_p99_ms")


@dataclass
class Entry:
    model: str
    version: int
    task: str
    metric: str
    mode: str  # "max" or "min" for `metric`
    value: float | None
    parameters: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    size_bytes: float | None
    flops: float | None
    aliases: list[str] = field(default_factory=list)
    source_version: str = ""  # for int8 versions: the fp32 version they came from
    run_id: str = ""
    frontier: bool = False

    @property
    def label(self) -> str:
        return f"{self.model} v{self.version}"

    @property
    def group(self) -> tuple[str, str, str]:
        """(task, metric, mode): versions are ranked against each other only within one group."""
        return self.task or "unknown task", self.metric, self.mode

    @property
    def complete(self) -> bool:
        return None not in (self.value, self.parameters, self.latency_p50_ms)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Budget:
    max_params: float | None
    max_latency_ms: float | None
    best: Entry | None
    task: str = ""  # the group the budget ranks (one ladder per task and metric)
    metric: str = ""

    def describe(self) -> str:
        parts = []
        if self.max_params is not None:
            parts.append(f"params <= {self.max_params:,.0f}")
        if self.max_latency_ms is not None:
            parts.append(f"p50 <= {self.max_latency_ms:g} ms")
        return " and ".join(parts) or "no budget"

    def to_json(self) -> dict[str, Any]:
        best = self.best.label if self.best else None
        return {"max_params": self.max_params, "max_latency_ms": self.max_latency_ms, "best": best,
                "task": self.task, "metric": self.metric}  # fmt: skip


def collect(
    client: MlflowClient,
    *,
    task: str | None = None,
    metric: str | None = None,
    name: str | None = None,
) -> list[Entry]:
    """Every registered version (of models matching the glob `name`, with tag kiln.task == `task`) as an Entry."""
    entries = []
    for model in all_registered_models(client):
        if name and not fnmatch.fnmatchcase(str(model.name), name):
            continue
        aliases: dict[int, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(int(version), []).append(alias)
        for version in client.search_model_versions(f"name='{model.name}'"):
            entry = _entry(client, version, metric, aliases.get(int(version.version), []))
            if task and entry.task != task:
                continue
            entries.append(entry)
    return sorted(entries, key=lambda e: (e.model, e.version))


def _entry(client: MlflowClient, version: Any, metric: str | None, aliases: list[str]) -> Entry:
    tags = tags_of(version)
    metrics = run_metrics(client, version.run_id) if version.run_id else {}
    chosen = metric or tags.get(vocab.METRIC) or ""
    mode = tags.get(vocab.MODE) or ("min" if "loss" in chosen or "rmse" in chosen else "max")
    params = metrics.get("num_parameters", metrics.get("onnx_parameters"))
    return Entry(
        model=str(version.name), version=int(version.version), task=tags.get(vocab.TASK, ""), metric=chosen,
        mode=mode, value=metrics.get(chosen) if chosen else None, parameters=params,
        latency_p50_ms=metrics.get("latency_p50_ms"), latency_p99_ms=metrics.get("latency_p99_ms"),
        size_bytes=metrics.get("onnx_size_bytes"), flops=metrics.get("flops"), aliases=sorted(aliases),
        source_version=tags.get(vocab.SOURCE_VERSION, ""), run_id=version.run_id or "",
    )  # fmt: skip


def _score(entry: Entry) -> float:
    """Higher is better, whatever the metric's mode."""
    assert entry.value is not None
    return entry.value if entry.mode == "max" else -entry.value


def dominates(a: Entry, b: Entry, latency_tolerance: float = LATENCY_TOLERANCE) -> bool:
    """a is at least as good as b on metric, parameters and p50 latency, and strictly better on one.

    Latencies within `latency_tolerance` (relative) of each other count as equal: timing noise on a shared
    machine must not put a worse model on the frontier for being 1% faster.
    """
    assert a.parameters is not None and b.parameters is not None
    assert a.latency_p50_ms is not None and b.latency_p50_ms is not None
    slower = a.latency_p50_ms > b.latency_p50_ms * (1 + latency_tolerance)
    faster = a.latency_p50_ms < b.latency_p50_ms * (1 - latency_tolerance)
    no_worse = _score(a) >= _score(b) and a.parameters <= b.parameters and not slower
    better = _score(a) > _score(b) or a.parameters < b.parameters or faster
    return no_worse and better


def groups(entries: Iterable[Entry]) -> dict[tuple[str, str, str], list[Entry]]:
    """Entries by (task, metric, mode), in sorted group order."""
    out: dict[tuple[str, str, str], list[Entry]] = {}
    for entry in entries:
        out.setdefault(entry.group, []).append(entry)
    return dict(sorted(out.items()))


def mark_frontier(entries: Sequence[Entry]) -> list[Entry]:
    """Set `frontier` on the complete entries no entry of their own group dominates; returns them by group, then
    smallest first. A version of another task or ranked by another metric never dominates (AUC is not IoU)."""
    complete = [e for e in entries if e.complete]
    for entry in complete:
        rivals = (o for o in complete if o is not entry and o.group == entry.group)
        entry.frontier = not any(dominates(other, entry) for other in rivals)
    return sorted((e for e in complete if e.frontier), key=lambda e: (e.group, e.parameters, e.latency_p50_ms))


def best_under(entries: Iterable[Entry], max_params: float | None, max_latency_ms: float | None) -> Entry | None:
    fits = [
        e
        for e in entries
        if e.complete
        and (max_params is None or (e.parameters or 0) <= max_params)
        and (max_latency_ms is None or (e.latency_p50_ms or 0) <= max_latency_ms)
    ]
    return max(fits, key=lambda e: (_score(e), -(e.parameters or 0)), default=None)


def budgets(entries: Sequence[Entry], max_params: float | None, max_latency_ms: float | None) -> list[Budget]:
    """Per (task, metric) group: the given budget, or (none given) a ladder of parameter budgets, each with its
    best version of that group."""
    out: list[Budget] = []
    for (task, metric, _), members in groups(e for e in entries if e.complete).items():
        if max_params is not None or max_latency_ms is not None:
            limits: list[tuple[float | None, float | None]] = [(max_params, max_latency_ms)]
        else:
            limits = [(float(p), None) for p in DEFAULT_PARAM_BUDGETS] + [(None, None)]
        out += [Budget(p, ms, best_under(members, p, ms), task, metric) for p, ms in limits]
    return out


def measure_missing(client: MlflowClient, entries: Sequence[Entry]) -> int:
    """Profile every entry with no footprint on this machine and log it to its run; returns how many."""
    import tempfile

    import mlflow

    from serving.deployment.artifacts import onnx_file
    from serving.runtime.footprint import log_footprint

    done = 0
    for entry in entries:
        if entry.latency_p50_ms is not None or not entry.run_id:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(f"models:/{entry.model}/{entry.version}", dst_path=tmp)
            footprint = log_footprint(onnx_file(Path(local)), entry.run_id)
        metrics = footprint.to_metrics()
        entry.latency_p50_ms, entry.latency_p99_ms = metrics["latency_p50_ms"], metrics["latency_p99_ms"]
        entry.size_bytes, entry.flops = metrics["onnx_size_bytes"], metrics.get("flops")
        entry.parameters = entry.parameters if entry.parameters is not None else metrics["onnx_parameters"]
        done += 1
    return done


@dataclass
class Leaderboard:
    entries: list[Entry]
    frontier: list[Entry]
    budgets: list[Budget]

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": [e.to_json() for e in self.entries],
            "frontier": [e.label for e in self.frontier],
            "budgets": [b.to_json() for b in self.budgets],
            "groups": [
                {
                    "task": key[0],
                    "metric": key[1],
                    "mode": key[2],
                    "frontier": [e.label for e in self.frontier if e.group == key],
                }
                for key in groups(self.entries)
            ],
        }


def build(
    client: MlflowClient,
    *,
    task: str | None = None,
    metric: str | None = None,
    name: str | None = None,
    max_params: float | None = None,
    max_latency_ms: float | None = None,
    measure: bool = False,
) -> Leaderboard:
    entries = collect(client, task=task, metric=metric, name=name)
    if not entries:
        where = " ".join(f"{k}={v!r}" for k, v in {"task": task, "name": name}.items() if v)
        raise UserError(f"no registered versions{' with ' + where if where else ''}")
    if measure:
        measure_missing(client, entries)
    frontier = mark_frontier(entries)
    return Leaderboard(entries, frontier, budgets(entries, max_params, max_latency_ms))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def render(board: Leaderboard) -> str:
    """Per task and metric: the frontier table, the best under each budget, the dominated; then the unplaced."""
    lines: list[str] = []
    for (task, metric, mode), members in groups(e for e in board.entries if e.complete).items():
        better = "higher" if mode == "max" else "lower"
        if lines:
            lines.append("")
        lines += [f"== {task}: ranked by {metric} ({better} is better) ==",
                  "Pareto frontier (metric vs parameters vs p50 latency, batch 1):"]  # fmt: skip
        lines += _table([e for e in board.frontier if e.group == (task, metric, mode)])
        lines += ["", "Best under each budget:"]
        for budget in (b for b in board.budgets if (b.task, b.metric) == (task, metric)):
            best = budget.best
            text = f"{best.label}  {best.metric}={_fmt(best.value, '.4f')}" if best else "(none fits)"
            lines.append(f"  {budget.describe():<32} {text}")
        others = [e for e in members if not e.frontier]
        if others:
            lines += ["", "Dominated (within this task and metric):"] + _table(others)
    incomplete = [e for e in board.entries if not e.complete]
    if incomplete:
        names = ", ".join(e.label for e in incomplete)
        lines += ["", f"Not placed (no metric or no footprint; try --measure): {names}"]
    return "\n".join(lines)


def _table(entries: Sequence[Entry]) -> list[str]:
    labels = [e.label + (f" (int8 of v{e.source_version})" if e.source_version else "") for e in entries]
    width = max([len("version"), *map(len, labels)])
    metric_width = max([len("metric"), *(len(e.metric) for e in entries)])
    header = f"  {'version':<{width}} {'metric':<{metric_width}} {'value':>8} {'params':>12} {'p50 ms':>8} "
    rows = [header + f"{'p99 ms':>8} {'MB':>7} {'MFLOPs':>9}  aliases"]
    for label, e in zip(labels, entries, strict=True):
        size = None if e.size_bytes is None else e.size_bytes / 1e6
        flops = None if e.flops is None else e.flops / 1e6
        rows.append(
            f"  {label:<{width}} {e.metric:<{metric_width}} {_fmt(e.value, '.4f'):>8} {_fmt(e.parameters, ',.0f'):>12} "
            f"{_fmt(e.latency_p50_ms, '.2f'):>8} {_fmt(e.latency_p99_ms, '.2f'):>8} {_fmt(size, '.2f'):>7} "
            f"{_fmt(flops, ',.1f'):>9}  {','.join(e.aliases)}"
        )
    return rows


def plot(board: Leaderboard, path: Path) -> Path:
    """Metric against parameters (log scale), p50 latency as colour, the frontier joined by a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    placed = [e for e in board.entries if e.complete]
    if not placed:
        raise UserError("nothing to plot: no version has both a metric and a footprint (try --measure)")
    by_group = groups(placed)
    fig, axes = plt.subplots(len(by_group), 1, figsize=(7, 4.5 * len(by_group)), squeeze=False)
    for ax, ((task, metric, _), members) in zip(axes[:, 0], by_group.items(), strict=True):
        _plot_group(fig, ax, members, [e for e in board.frontier if e in members], f"{task}: {metric}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_group(fig: Any, ax: Any, placed: list[Entry], frontier: list[Entry], title: str) -> None:
    """One task's versions: metric against parameters (log scale), p50 latency as colour, the frontier as a line."""
    points = ax.scatter([e.parameters for e in placed], [e.value for e in placed],
                        c=[e.latency_p50_ms for e in placed], cmap="viridis", s=40, zorder=3)  # fmt: skip
    fig.colorbar(points, ax=ax, label="p50 latency, ms (batch 1)")
    front = sorted(frontier, key=lambda e: e.parameters or 0)
    ax.plot([e.parameters for e in front], [e.value for e in front], "r--", lw=1, label="Pareto frontier")
    for e in placed:
        label = e.label + (" int8" if e.source_version else "")
        ax.annotate(label, (e.parameters, e.value), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(placed[0].metric)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
