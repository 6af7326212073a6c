"""The search space of `kiln tune`: a YAML file naming each searched config field, checked before any trial runs.

    python -m experiments.space skinmodel space.yaml      # prints the parsed space, or the first problem

    learning_rate: {type: float, low: 0.01, high: 0.3, log: true}
    max_depth: {type: int, low: 2, high: 6}
    booster_kind: {type: categorical, choices: [a, b]}
    n_estimators: 50            # a plain value is fixed for every trial

Every key must be a field of the family's config dataclass, and every bound, step and choice must be a value the
config accepts (each is resolved through the family's config once), so a typo fails in a second, not after the
first trial has trained.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import ConfigError, KilnError

KINDS = ("float", "int", "categorical")
SPEC_KEYS = {"type", "low", "high", "log", "step", "choices"}


@dataclass(frozen=True)
class Dist:
    """One searched parameter, as Optuna's suggest_float / suggest_int / suggest_categorical take it."""

    name: str
    kind: str  # float, int or categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def probe_values(self) -> list[Any]:
        """The values that bound this parameter: each must resolve through the family's config."""
        if self.kind == "categorical":
            return list(self.choices)
        return [self.low, self.high]


@dataclass(frozen=True)
class Space:
    searched: dict[str, Dist]
    fixed: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the file it came from

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask an Optuna trial for one value of every searched parameter."""
        values: dict[str, Any] = {}
        for name, d in self.searched.items():
            if d.kind == "categorical":
                values[name] = trial.suggest_categorical(name, list(d.choices))
            elif d.kind == "int":
                values[name] = trial.suggest_int(
                    name, int(d.low or 0), int(d.high or 0), step=int(d.step or 1), log=d.log
                )
            else:
                values[name] = trial.suggest_float(name, float(d.low or 0), float(d.high or 0), step=d.step, log=d.log)
        return values

    def describe(self) -> list[str]:
        lines = []
        for d in self.searched.values():
            if d.kind == "categorical":
                lines.append(f"{d.name}: one of {list(d.choices)}")
            else:
                scale = ", log" if d.log else (f", step {d.step:g}" if d.step else "")
                lines.append(f"{d.name}: {d.kind} in [{d.low:g}, {d.high:g}]{scale}")
        lines += [f"{k}: fixed {v!r}" for k, v in self.fixed.items()]
        return lines


def read_space_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (a relative path is read from the working folder {Path.cwd()})"
        raise ConfigError(f"space file not found: {path.resolve()}{where}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: expected a mapping of config field -> search spec or fixed value")
    return data


def parse_space(data: Mapping[str, Any], source: str = "space") -> Space:
    searched: dict[str, Dist] = {}
    fixed: dict[str, Any] = {}
    for key, spec in data.items():
        name = str(key).replace("-", "_")
        if isinstance(spec, dict):
            searched[name] = _dist(name, spec, source)
        else:
            fixed[name] = spec
    if not searched:
        raise ConfigError(f"{source}: no searched parameter (give at least one {{type: float|int|categorical, ...}})")
    return Space(searched, fixed, source)


def _dist(name: str, spec: Mapping[str, Any], source: str) -> Dist:
    where = f"{source}: {name}"
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; a spec takes {sorted(SPEC_KEYS)}")
    kind = spec.get("type")
    if kind not in KINDS:
        raise ConfigError(f"{where}: type must be one of {list(KINDS)}, got {kind!r}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: a categorical needs a non-empty list `choices`")
        return Dist(name, kind, choices=tuple(choices))
    low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log", False)
    number = int if kind == "int" else (int, float)
    for label, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, number):
            raise ConfigError(
                f"{where}: {label} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}"
            )
    assert low is not None and high is not None
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got {low}")
    if step is not None and (isinstance(step, bool) or not isinstance(step, number) or step <= 0 or log):
        raise ConfigError(f"{where}: step must be a positive {kind} and cannot go with log, got {step!r}")
    return Dist(name, kind, float(low), float(high), log, float(step) if step is not None else None)


def check_space(space: Space, config_cls: type[Any], resolve: Any, base: Mapping[str, Any]) -> None:
    """Every key a field of `config_cls`, not also given by --set, and every bound a value the config accepts.

    `resolve(overrides)` builds the family's config from `base` plus overrides (it raises ConfigError).
    """
    fields = {f.name for f in dataclasses.fields(config_cls)}
    for name in [*space.searched, *space.fixed]:
        if name not in fields:
            raise ConfigError(
                f"{space.source}: {name!r} is not an option of {config_cls.__name__}; known: {sorted(fields)}"
            )
        if name in base:
            raise ConfigError(f"{space.source}: {name!r} is also given by --set; keep it in one place")
    _probe(space.source, resolve, {**base, **space.fixed}, "fixed values")
    for d in space.searched.values():
        for value in d.probe_values():
            _probe(space.source, resolve, {**base, **space.fixed, d.name: _plain(d, value)}, f"{d.name}={value!r}")


def _plain(d: Dist, value: Any) -> Any:
    return int(value) if d.kind == "int" else value


def _probe(source: str, resolve: Any, overrides: Mapping[str, Any], what: str) -> None:
    try:
        resolve(dict(overrides))
    except KilnError as err:
        raise ConfigError(f"{source}: {what}: {err.message}") from None


def load_space(path: str | Path, target: str, base: Mapping[str, Any]) -> Space:
    """Read, parse and check a space file against the family (or preset) `target`, with `base` from --set."""
    from projects.common.families import resolve_family_config

    space = parse_space(read_space_file(path), str(path))
    family, _ = resolve_family_config(target, dict(base))
    check_space(space, family.config_cls, lambda o: resolve_family_config(target, o), base)
    return space


if __name__ == "__main__":
    from core.scripts import script_args

    script_args(sys.argv[1:], "python -m experiments.space FAMILY_OR_PRESET SPACE.yaml", __doc__, range(2, 3))
    try:
        print("\n".join(load_space(sys.argv[2], sys.argv[1], {}).describe()))
    except KilnError as err:
        sys.exit(f"Error: {err.message}")
