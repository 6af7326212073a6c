"""The drift profile's write side: the features of one observation (the same for training and serving) and the
reference profile a model carries from export, built by running the model through its predictor.

    python -c "from serving.runtime.profiling import with_reference_profile; help(with_reference_profile)"

At export (projects/common/onnx_export.py) `with_reference_profile` runs the new ONNX model on sample inputs and
stores the profile in the model file's metadata (key `kiln_profile`, core.vocab.PROFILE_KEY), so it travels with
every copy of the model. The statistics and scores themselves are core/profile.py's; this module sits in
serving/runtime/ beside the predictor it runs (core may not import serving), below serving/rollout/drift.py,
which keeps the live window (the read side) and which training does not need.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from core import vocab
from core.contract import ModelContract, Preprocess, TabularPost
from core.preprocess import Geometry
from core.profile import Profile, build_profile, gray_pixels, image_stats
from serving.runtime.postprocess import DetectionResult, RegressionResult, SegmentationResult, TabularResults
from serving.runtime.predictor import Predictor

PROFILE_KEY = vocab.PROFILE_KEY  # ONNX metadata_props key holding the reference profile (JSON)
CATEGORICAL_OUTPUTS = ("label", "box_class")
Values = dict[str, list[Any]]


# --- features of one observation (training and serving compute them here, once) ---------------------------


def image_features(tensor: np.ndarray, pre: Preprocess, geometry: Geometry | None = None) -> dict[str, float]:
    """Brightness, contrast and sharpness of one CxHxW model input with the normalisation undone (0-255 pixels);
    width and height of the original image when its geometry is known."""
    x = np.asarray(tensor, dtype=np.float32)
    channels = x.shape[0]
    std = np.asarray(pre.std[:channels], dtype=np.float32).reshape(-1, 1, 1)
    mean = np.asarray(pre.mean[:channels], dtype=np.float32).reshape(-1, 1, 1)
    pixels = (x * std + mean) / np.float32(pre.scale)
    # an RGB tensor is weighted as ITU-R 601 luma
    gray = pixels[0] * 0.299 + pixels[1] * 0.587 + pixels[2] * 0.114 if channels == 3 else gray_pixels(pixels[0])
    features = image_stats(gray)
    if geometry is not None:
        features.update(width=float(geometry.width), height=float(geometry.height))
    return features


def result_features(result: Any) -> Values:
    """The prediction features of one typed result (serving/runtime/postprocess.py), as value lists."""
    if isinstance(result, SegmentationResult):
        return {"foreground_fraction": [result.foreground_fraction]}
    if isinstance(result, DetectionResult):
        return {
            "box_count": [len(result.boxes)],
            "box_class": [b.class_name for b in result.boxes],
            "box_confidence": [b.confidence for b in result.boxes],
        }
    if isinstance(result, RegressionResult):
        return {"output_mean": [float(np.mean(result.values))]}
    if isinstance(result, TabularResults):
        if result.regression:
            return {"value": [float(np.mean(r.value)) if r.value is not None else np.nan for r in result]}
        return {
            "label": [r.label for r in result],
            "confidence": [float(np.max(r.probabilities)) for r in result if r.probabilities is not None],
        }
    return {}


def tabular_features(matrix: np.ndarray, post: TabularPost) -> Values:
    columns = np.asarray(matrix, dtype=np.float64).reshape(len(matrix), -1)
    return {name: columns[:, i].tolist() for i, name in enumerate(post.feature_names)}


def _extend(into: Values, more: Mapping[str, Sequence[Any]]) -> None:
    for key, values in more.items():
        into.setdefault(key, []).extend(values)


# --- the reference profile, at export -----------------------------------------------------------------------


def reference_profile(predictor: Predictor, samples: Any, source: str = "") -> Profile:
    """Run `predictor` on `samples` and profile inputs and predictions. Samples are what training has at hand:
    a tabular [N, F] matrix, preprocessed image tensors [N, C, H, W], or decoded uint8 images (a list)."""
    contract = predictor.contract
    inputs: Values = {}
    outputs: Values = {}
    if isinstance(contract.postprocess, TabularPost):
        matrix = np.asarray(samples, dtype=np.float64)
        _extend(inputs, tabular_features(matrix, contract.postprocess))
        feeds = {predictor.inputs[0].name: matrix.astype(predictor.inputs[0].dtype)}
        _extend(outputs, result_features(predictor.finish_records(predictor.run(feeds), len(matrix))))
        return build_profile(inputs, outputs, rows=len(matrix), source=source, categorical=CATEGORICAL_OUTPUTS)
    if contract.preprocess is None or predictor.task is None:
        raise ValueError(f"{predictor.source}: no kiln.task with preprocessing, so there is nothing to profile")
    pre = contract.preprocess
    if isinstance(samples, list | tuple):  # decoded images: the server's own path, sizes included
        for image in samples:
            feeds, geometry = predictor.prepare_image(np.asarray(image))
            _observe_image(predictor, feeds, geometry, pre, inputs, outputs)
        return build_profile(inputs, outputs, rows=len(samples), source=source, categorical=CATEGORICAL_OUTPUTS)
    batch = np.asarray(samples, dtype=predictor.inputs[0].dtype)
    height, width = batch.shape[2], batch.shape[3]
    identity = Geometry(height, width, 1.0, 1.0, 0, 0, height, width)
    for row in batch:
        feeds = {predictor.inputs[0].name: row[None]}
        _observe_image(predictor, feeds, identity, pre, inputs, outputs, sizes=False)
    return build_profile(inputs, outputs, rows=len(batch), source=source, categorical=CATEGORICAL_OUTPUTS)


def _observe_image(
    predictor: Predictor, feeds: Any, geometry: Geometry, pre: Preprocess, inputs: Values, outputs: Values,
    sizes: bool = True,
) -> None:  # fmt: skip
    tensor = next(iter(feeds.values()))[0]
    _extend(inputs, {k: [v] for k, v in image_features(tensor, pre, geometry if sizes else None).items()})
    _extend(outputs, result_features(predictor.finish_image(predictor.run(feeds), geometry, {})))


def with_reference_profile(proto: Any, samples: Any, source: str = "export samples") -> Any:
    """The training hook: profile `samples` through the ONNX model `proto` (an onnx.ModelProto carrying its
    kiln.* contract) and store the profile in its metadata_props under `kiln_profile`. Returns the proto."""
    import onnxruntime as ort

    meta = {p.key: p.value for p in proto.metadata_props}
    contract = ModelContract.parse(meta)
    if contract.task is None:  # a generic model: no task, so no features or predictions to describe
        return proto
    if hasattr(samples, "to_numpy"):  # a pandas DataFrame
        samples = samples.to_numpy()
    if isinstance(samples, dict) and len(samples) == 1:  # {input name: array}
        samples = next(iter(samples.values()))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    predictor = Predictor(session, contract, name=contract.model_name or "model", source="the exported model")
    profile = reference_profile(predictor, samples, source)
    kept = [p for p in proto.metadata_props if p.key != PROFILE_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=PROFILE_KEY, value=json.dumps(profile.to_json(), separators=(",", ":")))
    return proto


def read_profile(predictor: Predictor) -> Profile | None:
    """The reference profile stored in the model's metadata, or None when it was exported without one."""
    meta = predictor.session.get_modelmeta().custom_metadata_map
    text = meta.get(PROFILE_KEY)
    if not text:
        return None
    try:
        return Profile.from_json(json.loads(text))
    except (ValueError, json.JSONDecodeError) as err:
        raise ValueError(f"{PROFILE_KEY} metadata of {predictor.source} is unreadable: {err}") from None
