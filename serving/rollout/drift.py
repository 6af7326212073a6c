"""Drift monitoring: the reference profile a model carries from training, the same statistics over a rolling
window of live traffic, a PSI (and KS) score per feature, and a sample of uncertain inputs saved for labelling.

    curl -s 127.0.0.1:8080/v1/models/skinmodel/drift | python -m json.tool
    kiln serve --capture /data/captured        # or s3://bucket/prefix: uncertain inputs for the data loop

The write side lives in serving/runtime/profiling.py: at export (projects/common/onnx_export.py)
`with_reference_profile` runs the new ONNX model on sample inputs and stores the profile in the model file's
metadata (key `kiln_profile`), so it travels with every copy of the model:
- tabular: every feature's deciles and percentile curve (few whole-number levels: category shares);
- images: brightness, contrast and sharpness of the model input in 0-255 gray pixels (the preprocessing undone),
  and, when the samples are decoded images, their width and height;
- predictions: class shares and confidence (tabular), foreground fraction (segmentation), box count, box classes
  and confidences (detection), the output mean (regression).
The server computes the same features from each observed request (off the request path, serving/rollout/offpath.py),
keeps the last KILN_DRIFT_WINDOW values of each, and scores them with core.profile when asked and every
KILN_DRIFT_SCORE_EVERY observations, setting the `kiln_drift_psi{model, feature}` gauges. A feature drifted
(`kiln_drift_shift` 1, listed under "drifted") when its test is significant after Holm's correction over every
feature of the window (core.profile.correct): an in-distribution window alarms at most 1% of the time.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from core import vocab
from core.profile import (
    DRIFT_ALPHA,
    FeatureDrift,
    Profile,
    correct,
    score,
)
from serving.runtime.postprocess import (
    DetectionResult,
    SegmentationResult,
    TabularResults,
)

log = logging.getLogger(vocab.SERVING_LOG + ".drift")

SCORE_INTERVAL_S = 5.0  # the kiln_drift_* gauges lag live traffic by at most this (GET /drift scores on demand)


# --- the live window ----------------------------------------------------------------------------------------


GaugeFn = Callable[[str, str, FeatureDrift], None]  # (model, feature, its drift)


@dataclass
class DriftReport:
    scores: dict[str, FeatureDrift]
    at: datetime

    def worst(self) -> tuple[str, FeatureDrift] | None:
        return max(self.scores.items(), key=lambda kv: kv[1].psi, default=None)


class DriftMonitor:
    """The rolling window of one served version's features, scored against its reference profile."""

    def __init__(
        self, name: str, version: str, profile: Profile | None, *, window: int, min_samples: int,
        score_every: int = 200, gauge: GaugeFn | None = None,
    ) -> None:  # fmt: skip
        self.name, self.version, self.profile = name, version, profile
        self.window, self.min_samples, self.score_every = window, min_samples, score_every
        self._gauge = gauge
        self._values: dict[str, deque[Any]] = {}
        self._lock = threading.Lock()
        self._since_score = 0
        self._scored_at = 0.0  # monotonic time of the last score from observe()
        self.observed = 0
        self.since = datetime.now(UTC)
        self.last: DriftReport | None = None

    def observe(self, inputs: Mapping[str, Sequence[Any]], outputs: Mapping[str, Sequence[Any]]) -> None:
        """Add one request's features (called from the off-path worker)."""
        with self._lock:
            for prefix, values in (("input.", inputs), ("output.", outputs)):
                for key, vals in values.items():
                    self._values.setdefault(prefix + key, deque(maxlen=self.window)).extend(vals)
            self.observed += 1
            self._since_score += 1
            now = time.monotonic()
            # every `score_every` observations, at most once per SCORE_INTERVAL_S: a score costs ~25 ms for 32
            # features of 2,000 values, which at 1,000 requests/s scored per 100 would be a quarter of a core
            due = self._since_score >= self.score_every and now - self._scored_at >= SCORE_INTERVAL_S
            if due:
                self._scored_at = now
        if due:
            self.score()

    def score(self) -> DriftReport | None:
        """Score every profiled feature with enough live values; update the gauges."""
        if self.profile is None:
            return None
        with self._lock:
            snapshot = {k: list(v) for k, v in self._values.items()}
            self._since_score = 0
        scores: dict[str, FeatureDrift] = {}
        for feature, reference in self.profile.features().items():
            values = snapshot.get(feature, [])
            if len(values) >= self.min_samples:
                scores[feature] = score(reference, values)
        report = DriftReport(correct(scores), datetime.now(UTC))  # Holm over every feature of the window
        self.last = report
        if self._gauge is not None:
            for feature, drift in scores.items():
                self._gauge(self.name, feature, drift)
        return report

    def to_json(self) -> dict[str, Any]:
        report = self.score()
        base: dict[str, Any] = {
            "model": self.name, "version": self.version, "observed_requests": self.observed,
            "since": self.since.isoformat(), "window": self.window, "min_samples": self.min_samples,
        }  # fmt: skip
        if self.profile is None or report is None:
            note = "this version was exported without a reference profile (kiln_profile metadata)"
            return {**base, "reference": None, "features": {}, "note": note}
        worst = report.worst()
        waiting = sorted(f for f in self.profile.features() if f not in report.scores)
        return {
            **base,
            "reference": {"rows": self.profile.rows, "source": self.profile.source},
            "drifted": sorted(f for f, d in report.scores.items() if d.level == "shift"),
            "alpha": DRIFT_ALPHA,  # the chance that an in-distribution window lists any feature as drifted
            "worst": None if worst is None else {"feature": worst[0], **worst[1].to_json()},
            "features": {f: d.to_json() for f, d in sorted(report.scores.items())},
            "waiting_for_samples": waiting,
        }


# --- capture of uncertain inputs --------------------------------------------------------------------------


def uncertainty(result: Any) -> float:
    """How unsure a prediction is, 0 (sure) to 1: 1 - top class probability (scaled to [0, 1] over the classes),
    the share of a mask's pixels near its threshold, or the least confident box above the cut."""
    if isinstance(result, TabularResults) and not result.regression:
        worst = 0.0
        for r in result:
            if r.probabilities is not None and len(r.probabilities) > 1:
                k = len(r.probabilities)
                worst = max(worst, (1 - float(np.max(r.probabilities))) * k / (k - 1))
        return worst
    if isinstance(result, SegmentationResult):
        p = result.probability
        return float(np.mean(np.abs(p - result.threshold) < 0.2)) if p.size else 0.0
    if isinstance(result, DetectionResult) and result.boxes:
        return float(1 - min(b.confidence for b in result.boxes))
    return 0.0


class Capture:
    """Save inputs whose prediction was uncertain to a folder or s3://bucket/prefix, at most `per_minute` a minute:
    images as files, records as JSON lines, each with a JSON line in `captured.jsonl` saying what the model said."""

    def __init__(self, target: str, *, threshold: float, per_minute: int) -> None:
        self.target, self.threshold, self.per_minute = target.rstrip("/"), threshold, per_minute
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self.saved = 0
        self._s3: Any = None
        if not target.startswith("s3://"):
            Path(target).mkdir(parents=True, exist_ok=True)

    def offer(self, model: str, version: str, data: bytes | None, records: Any, result: Any) -> bool:
        """Save this input when its prediction is uncertain enough and the rate allows; True when saved."""
        unsure = uncertainty(result)
        if unsure < self.threshold or not self._allow():
            return False
        stamp = datetime.now(UTC)
        key = f"{model}/v{version}/{stamp:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:6]}"
        if data is not None:
            name = f"{key}{_suffix(data)}"
            self._write(name, data)
        else:
            name = f"{key}.json"
            self._write(name, json.dumps(records).encode())
        entry = {"file": name, "model": model, "version": version, "uncertainty": round(unsure, 4),
                 "at": stamp.isoformat(), "prediction": _small(result.to_json())}  # fmt: skip
        self._write(f"{key}.meta.json", json.dumps(entry).encode())
        self.saved += 1
        return True

    def _allow(self) -> bool:
        now = time.monotonic()
        with self._lock:
            while self._times and now - self._times[0] > 60:
                self._times.popleft()
            if len(self._times) >= self.per_minute:
                return False
            self._times.append(now)
            return True

    def _write(self, name: str, data: bytes) -> None:
        if self.target.startswith("s3://"):
            bucket, _, prefix = self.target.removeprefix("s3://").partition("/")
            if self._s3 is None:
                import boto3

                self._s3 = boto3.client("s3")
            self._s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}".lstrip("/"), Body=data)
            return
        path = Path(self.target) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _suffix(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    if data.startswith(b"\x93NUMPY"):
        return ".npy"
    return ".bin"


def _small(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "mask_png"}
