"""Decoded data shared by the runs of one study or fold set: `kiln tune` and `kiln cv` decode a dataset once.

    python -c "from projects.common.datacache import sharing, shared; print(sharing, shared)"

Inside `with sharing():` a family's `shared(key, build)` returns what `build()` returned the first time that key
was asked for, so every trial (or fold) of the block reuses the decoded images instead of reading and decoding
the folder again. Outside a block `shared` simply calls `build()`: a lone training run decodes once anyway and
keeps nothing alive after it ends. The key must name everything the decoded value depends on (the folder, the
size, the decode options); the value must not be changed in place by its users (a split picks items from it,
augmentation makes new arrays).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_SCOPES: list[dict[Hashable, Any]] = []


@contextlib.contextmanager
def sharing() -> Iterator[None]:
    """Share decoded data between the runs trained inside the block (a study's trials, a cv's folds)."""
    _SCOPES.append({})
    try:
        yield
    finally:
        _SCOPES.pop()


def shared(key: Hashable, build: Callable[[], T]) -> T:
    """`build()`, once per `key` inside a `sharing()` block; every time outside one."""
    if not _SCOPES:
        return build()
    scope = _SCOPES[-1]
    if key not in scope:
        scope[key] = build()
    return scope[key]  # type: ignore[no-any-return]
