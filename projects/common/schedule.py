"""Warmup-then-cosine learning rate, stepped once per optimizer step.

python -c "from projects.common.schedule import warmup_cosine; print(warmup_cosine(10, 100)(50))"
"""

from __future__ import annotations

import math
from collections.abc import Callable


def warmup_cosine(warmup_steps: int, total_steps: int, min_ratio: float = 0.01) -> Callable[[int], float]:
    """A LambdaLR factor: linear from ~0 to 1 over `warmup_steps`, then cosine down to `min_ratio`."""
    total_steps = max(total_steps, 1)
    warmup_steps = min(max(warmup_steps, 0), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
