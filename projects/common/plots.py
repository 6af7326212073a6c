"""Training plots logged as run artifacts: the loss curve and labelled segmentation overlays.

python -m pytest tests/projects/common/test_plots.py
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from core.metrics import mask_iou

LOSS_KEYS = ("train_loss", "val_loss")
MIN_TILE = 256  # overlay tiles are scaled up (nearest neighbour) to at least this width, so 64 px samples show
LABELS = ("input", "target", "prediction")


def save_loss_curve(history: Sequence[dict[str, float]], extra: Sequence[str] = ()) -> Figure:
    """train/val loss per epoch on the left axis, the task metrics (`extra`) on a right axis of their own; every
    series its own colour, whole-number epochs. Returns the figure."""
    epochs = [int(h["epoch"]) for h in history]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    lines = []
    for i, key in enumerate(k for k in LOSS_KEYS if all(k in h for h in history)):
        lines += ax.plot(epochs, [h[key] for h in history], marker="o", color=colors[i % len(colors)], label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    shown = [k for k in extra if all(k in h for h in history)]
    if shown:
        twin: Any = ax.twinx()
        for i, key in enumerate(shown, start=len(LOSS_KEYS)):
            lines += twin.plot(epochs, [h[key] for h in history], marker="s", linestyle="--",
                               color=colors[i % len(colors)], label=key)  # fmt: skip
        twin.set_ylabel(", ".join(shown))
    ax.legend(lines, [str(line.get_label()) for line in lines], loc="best")
    ax.set_title("loss (left axis)" + (f" and {', '.join(shown)} (right axis)" if shown else ""))
    fig.tight_layout()
    plt.close(fig)  # the caller logs it; keep pyplot's figure registry from growing
    return fig


def _rgb(tile: np.ndarray) -> np.ndarray:
    """uint8 gray (H, W), a {0, 1} mask, or RGB (H, W, 3) -> RGB uint8."""
    tile = np.asarray(tile)
    if tile.dtype != np.uint8 or (tile.ndim == 2 and tile.max(initial=0) <= 1):
        tile = (np.clip(tile.astype(np.float32), 0, 1) * 255).astype(np.uint8) if tile.max(initial=0) <= 1 else tile
    tile = tile.astype(np.uint8)
    return np.repeat(tile[:, :, None], 3, axis=2) if tile.ndim == 2 else tile


def overlay_rows(rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """One RGB picture: a header of labels (input | target | prediction), then one row per sample, each tile
    scaled up to at least `MIN_TILE` px wide, with the sample's IoU written on its prediction."""
    import cv2

    height, width = np.asarray(rows[0][0]).shape[:2]
    scale = max(1, -(-MIN_TILE // width))
    gap = 4
    tile_w, tile_h = width * scale, height * scale
    band = 28
    out_w = 3 * tile_w + 2 * gap
    picture = [_label_band(out_w, tile_w, gap, band)]
    for image, mask, pred in rows:
        tiles = [cv2.resize(_rgb(t), (tile_w, tile_h), interpolation=cv2.INTER_NEAREST) for t in (image, mask, pred)]
        cv2.putText(tiles[2], f"IoU {mask_iou(mask, pred):.2f}", (6, tile_h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (255, 64, 64), 2, cv2.LINE_AA)  # fmt: skip
        spacer = np.full((tile_h, gap, 3), 255, np.uint8)
        picture += [np.hstack([tiles[0], spacer, tiles[1], spacer, tiles[2]]), np.full((gap, out_w, 3), 255, np.uint8)]
    return np.vstack(picture)


def _label_band(width: int, tile_w: int, gap: int, height: int) -> np.ndarray:
    import cv2

    band = np.full((height, width, 3), 255, np.uint8)
    for i, label in enumerate(LABELS):
        cv2.putText(band, label, (i * (tile_w + gap) + 6, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2,
                    cv2.LINE_AA)  # fmt: skip
    return band
