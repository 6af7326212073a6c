"""Safe rollout in `kiln serve`: the challenger each model shadows to, the canary each model runs, drift and
capture, wired to the store, the request path and HTTP.

    kiln serve --shadow challenger --capture /data/captured
    curl -s 127.0.0.1:8080/v1/models/edgnet/shadow
    curl -s 127.0.0.1:8080/v1/models/edgnet/canary
    curl -s 127.0.0.1:8080/v1/models/edgnet/drift

- After each refresh of a model's alias, `follow` reads the registered model once (its aliases and tags) and
  loads, swaps or drops the challenger (the `--shadow` alias) and the canary candidate (registry/canary.py),
  each through the same load pipeline and checks as production (serving/deployment/loading.py), against the
  production version; the candidate is deployed by `ModelStore.deploy`, with production's request limits. A
  version that fails is logged, shown and not retried for KILN_SWAP_RETRY_SECONDS; production is never touched.
- `after_answer` (called by serving/dataplane.py once any protocol's request has its answer) hands the shadow
  run, the drift features and the capture check to the off-path worker (serving/rollout/offpath.py) and returns
  at once. The routing of a canary and the record of each answer are the dataplane's.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import random
import socket
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from core import vocab
from core.contract import TabularPost
from core.preprocess import Geometry
from core.profile import FeatureDrift
from registry.canary import CANARY_TAG, CanarySpec, end_canary
from serving.deployment.batching import Feeds
from serving.deployment.loading import LoadedModel, load_version
from serving.deployment.store import Deployed, ModelStore
from serving.edge.metrics import LATENCY_BUCKETS, Metrics
from serving.errors import SwapRefused
from serving.rollout.canary import CanaryDeployment, Verdict
from serving.rollout.drift import Capture, DriftMonitor
from serving.rollout.ledger import Event, Ledger
from serving.rollout.offpath import OffPath
from serving.rollout.shadow import ShadowRequest, ShadowStats, compare, task_kind
from serving.runtime.postprocess import ImageResult, TabularResults
from serving.runtime.profiling import image_features, read_profile, result_features, tabular_features
from serving.settings import ServeSettings

log = logging.getLogger(vocab.SERVING_LOG + ".rollout")


class RolloutMetrics:
    """The shadow, canary, drift and capture metrics, on the server's registry."""

    def __init__(self, metrics: Metrics) -> None:
        r = metrics.registry
        mode: dict[str, Any] = {"multiprocess_mode": "mostrecent"} if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else {}
        self.shadow_compared = Counter("kiln_shadow_compared", "Requests also answered by the challenger and compared",
                                       ["model", "challenger_version"], registry=r)  # fmt: skip
        self.shadow_errors = Counter("kiln_shadow_errors", "Challenger runs that failed (never seen by clients)",
                                     ["model", "challenger_version"], registry=r)  # fmt: skip
        self.shadow_dropped = Counter("kiln_shadow_dropped", "Shadow runs dropped: queue full or production busy",
                                      ["model"], registry=r)  # fmt: skip
        self.shadow_agreement = Gauge("kiln_shadow_agreement", "Mean agreement of the challenger with production",
                                      ["model", "metric"], registry=r, **mode)  # fmt: skip
        self.shadow_latency = Histogram("kiln_shadow_latency_seconds", "Latency of the same requests on each side",
                                        ["model", "side"], buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.drift_psi = Gauge("kiln_drift_psi", "Population stability index of a feature's live window",
                               ["model", "feature"], registry=r, **mode)  # fmt: skip
        self.drift_shift = Gauge("kiln_drift_shift", "1 while a feature drifted (Holm-corrected test, core.profile)",
                                 ["model", "feature"], registry=r, **mode)  # fmt: skip
        self.canary_percent = Gauge("kiln_canary_percent", "Share of the model's requests routed to its canary",
                                    ["model", "version"], registry=r, **mode)  # fmt: skip
        self.canary_rollbacks = Counter("kiln_canary_rollbacks", "Canaries this server ended on a failed guard rail",
                                        ["model", "guard"], registry=r)  # fmt: skip
        self.captured = Counter("kiln_captured_inputs", "Uncertain inputs saved for labelling", ["model"], registry=r)
        self.rollout_load_failures = Counter("kiln_rollout_load_failures", "Challenger or canary versions refused",
                                             ["model", "role", "step"], registry=r)  # fmt: skip


@dataclass(frozen=True)
class Observation:
    """One answered request as the after-answer hooks see it, whatever its protocol. A task request brings its
    typed result, image bytes or records; a V2 or /invocations request only its tensors, from which the typed
    result is made off the request path when a hook needs it (`typed_result`)."""

    feeds: Feeds
    outputs: Feeds
    result: ImageResult | TabularResults | None = None
    data: bytes | None = None
    records: Any = None
    geometry: Geometry | None = None
    params: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def typed_result(self, model: LoadedModel) -> ImageResult | TabularResults | None:
        """The task's typed result: the task request's own, else made from the tensors by the predictor."""
        return self.result if self.result is not None else model.predictor.finish_tensors(self.feeds, self.outputs)

    def capture_form(self, model: LoadedModel) -> tuple[bytes | None, Any]:
        """What capture saves of a tensor request: records for a tabular model, else its first tensor (.npy)."""
        post = model.contract.postprocess
        matrix = next(iter(self.feeds.values()))
        if isinstance(post, TabularPost) and matrix.ndim == 2:
            return None, [dict(zip(post.feature_names, map(float, row), strict=False)) for row in matrix]
        buffer = io.BytesIO()
        np.save(buffer, matrix, allow_pickle=False)  # the first input, as a .npy file
        return buffer.getvalue(), None


@dataclass
class Shadow:
    challenger: LoadedModel
    production_version: str
    stats: ShadowStats


@dataclass(frozen=True)
class Refusal:
    version: str
    step: str
    reason: str
    at: datetime
    monotonic: float

    def to_json(self) -> dict[str, str]:
        return {"version": self.version, "step": self.step, "error": self.reason, "at": self.at.isoformat()}


class Rollout:
    """Challengers, canaries, drift monitors and captures of every served model."""

    def __init__(self, store: ModelStore, settings: ServeSettings, metrics: Metrics) -> None:
        self.store, self.settings = store, settings
        self.prom = RolloutMetrics(metrics)
        self.offpath = OffPath(
            budgets={"shadow": settings.shadow_budget, "drift": settings.drift_budget}, adaptive=frozenset({"shadow"})
        )
        self.shadows: dict[str, Shadow] = {}
        self.monitors: dict[tuple[str, str], DriftMonitor] = {}
        self.refused: dict[tuple[str, str], Refusal] = {}  # (model, role) -> the last version refused
        self.ended: dict[str, dict[str, Any]] = {}  # model -> the last canary ended here, as JSON
        self.capture = (
            Capture(settings.capture, threshold=settings.capture_threshold, per_minute=settings.capture_per_minute)
            if settings.capture
            else None
        )
        self._rolled_back: set[tuple[str, str, str]] = set()  # (model, version, started_at) ended by this server
        self._tasks: set[asyncio.Task[Any]] = set()
        self.by = f"kiln serve@{socket.gethostname()}"
        # with a state folder, the workers of one server share their answers (serving/rollout/ledger.py)
        self.ledger = Ledger(settings.state_dir) if settings.state_dir else None
        store.followers.append(self.follow)

    def start(self) -> None:
        """On the event loop, once the models are loaded: apply the other workers' events there from now on."""
        if self.ledger is not None:
            loop = asyncio.get_running_loop()

            def hand_over(events: list[Event]) -> None:
                loop.call_soon_threadsafe(self.apply, events)

            self.ledger.start(hand_over)

    # --- the other workers' events --------------------------------------------------------------------------

    def record_answer(self, deployed: Deployed, status: int, seconds: float) -> None:
        """An answer of a model whose canary runs, on the side it came from (the dataplane calls this)."""
        slot = self.store.slots.get(deployed.model.name)
        if slot is None or slot.current is None or not isinstance(slot.canary, CanaryDeployment):
            return
        canary, production = slot.canary, slot.current.model.version
        canary.record(deployed.model.version, production, status, seconds)
        if self.ledger is not None:
            body = {"version": deployed.model.version, "production": production, "status": status, "seconds": seconds}
            self.ledger.publish(Event("answer", canary.spec.model, _canary_key(canary), body))

    def apply(self, events: list[Event]) -> None:
        """The other workers' answers, comparisons and observations, handled as this worker's own (event loop)."""
        for event in events:
            try:
                self._apply(event)
            except Exception:  # one malformed or stale event must not stop the others
                log.exception("could not apply a %s event of %s from another worker", event.kind, event.model)

    def _apply(self, event: Event) -> None:
        slot = self.store.slots.get(event.model)
        if slot is None or slot.current is None:
            return
        body = event.body
        if event.kind == "answer":
            canary = slot.canary
            if isinstance(canary, CanaryDeployment) and _canary_key(canary) == event.key:
                canary.record(str(body["version"]), str(body["production"]), int(body["status"]), body["seconds"])
        elif event.kind == "comparison":
            shadow = self.shadows.get(event.model)
            if shadow is not None and _shadow_key(shadow) == event.key:
                shadow.stats.add(body["numbers"], body["production_s"], body["challenger_s"])
        elif event.kind == "observation":
            model = self._version(slot.current, slot.canary, event.key)
            if model is not None:
                self.monitor(model).observe(body["inputs"], body["outputs"])

    @staticmethod
    def _version(production: Deployed, canary: Any, version: str) -> LoadedModel | None:
        if production.model.version == version:
            return production.model
        if isinstance(canary, CanaryDeployment) and canary.version == version:
            return canary.deployed.model
        return None

    # --- following the registry -----------------------------------------------------------------------------

    async def follow(self, name: str) -> None:
        """Bring the challenger and the canary of `name` in line with the registry; never raises."""
        slot = self.store.slots.get(name)
        if slot is None or slot.current is None:
            return
        try:
            registered = await asyncio.to_thread(self.store.client.get_registered_model, name)
        except Exception as err:  # registry out of reach: keep what runs now, the next poll tries again
            log.warning("could not read %s from the registry for its challenger and canary: %s", name, err)
            return
        aliases = {str(k): str(v) for k, v in (registered.aliases or {}).items()}
        tags = dict(registered.tags or {})
        try:
            await self._follow_shadow(name, slot.current, aliases.get(self.settings.shadow or ""))
            if self.settings.canary:
                spec = CanarySpec.parse(name, tags[CANARY_TAG]) if tags.get(CANARY_TAG) else None
                await self._follow_canary(name, slot.current, spec)
        except Exception:
            log.exception("following the challenger and canary of %s failed", name)
        self._forget_old_monitors(name, slot.current.model.version)

    async def _follow_shadow(self, name: str, production: Deployed, version: str | None) -> None:
        prod_version = production.model.version
        if not self.settings.shadow or version is None or version == prod_version:
            self.shadows.pop(name, None)
            return
        current = self.shadows.get(name)
        if current is not None and current.challenger.version == version:
            if current.production_version != prod_version:  # production moved: compare afresh
                self.shadows[name] = Shadow(current.challenger, prod_version, ShadowStats(prod_version, version))
            return
        loaded = await self._load(name, version, production, "challenger")
        if loaded is None:
            return
        self.shadows[name] = Shadow(loaded, prod_version, ShadowStats(prod_version, version))
        log.info("shadowing %s v%s to challenger v%s (%g%% of task requests)", name, prod_version, version,
                 self.settings.shadow_percent)  # fmt: skip

    async def _follow_canary(self, name: str, production: Deployed, spec: CanarySpec | None) -> None:
        slot = self.store.slots[name]
        running = slot.canary if isinstance(slot.canary, CanaryDeployment) else None
        wanted = spec is not None and spec.alias == self.settings.alias
        if spec is None or not wanted or str(spec.version) == production.model.version:
            if running is not None:
                self._stop(name, running, "the registry has no canary for it any more")
            return
        if (name, str(spec.version), spec.started_at) in self._rolled_back:
            return  # ended here; the registry has not caught up (or refused the write): do not route again
        if running is not None and running.version == str(spec.version):
            running.spec = spec  # a step, or new guard rails
            self.prom.canary_percent.labels(name, running.version).set(spec.percent)
            return
        loaded = await self._load(name, str(spec.version), production, "canary")
        if loaded is None:
            return
        deployment = CanaryDeployment(
            spec, self.store.deploy(loaded), self._failed, self._agreement_of(name, loaded.version)
        )
        if running is not None:
            self._stop(name, running, f"replaced by the canary of v{spec.version}")
        slot.canary = deployment
        self.prom.canary_percent.labels(name, deployment.version).set(spec.percent)
        log.info("canary of %s v%s: %g%% of requests (production v%s)", name, spec.version, spec.percent,
                 production.model.version)  # fmt: skip

    async def _load(self, name: str, version: str, production: Deployed, role: str) -> LoadedModel | None:
        refused = self.refused.get((name, role))
        recent = refused is not None and time.monotonic() - refused.monotonic < self.settings.swap_retry_seconds
        if refused is not None and refused.version == version and recent:
            return None
        settings = replace(
            self.settings, alias=self.settings.shadow or "challenger" if role == "challenger" else "canary"
        )
        try:
            loaded = await asyncio.to_thread(
                load_version, self.store.client, settings, name, version, production.model
            )  # fmt: skip
        except SwapRefused as err:
            log.error("%s v%s cannot be the %s of %s: %s at %s; production v%s is unaffected", name, version, role,
                      name, err.reason, err.step, production.model.version)  # fmt: skip
            self.refused[(name, role)] = Refusal(version, err.step, err.reason, datetime.now(UTC), time.monotonic())
            self.prom.rollout_load_failures.labels(name, role, err.step).inc()
            return None
        self.refused.pop((name, role), None)
        return loaded

    def _agreement_of(self, name: str, version: str) -> Any:
        def agreement() -> tuple[str, float, int, list[float]] | None:
            shadow = self.shadows.get(name)
            if shadow is None or shadow.challenger.version != version:
                return None
            metric, mean, _, n = shadow.stats.primary(task_kind(shadow.challenger))
            with shadow.stats.lock:  # per-comparison values for the sequential agreement rail
                values = list(shadow.stats.metrics.get(metric, ()))
            return None if mean is None else (metric, mean, shadow.stats.compared, values)

        return agreement

    def _stop(self, name: str, deployment: CanaryDeployment, why: str) -> None:
        slot = self.store.slots[name]
        if slot.canary is deployment:
            slot.canary = None
        if deployment.ended_at is None:
            deployment.ended_at = time.monotonic()
        deployment.deployed.batcher.close()
        self.prom.canary_percent.labels(name, deployment.version).set(0)
        self.ended[name] = {**deployment.to_json(), "ended_because": why}
        log.info("canary of %s v%s stopped here: %s", name, deployment.version, why)

    def _failed(self, deployment: CanaryDeployment, verdict: Verdict) -> None:
        """A guard rail failed (on the event loop): stop routing now, end the canary in the registry next."""
        spec = deployment.spec
        self._rolled_back.add((spec.model, deployment.version, spec.started_at))
        self.prom.canary_rollbacks.labels(spec.model, verdict.failed).inc()
        self._stop(spec.model, deployment, f"guard rail {verdict.failed}: {verdict.detail}")
        numbers: dict[str, Any] = {
            "failed": verdict.failed,
            "detail": verdict.detail,
            "numbers": verdict.numbers,
            "server": self.by,
        }
        if deployment.first_error_at is not None and deployment.ended_at is not None:
            numbers["first_error_to_rollback_s"] = round(deployment.ended_at - deployment.first_error_at, 4)
        task = asyncio.get_running_loop().create_task(self._end_in_registry(spec, verdict, numbers))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _end_in_registry(self, spec: CanarySpec, verdict: Verdict, numbers: dict[str, Any]) -> None:
        try:
            event = await asyncio.to_thread(
                end_canary, spec.model, outcome="rollback", reason=f"guard rail {verdict.failed}: {verdict.detail}",
                numbers=numbers, version=spec.version, by=self.by, client=self.store.client,
            )  # fmt: skip
        except Exception as err:
            log.error("could not end the canary of %s v%s in the registry: %s (it stays off here)", spec.model,
                      spec.version, err)  # fmt: skip
            return
        if event is not None:
            log.info("canary of %s v%s rolled back in the registry (%s)", spec.model, spec.version, event.key)

    def _forget_old_monitors(self, name: str, production_version: str) -> None:
        slot = self.store.slots[name]
        keep = {production_version}
        if isinstance(slot.canary, CanaryDeployment):
            keep.add(slot.canary.version)
        for key in [k for k in self.monitors if k[0] == name and k[1] not in keep]:
            del self.monitors[key]

    # --- the request path -------------------------------------------------------------------------------------

    def after_answer(self, deployed: Deployed, observed: Observation) -> None:
        """Hand the shadow run, drift features and capture of an answered request, whatever its protocol, to the
        off-path worker; the request only pays for a few random draws and a queue append."""
        model = deployed.model
        slot = self.store.slots.get(model.name)
        if slot is None or slot.current is None:
            return
        if random.random() * 100 < self.settings.drift_percent:
            self.offpath.submit(lambda: self._observe(model, observed), kind="drift")
        shadow = self.shadows.get(model.name)
        if slot.current is deployed and shadow is not None and random.random() * 100 < self.settings.shadow_percent:
            self.offpath.submit(lambda: self._shadow(shadow, model, observed), kind="shadow", when_idle=True,
                                dropped=lambda: self._shadow_dropped(shadow))  # fmt: skip

    def _shadow(self, shadow: Shadow, model: LoadedModel, observed: Observation) -> None:
        name, version = shadow.challenger.name, shadow.challenger.version
        production = observed.typed_result(model)
        if production is None:  # a model without a task: nothing typed to compare
            shadow.stats.fail(f"{name} has no kiln.task, so its answers cannot be compared")
            self.prom.shadow_errors.labels(name, version).inc()
            return
        request = ShadowRequest(
            observed.data, observed.records, observed.params, production, observed.seconds,
            None if observed.data is not None or observed.records is not None else observed.feeds,
        )  # fmt: skip
        numbers = compare(shadow.stats, shadow.challenger, request)
        if numbers is None:
            self.prom.shadow_errors.labels(name, version).inc()
            return
        if self.ledger is not None:
            body = {"numbers": numbers, "production_s": request.production_seconds,
                    "challenger_s": shadow.stats.challenger_seconds[-1]}  # fmt: skip
            self.ledger.publish(Event("comparison", name, _shadow_key(shadow), body))
        self.prom.shadow_compared.labels(name, version).inc()
        self.prom.shadow_latency.labels(name, "production").observe(request.production_seconds)
        self.prom.shadow_latency.labels(name, "challenger").observe(shadow.stats.challenger_seconds[-1])
        metric, mean, _, _ = shadow.stats.primary(task_kind(shadow.challenger))
        if mean is not None:
            self.prom.shadow_agreement.labels(name, metric).set(mean)

    def _shadow_dropped(self, shadow: Shadow) -> None:
        shadow.stats.dropped += 1
        self.prom.shadow_dropped.labels(shadow.challenger.name).inc()

    def _observe(self, model: LoadedModel, observed: Observation) -> None:
        monitor = self.monitor(model)
        feeds, geometry = observed.feeds, observed.geometry
        result = observed.typed_result(model)
        tensor = next(iter(feeds.values()))
        post = model.contract.postprocess
        pre = model.contract.preprocess
        if pre is not None:
            inputs = {k: [v] for k, v in image_features(tensor[0], pre, geometry).items()}
        elif post is not None and hasattr(post, "feature_names"):
            inputs = tabular_features(tensor, post)  # type: ignore[arg-type]
        else:
            inputs = {}
        outputs = result_features(result) if result is not None else {}
        monitor.observe(inputs, outputs)
        if self.ledger is not None:
            body = {"inputs": inputs, "outputs": outputs}
            self.ledger.publish(Event("observation", model.name, model.version, body))
        if self.capture is None or result is None:
            return
        data, records = observed.data, observed.records
        if data is None and records is None:  # a V2 or /invocations request: the tensors as sent
            data, records = observed.capture_form(model)
        if self.capture.offer(model.name, model.version, data, records, result):
            self.prom.captured.labels(model.name).inc()

    def monitor(self, model: LoadedModel) -> DriftMonitor:
        key = (model.name, model.version)
        found = self.monitors.get(key)
        if found is None:
            try:
                profile = read_profile(model.predictor)
            except ValueError as err:
                log.error("%s", err)
                profile = None
            found = DriftMonitor(
                model.name, model.version, profile, window=self.settings.drift_window,
                min_samples=self.settings.drift_min_samples, score_every=max(50, self.settings.drift_min_samples),
                gauge=self._drift_gauges,
            )  # fmt: skip
            self.monitors[key] = found
        return found

    def _drift_gauges(self, model: str, feature: str, drift: FeatureDrift) -> None:
        self.prom.drift_psi.labels(model, feature).set(drift.psi)
        self.prom.drift_shift.labels(model, feature).set(1 if drift.level == "shift" else 0)

    def close(self) -> None:
        self.offpath.close()
        if self.ledger is not None:
            self.ledger.close()
        for slot in self.store.slots.values():
            if isinstance(slot.canary, CanaryDeployment):
                slot.canary.deployed.batcher.close()


def _canary_key(canary: CanaryDeployment) -> str:
    return f"{canary.version}@{canary.spec.started_at}"


def _shadow_key(shadow: Shadow) -> str:
    return f"{shadow.production_version}:{shadow.challenger.version}"
