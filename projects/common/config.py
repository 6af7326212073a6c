"""Resolve a training config in one order: dataclass defaults, then a YAML file, then command-line flags.

    python -m projects.edgnet.train --config my.yaml --epochs 3

A flag overrides the YAML only when it was given: MLproject passes every parameter, so an empty string
(or None) stands for "not given" and leaves the YAML or default value in place.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from core.errors import ConfigError as ConfigError
from core.errors import run_cli
from core.settings import FALSE, TRUE

T = TypeVar("T")


def config_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _coerce(cls_name: str, name: str, kind: Any, value: Any) -> Any:
    """Convert `value` to the field's declared type, naming the field when it cannot."""
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None:
            return None
        kind = args[0]
    if kind is bool and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in TRUE:
            return True
        if lowered in FALSE:
            return False
        raise ConfigError(f"{cls_name}.{name}: expected true/false, got {value!r}")
    try:
        if kind is int and isinstance(value, float | str):
            as_float = float(value)
            if not as_float.is_integer():
                raise ValueError
            return int(as_float)
        if kind in (int, float, str):
            return kind(value)
        if typing.get_origin(kind) in (list, tuple):
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            inner = typing.get_args(kind)[0] if typing.get_args(kind) else str
            return list(inner(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"{cls_name}.{name}: expected {getattr(kind, '__name__', kind)}, got {value!r}") from None
    return value


def resolve_config(
    cls: type[T],
    yaml_path: str | Path | None = None,
    flags: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
) -> T:
    """Build `cls` from its defaults, then `base` (a preset's overrides), then `yaml_path`, then the flags that
    were actually given."""
    fields = config_fields(cls)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = dict(_given(cls, base or {}, fields))
    if yaml_path:
        values.update(_read_yaml(Path(yaml_path), fields))
    values.update(_given(cls, flags or {}, fields))
    coerced = {k: _coerce(cls.__name__, k, hints[k], v) for k, v in values.items()}
    if coerced.get("model_name"):  # "" keeps the family's own name
        _check_model_name(cls.__name__, coerced["model_name"])
    return cls(**coerced)


def _check_model_name(cls_name: str, name: Any) -> None:
    """The registry's name rule, checked before training rather than at registration after it."""
    from registry.errors import InvalidRequestError
    from registry.names import check_model_name

    try:
        check_model_name(name)
    except InvalidRequestError as err:
        raise ConfigError(f"{cls_name}.model_name: {err.message}") from None


def _given(cls: type, flags: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """The flags that were given (None and "" mean "not given"); an unknown name is an error naming it."""
    given: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None or value == "":
            continue
        if key not in fields:
            raise ConfigError(f"unknown option {key!r} for {cls.__name__}; known: {sorted(fields)}")
        given[key] = value
    return given


def _read_yaml(path: Path, fields: Mapping[str, Any]) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value, got {type(loaded).__name__}")
    flat = {k.replace("-", "_"): v for k, v in _flatten_sections(loaded, fields).items()}
    unknown = sorted(set(flat) - set(fields))
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; known: {sorted(fields)}")
    return flat


def _flatten_sections(loaded: dict[str, Any], fields: Mapping[str, Any] = {}) -> dict[str, Any]:  # noqa: B006
    """Allow grouping keys under sections (`train: {epochs: 3}`) as the seed's YAML configs do; a mapping under
    a str field's own name whose keys are no config fields (`augment: {hflip: 0.5}`) is that field's value,
    kept as JSON (a section may share a field's name: cr_recon's `model: {model: cnn_xattn, ...}`)."""
    flat: dict[str, Any] = {}
    for key, value in loaded.items():
        if isinstance(value, dict) and _is_str_value(key, value, fields):
            flat[key] = json.dumps(value)
        elif isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def _is_str_value(key: str, value: dict[str, Any], fields: Mapping[str, Any]) -> bool:
    field = fields.get(key.replace("-", "_"))
    is_str = field is not None and field.type in (str, "str")
    return is_str and not {str(k).replace("-", "_") for k in value} & set(fields)


class Lenient(click.ParamType[Any, Any]):
    """INTEGER or FLOAT in `--help`, checked as such, but passed on as given: MLproject passes every param as a
    string (`--epochs 3.0` for a float param), "" means "not given", and `resolve_config` types the value."""

    def __init__(self, kind: type) -> None:
        self.kind = kind
        self.name = {int: "integer", float: "float"}[kind]

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or value == "" or not isinstance(value, str):
            return value
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is not a {'whole number' if self.kind is int else 'number'}", param, ctx)
        if self.kind is int and not number.is_integer():
            self.fail(f"{value!r} is not a whole number", param, ctx)
        return value


INTEGER, FLOAT = Lenient(int), Lenient(float)


class OneOf(click.Choice):  # type: ignore[type-arg]
    """A choice that also takes "" (MLproject's "not given")."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return value if value in (None, "") else super().convert(value, param, ctx)


def _field_kind(cls: type, name: str) -> Any:
    kind = typing.get_type_hints(cls).get(name)
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        kind = args[0] if len(args) == 1 else kind
    return kind


def config_options(
    cls: type, defaults: Mapping[str, Any] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add one kebab-case click option per dataclass field, plus `--config`; all default to "not given".

    Help text comes from the field's `metadata["help"]`; `defaults` (a preset's overrides) replace the dataclass
    defaults shown there. Integers and floats show as INTEGER and FLOAT and are checked, booleans are flags
    (`--skip-bad` / `--no-skip-bad`); values are typed by `resolve_config`, so a bad value in a YAML file and in a
    flag is reported with the field name the same way.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for field in reversed(dataclasses.fields(cls)):
            func = _option(cls, field, (defaults or {}))(func)
        return click.option("--config", "config_path", default=None, help="YAML file of option: value pairs.")(func)

    return decorate


def _option(cls: type, field: dataclasses.Field[Any], defaults: Mapping[str, Any]) -> Callable[..., Any]:
    flag = "--" + field.name.replace("_", "-")
    if field.name in defaults:
        default = defaults[field.name]
    elif field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        default = None
    help_text = f"{field.metadata.get('help', '')} [default: {default!r}]".strip()
    kind = _field_kind(cls, field.name)
    if kind is bool:
        return click.option(f"{flag}/--no-{flag[2:]}", field.name, default=None, help=help_text)
    choices = field.metadata.get("choices")
    param_type = OneOf(list(choices)) if choices else {int: INTEGER, float: FLOAT}.get(kind)
    return click.option(flag, field.name, default=None, type=param_type, help=help_text)


def cfg_field(default: Any, help: str, choices: tuple[str, ...] = ()) -> Any:
    """A dataclass field with a help string used by `config_options` (the comment on the default), and the
    values a flag may take when it is one of a few words."""
    return dataclasses.field(default=default, metadata={"help": help, **({"choices": choices} if choices else {})})


REGISTER_MODES = ("auto", "always", "never")


def register_field() -> Any:
    """The `register` option every family config carries (projects/common/registration.py acts on it)."""
    return cfg_field(
        "auto", "auto: register only when the model beats the family's trivial baseline; always; never", REGISTER_MODES
    )


def entry_point(
    cls: type[T],
    train: Callable[[T], Any],
    help: str,
    load: Callable[[str | None, Mapping[str, Any]], T] | None = None,
) -> click.Command:
    """The `main` of a family's train module: flags from `cls`, resolve the config, call `train`.

    `load` replaces the default resolution (defaults -> YAML -> flags) where a family needs its own, such as
    a default YAML file. User errors from either step print one `Error:` line and exit 1.
    """

    def resolve(config_path: str | None, flags: Mapping[str, Any]) -> T:
        return load(config_path, flags) if load else resolve_config(cls, config_path, flags)

    @click.command(help=help)
    @config_options(cls)
    def main(config_path: str | None, **flags: Any) -> None:
        run_cli(train, run_cli(resolve, config_path, flags))

    return main
