"""Model promotion on MLflow registry aliases: gated promotion, rollback, the alias timeline, a model list.

    kiln promote edgnet --version 3 --metric val_iou --min 0.7

The Python API (each function takes an optional `client: MlflowClient`, else uses MLFLOW_TRACKING_URI):
`promote`, `rollback` -> `PromotionResult`; `history` -> list[`AliasEvent`]; `list_models` ->
list[`ModelSummary`]; `set_metric_hint` tags a model with the metric its promotions are judged by.
Failures raise `RegistryError` subclasses carrying `status_code` and `detail`.
"""

from registry.errors import PromotionRefusedError, RegistryError
from registry.gates import GateCheck, MetricChoice
from registry.history import AliasEvent
from registry.models import AliasInfo, ModelSummary, list_models
from registry.promotion import PromotionResult, history, promote, rollback, set_metric_hint

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
