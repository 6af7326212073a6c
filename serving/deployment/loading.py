"""The load pipeline of one registered version, every step a swap must pass: download, read the contract,
open the session, check the contract against the tensors, warm up, compare the signature with the version
being served. Built on the predictor (serving/runtime/predictor.py), which is the model object the server runs:
download, contract and session come from `Predictor.from_registry`, the one loader of a registered version.

    python -m serving.cli edgnet production    # load once the way the server would, print what it would serve

A failed step raises `SwapRefused` naming the step; the caller (serving/deployment/store.py) keeps the old version.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from core import vocab
from core.contract import ModelContract, TabularPost
from serving.deployment.artifacts import reason
from serving.deployment.batching import BatchConfig, Feeds, try_batching
from serving.errors import SwapRefused
from serving.runtime import runtime
from serving.runtime.predictor import Predictor
from serving.runtime.tensors import TensorSpec
from serving.settings import ServeSettings


@dataclass(frozen=True)
class LoadedModel:
    """One version with an open, warmed predictor. Immutable: a swap replaces the whole object."""

    name: str
    version: str
    alias: str
    run_id: str | None
    predictor: Predictor  # the model object: session, contract, task pre- and post-processing
    loaded_at: datetime
    batchable: bool
    threads: int
    warmup: str  # what the warm-up ran on, for the status endpoint
    run_ms: float  # one warm run of the example, in milliseconds
    ms_per_row: float  # run_ms over the example's rows: what sizes batches and decides where runs happen
    load_seconds: dict[str, float] = field(default_factory=dict)  # time each step of the load took

    @property
    def session(self) -> Any:
        return self.predictor.session

    @property
    def contract(self) -> ModelContract:
        return self.predictor.contract

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.predictor.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.predictor.outputs

    def run(self, feeds: Feeds) -> Feeds:
        return self.predictor.run(feeds)

    def input(self, name: str) -> TensorSpec | None:
        return next((s for s in self.inputs if s.name == name), None)


def load_version(
    client: Any, settings: ServeSettings, name: str, version: str, against: LoadedModel | None = None
) -> LoadedModel:
    """Every step before a swap. Blocking (download, session, warm-up): run it in a thread."""
    steps = _Steps()

    def options(contract: ModelContract) -> Any:
        threads = settings.intra_op_threads or runtime.default_threads(contract)
        return runtime.session_options(threads, settings.ort_spinning)

    try:
        predictor, example = Predictor.from_registry(
            client, name, version, tracking_uri=settings.tracking_uri, options=options, folder=settings.cache_dir,
            step=steps.start,
        )  # fmt: skip
        loaded = _loaded(predictor, settings.alias, predictor.threads)
        steps.start("warmup")
        loaded = warm(loaded, example, settings)
        if against is not None:
            steps.start("signature")
            differences = compare_signatures(against, loaded)
            if differences:
                raise ValueError("; ".join(differences))
        return replace(loaded, load_seconds=steps.done())
    except Exception as err:
        raise SwapRefused(name, version, steps.current, reason(err)) from err


def _loaded(predictor: Predictor, alias: str, threads: int) -> LoadedModel:
    assert predictor.version is not None
    return LoadedModel(
        name=predictor.name,
        version=predictor.version,
        alias=alias,
        run_id=predictor.run_id,
        predictor=predictor,
        loaded_at=datetime.now(UTC),
        batchable=False,
        threads=threads,
        warmup="",
        run_ms=0.0,
        ms_per_row=0.0,
    )


def batch_config(loaded: LoadedModel, settings: ServeSettings) -> BatchConfig:
    """Size batches by the warm-up's timing: a batch holds as many rows as run within KILN_MAX_BATCH_MS (at most
    KILN_MAX_BATCH_SIZE), so a CPU image model that takes 100 ms a row is not batched (batching a compute-bound
    network on CPU adds latency, not throughput), while a tabular model or the same network on a GPU is. Runs
    shorter than KILN_INLINE_RUN_MS happen on the event loop."""
    per_row = max(loaded.ms_per_row, 1e-6)
    rows = min(settings.max_batch_size, max(1, _fits(settings.max_batch_ms, per_row)))
    inline_rows = min(rows, _fits(settings.inline_run_ms, per_row))
    return BatchConfig(
        max_batch_size=rows,
        max_queue_delay_s=settings.max_queue_delay_ms / 1000,
        instances=settings.instances,
        inline_max_rows=inline_rows,
    )


def _fits(budget_ms: float, per_row_ms: float) -> int:
    return int(budget_ms / per_row_ms + 1e-9)  # 1 / 0.2 is 4.999...; the epsilon keeps it 5


class Signed(Protocol):
    """Anything with tensors and a contract: a LoadedModel, a Predictor."""

    @property
    def inputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]: ...

    @property
    def contract(self) -> ModelContract: ...


def compare_signatures(old: Signed, new: Signed) -> list[str]:
    """Differences that would break clients of the old version; empty when the new one is a drop-in."""
    problems: list[str] = []
    for kind, before, after in (("input", old.inputs, new.inputs), ("output", old.outputs, new.outputs)):
        old_by_name = {s.name: s for s in before}
        new_by_name = {s.name: s for s in after}
        if set(old_by_name) != set(new_by_name):
            problems.append(f"{kind} names {sorted(old_by_name)} -> {sorted(new_by_name)}")
            continue
        for tensor, a in old_by_name.items():
            b = new_by_name[tensor]
            if a.datatype != b.datatype:
                problems.append(f"{kind} {tensor!r} datatype {a.datatype} -> {b.datatype}")
            if kind == "input" and not _shapes_compatible(a.shape, b.shape):
                problems.append(f"{kind} {tensor!r} shape {a.wire_shape} -> {b.wire_shape}")
    if old.contract.task != new.contract.task:
        problems.append(f"{vocab.TASK} {old.contract.task!r} -> {new.contract.task!r}")
    old_post, new_post = old.contract.postprocess, new.contract.postprocess
    if (
        isinstance(old_post, TabularPost)
        and isinstance(new_post, TabularPost)
        and old_post.feature_names != new_post.feature_names
    ):
        problems.append(f"{vocab.POSTPROCESS}.feature_names changed order or content")
    return problems


def _shapes_compatible(a: tuple[int | None, ...], b: tuple[int | None, ...]) -> bool:
    """Same rank, and every axis fixed in the old version accepts the same size in the new one."""
    return len(a) == len(b) and all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


class _Steps:
    """Which load step is running (named in a refusal) and how long each one took."""

    def __init__(self) -> None:
        self.current = "start"
        self.seconds: dict[str, float] = {}
        self._since = time.perf_counter()

    def start(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[self.current] = self.seconds.get(self.current, 0.0) + now - self._since
        self.current, self._since = step, now

    def done(self) -> dict[str, float]:
        self.start("done")
        return {k: round(v, 4) for k, v in self.seconds.items() if k not in ("start", "done")}


def warm(loaded: LoadedModel, example: Any, settings: ServeSettings) -> LoadedModel:
    """Run the logged example (or zeros), check the outputs, time a run, and find out whether rows can be
    batched; the batching test (a run of two copies) is skipped when batch_config would not batch anyway."""
    feeds, source = _warmup_feeds(loaded, example)
    outputs = loaded.run(feeds)
    start = time.perf_counter()
    loaded.run(feeds)  # the first run allocates; time the second
    run_ms = (time.perf_counter() - start) * 1000
    for spec in loaded.outputs:
        value = outputs[spec.name]
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ValueError(f"warm-up output {spec.name!r} contains NaN or inf")
    first = next(iter(feeds.values()))
    rows = max(1, int(first.shape[0]) if first.ndim else 1)
    ms_per_row = run_ms / rows
    may_batch = settings.max_batch_size >= 2 and _fits(settings.max_batch_ms, max(ms_per_row, 1e-6)) >= 2
    batchable = may_batch and _try_batch(loaded, feeds)
    if batchable:  # batch only where it pays, as measured here (serving/deployment/batching.py try_batching)
        rows = min(settings.max_batch_size, _fits(settings.max_batch_ms, max(ms_per_row, 1e-6)))
        trial = try_batching(loaded.run, feeds, rows)
        verdict = "batched" if trial.pays else "not batched"
        source += (
            f"; {rows} rows a run: {trial.gain:.1f}x per row, {trial.saved_ms_per_row:.3f} ms saved a row, {verdict}"
        )
        batchable = trial.pays
    return replace(loaded, batchable=batchable, warmup=source, run_ms=run_ms, ms_per_row=ms_per_row)


def _try_batch(loaded: LoadedModel, feeds: Feeds) -> bool:
    """Two copies of the example in one run must give twice the rows in every output."""
    if any(s.shape and s.shape[0] is not None for s in loaded.inputs):
        return False
    doubled = {n: np.concatenate([a, a]) for n, a in feeds.items()}
    rows = {n: a.shape[0] for n, a in feeds.items()}
    try:
        outputs = loaded.run(doubled)
    except Exception:
        return False
    single = next(iter(rows.values()))
    return all(a.ndim > 0 and a.shape[0] == 2 * single for a in outputs.values())


def _warmup_feeds(loaded: LoadedModel, example: Any) -> tuple[Feeds, str]:
    if example is None:
        return {s.name: _zeros(s, loaded.contract) for s in loaded.inputs}, "zeros (no input example was logged)"
    if hasattr(example, "to_numpy"):  # a pandas DataFrame
        example = example.to_numpy()
    if not isinstance(example, dict):
        if len(loaded.inputs) != 1:
            raise ValueError(f"the input example is one array but the model has {len(loaded.inputs)} inputs")
        example = {loaded.inputs[0].name: example}
    feeds: Feeds = {}
    for spec in loaded.inputs:
        if spec.name not in example:
            raise ValueError(f"the input example has no {spec.name!r} (has {sorted(example)})")
        feeds[spec.name] = np.asarray(example[spec.name]).astype(spec.dtype, copy=False)
    return feeds, "logged input example"


def _zeros(spec: TensorSpec, contract: ModelContract) -> np.ndarray:
    shape = [1 if d is None else d for d in spec.shape]
    if contract.preprocess is not None and len(shape) == 4:
        shape[2], shape[3] = (
            d if d is not None else s for d, s in zip(spec.shape[2:], contract.preprocess.size, strict=True)
        )
    return np.zeros(shape, dtype=spec.dtype)
