"""Synthetic engineering drawings with exact line masks: the EDGNet sample data.

    kiln data sample drawings data/samples/drawings --count 200 --size 256
    python -m data.drawings data/samples/drawings --count 200 --size 256

Each image is line work (straight lines, circles, arcs, dimension lines with arrowheads, text) on paper
with grain, stains and smudges. The mask holds exactly the pixels the line work inked, so paper noise
and stains are not lines. Output is deterministic from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import cv2
import numpy as np

from data.samples import SampleRequest, register_sample

FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX)


@dataclass
class Canvas:
    ink: np.ndarray  # uint8, 255 where line work is drawn: becomes the mask
    size: int
    rng: np.random.Generator

    def point(self, margin: float = 0.08) -> tuple[int, int]:
        lo, hi = int(self.size * margin), int(self.size * (1 - margin))
        return int(self.rng.integers(lo, hi)), int(self.rng.integers(lo, hi))

    def thickness(self) -> int:
        return int(self.rng.integers(1, max(2, self.size // 128) + 1))


def _line(c: Canvas) -> None:
    p, q = c.point(), c.point()
    if c.rng.random() < 0.7:  # drawings are mostly axis-aligned
        q = (q[0], p[1]) if c.rng.random() < 0.5 else (p[0], q[1])
    cv2.line(c.ink, p, q, 255, c.thickness(), cv2.LINE_AA)


def _circle(c: Canvas) -> None:
    radius = int(c.rng.integers(c.size // 20, c.size // 5))
    cv2.circle(c.ink, c.point(0.2), radius, 255, c.thickness(), cv2.LINE_AA)


def _arc(c: Canvas) -> None:
    axes = (int(c.rng.integers(c.size // 16, c.size // 4)), int(c.rng.integers(c.size // 16, c.size // 4)))
    start = float(c.rng.uniform(0, 360))
    cv2.ellipse(c.ink, c.point(0.2), axes, 0, start, start + float(c.rng.uniform(60, 270)), 255, c.thickness())


def _dimension(c: Canvas) -> None:
    """A dimension line with arrowheads at both ends, short extension lines and a measurement."""
    p, q = c.point(0.15), c.point(0.15)
    q = (q[0], p[1])
    t = max(1, c.size // 256)
    cv2.arrowedLine(c.ink, p, q, 255, t, cv2.LINE_AA, tipLength=0.08)
    cv2.arrowedLine(c.ink, q, p, 255, t, cv2.LINE_AA, tipLength=0.08)
    ext = c.size // 24
    for x in (p[0], q[0]):
        cv2.line(c.ink, (x, p[1] - ext), (x, p[1] + ext), 255, t)
    label = f"{c.rng.integers(5, 999)}"
    mid = ((p[0] + q[0]) // 2 - c.size // 40, p[1] - c.size // 60)
    cv2.putText(c.ink, label, mid, FONTS[0], c.size / 700, 255, t, cv2.LINE_AA)


def _text(c: Canvas) -> None:
    chars = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789-/"
    label = "".join(c.rng.choice(list(chars), size=int(c.rng.integers(2, 7))))
    font = FONTS[int(c.rng.integers(len(FONTS)))]
    cv2.putText(c.ink, label, c.point(0.1), font, c.size / float(c.rng.uniform(400, 700)), 255, 1, cv2.LINE_AA)


def _title_block(c: Canvas) -> None:
    s = c.size
    x0, y0 = int(s * 0.62), int(s * 0.84)
    cv2.rectangle(c.ink, (x0, y0), (s - 4, s - 4), 255, 1)
    cv2.line(c.ink, (x0, (y0 + s) // 2), (s - 4, (y0 + s) // 2), 255, 1)


PRIMITIVES = {"line": (_line, (4, 10)), "circle": (_circle, (1, 3)), "arc": (_arc, (1, 3)),
              "dimension": (_dimension, (1, 3)), "text": (_text, (2, 5))}  # fmt: skip


def _paper(size: int, rng: np.random.Generator) -> np.ndarray:
    """Off-white paper with grain, a tone gradient, stains and smudges (none of which are line work)."""
    base = float(rng.uniform(200, 245))
    gradient = np.linspace(0, float(rng.uniform(-20, 20)), size, dtype=np.float32)
    paper = base + (gradient[None, :] if rng.random() < 0.5 else gradient[:, None])
    paper = paper + rng.normal(0, float(rng.uniform(3, 10)), (size, size)).astype(np.float32)
    for _ in range(int(rng.integers(0, 4))):  # stains: soft dark blobs
        blob = np.zeros((size, size), np.float32)
        centre = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        cv2.circle(blob, centre, int(rng.integers(size // 20, size // 6)), 1.0, -1)
        blob = np.asarray(cv2.GaussianBlur(blob, (0, 0), size / 30), np.float32)
        paper -= blob * float(rng.uniform(20, 60))
    return paper


def render(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One drawing: (grey image uint8, mask uint8 in {0, 255})."""
    rng = np.random.default_rng(seed)
    canvas = Canvas(ink=np.zeros((size, size), np.uint8), size=size, rng=rng)
    cv2.rectangle(canvas.ink, (3, 3), (size - 4, size - 4), 255, 1)  # sheet border
    if rng.random() < 0.6:
        _title_block(canvas)
    for draw, (lo, hi) in PRIMITIVES.values():
        for _ in range(int(rng.integers(lo, hi + 1))):
            draw(canvas)
    mask = np.where(canvas.ink >= 128, 255, 0).astype(np.uint8)
    darkness = float(rng.uniform(20, 90))
    image = _paper(size, rng) * (1 - canvas.ink / 255.0) + darkness * (canvas.ink / 255.0)
    if rng.random() < 0.5:  # a slightly out-of-focus scan
        image = np.asarray(cv2.GaussianBlur(image, (3, 3), 0.6), np.float64)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def generate(dst: Path, count: int = 200, size: int = 256, seed: int = 0) -> Path:
    """Write `images/NNNN.png` and `masks/NNNN.png` under `dst`; returns `dst`."""
    if count < 1 or size < 32:
        raise ValueError(f"need count >= 1 and size >= 32, got count={count}, size={size}")
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = render(size, seed * 1_000_003 + i)
        cv2.imwrite(str(dst / "images" / f"{i:04d}.png"), image)
        cv2.imwrite(str(dst / "masks" / f"{i:04d}.png"), mask)
    return dst


def default_sample_dir(count: int, size: int, seed: int) -> Path:
    """Where entry points keep the generated sample when no --data is given (regenerated if missing)."""
    return Path(__file__).resolve().parent / "samples" / f"drawings-n{count}-s{size}-seed{seed}"


def ensure_sample(count: int, size: int, seed: int) -> Path:
    dst = default_sample_dir(count, size, seed)
    done = dst / ".complete"
    if not done.exists():
        generate(dst, count, size, seed)
        done.touch()
    return dst


@register_sample("drawings", "synthetic engineering drawings with exact line masks (EDGNet; --val unused)")
def _sample(request: SampleRequest) -> Path:
    return generate(request.dst, request.count or 200, request.size or 256, request.seed)


@click.command("drawings")
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
@click.option("--count", default=200, show_default=True, type=click.IntRange(min=1), help="Number of drawings.")
@click.option("--size", default=256, show_default=True, type=click.IntRange(min=32), help="Side in pixels.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same drawings.")
def main(dst: Path, count: int, size: int, seed: int) -> None:
    """Generate COUNT synthetic engineering drawings with exact line masks into DST."""
    generate(dst, count, size, seed)
    click.echo(f"wrote {count} drawings ({size}x{size}) with masks to {dst}")


if __name__ == "__main__":
    main()
