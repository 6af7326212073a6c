"""Where a model's files come from: `models:/` URIs resolved in the registry, MLflow model folders, ONNX files.

    python -c "from serving.deployment.artifacts import parse_models_uri as p; print(p('models:/edgnet@production'))"

The server's load pipeline and the predictor both find, download and read models through these functions,
so a version the predictor can load is one the server can serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelsUri:
    """`models:/NAME@ALIAS` (alias set) or `models:/NAME/VERSION` (version set)."""

    name: str
    alias: str | None = None
    version: str | None = None


def parse_models_uri(uri: str) -> ModelsUri | None:
    """The parts of a `models:/` URI; None when `uri` is not one; ValueError when it is one but malformed."""
    if not uri.startswith("models:/"):
        return None
    rest = uri.removeprefix("models:/").strip("/")
    if "@" in rest:
        name, _, alias = rest.partition("@")
        if name and alias and "/" not in rest:
            return ModelsUri(name=name, alias=alias)
    else:
        name, _, version = rest.partition("/")
        if name and version.isdigit():
            return ModelsUri(name=name, version=version)
    raise ValueError(f"{uri!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")


def registry_client(tracking_uri: str | None) -> Any:
    """An MlflowClient whose tracking and registry are both `tracking_uri` (MLflow's default when None)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def download(client: Any, name: str, version: str, directory: Path, tracking_uri: str | None) -> Path:
    """Resolve the version's artifact location with our client (MLflow's models:/ resolver ignores a
    registry URI passed to it and uses the global one), then download from there."""
    import mlflow.artifacts

    location = client.get_model_version_download_uri(name, version)
    path = mlflow.artifacts.download_artifacts(
        artifact_uri=location, dst_path=str(directory), tracking_uri=tracking_uri
    )
    return Path(path)


def onnx_file(local: Path) -> Path:
    """The ONNX file the MLmodel's onnx flavor names."""
    from mlflow.models import Model

    try:
        flavor = Model.load(str(local)).flavors.get("onnx")
    except Exception as err:
        raise ValueError(f"no readable MLmodel file in the model folder ({reason(err)})") from None
    if flavor is None:
        raise ValueError("the model has no onnx flavor; log it with mlflow.onnx.log_model")
    path = local / str(flavor.get("data", "model.onnx"))
    if not path.is_file():
        raise ValueError(f"the onnx flavor names {path.name!r}, which is not in the model folder")
    return path


def onnx_metadata(path: Path) -> dict[str, str]:
    """The ONNX metadata_props, read without loading external weights (the session is opened after)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def input_example(local: Path) -> Any:
    """The input example logged with an MLflow model folder, or None."""
    from mlflow.models import Model

    return Model.load(str(local)).load_input_example(str(local))


def reason(err: BaseException) -> str:
    """The first line of an error, with its type unless it is one of ours (a ValueError says what it means)."""
    from core.errors import KilnError

    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(err, KilnError | ValueError):
        return first[:500]
    return f"{type(err).__name__}: {first[:500]}"
