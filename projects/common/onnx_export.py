"""Export to ONNX, prove the export matches PyTorch, and log and register it with its serving metadata.

    python -m projects.edgnet.train --epochs 1   # ends with export_onnx -> check_onnx -> log_onnx_model

The model contract (`core.contract.ModelContract`, the `kiln.*` metadata) is written into the ONNX file's
metadata_props, which the server and the predictor read with onnxruntime, and passed to MLflow as model metadata
so the MLmodel file shows it too. The registered version is tagged with the contract's task and its ranking
metric and mode (`kiln.task`, `kiln.metric`, `kiln.mode`), which `kiln promote` reads.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.onnx
import numpy as np
import onnx
import onnxruntime as ort
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from core import vocab
from core.contract import ModelContract
from projects.common.footprint_job import footprint_later
from projects.common.modelcard import write_cards
from projects.common.registration import bookkeeping
from projects.common.tracking import kiln_tags
from serving.runtime.profiling import with_reference_profile

if TYPE_CHECKING:  # torch is imported where it is used, so XGBoost-only runs never load it
    import torch
    from torch import nn


ONNX_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")  # preferred first, as MLflow's default


class OnnxMismatchError(RuntimeError):
    """The exported model's output differs from PyTorch's beyond tolerance."""


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    dynamic_hw: bool,
    input_name: str = "input",
    output_name: str = "output",
    opset: int = 17,
) -> Path:
    """Trace `model` on CPU in eval mode with a dynamic batch axis (and H/W for fully-convolutional nets)."""
    import torch

    if mlflow.active_run() is not None:
        mlflow.set_tag(vocab.PHASE, "exporting")  # the job page shows it after the last epoch

    model = model.to("cpu").eval()
    example = example.to("cpu", memory_format=torch.contiguous_format)
    axes: dict[int, str] = {0: "batch"}
    if dynamic_hw:
        axes.update({2: "height", 3: "width"})
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: axes, output_name: {0: "batch"} if not dynamic_hw else axes},
            opset_version=opset,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))
    return path


def check_onnx(path: Path, model: nn.Module, batch: torch.Tensor, *, rtol: float = 1e-3, atol: float = 1e-4) -> float:
    """Run the same real batch through PyTorch and onnxruntime; raise if they differ. Returns max abs diff."""
    import torch

    model = model.to("cpu").eval()
    batch = batch.to("cpu", memory_format=torch.contiguous_format).float()
    with torch.no_grad():
        expected = model(batch).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    if got.shape != expected.shape:
        raise OnnxMismatchError(f"{path.name}: ONNX output shape {got.shape} != PyTorch {expected.shape}")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not np.allclose(got, expected, rtol=rtol, atol=atol):
        raise OnnxMismatchError(
            f"{path.name}: ONNX output differs from PyTorch by up to {diff:.3g} (rtol={rtol}, atol={atol})"
        )
    return diff


def _metadata_strings(metadata: Mapping[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


def embed_metadata(model_proto: onnx.ModelProto, metadata: Mapping[str, Any]) -> onnx.ModelProto:
    """Set `metadata` as the model's metadata_props, replacing keys that are already there."""
    strings = _metadata_strings(metadata)
    kept = [p for p in model_proto.metadata_props if p.key not in strings]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(kept)
    for key, value in strings.items():
        model_proto.metadata_props.add(key=key, value=value)
    return model_proto


def log_onnx_model(
    onnx_path: Path | onnx.ModelProto,
    *,
    input_example: np.ndarray | dict[str, Any] | Any,
    model_name: str,
    contract: ModelContract,
    profile_samples: Any = None,
    register: bool = True,
) -> ModelVersion | None:
    """Log the ONNX model to the active run under `model/` with signature, example and `contract` (its model_name
    and run_id filled in), register it as `model_name` and tag the version with the contract's task and ranking;
    describe the version and the model with a model card (`projects.common.modelcard`). With `register=False`
    the model is only logged in the run (`projects.common.registration` decides) and None is returned."""
    proto = onnx.load(str(onnx_path)) if isinstance(onnx_path, Path | str) else onnx_path
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_onnx_model needs an active MLflow run")
    mlflow.set_tag(vocab.PHASE, "registering")
    full_meta = contract.with_ids(model_name=model_name, run_id=run.info.run_id).to_metadata()
    proto = embed_metadata(proto, full_meta)
    # the reference profile the server's drift monitor compares live traffic with (serving/runtime/profiling.py)
    samples, source = (input_example, "input example") if profile_samples is None else (profile_samples, "validation")
    proto = with_reference_profile(proto, samples, f"{source}: {len(samples)} samples")
    info = mlflow.onnx.log_model(
        proto,
        name="model",
        signature=signature_from_graph(proto),
        input_example=input_example,
        metadata=_metadata_strings(full_meta),
        save_as_external_data=False,
        # The providers this onnxruntime has: MLflow's default names CUDA and warns on every CPU-only machine.
        onnx_execution_providers=[p for p in ONNX_PROVIDERS if p in ort.get_available_providers()],
        # Stated rather than inferred: inference re-imports and scans the model's dependencies (~10 s a call).
        pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={ort.__version__}", f"numpy=={np.__version__}"],
    )
    if not register:
        return None
    version = mlflow.register_model(info.model_uri, model_name, await_registration_for=60)
    client = mlflow.MlflowClient()
    for key, value in version_tags(contract).items():
        client.set_model_version_tag(model_name, version.version, key, value)
    write_cards(client, model_name, int(version.version), contract, run.info.run_id)
    # params, size, FLOPs, batch-1 latency for `kiln leaderboard`: by default in a detached process (KILN_FOOTPRINT)
    footprint_later(proto, run.info.run_id)
    return client.get_model_version(model_name, version.version)


def version_tags(contract: ModelContract) -> dict[str, str]:
    """The registered version's tags: what `kiln promote` and `kiln models` read without opening the model."""
    ranking = contract.ranking
    return kiln_tags(
        task=contract.task or "", metric=ranking.metric if ranking else None, mode=ranking.mode if ranking else None
    )


def _tensor_specs(values: Any) -> list[ColSpec | TensorSpec]:
    specs: list[ColSpec | TensorSpec] = []
    for value in values:
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            continue  # sequences/maps (e.g. ZipMap outputs) have no tensor spec
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        specs.append(TensorSpec(dtype, shape, value.name))
    return specs


def signature_from_graph(proto: onnx.ModelProto) -> ModelSignature:
    """Input/output tensor specs read from the graph, so dynamic axes (batch, H, W) show as -1."""
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [v for v in proto.graph.input if v.name not in initializers]
    return ModelSignature(inputs=Schema(_tensor_specs(inputs)), outputs=Schema(_tensor_specs(proto.graph.output)))


def export_checked(
    model: nn.Module,
    val_batch: torch.Tensor,
    register: bool,
    *,
    model_name: str,
    contract: ModelContract,
    dynamic_hw: bool = True,
    profile: bool = False,
) -> int | None:
    """The export step of a PyTorch family: export `model` on `val_batch[:1]`, check it against PyTorch on the
    whole batch (tagging the largest difference), log it with `contract` and, when `register`, register it as
    `model_name`. `profile` makes the batch the drift monitor's reference profile. Returns the registered
    version, None when not registered."""
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, val_batch[:1], Path(tmp) / "model.onnx", dynamic_hw=dynamic_hw)
        bookkeeping(onnx_max_abs_diff=check_onnx(path, model, val_batch))
        samples = val_batch.numpy() if profile else None
        version = log_onnx_model(path, input_example=val_batch[:1].numpy(), profile_samples=samples,
                                 model_name=model_name, contract=contract, register=register)  # fmt: skip
    return int(version.version) if version is not None else None
