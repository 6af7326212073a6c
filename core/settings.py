"""The one way kiln reads settings from the environment: a frozen dataclass, one variable per field.

    python -c "from core.settings import read_env; from serving.settings import ServeSettings; \
print(read_env(ServeSettings, {'KILN_POLL_SECONDS': '5'}).poll_seconds)"

Each service declares its settings once, as a dataclass with a comment on every default (as Starlette's
`Config`); `read_env` fills it from `KILN_<FIELD>` variables (or the names a class maps), parsing each value
by the field's type. A value that does not parse stops the start with a `SettingsError` naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from core.errors import SettingsError

T = TypeVar("T")

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off"})


def env_name(field_name: str, names: Mapping[str, str] | None = None, prefix: str = "KILN_") -> str:
    """The variable of a settings field: `names[field]` when mapped, else PREFIX + FIELD in capitals."""
    if names and field_name in names:
        return names[field_name]
    return f"{prefix}{field_name.upper()}"


def parse_bool(var: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise SettingsError(f"{var}={raw!r} is not a boolean; use 1/0, true/false, yes/no or on/off")


def parse_names(var: str, raw: str) -> tuple[str, ...]:
    """`a, b,,c` -> ("a", "b", "c"); a name given twice is an error."""
    items = tuple(n.strip() for n in raw.split(",") if n.strip())
    twice = sorted({n for n in items if items.count(n) > 1})
    if twice:
        raise SettingsError(f"{var}: names given twice: {twice}")
    return items


def parse_value(var: str, raw: str, kind: Any) -> Any:
    """`raw` as the field type `kind` (bool, int, float, str, Path, tuple[str, ...], or X | None)."""
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if kind is bool:
        return parse_bool(var, raw)
    if kind in (int, float):
        try:
            return kind(raw.strip())
        except ValueError:
            raise SettingsError(f"{var}={raw!r} is not a valid {kind.__name__}") from None
    if kind is Path:
        return Path(raw).expanduser()
    if typing.get_origin(kind) is tuple:
        return parse_names(var, raw)
    return raw


def read_env(
    cls: type[T],
    environ: Mapping[str, str] | None = None,
    *,
    names: Mapping[str, str] | None = None,
    prefix: str = "KILN_",
    parsers: Mapping[str, Callable[[str, str], Any]] | None = None,
    **overrides: Any,
) -> T:
    """Build `cls` from its defaults, then the environment, then `overrides` that are not None.

    Args:
        names: field -> variable, for fields whose variable is not PREFIX + FIELD (MLFLOW_TRACKING_URI).
        parsers: field -> parse(var, raw), for values that need more than their type says.
    """
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        var = env_name(f.name, names, prefix)
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        parse = (parsers or {}).get(f.name)
        values[f.name] = parse(var, raw) if parse else parse_value(var, raw, hints[f.name])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)


def to_env(settings: Any, *, names: Mapping[str, str] | None = None, prefix: str = "KILN_") -> dict[str, str]:
    """Settings back as variables, so that worker processes rebuild the same object with `read_env`."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if value is None:
            continue
        if isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "1" if value else "0"
        out[env_name(f.name, names, prefix)] = str(value)
    return out
