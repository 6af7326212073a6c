"""int8 versions of registered models, checked against fp32 on the same data before they are registered.

    kiln optimize microseg_mininet --version 3 --int8 --max-drop 0.01
    kiln optimize edgnet --version 2 --int8 --calibration data/samples/drawings --max-drop 0.02

Image models are quantized statically (onnxruntime.quantization, QDQ, int8 weights per channel, activations
calibrated on images run through the model's own preprocessing); tabular models dynamically (weights only, no
calibration). Both versions are then evaluated on the same data with the family's metric (IoU for segmentation,
mAP50 for detection, AUC for binary tabular, Pearson's r for regression), and timed side by side at batch 1 with
the server's session options. The int8 model is registered as a new version of the same model only when the metric
drops by at most `--max-drop`; it is tagged with the fp32 version it came from (`kiln.source_version`), the drop and
the speed-up, and carries the source's contract, so it serves and promotes like any other version.

The gate: a version that loses more than `--max-drop`, that is slower than fp32 at batch 1 (p50), or whose file is
bigger is refused with the figures (`--force` registers it anyway, tagged as forced). The drop is measured on data
the model did not train on: the dataset's own val split (images/val, a YOLO YAML's val), else the training run's
random hold-out rebuilt from its `val_fraction` and `seed` params with the trainer's own split function; `--data`
given explicitly is taken as held-out as it is. The outcome says which split it used and how it was made.

The data defaults to the model's own: the folder its training run recorded as its dataset. Image data is an
`images/` + `masks/` folder; detection data a YOLO dataset YAML (its val split is evaluated, its train split
calibrates) or a folder of images with YOLO labels; tabular data a CSV with the training target column.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnx
from mlflow import MlflowClient

from core import vocab
from core.contract import ModelContract
from core.errors import UserError
from core.metrics import overlap_sums, pooled_iou
from core.preprocess import prepare
from efficiency.detection import detection_map50
from registry.lookup import get_run, get_version, run_data
from serving.deployment.artifacts import onnx_file
from serving.runtime.footprint import example_feeds, latency, log_footprint, open_like_server
from serving.runtime.postprocess import SegmentationResult
from serving.runtime.predictor import Predictor

QUANTIZED_OPS = frozenset(
    {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"}
)  # fmt: skip  (a graph without one is not int8: tree ensembles, say)
CALIBRATION_IMAGES = 32  # the onnxruntime docs suggest a few dozen to a few hundred representative inputs
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


class OptimizeError(UserError):
    """An optimize request that cannot be carried out; the message names the model, flag or file."""

    exit_code = 2  # bad input, as registry errors; a refused int8 version exits 1, as a refused promotion


@dataclass
class Outcome:
    model: str
    source_version: int
    metric: str
    fp32: float
    int8: float
    drop: float
    max_drop: float
    fp32_p50_ms: float
    int8_p50_ms: float
    speedup: float
    fp32_bytes: int
    int8_bytes: int
    accepted: bool
    registered_version: int | None
    evaluated_on: str
    images: int
    split: str = ""  # which held-out split the metric was measured on, and how it was made
    refusals: tuple[str, ...] = ()  # why the gate refused it, with the figures (empty: it passed)
    forced: bool = False  # registered despite refusals (--force)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.registered_version is not None:
            verdict = f"registered {self.model} v{self.registered_version}"
            if self.forced:
                verdict += f" (--force, despite: {'; '.join(self.refusals)})"
        else:
            verdict = "refused: " + "; ".join(self.refusals) + " (--force registers it anyway)"
        return "\n".join([
            f"{self.model} v{self.source_version} -> int8, evaluated on {self.images} samples of {self.evaluated_on}",
            f"  held out   {self.split}",
            f"  {self.metric:<10} fp32 {self.fp32:.4f}   int8 {self.int8:.4f}   drop {self.drop:+.4f}",
            f"  p50 ms     fp32 {self.fp32_p50_ms:.3f}   int8 {self.int8_p50_ms:.3f}   speed-up x{self.speedup:.2f}",
            f"  size       fp32 {self.fp32_bytes / 1e6:.3f} MB   int8 {self.int8_bytes / 1e6:.3f} MB",
            f"  {verdict}",
        ])  # fmt: skip


# --- the gate -----------------------------------------------------------------------------------------------


def refusals(
    drop: float, max_drop: float, fp32_ms: float, int8_ms: float, fp32_bytes: int, int8_bytes: int
) -> tuple[str, ...]:
    """Why an int8 version should not replace its fp32 source, each with its figures; () when it should."""
    out = []
    if drop > max_drop:
        out.append(f"metric drop {drop:.4f} > --max-drop {max_drop}")
    if int8_ms > fp32_ms:
        out.append(
            f"slower than fp32: p50 {int8_ms:.3f} ms vs {fp32_ms:.3f} ms (speed-up x{fp32_ms / max(int8_ms, 1e-9):.2f})"
        )
    if int8_bytes > fp32_bytes:
        out.append(f"bigger than fp32: {int8_bytes / 1e6:.3f} MB vs {fp32_bytes / 1e6:.3f} MB")
    return tuple(out)


# --- held-out data ------------------------------------------------------------------------------------------


def _run_split_params(client: MlflowClient, run_id: str) -> tuple[float, int] | None:
    params = get_run(client, run_id).data.params
    try:
        return float(params["val_fraction"]), int(params["seed"])
    except (KeyError, ValueError):
        return None


def held_out_pairs(pairs: list[tuple[Path, Path | None]], folder: Path, split: tuple[float, int] | None,
                   run_id: str) -> tuple[list[tuple[Path, Path | None]], str]:  # fmt: skip
    """The images the training run validated on (never trained on), and a sentence saying how they were chosen."""
    from projects.common.segdata import random_split

    val_dir = folder / "images" / "val"
    if val_dir.is_dir():
        return [p for p in pairs if p[0].is_relative_to(val_dir)], f"the dataset's own val split ({val_dir})"
    if split is None:
        raise OptimizeError(f"run {run_id} records no val_fraction/seed params, so the images it did not train on "
                            f"cannot be rebuilt from {folder}; pass --data with held-out images")  # fmt: skip
    val_fraction, seed = split
    _, val = random_split(pairs, val_fraction, seed)
    how = (f"the training run's hold-out: {len(val)} of {len(pairs)} images drawn by its val_fraction="
           f"{val_fraction} and seed={seed} (projects.common.segdata.random_split, as the trainer splits)")  # fmt: skip
    return val, how


def held_out_rows(table: Any, column: str, split: tuple[float, int] | None, regression: bool,
                  run_id: str) -> tuple[Any, str]:  # fmt: skip
    """The rows skinmodel's `split_table` held out for validation (same sklearn split, seed and stratification)."""
    from sklearn.model_selection import train_test_split

    if split is None:
        raise OptimizeError(f"run {run_id} records no val_fraction/seed params, so its held-out rows cannot be "
                            "rebuilt; pass --data with a held-out CSV")  # fmt: skip
    val_fraction, seed = split
    stratify = None if regression else table[column].to_numpy()
    _, val_index = train_test_split(range(len(table)), test_size=val_fraction, random_state=seed, stratify=stratify)
    how = (
        f"the training run's hold-out: {len(val_index)} of {len(table)} rows by val_fraction={val_fraction}, "
        f"seed={seed}{'' if regression else ', stratified by class'} (sklearn train_test_split, as skinmodel)"
    )
    return table.iloc[sorted(val_index)], how


# --- data ---------------------------------------------------------------------------------------------------


def own_data(client: MlflowClient, run_id: str) -> Path:
    """The dataset folder the training run recorded (its `log_dataset` source)."""
    import json

    run = get_run(client, run_id)
    for dataset_input in run.inputs.dataset_inputs if run.inputs is not None else []:
        try:
            source = json.loads(dataset_input.dataset.source)
        except (TypeError, ValueError):
            continue
        path = source.get("uri") or source.get("path") if isinstance(source, dict) else None
        if path:
            folder = Path(str(path).removeprefix("file://"))
            if folder.exists():
                return folder
    params = run.data.params
    if params.get("data") and Path(params["data"]).exists():
        return Path(params["data"])
    raise OptimizeError(f"run {run_id} records no dataset folder that exists here; pass --data (and --calibration)")


def image_pairs(folder: Path) -> list[tuple[Path, Path | None]]:
    """(image, mask or None) in `folder`'s images/ (+ masks/), sorted by name."""
    images_dir = folder / "images"
    if not images_dir.is_dir():
        raise OptimizeError(f"{folder}: expected an images/ folder (and masks/ for segmentation)")
    masks_dir = folder / "masks"
    images = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise OptimizeError(f"{images_dir}: no images")
    return [(p, _mask_of(p, images_dir, masks_dir)) for p in images]


def _mask_of(image: Path, images_dir: Path, masks_dir: Path) -> Path | None:
    rel = image.relative_to(images_dir).with_suffix(".png")
    return masks_dir / rel if (masks_dir / rel).is_file() else None


def read_image(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise OptimizeError(f"{path}: cannot decode image")
    return np.asarray(image)


class ImageCalibration:
    """onnxruntime's CalibrationDataReader: one prepared image per call, as the server would feed it."""

    def __init__(self, paths: Sequence[Path], contract: ModelContract, input_name: str) -> None:
        assert contract.preprocess is not None
        self.iterator: Iterator[dict[str, np.ndarray]] = (
            {input_name: prepare(read_image(p), contract.preprocess)[0]} for p in paths
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.iterator, None)


# --- quantization -------------------------------------------------------------------------------------------


def quantize(source: Path, target: Path, contract: ModelContract, calibration: Sequence[Path]) -> Path:
    """Static QDQ int8 (per-channel weights) for image models, dynamic int8 weights for tabular ones."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name("prepared.onnx")
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    if contract.task == "tabular" or contract.preprocess is None:
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8)
    else:
        if not calibration:
            raise OptimizeError("static quantization needs calibration images; pass --calibration FOLDER")
        reader = ImageCalibration(calibration, contract, _input_name(prepared))
        quantize_static(str(prepared), str(target), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)  # fmt: skip
    proto = onnx.load(str(target))
    if not any(node.op_type in QUANTIZED_OPS for node in proto.graph.node):
        kinds = sorted({node.op_type for node in proto.graph.node})
        raise OptimizeError(
            f"nothing to quantize: no operator onnxruntime quantizes in this graph ({', '.join(kinds)})"
        )
    keep = {p.key: p.value for p in onnx.load(str(source)).metadata_props}
    del proto.metadata_props[:]
    for key, value in keep.items():  # the int8 graph keeps the contract the server reads
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(target))
    return target


def _input_name(path: Path) -> str:
    proto = onnx.load(str(path))
    initializers = {i.name for i in proto.graph.initializer}
    name: str = next(v.name for v in proto.graph.input if v.name not in initializers)
    return name


# --- evaluation ---------------------------------------------------------------------------------------------


def segmentation_iou(predictor: Predictor, pairs: Sequence[tuple[Path, Path | None]]) -> float:
    """Foreground IoU over all pixels of `pairs` (sums of intersection and union, as the trainers compute it)."""
    import cv2

    inter = union = 0.0
    for image_path, mask_path in pairs:
        assert mask_path is not None
        decoded = cv2.imdecode(np.fromfile(str(mask_path), dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
        if decoded is None:
            raise OptimizeError(f"{mask_path}: cannot decode mask")
        truth = np.asarray(decoded > 127)
        result = predictor.predict_images([read_image(image_path)])[0]
        if not isinstance(result, SegmentationResult):
            raise OptimizeError(f"{image_path}: the model answered {type(result).__name__}, not a mask")
        pred = np.asarray(result.mask > 0)
        if pred.shape != truth.shape:
            raise OptimizeError(f"{mask_path}: mask size {truth.shape[::-1]} differs from its image")
        pair = overlap_sums(pred, truth)
        inter, union = inter + pair[0], union + pair[1]
    return pooled_iou(inter, union)


def tabular_metric(predictor: Predictor, table: Any, target: str) -> tuple[str, float]:
    """AUC for a binary classifier, Pearson's r for a regressor, on the rows of `table`."""
    from sklearn.metrics import roc_auc_score

    features = list(getattr(predictor.contract.postprocess, "feature_names", ()))
    records = table[features].to_dict(orient="records")
    results = predictor.predict_records(records)
    truth = table[target].to_numpy()
    if results.regression:
        values = np.asarray([r.value for r in results], dtype=np.float64)
        return "pearson", float(np.corrcoef(values, truth.astype(np.float64))[0, 1])
    classes = results.classes
    if len(classes) != 2:
        raise OptimizeError(f"tabular optimize supports binary classifiers and regressors; {len(classes)} classes")
    scores = np.asarray([p[1] for r in results if (p := r.probabilities) is not None], dtype=np.float64)
    if len(scores) != len(results):
        raise OptimizeError("the classifier left out the probabilities of some records")
    return "auc", float(roc_auc_score(truth == classes[1], scores))


def time_both(fp32: Path, int8: Path, contract: ModelContract) -> tuple[float, float]:
    """p50 ms of each at batch 1, interleaved in two rounds so that load changes hit both alike."""
    runs: dict[str, list[float]] = {"fp32": [], "int8": []}
    sessions = {}
    for key, path in (("fp32", fp32), ("int8", int8)):
        proto = onnx.load(str(path))
        sessions[key] = (open_like_server(proto, contract)[0], example_feeds(proto, contract))
    for _ in range(2):
        for key, (session, feeds) in sessions.items():
            runs[key] += latency(session, feeds, budget_s=1.0)
    return float(np.median(runs["fp32"])), float(np.median(runs["int8"]))


# --- the command --------------------------------------------------------------------------------------------


def optimize(
    model: str,
    version: int,
    *,
    max_drop: float = 0.01,
    data: Path | None = None,
    calibration: Path | None = None,
    target: str | None = None,
    max_samples: int = 0,
    force: bool = False,
    client: MlflowClient | None = None,
) -> Outcome:
    """Quantize `model` v`version` to int8, compare it with fp32 on held-out data, register it if the gate passes.

    The gate (`refusals`): drop within `max_drop`, not slower, not bigger; `force` registers a refused version.
    """
    client = client or MlflowClient()
    if max_drop < 0:
        raise OptimizeError(f"--max-drop must be >= 0, got {max_drop}")
    found = get_version(client, model, version)
    with tempfile.TemporaryDirectory(prefix="kiln-optimize-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(f"models:/{model}/{version}", dst_path=tmp))
        fp32 = onnx_file(local)
        contract = ModelContract.parse({p.key: p.value for p in onnx.load(str(fp32)).metadata_props})
        run_id = str(found.run_id)
        folder = data or own_data(client, run_id)
        given = data is not None  # --data is held-out data the user chose; the model's own folder is not
        split_params = _run_split_params(client, run_id)
        int8 = Path(tmp) / "int8.onnx"
        if contract.task == "segmentation":
            pairs = [p for p in image_pairs(folder) if p[1] is not None]
            if not pairs:
                raise OptimizeError(f"{folder}: no image has a mask in masks/; IoU needs masks")
            if given:
                how = f"the --data folder {folder}, taken as held-out as given"
            else:
                pairs, how = held_out_pairs(pairs, folder, split_params, run_id)
            pairs = pairs[:max_samples] if max_samples else pairs
            calib = [p for p, _ in image_pairs(calibration or folder)][:CALIBRATION_IMAGES]
            quantize(fp32, int8, contract, calib)
            name, before, after = "iou", *(segmentation_iou(_predictor(p), pairs) for p in (fp32, int8))
            count = len(pairs)
        elif contract.task == "tabular":
            table = _read_table(folder)
            column = target or _run_param(client, run_id, "target")
            if given:
                how = f"the --data table {folder}, taken as held-out as given"
            else:
                regression = getattr(contract.postprocess, "task", "") == "regression"
                table, how = held_out_rows(table, column, split_params, regression, run_id)
            table = table.head(max_samples) if max_samples else table
            quantize(fp32, int8, contract, [])
            (name, before), (_, after) = (tabular_metric(_predictor(p), table, column) for p in (fp32, int8))
            count = len(table)
        elif contract.task == "detection":
            images, calib = detection_data(folder, calibration, contract)
            images = images[:max_samples] if max_samples else images
            how = "the detection dataset's val split (its YAML's `val`, or val/ beside train/)"
            quantize(fp32, int8, contract, calib)
            name, before, after = "map50", *(detection_map50(_predictor(p), images, read_image) for p in (fp32, int8))
            count = len(images)
        else:
            raise OptimizeError(f"{model} v{version} is a {contract.task!r} model; int8 optimize supports "
                                "segmentation (IoU), detection (mAP50) and tabular (AUC, Pearson) models")  # fmt: skip
        fp32_ms, int8_ms = time_both(fp32, int8, contract)
        sizes = fp32.stat().st_size, int8.stat().st_size
        refused = refusals(before - after, max_drop, fp32_ms, int8_ms, *sizes)
        outcome = Outcome(
            model=model, source_version=version, metric=name, fp32=before, int8=after, drop=before - after,
            max_drop=max_drop, fp32_p50_ms=fp32_ms, int8_p50_ms=int8_ms, speedup=fp32_ms / max(int8_ms, 1e-9),
            fp32_bytes=sizes[0], int8_bytes=sizes[1], accepted=not refused or force,
            registered_version=None, evaluated_on=str(folder), images=count, split=how, refusals=refused,
            forced=bool(refused) and force,
        )  # fmt: skip
        if outcome.accepted:
            outcome.registered_version = register_int8(client, found, int8, contract, outcome, local)
    return outcome


def detection_data(folder: Path, calibration: Path | None, contract: ModelContract) -> tuple[list[Path], list[Path]]:
    """Evaluation images (the val split, with YOLO labels) and calibration images (train first) of a detector."""
    from efficiency.detection import calibration_images, evaluation_images, open_dataset

    dataset = open_dataset(folder)
    model_names = list(getattr(contract.postprocess, "names", ()))
    if dataset.names and model_names and dataset.names != model_names:
        raise OptimizeError(f"{dataset.yaml_path or folder}: classes {dataset.names} differ from the model's "
                            f"{model_names}; evaluate on the dataset it was trained on")  # fmt: skip
    calib = calibration_images(open_dataset(calibration) if calibration else dataset)[:CALIBRATION_IMAGES]
    return evaluation_images(dataset), calib


def _predictor(path: Path) -> Predictor:
    return Predictor.from_onnx(path)


def _read_table(folder: Path) -> Any:
    import pandas as pd

    path = folder if folder.is_file() else next(iter(sorted(folder.glob("*.csv"))), None)
    if path is None or not path.is_file():
        raise OptimizeError(f"{folder}: tabular optimize needs a CSV file (or a folder holding one)")
    return pd.read_csv(path)


def _run_param(client: MlflowClient, run_id: str, key: str) -> str:
    value = get_run(client, run_id).data.params.get(key)
    if not value:
        raise OptimizeError(f"run {run_id} has no {key!r} param; pass --target")
    return str(value)


def register_int8(
    client: MlflowClient, source: Any, int8: Path, contract: ModelContract, outcome: Outcome, local: Path
) -> int:
    """Log the int8 model in a run of its own and register it under the same name, tagged with where it came from."""
    from projects.common.onnx_export import log_onnx_model
    from serving.deployment.artifacts import input_example

    source_metrics, _ = run_data(client, source.run_id)
    ranking = contract.ranking
    with mlflow.start_run(run_name=f"{outcome.model}-v{outcome.source_version}-int8") as run:
        mlflow.set_tags({vocab.OPTIMIZED_FROM: f"{outcome.model}/{outcome.source_version}", vocab.INT8: "true"})
        mlflow.log_params({"source_model": outcome.model, "source_version": outcome.source_version,
                           "quantization": "static QDQ int8" if contract.preprocess else "dynamic int8",
                           "max_drop": outcome.max_drop, "evaluated_on": outcome.evaluated_on,
                           "held_out": outcome.split[:500], "forced": outcome.forced})  # fmt: skip
        if outcome.refusals:
            mlflow.log_text("\n".join(outcome.refusals) + "\n", "gate_refusals.txt")
        metrics = {f"fp32_{outcome.metric}": outcome.fp32, f"int8_{outcome.metric}": outcome.int8,
                   "metric_drop": outcome.drop, "speedup": outcome.speedup, "fp32_p50_ms": outcome.fp32_p50_ms,
                   "int8_p50_ms": outcome.int8_p50_ms}  # fmt: skip
        if "num_parameters" in source_metrics:
            metrics["num_parameters"] = source_metrics["num_parameters"]
        if ranking is not None and ranking.metric in source_metrics:
            # the ranking metric is the source's, moved by the drop measured on the same data for both
            sign = -1.0 if ranking.mode == "max" else 1.0
            metrics[ranking.metric] = source_metrics[ranking.metric] + sign * outcome.drop
        mlflow.log_metrics(metrics)
        version = log_onnx_model(int8, input_example=_example(local, input_example), model_name=outcome.model,
                                 contract=contract)  # fmt: skip
        if "latency_p50_ms" not in run_data(client, run.info.run_id)[0]:  # registration did not profile it
            log_footprint(int8, run.info.run_id)
    tags = {vocab.SOURCE_VERSION: str(outcome.source_version), vocab.INT8: "true",
            vocab.METRIC_DROP: f"{outcome.drop:.6f}", vocab.SPEEDUP: f"{outcome.speedup:.3f}"}  # fmt: skip
    assert version is not None  # log_onnx_model registers (register=True) and returns the version
    for key, value in tags.items():
        client.set_model_version_tag(outcome.model, str(version.version), key, value)
    return int(version.version)


def _example(local: Path, reader: Any) -> Any:
    try:
        return reader(local)
    except Exception:  # noqa: BLE001  (an example is a convenience; the model is registered without one)
        return None
