"""A gate's verdict, on its own so that errors and gates can both name it without importing each other.

python -c "from registry.checks import GateCheck; print(GateCheck('min', False, 'val_iou 0.5 < 0.7'))"
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateCheck:
    gate: str
    passed: bool
    detail: str  # a sentence naming the metric and both numbers
