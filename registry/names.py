"""The names the registry accepts: registered model names, aliases and experiment names, one rule for every front end.

    python -c "from registry.names import check_alias; check_alias('production')"

A model or alias name is ASCII: a letter, then up to 63 letters, digits, `_` or `-` (`NAME_PATTERN`), and not one
of the words MLflow gives a meaning of its own: `latest` (any case) and `v<N>` name versions in `models:/` URIs and
aliases (any other word, `champion` say, is free). MLflow alone accepts `Üq4dZ3`, `¼` or `__main__`, which then
show up in URIs, shell commands and metric labels. An experiment name is wider (people write `team/edge detection
2`): printable ASCII letters, digits, space and `_ . , - / : @ +`, starting with a letter or digit, at most 200
characters; no shell metacharacters, quotes or control characters. The CLI, the MLproject entry points, training
and the jobs API all call these functions; they raise `InvalidRequestError` (a 4xx on the web, exit code 2 on the
command line).
"""

from __future__ import annotations

import re

from registry.errors import InvalidRequestError

NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_-]{0,63}"
EXPERIMENT_PATTERN = r"[A-Za-z0-9][A-Za-z0-9 _.,/:@+-]{0,199}"
_NAME = re.compile(NAME_PATTERN)
_EXPERIMENT = re.compile(EXPERIMENT_PATTERN)
_RESERVED = re.compile(r"latest|v\d+", re.IGNORECASE)  # MLflow's version words: models:/m/latest, @v3


def check_name(value: object, what: str) -> str:
    """`value` when it is a valid model or alias name; else InvalidRequestError naming `what` and the rule."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"{what} must be a string, got {value!r}")
    if not _NAME.fullmatch(value):
        raise InvalidRequestError(
            f"{what} {value[:80]!r} is not a valid name: an ASCII letter, then up to 63 letters, digits, '_' or '-'"
        )
    if _RESERVED.fullmatch(value):
        raise InvalidRequestError(f"{what} {value!r} is reserved by MLflow ('latest' and 'v<N>' name versions)")
    return value


def check_alias(alias: object) -> str:
    return check_name(alias, "alias")


def check_model_name(name: object) -> str:
    return check_name(name, "model name")


def check_experiment_name(name: object) -> str:
    """A valid experiment name (see the module docstring), else InvalidRequestError."""
    if not isinstance(name, str):
        raise InvalidRequestError(f"experiment name must be a string, got {name!r}")
    if not _EXPERIMENT.fullmatch(name) or name != name.strip():
        raise InvalidRequestError(
            f"experiment name {name[:80]!r} is not valid: a letter or digit, then up to 199 ASCII letters, digits, "
            "spaces or _ . , - / : @ + (no quotes, shell characters or control characters)"
        )
    return name
