"""Option parsing shared by `kiln tune`/`kiln cv` and their MLproject entry points (strings, "" = not given).

python -c "from experiments.options import _sets; print(parse_overrides(('epochs=3',), 'lr=0.1 batch_size=4'))"
"""

from __future__ import annotations

from typing import Any

import click


def parse_overrides(pairs: tuple[str, ...], joined: str) -> dict[str, str]:
    """`--set k=v` (repeatable) plus `--sets "k=v k2=v2"` (the MLproject entry points pass one string)."""
    from projects.train_cli import parse_sets

    return parse_sets([*pairs, *joined.split()])


def optional_number(text: str, flag: str, kind: type = float) -> Any:
    if not text.strip():
        return None
    try:
        return kind(float(text))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a number", param_hint=flag) from None


def flag_value(text: str, flag: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise click.BadParameter(f"{text!r} is not true or false", param_hint=flag)
    return value in ("true", "1", "yes")
