"""The benchmark models, built and registered the way training does it, in a throwaway sqlite registry.

    python bench/benchmodels.py /tmp/kiln-bench    # builds both, prints the registry URI

- image: EDGNet-Large with 32 base channels, a 4-level UNet of 7.76M parameters, 1x256x256 gray in, logits
  out, random init, exported with projects.common.onnx_export (dynamic H/W, as EDGNet's trainer exports);
- tabular: XGBoost, 100 trees of depth 6, on 30 synthetic features, converted with onnxmltools as the
  skinmodel trainer converts it;
- mlp: a wide MLP regressor on the same 30 features (30-2048-2048-2048-1, 8.5M parameters), whose runs are
  memory-bound matrix-vector products at one row: the case where dynamic batching pays on a CPU.
Each is logged with `log_onnx_model` and a typed `core.contract.ModelContract`, so it carries the same kiln.*
metadata and input example as trained models, and gets the alias `production`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.contract import (  # noqa: E402  (the repo root goes on sys.path first)
    ModelContract,
    Preprocess,
    SegmentationPost,
    TabularInput,
    TabularPost,
)

IMAGE_MODEL = "bench_unet"
TABULAR_MODEL = "bench_xgb"
MLP_MODEL = "bench_mlp"
IMAGE_SIZE = 256
N_FEATURES = 30


@dataclass(frozen=True)
class BenchRegistry:
    uri: str
    folder: Path


def create_registry(folder: Path) -> BenchRegistry:
    """An empty sqlite store in `folder` with its artifacts there too."""
    import mlflow

    folder.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    if client.get_experiment_by_name("bench") is None:
        client.create_experiment("bench", artifact_location=(folder / "artifacts").as_uri())
    mlflow.set_experiment("bench")
    return BenchRegistry(uri, folder)


def unet(seed: int = 0) -> tuple[Path, np.ndarray, ModelContract]:
    """Export the 7.8M-parameter UNet; returns the ONNX path, an input example and its contract."""
    import tempfile

    import torch

    from projects.common.onnx_export import export_onnx
    from projects.edgnet import data as edgdata
    from projects.edgnet.model import create_model

    torch.manual_seed(seed)
    model = create_model("edgnet_large", base_channels=32).eval()
    example = torch.rand(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    path = export_onnx(model, example, Path(tempfile.mkdtemp()) / "unet.onnx", dynamic_hw=True)
    contract = ModelContract(
        task="segmentation",
        family="edgnet",
        preprocess=Preprocess(
            color="gray",
            size=(IMAGE_SIZE, IMAGE_SIZE),
            resize="stretch",
            scale=1 / 255,
            mean=(edgdata.MEAN,),
            std=(edgdata.STD,),
        ),
        postprocess=SegmentationPost(activation="sigmoid", threshold=0.5),
    )
    return path, example.numpy(), contract


def xgboost_model(seed: int = 0) -> tuple[object, np.ndarray, ModelContract]:
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    from xgboost import XGBClassifier

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4000, N_FEATURES)).astype(np.float32)
    y = ((x[:, :5].sum(axis=1) + 0.5 * rng.normal(size=len(x))) > 0).astype(int)
    clf = XGBClassifier(n_estimators=100, max_depth=6, n_jobs=2, random_state=seed).fit(x, y)
    proto = convert_xgboost(clf, initial_types=[("input", FloatTensorType([None, N_FEATURES]))])
    names = tuple(feature_names())
    contract = ModelContract(
        task="tabular",
        family="skinmodel",
        postprocess=TabularPost(task="binary", feature_names=names, classes=(0, 1)),
        tabular_input=TabularInput(feature_names=names),
    )
    return proto, x[:5], contract


def mlp_model(seed: int = 0, width: int = 2048) -> tuple[Path, np.ndarray, ModelContract]:
    import tempfile

    import torch
    from torch import nn

    from projects.common.onnx_export import export_onnx

    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(N_FEATURES, width), nn.ReLU()]
    layers += [nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1)]
    model = nn.Sequential(*layers).eval()
    example = torch.randn(5, N_FEATURES)
    path = Path(tempfile.mkdtemp()) / "mlp.onnx"
    export_onnx(model, example, path, dynamic_hw=False, input_name="input", output_name="variable")
    names = tuple(feature_names())
    contract = ModelContract(
        task="tabular",
        family="mlp",
        postprocess=TabularPost(task="regression", feature_names=names),
        tabular_input=TabularInput(feature_names=names),
    )
    return path, example.numpy(), contract


def feature_names() -> list[str]:
    return [f"feature_{i:02d}" for i in range(N_FEATURES)]


def register(name: str, model: object, example: np.ndarray, contract: ModelContract, alias: str | None) -> str:
    """log_onnx_model as the trainers call it; then point `alias` at the new version."""
    import mlflow

    from projects.common.onnx_export import log_onnx_model

    with mlflow.start_run(run_name=f"bench-{name}"):
        version = str(log_onnx_model(model, input_example=example, model_name=name, contract=contract).version)
    if alias:
        mlflow.MlflowClient().set_registered_model_alias(name, alias, version)
    return version


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/kiln-bench")
    registry = create_registry(folder)
    path, example, contract = unet()
    register(IMAGE_MODEL, path, example, contract, "production")
    proto, rows, contract = xgboost_model()
    register(TABULAR_MODEL, proto, rows, contract, "production")
    path, rows, contract = mlp_model()
    register(MLP_MODEL, path, rows, contract, "production")
    print(registry.uri)


if __name__ == "__main__":
    main()
