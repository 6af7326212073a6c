"""The one request path every protocol goes through: `DataPlane.infer(name, version, routing_key, inputs)`.

    python -c "from serving.dataplane import DataPlane; help(DataPlane.infer)"

As in MLServer's DataPlane, the protocol modules (serving/edge/task_routes.py, protocol_v2.py, invocations.py)
are codecs: they read a request into an `Inputs` object and write its answer; everything between is here, the
same for all three:
1. lookup: the served slot of `name` (404 / 503 when it is not served or not loaded);
2. routing: a request that names its version (V2's `/versions/{v}/infer`) gets that version, production or the
   canary's candidate; any other goes to the side the running canary picks for its routing key;
3. decoding for the chosen model (`Inputs.prepare`: a task request is preprocessed by that version's predictor),
   then the request limits of the chosen deployment (KILN_MAX_REQUEST_PIXELS, the size multiple), which every
   deployment, production or candidate, gets from `ModelStore.deploy`;
4. the run, through the deployment's batcher, and the codec's answer (`Inputs.finish`);
5. the canary's record of the answer (its status and latency, which the guard rails judge), the model and version
   on the request's state (access log, metrics, the X-Kiln-Model-Version header), and the after-answer hooks:
   shadow, drift and capture (serving/rollout/rollout.py), handed to the off-path worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.errors import KilnError
from core.preprocess import Geometry
from serving.deployment.batching import Feeds
from serving.deployment.loading import LoadedModel
from serving.deployment.store import Deployed, ModelStore, infer
from serving.errors import ModelNotFound, ModelNotReady
from serving.rollout.rollout import Observation, Rollout


@dataclass
class Prepared:
    """A request decoded for one model version: the feeds of its run, and what the after-answer hooks may use
    beyond them (the original image bytes or records, the geometry, the task's options)."""

    feeds: Feeds
    data: bytes | None = None  # the image file of a task request
    records: Any = None  # the JSON records of a tabular task request
    geometry: Geometry | None = None
    params: dict[str, float] = field(default_factory=dict)
    typed: bool = False  # True when `Inputs.finish` answers the task's typed result (ImageResult, TabularResults)


class Inputs(Protocol):
    """A protocol's request, decoded for whichever version the dataplane picks."""

    async def prepare(self, model: LoadedModel) -> Prepared: ...

    async def finish(self, model: LoadedModel, outputs: Feeds, prepared: Prepared) -> Any: ...


@dataclass(frozen=True)
class Answer:
    deployed: Deployed
    result: Any  # what `Inputs.finish` returned
    prepared: Prepared  # the request as decoded for that version

    @property
    def model(self) -> LoadedModel:
        return self.deployed.model


class DataPlane:
    """Lookup, routing, limits, batching and the after-answer hooks of every inference request."""

    def __init__(self, store: ModelStore, rollout: Rollout) -> None:
        self.store = store
        self.rollout = rollout

    def route(self, name: str | None, version: str | None = None, routing_key: str | None = None) -> Deployed:
        """The deployment that answers: the named version, or the canary's pick for `routing_key`."""
        slot = self.store.slot(name)
        production = slot.current
        if production is None:
            raise ModelNotReady(f"model {slot.name!r} is not loaded yet")
        canary = slot.canary
        if version in (None, ""):
            return production if canary is None else canary.pick(production, routing_key)
        if version == production.model.version:
            return production
        if canary is not None and version == canary.version:
            return canary.deployed
        served = production.model.version if canary is None else f"{production.model.version} and {canary.version}"
        raise ModelNotFound(f"model {slot.name!r} version {version!r} is not served; version {served} is")

    async def infer(
        self, name: str | None, version: str | None, routing_key: str | None, inputs: Inputs, state: Any = None
    ) -> Answer:
        """Answer one request; `state` (the request's state) is told the model and version that answer it."""
        started = time.perf_counter()
        deployed = self.route(name, version, routing_key)
        model = deployed.model
        if state is not None:
            state.model, state.version = model.name, model.version
        offpath = self.rollout.offpath
        offpath.begin()
        status = 500
        try:
            prepared = await inputs.prepare(model)
            outputs = await infer(deployed, prepared.feeds)
            result = await inputs.finish(model, outputs, prepared)
            status = 200
        except KilnError as err:
            status = err.status_code
            raise
        finally:
            offpath.end()
            self._record(deployed, status, time.perf_counter() - started)
        observed = Observation(
            feeds=prepared.feeds, outputs=outputs, result=result if prepared.typed else None, data=prepared.data,
            records=prepared.records, geometry=prepared.geometry, params=prepared.params,
            seconds=time.perf_counter() - started,
        )  # fmt: skip
        self.rollout.after_answer(deployed, observed)
        return Answer(deployed, result, prepared)

    def _record(self, deployed: Deployed, status: int, seconds: float) -> None:
        """The answer on the canary's side it came from (a 5xx is the model's error; a 4xx the client's), shared
        with the other workers so that the guard rails judge the whole server's answers."""
        slot = self.store.slots.get(deployed.model.name)
        if slot is not None and slot.canary is not None:
            self.rollout.record_answer(deployed, status, seconds)
