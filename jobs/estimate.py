"""How long a training job will take, before Start, from this store's earlier runs of the same entry point; and
the quick preset the page offers when the answer is hours.

    curl -s -X POST 127.0.0.1:8800/api/training/estimate -H 'content-type: application/json' \\
      -d '{"entry_point": "edgnet_large", "params": {"epochs": 100, "img_size": 512}}'

The basis is measured, not assumed: the median training throughput (`samples_per_second`, logged every epoch
by the trainer) of the latest finished runs of the entry point in the jobs' tracking store, in pixels per
second (images x side^2), so a run at 96 px times one at 512 px. Training images are `num_samples` (generated
sets) or the images under `data`, less the validation share. With no earlier run to time from the page says
so and offers the quick preset, whose run then becomes the basis. Validation and export time are not counted.
"""

from __future__ import annotations

import functools
import math
import os
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from jobs.mlproject import EntryPoint, ParamError

SIZE_PARAMS = ("img_size", "imgsz")  # the image side, as the families name it
# The quick preset: minutes on a CPU (make run trains edgnet_large with 6 epochs at 96 px on 60 drawings).
QUICK = {"epochs": 3, "img_size": 96, "imgsz": 160, "num_samples": 60, "num_test": 20, "batch_size": 8}
HISTORY = 5  # latest finished runs the median is taken over
MAX_NUMBER = 1e9  # larger epochs, sizes or sample counts are typos, not plans
MAX_FILES = 200_000  # a data folder is counted up to this many entries
VAL_SHARE = 0.2  # the families' default val_fraction
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


@functools.cache
def device() -> str:
    """cuda when this machine (where the jobs run) has an NVIDIA device node, else cpu. Importing torch to ask
    would stall the page's first estimate for seconds."""
    return "cuda" if Path("/dev/nvidia0").exists() and os.environ.get("CUDA_VISIBLE_DEVICES") != "" else "cpu"


def quick_params(entry: EntryPoint) -> dict[str, float]:
    """The quick preset's values for the params this entry point has."""
    return {name: value for name, value in QUICK.items() if name in entry.params}


def _value(entry: EntryPoint, params: Mapping[str, Any], name: str) -> Any:
    if name in params and params[name] not in (None, ""):
        return params[name]
    param = entry.params.get(name)
    return None if param is None else param.default


def _number(entry: EntryPoint, params: Mapping[str, Any], name: str) -> float | None:
    """A positive finite number, None when the entry point has no such param; else a 422 naming it."""
    raw = _value(entry, params, name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ParamError(f"params.{name}: {raw!r} is not a number", field=f"params.{name}") from None
    if not (math.isfinite(value) and 0 < value <= MAX_NUMBER):
        raise ParamError(f"params.{name}: {raw!r} must be above 0 and at most {MAX_NUMBER:g}", field=f"params.{name}")
    return value


def training_images(entry: EntryPoint, params: Mapping[str, Any], project_dir: Path) -> int | None:
    """Images a run trains on: num_samples of a generated set, or the image files under `data` when that is a
    folder inside the project (a page request does not walk the rest of the disk; counting stops at MAX_FILES)."""
    data = _value(entry, params, "data")
    if data and not str(data).startswith(("dataset:", "s3://")):
        root = project_dir.resolve()
        folder = (root / str(data)).resolve()
        if folder.is_file():
            folder = folder.parent
        if not folder.is_dir() or not folder.is_relative_to(root):
            return None
        count = 0
        for index, path in enumerate(folder.rglob("*")):
            count += path.suffix.lower() in IMAGE_SUFFIXES
            if index >= MAX_FILES:
                break
        return round(count * (1 - VAL_SHARE))
    samples = _number(entry, params, "num_samples")
    return round(samples * (1 - VAL_SHARE)) if samples is not None else None


def pixel_rate(client: MlflowClient, entry_point: str, size_param: str) -> tuple[float, int] | None:
    """(median image-pixels per second, runs used) over the latest finished runs of `entry_point`."""
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`mlflow.project.entryPoint` = '{entry_point}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    rates = []
    for run in runs:
        sps, side = run.data.metrics.get("samples_per_second"), run.data.params.get(size_param)
        if sps and side:
            rates.append(float(sps) * float(side) ** 2)
        if len(rates) == HISTORY:
            break
    return (statistics.median(rates), len(rates)) if rates else None


def estimate(entry: EntryPoint, params: Mapping[str, Any], tracking_uri: str, project_dir: Path) -> dict[str, Any]:
    """The page's answer: seconds (or None and why), what it rests on, and the quick preset."""
    answer: dict[str, Any] = {"device": f"{device()} ({os.cpu_count()} cores)" if device() == "cpu" else device(),
                              "seconds": None, "quick": quick_params(entry)}  # fmt: skip
    size_param = next((n for n in SIZE_PARAMS if n in entry.params), None)
    epochs, images = _number(entry, params, "epochs"), training_images(entry, params, project_dir)
    side = _number(entry, params, size_param) if size_param else None
    answer["images"] = images
    if side is None or epochs is None or not images:
        answer["basis"] = "no estimate: this entry point names no image size, epochs or training images"
        return answer
    found = pixel_rate(MlflowClient(tracking_uri), entry.name, str(size_param))
    if found is None:
        answer["basis"] = f"no finished {entry.name} run in this store to time from; the quick preset takes minutes"
        return answer
    rate, runs = found
    answer["seconds"] = epochs * images * side**2 / rate
    answer["basis"] = f"median speed of the latest {runs} finished {entry.name} run(s) in this store, per pixel"
    return answer
