"""Name -> builder registries filled by a decorator, as timm's `@register_model`, with named errors.

    python -c "from projects.edgnet.model import MODELS; print(sorted(MODELS))"

A registry is a dict, so `name in MODELS` and `sorted(MODELS)` work as usual; `create` checks the name
and the parameters before calling the builder, so a typo in a config names itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

B = TypeVar("B", bound=Callable[..., Any])


class Registry(dict[str, Callable[..., Any]]):
    def __init__(self, kind: str, error: type[ValueError] = ValueError) -> None:
        super().__init__()
        self.kind = kind  # "model", "loss": used in error messages
        self.error = error

    def register(self, name: str | None = None) -> Callable[[B], B]:
        """Decorator adding a builder under `name` (default: the builder's own name)."""

        def add(builder: B) -> B:
            key = name or builder.__name__
            if key in self and self[key] is not builder:
                raise ValueError(f"{self.kind} {key!r} registered twice")
            self[key] = builder
            return builder

        return add

    def create(self, name: str, **params: Any) -> Any:
        """Build `name` with `params` replacing its defaults; unknown names and parameters are named."""
        if name not in self:
            raise self.error(f"unknown {self.kind} {name!r}; known: {sorted(self)}")
        builder = self[name]
        accepted = set(inspect.signature(builder).parameters)
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise self.error(f"{self.kind} {name!r} has no parameter(s) {unknown}; it takes {sorted(accepted)}")
        return builder(**params)
