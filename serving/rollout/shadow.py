"""Shadow traffic: a share of the task requests also runs on the model's challenger version, after the answer
has been sent, and the two answers are compared.

    kiln serve --shadow challenger --shadow-percent 25
    kiln promote edgnet --version 5 --alias challenger --force    # point the challenger alias at a version
    curl -s 127.0.0.1:8080/v1/models/edgnet/shadow | python -m json.tool

Agreement between production's and the challenger's answer to the same input, per task:
- segmentation: IoU of the two masks (1 when both are empty);
- detection: F1 of the boxes matched greedily at IoU >= 0.5 with the same class (1 when both found nothing);
- tabular classification: label agreement, and the mean absolute difference of the class probabilities;
- regression (tabular or image): mean absolute error, and Pearson's r over every value compared so far.
The challenger runs its own pre- and post-processing (its predictor) on the original bytes or records, so a
version that changed its preprocessing is compared on what it would really answer. Its run happens on the
off-path worker (serving/rollout/offpath.py) while production is idle, so clients see no added latency and no failure
from it; its errors are counted and shown, never raised.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from core import metrics
from serving.deployment.artifacts import reason
from serving.deployment.loading import LoadedModel
from serving.runtime.postprocess import (
    DetectionResult,
    ImageResult,
    RegressionResult,
    SegmentationResult,
    TabularResults,
)

WINDOW = 10_000  # per-request values kept for means and percentiles
Z95 = 1.959963984540054

# --- agreement per task -----------------------------------------------------------------------------------


def mask_iou(a: SegmentationResult, b: SegmentationResult) -> float:
    """The masks' IoU (core.metrics); masks of different sizes do not agree at all."""
    return 0.0 if a.mask.shape != b.mask.shape else metrics.mask_iou(a.mask, b.mask)


def box_f1(a: DetectionResult, b: DetectionResult, iou: float = 0.5) -> float:
    """F1 of b's boxes against a's: matched greedily by IoU (highest first), same class, IoU >= `iou`."""
    if not a.boxes and not b.boxes:
        return 1.0
    if not a.boxes or not b.boxes:
        return 0.0
    overlaps = metrics.box_iou(a.xyxy, b.xyxy)
    overlaps[a.class_ids[:, None] != b.class_ids[None, :]] = 0.0
    matched = 0
    while overlaps.size and overlaps.max() >= iou:
        i, j = np.unravel_index(int(overlaps.argmax()), overlaps.shape)
        matched += 1
        overlaps[i, :] = 0.0
        overlaps[:, j] = 0.0
    return 2 * matched / (len(a.boxes) + len(b.boxes))


def tabular_agreement(a: TabularResults, b: TabularResults) -> dict[str, float]:
    if a.regression or b.regression:
        x, y = _values(a), _values(b)
        return {"mae": float(np.mean(np.abs(x - y)))}
    labels = float(np.mean([str(p.label) == str(q.label) for p, q in zip(a, b, strict=True)]))
    diffs = [
        float(np.mean(np.abs(p.probabilities - q.probabilities)))
        for p, q in zip(a, b, strict=True)
        if p.probabilities is not None
        and q.probabilities is not None
        and p.probabilities.shape == q.probabilities.shape
    ]
    out = {"label_agreement": labels}
    if diffs:
        out["probability_mad"] = float(np.mean(diffs))
    return out


def _values(results: TabularResults) -> np.ndarray:
    return np.asarray([np.asarray(r.value, dtype=np.float64).reshape(-1) for r in results], dtype=np.float64).ravel()


def values_of(result: Any) -> np.ndarray | None:
    """The regression values of a result, flat, for MAE and Pearson; None for other tasks."""
    if isinstance(result, RegressionResult):
        return np.asarray(result.values, dtype=np.float64).ravel()
    if isinstance(result, TabularResults) and result.regression:
        return _values(result)
    return None


def agreement(production: ImageResult | TabularResults, challenger: ImageResult | TabularResults) -> dict[str, float]:
    """The per-request agreement numbers of two answers to the same input (see the module docstring)."""
    if type(production) is not type(challenger):
        raise ValueError(f"answers of different kinds: {type(production).__name__} vs {type(challenger).__name__}")
    if isinstance(production, SegmentationResult):
        assert isinstance(challenger, SegmentationResult)
        return {"mask_iou": mask_iou(production, challenger)}
    if isinstance(production, DetectionResult):
        assert isinstance(challenger, DetectionResult)
        return {"box_f1": box_f1(production, challenger)}
    if isinstance(production, RegressionResult):
        assert isinstance(challenger, RegressionResult)
        a, b = values_of(production), values_of(challenger)
        assert a is not None and b is not None
        if a.shape != b.shape:
            raise ValueError(f"outputs of different shapes: {a.shape} vs {b.shape}")
        return {"mae": float(np.mean(np.abs(a - b)))}
    assert isinstance(production, TabularResults) and isinstance(challenger, TabularResults)
    return tabular_agreement(production, challenger)


PRIMARY = {
    "segmentation": "mask_iou",
    "detection": "box_f1",
    "classification": "label_agreement",
    "regression": "pearson",
}


# --- statistics ------------------------------------------------------------------------------------------


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and its 95% confidence interval (normal approximation; the interval is a point for one value)."""
    n = len(values)
    mean = float(values.mean())
    half = Z95 * float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    return mean, mean - half, mean + half


def percentile_ms(values: deque[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(values), q)) * 1000, 3) if values else None


@dataclass
class _Pooled:
    """Running sums for Pearson's r over every regression value compared."""

    n: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    syy: float = 0.0
    sxy: float = 0.0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        self.n += len(x)
        self.sx += float(x.sum())
        self.sy += float(y.sum())
        self.sxx += float((x * x).sum())
        self.syy += float((y * y).sum())
        self.sxy += float((x * y).sum())

    def pearson(self) -> float | None:
        if self.n < 3:
            return None
        cov = self.sxy - self.sx * self.sy / self.n
        vx, vy = self.sxx - self.sx**2 / self.n, self.syy - self.sy**2 / self.n
        if vx <= 0 or vy <= 0:
            return 1.0 if vx <= 0 and vy <= 0 and abs(self.sx - self.sy) < 1e-9 * max(1.0, abs(self.sx)) else 0.0
        return float(np.clip(cov / math.sqrt(vx * vy), -1.0, 1.0))

    def ci(self) -> tuple[float, float] | None:
        """Fisher's z interval for r."""
        r = self.pearson()
        if r is None or self.n < 4 or abs(r) >= 1:
            return None if r is None else (r, r)
        z, half = math.atanh(r), Z95 / math.sqrt(self.n - 3)
        return math.tanh(z - half), math.tanh(z + half)


@dataclass
class ShadowStats:
    """Everything compared between one production version and one challenger version."""

    production_version: str
    challenger_version: str
    since: datetime = field(default_factory=lambda: datetime.now(UTC))
    compared: int = 0
    errors: int = 0
    dropped: int = 0
    last_error: str | None = None
    metrics: dict[str, deque[float]] = field(default_factory=dict)
    production_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    challenger_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    pooled: _Pooled = field(default_factory=_Pooled)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, numbers: dict[str, float], production_s: float, challenger_s: float) -> None:
        with self.lock:
            self.compared += 1
            for key, value in numbers.items():
                self.metrics.setdefault(key, deque(maxlen=WINDOW)).append(value)
            self.production_seconds.append(production_s)
            self.challenger_seconds.append(challenger_s)

    def fail(self, message: str) -> None:
        with self.lock:
            self.errors += 1
            self.last_error = message

    def primary(self, kind: str) -> tuple[str, float | None, tuple[float, float] | None, int]:
        """(metric, mean, 95% CI, n) of the task's headline agreement number."""
        metric = PRIMARY[kind]
        if metric == "pearson":
            bounds = self.pooled.ci()
            return metric, self.pooled.pearson(), bounds, self.pooled.n
        values = self.metrics.get(metric)
        if not values:
            return metric, None, None, 0
        mean, low, high = mean_ci(np.asarray(values))
        return metric, mean, (low, high), len(values)

    def to_json(self, kind: str) -> dict[str, Any]:
        with self.lock:
            metric, mean, bounds, n = self.primary(kind)
            detail = {}
            for key, values in self.metrics.items():
                m, lo, hi = mean_ci(np.asarray(values))
                detail[key] = {"mean": round(m, 6), "ci95": [round(lo, 6), round(hi, 6)], "n": len(values)}
            if self.pooled.n:
                r, ci = self.pooled.pearson(), self.pooled.ci()
                detail["pearson"] = {"r": r, "ci95": None if ci is None else [round(v, 6) for v in ci],
                                     "values": self.pooled.n}  # fmt: skip
            return {
                "production_version": self.production_version,
                "challenger_version": self.challenger_version,
                "since": self.since.isoformat(),
                "requests_compared": self.compared,
                # offered to the shadow: compared, failed, or dropped (production busy, budget spent, queue full)
                "requests_offered": self.compared + self.errors + self.dropped,
                "compared_share": round(self.compared / max(self.compared + self.errors + self.dropped, 1), 4),
                "agreement": {
                    "metric": metric, "mean": None if mean is None else round(mean, 6),
                    "ci95": None if bounds is None else [round(v, 6) for v in bounds], "n": n,
                },
                "metrics": detail,
                "latency_ms": {
                    "production": {"p50": percentile_ms(self.production_seconds, 50),
                                   "p99": percentile_ms(self.production_seconds, 99)},
                    "challenger": {"p50": percentile_ms(self.challenger_seconds, 50),
                                   "p99": percentile_ms(self.challenger_seconds, 99)},
                },
                "errors": self.errors,
                "last_error": self.last_error,
                "dropped": self.dropped,
            }  # fmt: skip


def task_kind(model: LoadedModel) -> str:
    """segmentation, detection, classification or regression: which headline agreement applies."""
    task = model.contract.task or ""
    if task == "tabular":
        post = model.contract.postprocess
        return "regression" if getattr(post, "task", "") == "regression" else "classification"
    return task if task in PRIMARY else "regression"


# --- one comparison ----------------------------------------------------------------------------------------


ObserveFn = Callable[[dict[str, float] | None, float, float, str | None], None]


@dataclass(frozen=True)
class ShadowRequest:
    """What the challenger needs to answer the same request: the original bytes or records and the options."""

    data: bytes | None  # image bytes (image tasks)
    records: Any  # the JSON payload (tabular)
    params: dict[str, float]
    production: ImageResult | TabularResults
    production_seconds: float
    feeds: dict[str, np.ndarray] | None = None  # a V2 or /invocations request: the tensors as sent


def run_challenger(challenger: LoadedModel, request: ShadowRequest) -> tuple[ImageResult | TabularResults, float]:
    """The challenger's answer to the request through its own predictor, and the seconds it took."""
    predictor = challenger.predictor
    start = time.perf_counter()
    if request.feeds is not None:
        typed = predictor.finish_tensors(request.feeds, predictor.run(request.feeds))
        if typed is None:
            raise ValueError(f"{challenger.name} v{challenger.version} has no kiln.task: nothing to compare")
        result: ImageResult | TabularResults = typed
    elif request.data is not None:
        feeds, geometry = predictor.prepare_bytes(request.data)
        result = predictor.finish_image(predictor.run(feeds), geometry, request.params)
    else:
        feeds, rows = predictor.prepare_records(request.records)
        result = predictor.finish_records(predictor.run(feeds), rows)
    return result, time.perf_counter() - start


def compare(stats: ShadowStats, challenger: LoadedModel, request: ShadowRequest) -> dict[str, float] | None:
    """Run the challenger on the request and add the agreement to `stats`; an error is counted, not raised."""
    try:
        answer, seconds = run_challenger(challenger, request)
        numbers = agreement(request.production, answer)
        a, b = values_of(request.production), values_of(answer)
    except Exception as err:
        stats.fail(reason(err))
        return None
    if a is not None and b is not None and a.shape == b.shape:
        with stats.lock:
            stats.pooled.add(a, b)
    stats.add(numbers, request.production_seconds, seconds)
    return numbers
