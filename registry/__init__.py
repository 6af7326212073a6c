"""Model promotion on MLflow registry aliases: gated promotion, rollback, the alias timeline, a model list.

    kiln promote edgnet --version 3 --metric val_iou --min 0.7

The Python API (each function takes an optional `client: MlflowClient`, else uses MLFLOW_TRACKING_URI):
`promote`, `rollback` -> `PromotionResult`; `history` -> list[`AliasEvent`]; `list_models` ->
list[`ModelSummary`]; `set_metric_hint` tags a model with the metric its promotions are judged by.
Failures raise `RegistryError` subclasses carrying `status_code` and `detail`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from registry.errors import PromotionRefusedError, RegistryError
from registry.gates import GateCheck, MetricChoice

if TYPE_CHECKING:
    from registry.history import AliasEvent
    from registry.models import AliasInfo, ModelSummary, list_models
    from registry.promotion import PromotionResult, history, promote, rollback, set_metric_hint

# name -> module; these import mlflow (seconds), so they load on first use and `kiln promote --help` stays instant
_LAZY = {
    "AliasEvent": "registry.history",
    "AliasInfo": "registry.models",
    "ModelSummary": "registry.models",
    "list_models": "registry.models",
    "PromotionResult": "registry.promotion",
    "history": "registry.promotion",
    "promote": "registry.promotion",
    "rollback": "registry.promotion",
    "set_metric_hint": "registry.promotion",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'registry' has no attribute {name!r}")


__all__ = [
    "AliasEvent",
    "AliasInfo",
    "GateCheck",
    "MetricChoice",
    "ModelSummary",
    "PromotionRefusedError",
    "PromotionResult",
    "RegistryError",
    "history",
    "list_models",
    "promote",
    "rollback",
    "set_metric_hint",
]
