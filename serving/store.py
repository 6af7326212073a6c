"""Load models from `models:/<name>@<alias>` into onnxruntime sessions, and swap them live when the alias moves.

    python -m serving.store edgnet production    # load once, print what would be served, exit

A swap never touches the version being served until the new one has passed every step: download, open a
session, read and check the metadata contract, warm up on the logged input example, and compare the input and
output signature with the old version. Only then is the slot's reference replaced, in one assignment on the
event loop; requests that already hold the old model finish on it. A failed step leaves the old version
serving, logs why, and is shown by `GET /v1/models` and the `kiln_model_swap_failures_total` metric.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from registry.lookup import all_registered_models
from serving import tasks
from serving.batching import BatchConfig, Batcher, Feeds
from serving.contract import ContractError, ModelContract, TabularPost, parse_contract
from serving.errors import BadRequest, ModelNotFound, ModelNotReady, SwapRefused
from serving.metrics import Metrics
from serving.settings import ServeSettings
from serving.tensors import TensorSpec

log = logging.getLogger("kiln.serving.store")

try:  # onnxruntime's exception for inputs it cannot run (shape or type errors inside the graph)
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument as _OrtInvalidArgument

    _ORT_INPUT_ERRORS: tuple[type[BaseException], ...] = (_OrtInvalidArgument,)
except ImportError:  # pragma: no cover - a build without the pybind module layout
    _ORT_INPUT_ERRORS = ()


@dataclass(frozen=True)
class LoadedModel:
    """One version with an open, warmed session. Immutable: a swap replaces the whole object."""

    name: str
    version: str
    alias: str
    run_id: str | None
    session: Any  # ort.InferenceSession (untyped upstream)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    contract: ModelContract
    loaded_at: datetime
    batchable: bool
    threads: int
    warmup: str  # what the warm-up ran on, for the status endpoint
    run_ms: float  # one warm run of the example, in milliseconds
    ms_per_row: float  # run_ms over the example's rows: what sizes batches and decides where runs happen
    load_seconds: dict[str, float] = field(default_factory=dict)  # time each step of the load took

    def run(self, feeds: Feeds) -> Feeds:
        results = self.session.run(None, feeds)
        return {spec.name: np.asarray(value) for spec, value in zip(self.outputs, results, strict=True)}

    def input(self, name: str) -> TensorSpec | None:
        return next((s for s in self.inputs if s.name == name), None)


@dataclass(frozen=True)
class Deployed:
    """What a request picks up: the model and the batcher in front of its session."""

    model: LoadedModel
    batcher: Batcher


@dataclass(frozen=True)
class SwapError:
    version: str
    step: str
    reason: str
    at: datetime

    def to_json(self) -> dict[str, str]:
        return {"version": self.version, "step": self.step, "error": self.reason, "at": self.at.isoformat()}


@dataclass
class ModelSlot:
    """One served model name: what is deployed now and what went wrong last."""

    name: str
    alias: str
    current: Deployed | None = None
    last_error: SwapError | None = None
    swaps: int = 0
    failed_at: dict[str, float] = field(default_factory=dict)  # version -> monotonic time it failed
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ModelStore:
    """Every served slot, the registry client, and the swap procedure."""

    def __init__(self, settings: ServeSettings, metrics: Metrics, client: Any | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self._client = client
        self.slots: dict[str, ModelSlot] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            uri = self.settings.tracking_uri
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._client

    # --- request side -------------------------------------------------------------------------------------

    def get(self, name: str | None) -> Deployed:
        """The deployed model for `name`; with one model served, `None` means that one."""
        if name is None:
            if len(self.slots) != 1:
                raise ModelNotFound(
                    f"{len(self.slots)} models are served ({sorted(self.slots)}); "
                    "name one with the X-Kiln-Model header or ?model="
                )
            name = next(iter(self.slots))
        slot = self.slots.get(name)
        if slot is None:
            raise ModelNotFound(f"no model named {name!r} is served; served: {sorted(self.slots)}")
        if slot.current is None:
            raise ModelNotReady(f"model {name!r} is not loaded yet")
        return slot.current

    @property
    def ready(self) -> bool:
        return bool(self.slots) and all(s.current is not None for s in self.slots.values())

    # --- start-up -----------------------------------------------------------------------------------------

    def resolve_names(self) -> tuple[str, ...]:
        """The configured names, or every registered model that has the alias."""
        if self.settings.models:
            return self.settings.models
        names = sorted(m.name for m in all_registered_models(self.client) if self.settings.alias in (m.aliases or {}))
        if not names:
            raise ValueError(
                f"no registered model has the alias {self.settings.alias!r}; promote one "
                f"(kiln promote MODEL --version N) or pass --models"
            )
        return tuple(names)

    async def start(self) -> None:
        """Load every model before traffic is accepted; any failure stops the start with its reason."""
        names = await asyncio.to_thread(self.resolve_names)
        for name in names:
            self.slots[name] = ModelSlot(name=name, alias=self.settings.alias)
        for name in names:
            version = await asyncio.to_thread(self.resolve_version, name)
            try:
                loaded = await asyncio.to_thread(self.load, name, version)
            except SwapRefused as err:
                raise RuntimeError(f"cannot serve {name!r}: {err}") from err
            self.install(loaded)

    def close(self) -> None:
        for slot in self.slots.values():
            if slot.current is not None:
                slot.current.batcher.close()

    # --- swap ---------------------------------------------------------------------------------------------

    def resolve_version(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, self.settings.alias).version)
        except MlflowException as err:
            raise ModelNotFound(
                f"registered model {name!r} has no alias {self.settings.alias!r} ({err.message})"
            ) from None

    async def refresh(self, name: str) -> bool:
        """Re-read the alias and swap if it moved. Returns True when a new version went live."""
        slot = self.slots[name]
        async with slot.lock:
            try:
                version = await asyncio.to_thread(self.resolve_version, name)
            except Exception as err:  # registry down or alias deleted: keep serving, say so
                self._fail(slot, "?", "resolve", str(err))
                return False
            current = slot.current.model.version if slot.current else None
            if version == current:
                if slot.last_error is not None and slot.last_error.step == "resolve":
                    slot.last_error = None
                return False
            if self._recently_failed(slot, version):
                return False
            try:
                loaded = await asyncio.to_thread(self.load, name, version, slot.current)
            except SwapRefused as err:
                self._fail(slot, version, err.step, err.reason)
                return False
            self.install(loaded)
            return True

    def load(self, name: str, version: str, against: Deployed | None = None) -> LoadedModel:
        """Every step before a swap. Blocking (download, session, warm-up): run it in a thread."""
        directory = Path(tempfile.mkdtemp(prefix=f"kiln-{name}-v{version}-", dir=self.settings.cache_dir))
        steps = _Steps()
        try:
            steps.start("download")
            local = _download(self.client, name, version, directory, self.settings.tracking_uri)
            onnx_file = _onnx_file(local)
            steps.start("contract")
            contract = parse_contract(_metadata(onnx_file))
            steps.start("open")
            threads = self.settings.intra_op_threads or _default_threads(contract)
            session = ort.InferenceSession(
                str(onnx_file), _session_options(threads, self.settings.ort_spinning), providers=_providers()
            )
            steps.start("contract")
            loaded = self._describe(name, version, session, contract, threads)
            steps.start("warmup")
            loaded = _warm(loaded, _input_example(local), self.settings)
            if against is not None:
                steps.start("signature")
                differences = compare_signatures(against.model, loaded)
                if differences:
                    raise ValueError("; ".join(differences))
            return replace(loaded, load_seconds=steps.done())
        except Exception as err:
            raise SwapRefused(name, version, steps.current, _reason(err)) from err
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def install(self, loaded: LoadedModel) -> None:
        """The swap itself: one reference assignment on the event loop. The old batcher drains and stops."""
        slot = self.slots[loaded.name]
        config = batch_config(loaded, self.settings)
        observe = self.metrics.batch_observer(loaded.name, loaded.version)
        batcher = Batcher(loaded.run, config, batchable=loaded.batchable, observe=observe)
        old, slot.current = slot.current, Deployed(loaded, batcher)
        timing = ", ".join(f"{k} {v:.2f}s" for k, v in loaded.load_seconds.items())
        if old is not None:
            old.batcher.close()
            slot.swaps += 1
            self.metrics.swap_succeeded(loaded.name)
            log.info("swapped %s v%s -> v%s (%s)", loaded.name, old.model.version, loaded.version, timing)
        else:
            log.info("loaded %s v%s, %d ORT threads (%s)", loaded.name, loaded.version, loaded.threads, timing)
        slot.last_error = None
        slot.failed_at.pop(loaded.version, None)
        self.metrics.model_loaded(loaded.name, loaded.version, loaded.alias, loaded.loaded_at.timestamp())

    def forget_failures(self, name: str) -> None:
        self.slots[name].failed_at.clear()

    def _fail(self, slot: ModelSlot, version: str, step: str, reason: str) -> None:
        serving = slot.current.model.version if slot.current else "nothing"
        log.error("swap of %s to v%s failed at %s: %s; still serving v%s", slot.name, version, step, reason, serving)
        slot.last_error = SwapError(version=version, step=step, reason=reason, at=datetime.now(UTC))
        if version != "?":
            slot.failed_at[version] = time.monotonic()
        self.metrics.swap_failed(slot.name, step)

    def _recently_failed(self, slot: ModelSlot, version: str) -> bool:
        failed = slot.failed_at.get(version)
        return failed is not None and time.monotonic() - failed < self.settings.swap_retry_seconds

    def _describe(self, name: str, version: str, session: Any, contract: ModelContract, threads: int) -> LoadedModel:
        inputs = tuple(TensorSpec.from_ort(n) for n in session.get_inputs())
        outputs = tuple(TensorSpec.from_ort(n) for n in session.get_outputs())
        if contract.task is not None:
            tasks.get_task(contract.task).check_io(contract, inputs, outputs)
        mv = self.client.get_model_version(name, version)
        return LoadedModel(
            name=name,
            version=version,
            alias=self.settings.alias,
            run_id=mv.run_id,
            session=session,
            inputs=inputs,
            outputs=outputs,
            contract=contract,
            loaded_at=datetime.now(UTC),
            batchable=False,
            threads=threads,
            warmup="",
            run_ms=0.0,
            ms_per_row=0.0,
        )


async def infer(deployed: Deployed, feeds: Feeds) -> Feeds:
    """Run feeds through the deployed model's batcher; onnxruntime's refusals of an input become 400s."""
    try:
        return await deployed.batcher.infer(feeds)
    except _ORT_INPUT_ERRORS as err:
        raise BadRequest(f"{deployed.model.name} v{deployed.model.version} refused the input: {_reason(err)}") from None


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


def compare_signatures(old: LoadedModel, new: LoadedModel) -> list[str]:
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
        problems.append(f"kiln.task {old.contract.task!r} -> {new.contract.task!r}")
    old_post, new_post = old.contract.postprocess, new.contract.postprocess
    if (
        isinstance(old_post, TabularPost)
        and isinstance(new_post, TabularPost)
        and old_post.feature_names != new_post.feature_names
    ):
        problems.append("kiln.postprocess.feature_names changed order or content")
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


def _warm(loaded: LoadedModel, example: Any, settings: ServeSettings) -> LoadedModel:
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


def _session_options(threads: int, spinning: bool) -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # sequential execution: a second pool would only add idle threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return options


def _default_threads(contract: ModelContract) -> int:
    """Tabular runs are microseconds long: extra threads only wake up and spin. Image models get every core."""
    if contract.task == "tabular":
        return 1
    return physical_cores()


def physical_cores() -> int:
    import psutil

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    physical = psutil.cpu_count(logical=False) or usable
    return max(1, min(usable, physical))


def _providers() -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _download(client: Any, name: str, version: str, directory: Path, tracking_uri: str | None) -> Path:
    """Resolve the version's artifact location with our client (MLflow's models:/ resolver ignores a
    registry URI passed to it and uses the global one), then download from there."""
    import mlflow.artifacts

    location = client.get_model_version_download_uri(name, version)
    path = mlflow.artifacts.download_artifacts(
        artifact_uri=location, dst_path=str(directory), tracking_uri=tracking_uri
    )
    return Path(path)


def _onnx_file(local: Path) -> Path:
    """The ONNX file the MLmodel's onnx flavor names."""
    from mlflow.models import Model

    try:
        flavor = Model.load(str(local)).flavors.get("onnx")
    except Exception as err:
        raise ValueError(f"no readable MLmodel file in the downloaded artifacts ({_reason(err)})") from None
    if flavor is None:
        raise ValueError("the model version has no onnx flavor; log it with mlflow.onnx.log_model")
    path = local / str(flavor.get("data", "model.onnx"))
    if not path.is_file():
        raise ValueError(f"the onnx flavor names {path.name!r}, which is not in the artifacts")
    return path


def _metadata(onnx_file: Path) -> dict[str, str]:
    """The ONNX metadata_props, read without loading external weights (the session is opened after)."""
    import onnx

    proto = onnx.load(str(onnx_file), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def _input_example(local: Path) -> Any:
    from mlflow.models import Model

    return Model.load(str(local)).load_input_example(str(local))


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(err, ContractError | ValueError):
        return first[:500]
    return f"{type(err).__name__}: {first[:500]}"


def main(argv: list[str]) -> None:
    """Load `MODEL ALIAS` once the way the server would, and print its status."""
    import json

    from serving.metrics import Metrics

    name, alias = argv[0], argv[1] if len(argv) > 1 else "production"
    settings = ServeSettings.from_env(models=(name,), alias=alias)
    store = ModelStore(settings, Metrics())
    try:
        version = store.resolve_version(name)
        model = store.load(name, version)
    except (ModelNotFound, SwapRefused) as err:
        sys.exit(str(getattr(err, "detail", err)))
    config = batch_config(model, settings)
    summary = {
        "name": name,
        "version": version,
        "task": model.contract.task,
        "inputs": [s.to_json() for s in model.inputs],
        "outputs": [s.to_json() for s in model.outputs],
        "load_seconds": model.load_seconds,
        "ms_per_row": round(model.ms_per_row, 4),
        "max_batch_size": config.max_batch_size,
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
