"""Procedural YOLO sample sets with exact boxes: industrial safety, door visitors and plain shapes.

    kiln data sample safety data/samples/safety
    kiln data sample visitor /tmp/visitor --count 40 --size 128

Every image is drawn from its own generator seeded by (seed, image index), so a set of 40 images is the
first 40 of a set of 400, and the same request always gives the same files. Boxes are measured from the
pixels each object actually covers, not from the placement hint, so they are exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from core.metrics import box_iou
from data.samples import Progress, SampleRequest, register_sample

Rng = np.random.Generator
Box = tuple[int, float, float, float, float]  # class id, x centre, y centre, width, height (normalised)
JPEG_QUALITY = 92  # high enough that compression noise does not blur thin strokes at small sizes
ALPHA_VISIBLE = 0.3  # a pixel belongs to an object's box where its opacity reaches this


@dataclass(frozen=True)
class SceneSpec:
    names: list[str]  # class names, index = class id
    count: int  # default image count
    size: int  # default image side
    draw: Callable[[Rng, int], tuple[np.ndarray, list[Box]]]  # (rng, side) -> (BGR uint8 image, boxes)


# --- canvas helpers -----------------------------------------------------------------------------------------------


def muted_colour(rng: Rng, max_sat: float = 0.3, value: tuple[float, float] = (0.3, 0.8)) -> tuple[int, int, int]:
    """A desaturated BGR colour: backgrounds use these so they never look like flames."""
    hsv = np.array([[[rng.integers(0, 180), rng.uniform(0, max_sat) * 255, rng.uniform(*value) * 255]]], np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def composite(image: np.ndarray, layer: np.ndarray, alpha: np.ndarray) -> None:
    """image <- image * (1 - alpha) + layer * alpha, in place; alpha is HxW in [0, 1]."""
    a = alpha[..., None]
    image[:] = np.clip(image * (1.0 - a) + layer * a, 0, 255).astype(np.uint8)


def box_of(alpha: np.ndarray, class_id: int) -> Box | None:
    ys, xs = np.nonzero(alpha >= ALPHA_VISIBLE)
    if len(xs) < 9:
        return None
    h, w = alpha.shape
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return (class_id, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)


def place(rng: Rng, side: int, w: float, h: float, taken: list[tuple[float, float, float, float]]) -> tuple[float, ...]:
    """A free spot (x0, y0, x1, y1) for a w x h object, overlapping earlier ones little; last try wins."""
    w, h = min(w, side - 2.0), min(h, side - 2.0)
    spot = (0.0, 0.0, w, h)
    for _ in range(30):
        x0, y0 = rng.uniform(1, side - w - 1), rng.uniform(1, side - h - 1)
        spot = (x0, y0, x0 + w, y0 + h)
        if not taken or box_iou(spot, taken).max() < 0.15:
            break
    taken.append(spot)
    return spot


def low_freq_noise(rng: Rng, side: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: random cells upsampled with bicubic interpolation."""
    grid = rng.random((cells, cells)).astype(np.float32)
    return np.clip(cv2.resize(grid, (side, side), interpolation=cv2.INTER_CUBIC), 0, 1)


def finish(image: np.ndarray, rng: Rng) -> np.ndarray:
    noise = rng.normal(0, rng.uniform(2, 7), image.shape)
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


# --- figures (people) ---------------------------------------------------------------------------------------------

SKIN = [(80, 110, 160), (100, 140, 200), (60, 85, 120), (120, 160, 215), (45, 60, 90)]
HELMETS = [(0, 215, 255), (245, 245, 245), (0, 120, 255), (200, 80, 20)]


def draw_figure(rng: Rng, image: np.ndarray, centre: tuple[float, float], length: float, angle: float) -> np.ndarray:
    """A person-like figure `length` pixels tall, rotated by `angle` degrees (0 = standing); returns its mask."""
    mask = np.zeros(image.shape[:2], np.float32)
    rad = math.radians(angle)
    rot = np.array([[math.cos(rad), -math.sin(rad)], [math.sin(rad), math.cos(rad)]])

    def at(x: float, y: float) -> tuple[int, int]:
        # Local frame: unit height, y down from the head (0) to the feet (1), x across, centred.
        p = rot @ np.array([x * length, (y - 0.5) * length]) + np.array(centre)
        return int(round(p[0])), int(round(p[1]))

    shirt = tuple(int(c) for c in rng.integers(20, 235, 3))
    trousers = tuple(int(c) for c in rng.integers(15, 120, 3))
    skin = SKIN[rng.integers(len(SKIN))]
    limb = max(2, int(length * 0.075))
    spread, swing = rng.uniform(0.03, 0.12), rng.uniform(-0.12, 0.12)
    strokes = [  # (from, to, colour, thickness): legs, arms, torso
        ((-0.05, 0.52), (-0.05 - spread, 0.97), trousers, limb),
        ((0.05, 0.52), (0.05 + spread, 0.97), trousers, limb),
        ((-0.11, 0.22), (-0.16 + swing, 0.52), shirt, max(2, int(limb * 0.8))),
        ((0.11, 0.22), (0.16 - swing, 0.52), shirt, max(2, int(limb * 0.8))),
        ((0.0, 0.21), (0.0, 0.53), shirt, max(3, int(length * 0.2))),
    ]
    for a, b, colour, thick in strokes:
        for target, value in ((image, colour), (mask, 1.0)):
            cv2.line(target, at(*a), at(*b), value, thick, cv2.LINE_AA)
    head, radius = at(0.0, 0.1), max(2, int(length * 0.085))
    for target, value in ((image, skin), (mask, 1.0)):
        cv2.circle(target, head, radius, value, -1, cv2.LINE_AA)
    if rng.random() < 0.5:  # a hard hat: a half disc on top of the head
        colour = HELMETS[rng.integers(len(HELMETS))]
        for target, value in ((image, colour), (mask, 1.0)):
            cv2.ellipse(target, head, (radius + 1, radius + 1), angle, 180, 360, value, -1, cv2.LINE_AA)
    return mask


# --- safety scene -------------------------------------------------------------------------------------------------


def industrial_background(rng: Rng, side: int) -> np.ndarray:
    """Wall and floor in muted colours, machinery boxes, pipes, hazard stripes and noise."""
    wall, floor = np.array(muted_colour(rng, 0.25, (0.45, 0.85))), np.array(muted_colour(rng, 0.15, (0.25, 0.55)))
    horizon = int(side * rng.uniform(0.55, 0.8))
    image = np.empty((side, side, 3), np.float32)
    shade = np.linspace(0.8, 1.1, side)[:, None, None]
    image[:] = wall * shade
    image[horizon:] = floor * (0.8 + 0.4 * low_freq_noise(rng, side, 6)[horizon:, :, None])
    for _ in range(rng.integers(3, 9)):  # machinery
        x0, y0 = rng.integers(0, side, 2)
        w, h = rng.integers(side // 10, side // 3, 2)
        colour = muted_colour(rng, 0.35, (0.2, 0.7))
        cv2.rectangle(image, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), colour, -1)
        cv2.rectangle(image, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), (30, 30, 30), max(1, side // 160))
    for _ in range(rng.integers(2, 6)):  # pipes with a highlight
        thick, pos = int(rng.integers(max(2, side // 60), max(3, side // 20))), int(rng.integers(0, side))
        colour = muted_colour(rng, 0.2, (0.35, 0.75))
        ends = ((0, pos), (side, pos)) if rng.random() < 0.5 else ((pos, 0), (pos, side))
        cv2.line(image, ends[0], ends[1], colour, thick)
        cv2.line(image, ends[0], ends[1], tuple(min(255, c + 50) for c in colour), max(1, thick // 4))
    if rng.random() < 0.35:  # yellow-black hazard stripe along the floor edge
        for x in range(0, side, max(4, side // 16)):
            colour = (0, 190, 230) if (x // max(4, side // 16)) % 2 == 0 else (20, 20, 20)
            cv2.rectangle(image, (x, horizon - side // 40), (x + side // 16, horizon), colour, -1)
    return image


def draw_smoke(rng: Rng, image: np.ndarray, spot: tuple[float, ...]) -> np.ndarray:
    """A grey plume rising from the bottom of `spot`: blurred puffs growing and drifting as they rise."""
    side = image.shape[0]
    alpha: np.ndarray = np.zeros((side, side), np.float32)
    x0, y0, x1, y1 = spot
    w, h = x1 - x0, y1 - y0
    drift = rng.uniform(-0.25, 0.25) * w
    puffs = int(rng.integers(6, 12))
    for i in range(puffs):
        t = i / (puffs - 1)
        r = w * (0.12 + 0.22 * t) * rng.uniform(0.8, 1.1)
        cx = x0 + w / 2 + drift * t + rng.normal(0, w * 0.04)
        cy = y1 - r - t * (h - 2 * r)
        cv2.ellipse(alpha, (int(cx), int(cy)), (int(r), int(r * rng.uniform(0.7, 1.0))), 0, 0, 360, 1.0, -1)
    sigma = max(1.0, w * 0.06)
    alpha = np.clip(cv2.GaussianBlur(alpha, (0, 0), sigma) * 1.3, 0, 1) * rng.uniform(0.75, 0.95)
    alpha *= 0.7 + 0.3 * low_freq_noise(rng, side, 12)
    grey = rng.uniform(45, 85) if rng.random() < 0.3 else rng.uniform(185, 235)
    layer = np.full(image.shape, grey, np.float32) * (0.85 + 0.3 * low_freq_noise(rng, side, 16)[..., None])
    composite(image, layer, alpha)
    return alpha


def flame_polygon(spot: tuple[float, ...], scale: float, tongues: int) -> np.ndarray:
    """The outline of a flame with `tongues` peaks, shrunk towards its base by `scale`."""
    x0, y0, x1, y1 = spot
    w, h = (x1 - x0) * scale, (y1 - y0) * scale
    cx, base = (x0 + x1) / 2, y1
    xs = np.linspace(-0.5, 0.5, 25)
    tops = []
    for x in xs:
        envelope = 1.0 - (2 * abs(x)) ** 1.6
        ripple = 0.55 + 0.45 * abs(math.sin((x + 0.5) * math.pi * tongues))
        tops.append((cx + x * w, base - h * envelope * ripple))
    bottom = [(cx + x * w * 0.9, base - h * 0.08 * math.cos(x * math.pi)) for x in xs[::-1]]
    return np.array(tops + bottom, np.float32)


def draw_fire(rng: Rng, image: np.ndarray, spot: tuple[float, ...]) -> np.ndarray:
    """A flame: red-orange outside, orange in the middle, a yellow-white core, with soft edges."""
    side = image.shape[0]
    alpha: np.ndarray = np.zeros((side, side), np.float32)
    layer = np.zeros(image.shape, np.float32)
    tongues = int(rng.integers(2, 5))
    rings = [(1.0, (20, 60, 230)), (rng.uniform(0.65, 0.78), (10, 140, 255)), (rng.uniform(0.4, 0.5), (120, 230, 255))]
    for i, (scale, colour) in enumerate(rings):
        poly = flame_polygon(spot, scale, tongues).round().astype(np.int32)
        cv2.fillPoly(layer, [poly], colour, cv2.LINE_AA)
        if i == 0:
            cv2.fillPoly(alpha, [poly], 1.0, cv2.LINE_AA)
    sigma = max(0.8, (spot[2] - spot[0]) * 0.02)
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
    composite(image, cv2.GaussianBlur(layer, (0, 0), sigma), alpha)
    return alpha


def draw_person_down(rng: Rng, image: np.ndarray, spot: tuple[float, ...]) -> np.ndarray:
    x0, y0, x1, y1 = spot
    angle = rng.choice([-1, 1]) * (90 + rng.uniform(-20, 20))
    return draw_figure(rng, image, ((x0 + x1) / 2, (y0 + y1) / 2), (x1 - x0) * 0.95, angle)


SAFETY_OBJECTS: list[tuple[Callable[[Rng, np.ndarray, tuple[float, ...]], np.ndarray], tuple[float, float], float]] = [
    (draw_smoke, (0.22, 0.5), 1.3),  # (drawer, side fraction range, height/width)
    (draw_fire, (0.14, 0.34), 1.25),
    (draw_person_down, (0.3, 0.55), 0.45),
]


def draw_safety(rng: Rng, side: int) -> tuple[np.ndarray, list[Box]]:
    image = industrial_background(rng, side)
    taken: list[tuple[float, float, float, float]] = []
    if rng.random() < 0.4:  # a standing worker: unlabelled, so the model learns that upright is not down
        length = side * rng.uniform(0.3, 0.55)
        spot = place(rng, side, length * 0.45, length, taken)
        draw_figure(rng, image, ((spot[0] + spot[2]) / 2, (spot[1] + spot[3]) / 2), length, rng.uniform(-8, 8))
    boxes: list[Box] = []
    for class_id in rng.choice(3, size=int(rng.choice([0, 1, 1, 2, 2, 3])), replace=True):
        drawer, (lo, hi), aspect = SAFETY_OBJECTS[int(class_id)]
        width = side * rng.uniform(lo, hi)
        alpha = drawer(rng, image, place(rng, side, width, width * aspect * rng.uniform(0.85, 1.15), taken))
        box = box_of(alpha, int(class_id))
        if box:
            boxes.append(box)
    return finish(cv2.GaussianBlur(image, (0, 0), 0.6), rng), boxes


# --- visitor scene ------------------------------------------------------------------------------------------------


def porch_background(rng: Rng, side: int) -> np.ndarray:
    """A front door in a wall of siding or brick, a step and a doormat, sometimes a potted plant."""
    image = np.empty((side, side, 3), np.float32)
    image[:] = muted_colour(rng, 0.3, (0.5, 0.9))
    step = max(3, side // int(rng.integers(10, 24)))
    for y in range(0, side, step):  # siding lines or brick courses
        cv2.line(image, (0, y), (side, y), muted_colour(rng, 0.2, (0.3, 0.6)), 1)
    dx0 = int(side * rng.uniform(0.15, 0.55))
    dw, ground = int(side * rng.uniform(0.25, 0.4)), int(side * rng.uniform(0.8, 0.92))
    cv2.rectangle(image, (dx0, int(side * 0.08)), (dx0 + dw, ground), muted_colour(rng, 0.45, (0.2, 0.7)), -1)
    cv2.rectangle(image, (dx0, int(side * 0.08)), (dx0 + dw, ground), (40, 40, 40), max(1, side // 100))
    cv2.circle(image, (dx0 + int(dw * 0.85), int(side * 0.5)), max(1, side // 80), (60, 190, 220), -1)
    image[ground:] = muted_colour(rng, 0.15, (0.3, 0.6))
    cv2.rectangle(image, (dx0 - side // 20, ground), (dx0 + dw + side // 20, ground + side // 25), (50, 60, 70), -1)
    if rng.random() < 0.5:  # potted plant
        px = int(rng.uniform(0.05, 0.95) * side)
        cv2.rectangle(image, (px - side // 30, ground - side // 12), (px + side // 30, ground), (40, 70, 140), -1)
        cv2.circle(image, (px, ground - side // 8), side // 14, (40, 120, 50), -1)
    return image


def draw_package(rng: Rng, image: np.ndarray, spot: tuple[float, ...]) -> np.ndarray:
    """A cardboard box in two-point view: front face, top face, a tape stripe."""
    side = image.shape[0]
    mask = np.zeros((side, side), np.float32)
    x0, y0, x1, y1 = spot
    w, h = x1 - x0, y1 - y0
    depth = h * rng.uniform(0.2, 0.35)
    card = np.array([rng.uniform(60, 90), rng.uniform(120, 150), rng.uniform(165, 200)])
    front = np.array([[x0, y0 + depth], [x1 - depth * 0.6, y0 + depth], [x1 - depth * 0.6, y1], [x0, y1]])
    top = np.array([[x0, y0 + depth], [x0 + depth * 0.6, y0], [x1, y0], [x1 - depth * 0.6, y0 + depth]])
    side_face = np.array([[x1 - depth * 0.6, y0 + depth], [x1, y0], [x1, y1 - depth], [x1 - depth * 0.6, y1]])
    for poly, shade in ((front, 1.0), (top, 1.15), (side_face, 0.8)):
        pts = poly.round().astype(np.int32)
        cv2.fillConvexPoly(image, pts, tuple(float(c) for c in np.clip(card * shade, 0, 255)), cv2.LINE_AA)
        cv2.fillConvexPoly(mask, pts, 1.0, cv2.LINE_AA)
    tape_x = (x0 + x1 - depth * 0.6) / 2
    cv2.line(image, (int(tape_x), int(y0 + depth)), (int(tape_x), int(y1)), (150, 170, 185), max(1, int(w * 0.08)))
    return mask


def draw_visitor(rng: Rng, side: int) -> tuple[np.ndarray, list[Box]]:
    image = porch_background(rng, side)
    taken: list[tuple[float, float, float, float]] = []
    boxes: list[Box] = []
    for class_id in rng.permutation([0] * int(rng.integers(0, 3)) + [1] * int(rng.integers(0, 3))):
        if class_id == 0:
            length = side * rng.uniform(0.4, 0.85)
            spot = place(rng, side, length * 0.45, length, taken)
            centre = ((spot[0] + spot[2]) / 2, (spot[1] + spot[3]) / 2)
            alpha = draw_figure(rng, image, centre, length, rng.uniform(-6, 6))
        else:
            width = side * rng.uniform(0.12, 0.3)
            alpha = draw_package(rng, image, place(rng, side, width, width * rng.uniform(0.7, 1.1), taken))
        box = box_of(alpha, int(class_id))
        if box:
            boxes.append(box)
    return finish(cv2.GaussianBlur(image, (0, 0), 0.6), rng), boxes


# --- shapes -------------------------------------------------------------------------------------------------------


def draw_shapes(rng: Rng, side: int) -> tuple[np.ndarray, list[Box]]:
    """Circles, squares and triangles in saturated colours on a smooth grey background: the easy check."""
    image = (low_freq_noise(rng, side, 4)[..., None] * 120 + 60).repeat(3, axis=2)
    taken: list[tuple[float, float, float, float]] = []
    boxes: list[Box] = []
    for class_id in rng.integers(0, 3, size=int(rng.integers(1, 4))):
        size = side * rng.uniform(0.15, 0.4)
        x0, y0, x1, y1 = place(rng, side, size, size, taken)
        mask = np.zeros((side, side), np.float32)
        colour = tuple(float(c) for c in rng.integers(0, 256, 3))
        shape: list[np.ndarray]
        if class_id == 0:
            poly = cv2.ellipse2Poly((int((x0 + x1) / 2), int((y0 + y1) / 2)), (int(size / 2),) * 2, 0, 0, 360, 5)
            shape = [np.asarray(poly)]  # an int32 array already; cv2's stubs call it a sequence
        elif class_id == 1:
            shape = [np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]).round().astype(np.int32)]
        else:
            shape = [np.array([[(x0 + x1) / 2, y0], [x1, y1], [x0, y1]]).round().astype(np.int32)]
        for target, value in ((image, colour), (mask, 1.0)):
            cv2.fillPoly(target, shape, value, cv2.LINE_AA)
        box = box_of(mask, int(class_id))
        if box:
            boxes.append(box)
    return finish(image, rng), boxes


# --- writing a set ------------------------------------------------------------------------------------------------

SCENES: dict[str, SceneSpec] = {
    "safety": SceneSpec(["smoke", "fire", "person_down"], count=600, size=320, draw=draw_safety),
    "visitor": SceneSpec(["person", "package"], count=500, size=320, draw=draw_visitor),
    "shapes": SceneSpec(["circle", "square", "triangle"], count=200, size=160, draw=draw_shapes),
}


def write_set(kind: str, request: SampleRequest) -> Path:
    spec = SCENES[kind]
    count, side = request.count or spec.count, request.size or spec.size
    if count < 2 or side < 32:
        raise ValueError(f"sample {kind!r}: need --count >= 2 and --size >= 32, got {count} and {side}")
    n_val = min(count - 1, max(1, round(count * request.val)))
    progress = Progress(f"{kind} sample", count, "images")
    for index in range(count):
        split = "val" if index >= count - n_val else "train"
        image, boxes = spec.draw(np.random.default_rng([request.seed, index]), side)
        write_image(request.dst, split, f"{kind}_{index:05d}", image, boxes)
        progress.update(index + 1)
    yaml_path = request.dst / "data.yaml"
    data = {"train": "images/train", "val": "images/val", "names": dict(enumerate(spec.names))}
    header = f"# `kiln data sample {kind}`: {count} images of {side}x{side}, seed {request.seed}.\n"
    yaml_path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return yaml_path


def write_image(dst: Path, split: str, stem: str, image: np.ndarray, boxes: list[Box]) -> None:
    for sub in ("images", "labels"):
        (dst / sub / split).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dst / "images" / split / f"{stem}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    lines = "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in boxes)
    (dst / "labels" / split / f"{stem}.txt").write_text(lines)


@register_sample("safety", "smoke, fire and person_down on cluttered industrial scenes (600 images, 320px)")
def make_safety(request: SampleRequest) -> Path:
    return write_set("safety", request)


@register_sample("visitor", "person and package at a front door (500 images, 320px)")
def make_visitor(request: SampleRequest) -> Path:
    return write_set("visitor", request)


@register_sample("shapes", "circle, square and triangle on smooth backgrounds (200 images, 160px)")
def make_shapes(request: SampleRequest) -> Path:
    return write_set("shapes", request)
