"""Training plots logged as run artifacts.

python -m pytest tests/projects/common/test_plots.py
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def save_loss_curve(history: Sequence[dict[str, float]], extra: Sequence[str] = ()) -> Figure:
    """train/val loss per epoch, plus any `extra` metrics on a second axis. Returns the figure."""
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("train_loss", "val_loss"):
        ax.plot(epochs, [h[key] for h in history], marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if extra:
        twin: Any = ax.twinx()
        for key in extra:
            twin.plot(epochs, [h[key] for h in history], linestyle="--", label=key)
        twin.set_ylabel(", ".join(extra))
        twin.legend(loc="center right")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    plt.close(fig)  # the caller logs it; keep pyplot's figure registry from growing
    return fig
