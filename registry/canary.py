"""Canary releases in the registry: the split every server applies, its guard rails, and its timeline events.

    kiln promote edgnet --version 4 --canary 10          # 10% of edgnet's traffic to v4, production keeps 90%
    kiln promote edgnet --canary 50                      # a step: the running canary now gets 50%
    kiln promote edgnet --finish-canary                  # production -> v4 through the usual gates; canary over
    kiln rollback edgnet                                 # ends the canary (production unchanged)

Finishing a canary is a promotion and ending one is part of a rollback: both live in registry/promotion.py
(`finish_canary`, `rollback`), which builds on this module.

The split lives in the registry, not in one server: the `canary` alias points at the candidate and the
registered-model tag `kiln.canary` holds the percentage, the production version it runs against and the guard
rails (JSON). Every `kiln serve` watching the model reads them on its next poll (or webhook) and routes the same
share, sticky per client when requests carry a routing key (serving/rollout/canary.py). A server whose guard rails fail
calls `end_canary(..., outcome="rollback")` with the numbers that failed; the first call wins, later ones find no
canary and change nothing. Each start, step, rollback and finish is an event of the model's timeline
(`kiln history`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from core import vocab
from registry.errors import InvalidRequestError, RegistryError
from registry.history import AliasEvent, default_user, now_utc, record_event
from registry.lookup import alias_holder, check_alias, get_model, get_version, parse_version, tags_of

CANARY_TAG = vocab.CANARY
CANARY_ALIAS = vocab.CANARY_ALIAS
DEFAULT_ALIAS = vocab.DEFAULT_ALIAS


class NoCanaryError(RegistryError):
    status_code = 409
    exit_code = 1


@dataclass(frozen=True)
class GuardRails:
    """When a server ends a canary by itself: a sequential test per rail (registry/sequential.py), checked after
    every answer once the candidate has `min_requests` answers (and `min_requests` shadow comparisons for the
    agreement rail), with a 1% chance in all of ending a canary whose candidate is as good as production. A rail
    fails when the data *prove* the limit crossed, not when one window's estimate crosses it."""

    max_error_rate: float = 0.05  # the candidate's 5xx share proved above this fails it (and 5xx above production's)
    # the candidate's latency tail proved above this multiple of production's fails it (+50% p99 must fail)
    max_p99_ratio: float = 1.2
    min_agreement: float = 0.8  # with shadow data on the candidate: its mean agreement proved below this fails it
    min_requests: int = 20
    window_seconds: float = 120.0

    def checked(self) -> GuardRails:
        problems = {
            "max_error_rate": 0 <= self.max_error_rate <= 1,
            "max_p99_ratio": self.max_p99_ratio > 0,
            "min_agreement": -1 <= self.min_agreement <= 1,
            "min_requests": self.min_requests >= 1,
            "window_seconds": self.window_seconds > 0,
        }
        for name, ok in problems.items():
            if not ok:
                raise InvalidRequestError(f"guard rail {name}={getattr(self, name)!r} is out of range")
        return self

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CanarySpec:
    """A running canary, as stored in the `kiln.canary` tag."""

    model: str
    version: int  # the candidate
    percent: float  # share of requests it answers
    production_version: int  # what held the alias when the canary started
    alias: str = DEFAULT_ALIAS  # the alias the candidate would take over
    started_at: str = ""
    by: str = ""
    step: int = 0  # 0 at the start, +1 for each change of percent
    guards: GuardRails = field(default_factory=GuardRails)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("model")
        return data

    @classmethod
    def parse(cls, model: str, text: str) -> CanarySpec:
        try:
            data = json.loads(text)
            guards = GuardRails(**data.pop("guards", {}))
            return cls(model=model, guards=guards, **data)
        except (json.JSONDecodeError, TypeError) as err:
            raise RegistryError(f"tag {CANARY_TAG} of model {model!r} is not a kiln canary: {err}") from None


def read_canary(client: MlflowClient, model: str) -> CanarySpec | None:
    """The canary running on `model`, or None."""
    text = tags_of(get_model(client, model)).get(CANARY_TAG)
    return CanarySpec.parse(model, text) if text else None


def merge_guards(running: CanarySpec | None, changes: Mapping[str, Any] | None) -> GuardRails | None:
    """The guard rails a canary start or step asks for: `changes` (GuardRails field -> value) over the running
    canary's rails, or over the defaults when none runs; None when nothing changes. Every front end passes its
    raw changes here. An unknown name or a value of the wrong kind raises InvalidRequestError naming it."""
    if not changes:
        return None
    kinds = {f.name: f.type for f in fields(GuardRails)}
    unknown = sorted(set(changes) - set(kinds))
    if unknown:
        raise InvalidRequestError(f"unknown guard rails {unknown}; known: {sorted(kinds)}")
    base = (running.guards if running is not None else GuardRails()).to_json()
    for name, value in changes.items():
        base[name] = _guard_value(name, value, kinds[name])
    return GuardRails(**base).checked()


def _guard_value(name: str, value: Any, kind: Any) -> int | float:
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None:
        raise InvalidRequestError(f"guard rail {name}={value!r} is not a number")
    if kind in (int, "int"):
        if float(number) != int(number):
            raise InvalidRequestError(f"guard rail {name}={value!r} must be a whole number")
        return int(number)
    return float(number)


def check_percent(percent: float) -> float:
    if not 0 < percent < 100:
        raise InvalidRequestError(f"canary percent {percent!r} must be above 0 and below 100")
    return float(percent)


def start_canary(
    model: str,
    *,
    version: int | str | None = None,
    percent: float,
    alias: str = DEFAULT_ALIAS,
    guards: GuardRails | Mapping[str, Any] | None = None,
    reason: str = "",
    by: str | None = None,
    client: MlflowClient | None = None,
) -> CanarySpec:
    """Send `percent` of `model`'s traffic to `version` while `alias` keeps the rest; with a canary of the same
    version running (or no version given), change its percent (a step). `guards` is a GuardRails, or changes
    to the running canary's rails (or to the defaults) as `merge_guards` reads them."""
    client = client or MlflowClient()
    check_alias(alias)
    percent = check_percent(percent)
    running = read_canary(client, model)
    if guards is not None and not isinstance(guards, GuardRails):
        guards = merge_guards(running, guards)
    if running is not None and (version is None or parse_version(version) == running.version):
        return _step(client, running, percent, guards, reason, by or default_user())
    if running is not None:
        raise InvalidRequestError(
            f"a canary of {model} v{running.version} at {running.percent:g}% is running; finish it "
            f"(kiln promote {model} --finish-canary) or end it (kiln rollback {model}) first"
        )
    if version is None:
        raise NoCanaryError(f"no canary is running on {model}; start one with --version N --canary PERCENT")
    candidate = get_version(client, model, parse_version(version))
    if candidate.status != "READY":
        raise InvalidRequestError(f"{model} v{candidate.version} is {candidate.status}, not READY")
    production = alias_holder(get_model(client, model), alias)
    if production is None:
        raise InvalidRequestError(
            f"{model} has no {alias} version to run a canary against; promote one first (kiln promote {model} "
            "--version N)"
        )
    if production == int(candidate.version):
        raise InvalidRequestError(f"{model} v{production} already holds {alias}; a canary needs another version")
    at = now_utc()
    spec = CanarySpec(
        model=model, version=int(candidate.version), percent=percent, production_version=production, alias=alias,
        started_at=at.isoformat(timespec="milliseconds"), by=by or default_user(),
        guards=(guards or GuardRails()).checked(),
    )  # fmt: skip
    client.set_registered_model_alias(model, CANARY_ALIAS, str(spec.version))
    _write(client, spec)
    _record(client, spec, "canary-start", reason or f"canary of v{spec.version} at {percent:g}%", spec.by)
    return spec


def _step(
    client: MlflowClient, running: CanarySpec, percent: float, guards: GuardRails | None, reason: str, by: str
) -> CanarySpec:
    if percent == running.percent and guards in (None, running.guards):
        return running
    spec = replace(running, percent=percent, step=running.step + 1, guards=(guards or running.guards).checked())
    _write(client, spec)
    text = reason or f"canary of v{spec.version}: {running.percent:g}% -> {percent:g}%"
    _record(client, spec, "canary-step", text, by, {"previous_percent": running.percent})
    return spec


def end_canary(
    model: str,
    *,
    outcome: str = "rollback",
    reason: str = "",
    numbers: dict[str, Any] | None = None,
    version: int | None = None,
    by: str | None = None,
    client: MlflowClient | None = None,
) -> AliasEvent | None:
    """End the running canary (`outcome` "rollback" or "finish"), recording why with `numbers`. Returns None when
    there is none, or when `version` is given and the running canary is of another version (a server ending a
    canary it saw earlier must not end a newer one)."""
    if outcome not in ("rollback", "finish"):
        raise InvalidRequestError(f"canary outcome {outcome!r} is not 'rollback' or 'finish'")
    client = client or MlflowClient()
    running = read_canary(client, model)
    if running is None or (version is not None and running.version != version):
        return None
    try:
        client.delete_registered_model_tag(model, CANARY_TAG)
    except MlflowException:
        return None  # another server ended it first
    registered = get_model(client, model)
    if int(registered.aliases.get(CANARY_ALIAS, 0) or 0) == running.version:
        client.delete_registered_model_alias(model, CANARY_ALIAS)
    return _record(client, running, f"canary-{outcome}", reason, by or default_user(), numbers)


def _write(client: MlflowClient, spec: CanarySpec) -> None:
    client.set_registered_model_tag(spec.model, CANARY_TAG, json.dumps(spec.to_json(), sort_keys=True))


def _record(
    client: MlflowClient, spec: CanarySpec, action: str, reason: str, by: str, numbers: dict[str, Any] | None = None
) -> AliasEvent:
    at = now_utc()
    details = {"percent": spec.percent, "step": spec.step, "guards": spec.guards.to_json(), **(numbers or {})}
    event = AliasEvent(
        model=spec.model, alias=spec.alias, action=action, version=spec.version,
        previous_version=spec.production_version, at=at.isoformat(timespec="milliseconds"), by=by, reason=reason,
        canary=details,
    )  # fmt: skip
    return record_event(client, event, at)
