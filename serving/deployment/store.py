"""The served model slots: which version of each `models:/<name>@<alias>` is deployed, and the live swap
when the alias moves.

    python -c "from serving.deployment.store import ModelStore; help(ModelStore.refresh)"

A swap never touches the version being served until the new one has passed every step of the load pipeline
(serving/deployment/loading.py: download, contract, session, warm-up, signature). Only then is the slot's reference
replaced, in one assignment on the event loop; requests that already hold the old model finish on it. A failed
step leaves the old version serving, logs why, and is shown by `GET /v1/models` and the
`kiln_model_swap_failures_total` metric.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from core import vocab
from registry.lookup import all_registered_models
from serving.deployment.artifacts import reason, registry_client
from serving.deployment.batching import Batcher, Feeds
from serving.deployment.loading import LoadedModel, batch_config, load_version
from serving.edge.metrics import Metrics
from serving.errors import BadRequest, ModelNotFound, ModelNotReady, SwapRefused
from serving.runtime.tensors import RequestLimits, accepted_inputs
from serving.settings import ServeSettings

log = logging.getLogger(vocab.SERVING_LOG + ".store")

try:  # onnxruntime's exceptions for inputs it cannot run: type errors (InvalidArgument), a size the graph cannot
    # take (Fail: a Concat or Add of mismatched feature maps), kernel refusals (RuntimeException)
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

    _ORT_INPUT_ERRORS: tuple[type[BaseException], ...] = (InvalidArgument, Fail, RuntimeException)
except ImportError:  # pragma: no cover - a build without the pybind module layout
    _ORT_INPUT_ERRORS = ()
# ...unless the message says the machine ran out of memory: that is the server's fault, not the request's
_ORT_SERVER_FAULTS = ("bad_alloc", "Failed to allocate", "out of memory")


@dataclass(frozen=True)
class Deployed:
    """What a request picks up: the model and the batcher in front of its session."""

    model: LoadedModel
    batcher: Batcher
    limits: RequestLimits = RequestLimits(max_pixels=0)  # what one request may ask of it (serving/runtime/tensors.py)


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
    canary: Router | None = None  # while a canary runs (serving/rollout/canary.py): picks production or the candidate


class Router(Protocol):
    """A running canary (serving/rollout/canary.py), as the dataplane sees it."""

    @property
    def version(self) -> str: ...

    @property
    def deployed(self) -> Deployed: ...

    def pick(self, production: Deployed, routing_key: str | None) -> Deployed: ...

    def record(self, version: str, production_version: str, status: int, seconds: float) -> None: ...


class ModelStore:
    """Every served slot, the registry client, and the swap procedure."""

    def __init__(self, settings: ServeSettings, metrics: Metrics, client: Any | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self._client = client
        self.slots: dict[str, ModelSlot] = {}
        # called after each refresh of a model: its challenger and canary follow the registry too
        # (serving/rollout/rollout.py)
        self.followers: list[Callable[[str], Awaitable[None]]] = []
        self._discovery_failed: dict[str, float] = {}  # name -> monotonic time its first load failed

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = registry_client(self.settings.tracking_uri)
        return self._client

    # --- request side -------------------------------------------------------------------------------------

    def slot(self, name: str | None) -> ModelSlot:
        """The slot of `name`; with one model served, `None` means that one."""
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
        return slot

    def get(self, name: str | None) -> Deployed:
        """The production deployment of `name` (the canary's pick is the dataplane's, serving/dataplane.py)."""
        slot = self.slot(name)
        if slot.current is None:
            raise ModelNotReady(f"model {slot.name!r} is not loaded yet")
        return slot.current

    @property
    def ready(self) -> bool:
        return bool(self.slots) and all(s.current is not None for s in self.slots.values())

    # --- start-up -----------------------------------------------------------------------------------------

    @property
    def discovering(self) -> bool:
        """True in "every model with the alias" mode (no --models): models promoted later are picked up."""
        return not self.settings.models

    def aliased_names(self) -> tuple[str, ...]:
        """Every registered model that has the alias now, sorted."""
        models = all_registered_models(self.client)
        return tuple(sorted(m.name for m in models if self.settings.alias in (m.aliases or {})))

    def resolve_names(self) -> tuple[str, ...]:
        """The configured names, or every registered model that has the alias."""
        if self.settings.models:
            return self.settings.models
        names = self.aliased_names()
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
        for name in names:
            await self.follow(name)

    async def follow(self, name: str) -> None:
        for follower in self.followers:
            await follower(name)

    async def discover(self) -> list[str]:
        """Load every model that got the alias since start-up (discovery mode only); returns the names added.

        A model whose first load fails is logged and not tried again for KILN_SWAP_RETRY_SECONDS; the models
        already served are not affected (and readiness does not wait for a model that never loaded).
        """
        if not self.discovering:
            return []
        try:
            names = await asyncio.to_thread(self.aliased_names)
        except Exception as err:  # registry out of reach: the next poll tries again
            log.warning("could not list models with alias %r: %s", self.settings.alias, err)
            return []
        added: list[str] = []
        for name in names:
            failed = self._discovery_failed.get(name)
            if name in self.slots or (failed and time.monotonic() - failed < self.settings.swap_retry_seconds):
                continue
            try:
                version = await asyncio.to_thread(self.resolve_version, name)
                loaded = await asyncio.to_thread(self.load, name, version)
            except (ModelNotFound, SwapRefused) as err:
                log.error("%s got alias %r but cannot be served: %s", name, self.settings.alias, err)
                self._discovery_failed[name] = time.monotonic()
                continue
            self.slots[name] = ModelSlot(name=name, alias=self.settings.alias)
            self.install(loaded)
            log.info("now serving %s v%s: it got alias %r after start-up", name, loaded.version, self.settings.alias)
            added.append(name)
        return added

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
        """Re-read the alias and swap if it moved, then let the followers look. True when a new version went live."""
        swapped = await self._refresh_alias(name)
        await self.follow(name)
        return swapped

    async def _refresh_alias(self, name: str) -> bool:
        slot = self.slots[name]
        async with slot.lock:
            try:
                version = await asyncio.to_thread(self.resolve_version, name)
            except Exception as err:  # registry down or alias deleted: keep serving, say so
                self._fail(slot, "?", "resolve", str(err))
                return False
            current = slot.current.model.version if slot.current else None
            if version == current:  # the alias is back on (or never left) what is served: nothing is failing
                if slot.last_error is not None:
                    slot.last_error = None
                    self.metrics.swap_recovered(name)
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
        """Every step before a swap (serving/deployment/loading.py). Blocking: run it in a thread."""
        return load_version(self.client, self.settings, name, version, None if against is None else against.model)

    def deploy(self, loaded: LoadedModel) -> Deployed:
        """A loaded version behind its batcher, with the request limits of this server: production, a canary's
        candidate and nothing else are deployed, all by this method."""
        config = batch_config(loaded, self.settings)
        observe = self.metrics.batch_observer(loaded.name, loaded.version)
        batcher = Batcher(loaded.run, config, batchable=loaded.batchable, observe=observe)
        limits = RequestLimits.for_model(
            loaded.inputs, loaded.contract.preprocess, config.max_batch_size, self.settings.max_request_pixels
        )
        loaded.predictor.shrink_above_pixels = limits.usual_pixels
        return Deployed(loaded, batcher, limits)

    def install(self, loaded: LoadedModel) -> None:
        """The swap itself: one reference assignment on the event loop. The old batcher drains and stops."""
        slot = self.slots[loaded.name]
        old, slot.current = slot.current, self.deploy(loaded)
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


async def infer(deployed: Deployed, feeds: Feeds) -> Feeds:
    """Run feeds through the deployed model's batcher, after the request limits (pixels, size multiple);
    onnxruntime's refusals of an input become 400s that say what the model accepts."""
    model = deployed.model
    deployed.limits.check(model.name, feeds)
    try:
        return await deployed.batcher.infer(feeds)
    except _ORT_INPUT_ERRORS as err:
        text = reason(err)
        if any(fault in text for fault in _ORT_SERVER_FAULTS):
            raise
        shapes = ", ".join(f"{n!r} {list(a.shape)}" for n, a in feeds.items())
        raise BadRequest(
            f"{model.name} v{model.version} cannot run {shapes}: {text}; "
            f"{accepted_inputs(model.inputs, deployed.limits)}"
        ) from None
