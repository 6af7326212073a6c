"""Entry points and typed parameters read from an MLproject file, and validation of a job's params against them.

    python -m jobs.mlproject MLproject        # prints every entry point with its parameters

The job service offers exactly the entry points the MLproject declares. A start request's params are checked
here, before anything runs: an unknown entry point or parameter, a missing required value, or a value of the
wrong type raises `ParamError`, which names the entry point, the parameter and the value.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from jobs.paths import PathNotAllowedError, confine_params, default_roots

# MLflow's parameter types (https://mlflow.org/docs/latest/projects.html#specifying-parameters).
PARAM_TYPES = ("string", "float", "path", "uri")


class MLprojectError(ValueError):
    """The MLproject file itself is unreadable or malformed; the message names the file and the spot."""


class ParamError(ValueError):
    """A start request that does not fit the MLproject; `field` is the JSON field the client should fix."""

    def __init__(self, detail: str, field: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # one of PARAM_TYPES
    default: str | float | None  # None: the param is required

    @property
    def required(self) -> bool:
        return self.default is None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "default": self.default, "required": self.required}


@dataclass(frozen=True)
class EntryPoint:
    name: str
    params: dict[str, Param]
    command: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "command": self.command, "params": [p.as_json() for p in self.params.values()]}


def load_entry_points(mlproject: Path) -> dict[str, EntryPoint]:
    """Every entry point of `mlproject`, in file order."""
    try:
        spec = yaml.safe_load(mlproject.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise MLprojectError(f"cannot read {mlproject}: {exc}") from exc
    entries = spec.get("entry_points") if isinstance(spec, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise MLprojectError(f"{mlproject} has no entry_points mapping")
    return {str(name): _entry_point(mlproject, str(name), body) for name, body in entries.items()}


def _entry_point(mlproject: Path, name: str, body: Any) -> EntryPoint:
    if not isinstance(body, dict) or not isinstance(body.get("command"), str):
        raise MLprojectError(f"{mlproject}: entry point {name!r} has no command")
    raw_params = body.get("parameters") or {}
    if not isinstance(raw_params, dict):
        raise MLprojectError(f"{mlproject}: entry point {name!r} parameters is not a mapping")
    params = {str(key): _param(mlproject, name, str(key), spec) for key, spec in raw_params.items()}
    return EntryPoint(name=name, params=params, command=body["command"])


def _param(mlproject: Path, entry_point: str, name: str, spec: Any) -> Param:
    # MLflow allows the short form `name: type` as well as `name: {type: ..., default: ...}`.
    ptype, default = (spec, None) if isinstance(spec, str) else (spec.get("type", "string"), spec.get("default"))
    if ptype not in PARAM_TYPES:
        raise MLprojectError(
            f"{mlproject}: entry point {entry_point!r} param {name!r} has type {ptype!r}; known: {PARAM_TYPES}"
        )
    return Param(name=name, type=ptype, default=default)


class MLproject:
    """The MLproject of a project folder, re-read when the file changes (others edit it while the service runs)."""

    def __init__(self, project_dir: Path, file_roots: tuple[Path, ...] = ()) -> None:
        self.project_dir = project_dir
        self.file_roots = file_roots or default_roots(project_dir)  # where params naming files may point
        self.path = project_dir / "MLproject"
        self._cache: tuple[float, dict[str, EntryPoint]] | None = None

    def entry_points(self) -> dict[str, EntryPoint]:
        try:
            mtime = self.path.stat().st_mtime
        except OSError as exc:
            raise MLprojectError(f"cannot read {self.path}: {exc.strerror}") from exc
        if self._cache is None or self._cache[0] != mtime:
            self._cache = (mtime, load_entry_points(self.path))
        return self._cache[1]

    def get(self, name: str) -> EntryPoint:
        entries = self.entry_points()
        if name not in entries:
            raise ParamError(f"unknown entry point {name!r}; known: {sorted(entries)}", field="entry_point")
        return entries[name]

    def validate(self, entry_point: str, params: Mapping[str, Any]) -> dict[str, str]:
        """The `-P name=value` strings for a start request, or ParamError naming what is wrong."""
        ep = self.get(entry_point)
        unknown = sorted(set(params) - set(ep.params))
        if unknown:
            raise ParamError(
                f"entry point {entry_point!r} has no param {unknown[0]!r}; its params: {sorted(ep.params)}",
                field=f"params.{unknown[0]}",
            )
        missing = [p.name for p in ep.params.values() if p.required and p.name not in params]
        if missing:
            raise ParamError(f"entry point {entry_point!r} needs a value for {missing[0]!r}", f"params.{missing[0]}")
        # before any coercion: a `path` param's existence check must not answer for files outside the roots
        path_params = [p.name for p in ep.params.values() if p.type == "path"]
        try:
            confine_params(params, self.file_roots, self.project_dir, path_params)
        except PathNotAllowedError as exc:
            raise ParamError(exc.detail, exc.field) from None
        return {name: self._coerce(ep, ep.params[name], value) for name, value in params.items()}

    def _coerce(self, ep: EntryPoint, param: Param, value: Any) -> str:
        try:
            text = COERCERS[param.type](value, self.project_dir)
        except ValueError as exc:
            raise ParamError(
                f"entry point {ep.name!r} param {param.name!r} ({param.type}): {value!r} {exc}",
                field=f"params.{param.name}",
            ) from None
        if "\x00" in text:
            raise ParamError(f"entry point {ep.name!r} param {param.name!r}: NUL in {value!r}", f"params.{param.name}")
        return text


COERCERS: dict[str, Callable[[Any, Path], str]] = {}


def coercer(ptype: str) -> Callable[[Callable[[Any, Path], str]], Callable[[Any, Path], str]]:
    def register(func: Callable[[Any, Path], str]) -> Callable[[Any, Path], str]:
        COERCERS[ptype] = func
        return func

    return register


@coercer("float")
def _to_float(value: Any, project_dir: Path) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("is not a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError("is not a number") from None
    if not math.isfinite(number):
        raise ValueError("is not a finite number")
    # Integral values go out without ".0": the training CLIs read epochs, batch sizes and seeds as click ints.
    return str(int(number)) if number.is_integer() and abs(number) < 2**63 else repr(number)


@coercer("string")
def _to_string(value: Any, project_dir: Path) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("is not a string")
    return str(value)


@coercer("path")
def _to_path(value: Any, project_dir: Path) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("is not a path")
    if _is_uri(value):
        return value  # MLflow downloads remote URIs itself
    # `mlflow run` runs in the project folder, so a relative path means one inside it.
    path = Path(value).expanduser()
    if not (path if path.is_absolute() else project_dir / path).exists():
        raise ValueError(f"does not exist (relative paths start at {project_dir})")
    return str(path)


@coercer("uri")
def _to_uri(value: Any, project_dir: Path) -> str:
    if not isinstance(value, str) or not _is_uri(value):
        raise ValueError("is not a URI (scheme://...)")
    return value


def _is_uri(value: str) -> bool:
    scheme = urlparse(value).scheme
    return len(scheme) > 1  # "C:" is a drive letter, not a scheme


def main(argv: list[str]) -> None:
    path = Path(argv[0] if argv else "MLproject")
    for ep in load_entry_points(path).values():
        shown = [f"{p.name}: {p.type}" + ("" if p.required else f"={p.default!r}") for p in ep.params.values()]
        print(f"{ep.name}({', '.join(shown)})")


if __name__ == "__main__":
    from core.scripts import script_args

    main(script_args(sys.argv[1:], "python -m jobs.mlproject [MLPROJECT]", __doc__, range(0, 2)))
