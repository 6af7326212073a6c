"""Serving test helpers: tiny ONNX models carrying the kiln metadata contract, registered in a real sqlite MLflow
registry, and the server running on them (in-process TestClient, or uvicorn on a free 127.0.0.1 port).

    .venv/bin/python -m pytest tests/serving -q

The models are built with onnx.helper so their outputs are known exactly: the segmentation "network" is
`logits = x - bias`, the detector returns fixed boxes, the regressor returns a constant spectrum. The tabular
model is a real XGBoost classifier converted by onnxmltools, as training produces it. The read-only endpoint
tests share one registry per module (conftest.py); swap tests build their own on the `mlflow_uri` fixture.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnx
from mlflow import MlflowClient
from onnx import TensorProto, helper, numpy_helper

from core.contract import (
    DetectionPost,
    ModelContract,
    Postprocess,
    Preprocess,
    RegressionPost,
    SegmentationPost,
    TabularPost,
)
from serving.settings import ServeSettings

OPSET = 17

SEG_PRE = Preprocess(color="gray", size=(32, 32), resize="stretch", scale=1 / 255, mean=(0.0,), std=(1.0,))
DET_PRE = Preprocess(color="rgb", size=(64, 64), resize="letterbox", scale=1 / 255, pad_value=114)
DET_NAMES = ["smoke", "fire"]
# xywh in letterboxed 64x64 pixels, then one score per class. B overlaps A (same class) and is suppressed.
DET_BOXES = [
    [32.0, 32.0, 20.0, 20.0, 0.9, 0.1],  # A: smoke 0.9
    [33.0, 33.0, 20.0, 20.0, 0.8, 0.05],  # B: smoke 0.8, IoU with A ~0.82
    [10.0, 30.0, 8.0, 8.0, 0.1, 0.6],  # C: fire 0.6
    [50.0, 50.0, 4.0, 4.0, 0.2, 0.1],  # D: below conf 0.25
]
FEATURES = ["f0", "f1", "f2", "f3"]


def _meta(task: str, family: str, pre: Preprocess | None, post: Postprocess) -> dict[str, str]:
    """The kiln.* metadata as training writes it: built by the typed contract, never by hand."""
    return ModelContract(task=task, family=family, preprocess=pre, postprocess=post).to_metadata()


def with_metadata(model: onnx.ModelProto, meta: dict[str, str]) -> onnx.ModelProto:
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    return model


def _graph(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def seg_model(bias: float = 0.5, size: int = 32, threshold: float = 0.5) -> onnx.ModelProto:
    """logits = x - bias on [N,1,size,size]: foreground where the scaled pixel is above bias."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, size, size])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1, size, size])
    b = numpy_helper.from_array(np.array(bias, dtype=np.float32), "bias")
    model = _graph([helper.make_node("Sub", ["input", "bias"], ["output"])], [x], [y], [b])
    pre = replace(SEG_PRE, size=(size, size))
    post = SegmentationPost(activation="sigmoid", threshold=threshold)
    return with_metadata(model, _meta("segmentation", "edgnet", pre, post))


def nan_model() -> onnx.ModelProto:
    """A segmentation model whose weights went NaN: same signature, useless output."""
    return seg_model(bias=float("nan"))


def _constant_head(input_shape: list[Any], const: np.ndarray, out_shape: list[Any]) -> onnx.ModelProto:
    """output[N, ...] = const broadcast over the batch (0 * mean(input) keeps the batch axis)."""
    rank = len(const.shape)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, input_shape)
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)
    inits = [
        numpy_helper.from_array(const[None].astype(np.float32), "const"),
        numpy_helper.from_array(np.array([-1] + [1] * rank, dtype=np.int64), "shape"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", ["mean", "shape"], ["per_sample"]),
        helper.make_node("Mul", ["per_sample", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "const"], ["output"]),
    ]
    return _graph(nodes, [x], [y], inits)


def det_model() -> onnx.ModelProto:
    const = np.array(DET_BOXES, dtype=np.float32).T  # [4+nc, N]
    model = _constant_head(["batch", 3, 64, 64], const, ["batch", 4 + len(DET_NAMES), len(DET_BOXES)])
    post = DetectionPost(names=tuple(DET_NAMES), conf=0.25, iou=0.45, box_format="xywh", nms=False)
    return with_metadata(model, _meta("detection", "yolo", DET_PRE, post))


def reg_model() -> onnx.ModelProto:
    const = np.arange(2 * 2 * 30, dtype=np.float32).reshape(2, 2, 30) / 100
    model = _constant_head(["batch", 1, 16, 16], const, ["batch", 2, 2, 30])
    post = RegressionPost(output_shape=(2, 2, 30), layout="BGGR")
    return with_metadata(model, _meta("regression", "cr_recon", replace(SEG_PRE, size=(16, 16)), post))


def tabular_model(seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """A real XGBoost binary classifier on 4 features, converted with onnxmltools as training does."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType
    from xgboost import XGBClassifier

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(80, len(FEATURES))).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    clf = XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1, random_state=seed).fit(x, y)
    model = onnxmltools.convert_xgboost(clf, initial_types=[("input", FloatTensorType([None, len(FEATURES)]))])
    post = TabularPost(task="binary", feature_names=tuple(FEATURES), classes=("no", "yes"))
    return with_metadata(model, _meta("tabular", "skinmodel", None, post)), x[:2]


def plain_model() -> onnx.ModelProto:
    """No kiln metadata at all: y = 2x on [N, 3]; served over V2 and /invocations only."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    return _graph([helper.make_node("Mul", ["x", "two"], ["y"])], [x], [y], [two])


def image_example(size: int, channels: int = 1) -> np.ndarray:
    return np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32)


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at `uri` for the duration, then put back what was there."""
    before_env = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        if mlflow.active_run() is not None:
            mlflow.end_run()
        if before_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before_env
        mlflow.set_tracking_uri(before_env)


@dataclass
class Registry:
    """A real sqlite registry and helpers to add versions to it."""

    uri: str
    artifacts: Path  # this registry's own artifact root

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def register(self, name: str, model: onnx.ModelProto, example: Any, alias: str | None = "production") -> str:
        with tracking(self.uri), mlflow.start_run(experiment_id=self._experiment()):
            meta = {p.key: p.value for p in model.metadata_props}
            info = mlflow.onnx.log_model(
                model,
                name="model",
                input_example=example,
                registered_model_name=name,
                metadata=meta or None,
                pip_requirements=["onnxruntime"],  # skips MLflow's requirement inference (a 5 s subprocess)
            )
        version = str(info.registered_model_version)
        if alias:
            self.client.set_registered_model_alias(name, alias, version)
        return version

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name("serving-tests")
        if found is not None:
            return str(found.experiment_id)
        location = self.artifacts.as_uri()
        return str(self.client.create_experiment("serving-tests", artifact_location=location))

    def set_alias(self, name: str, version: str, alias: str = "production") -> float:
        self.client.set_registered_model_alias(name, alias, version)
        return time.monotonic()

    def corrupt(self, name: str, version: str) -> None:
        """Overwrite the version's model.onnx with bytes that are not ONNX."""
        source = self.client.get_model_version(name, version).source
        with tracking(self.uri):
            model_id = source.split("/")[-1]
            location = mlflow.get_logged_model(model_id).artifact_location
        path = Path(location.removeprefix("file://")) / "model.onnx"
        assert path.is_file(), path
        path.write_bytes(b"this is not an onnx model" * 10)

    def settings(self, models: tuple[str, ...], **overrides: Any) -> ServeSettings:
        base: dict[str, Any] = {"models": models, "tracking_uri": self.uri, "poll_seconds": 0.0, "access_log": False}
        return ServeSettings(**{**base, **overrides}).validated()


def create_store(folder: Path) -> Path:
    """An empty, migrated sqlite store (creating one runs every MLflow migration: seconds)."""
    path = folder / "mlflow.db"
    cwd = Path.cwd()
    os.chdir(folder)  # experiment 0 takes its artifact root from the working directory at creation
    try:
        MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    finally:
        os.chdir(cwd)
    return path


def new_registry(template: Path, folder: Path) -> Registry:
    """A copy of the migrated template store in `folder`, with its artifacts under `folder/artifacts`."""
    import shutil

    shutil.copyfile(template, folder / "mlflow.db")
    (folder / "artifacts").mkdir(exist_ok=True)
    return Registry(uri=f"sqlite:///{folder / 'mlflow.db'}", artifacts=folder / "artifacts")


class LiveServer:
    """The app on uvicorn in a background thread, on a free 127.0.0.1 port."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        from serving.cli import bind_tcp

        self.app = app
        self.sock = bind_tcp("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def png_bytes(image: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", image)
    assert ok
    return bytes(data.tobytes())
