"""A model's footprint on the machine that serves it: parameters, ONNX size, FLOPs, and batch-1 latency with the
server's onnxruntime session options.

    python -m serving.runtime.footprint model.onnx
    python -c "from serving.runtime.footprint import measure; print(measure('model.onnx').to_metrics())"

Parameters are the elements of the graph's initializers (after the exporter folds BatchNorm into convolutions,
so a little under PyTorch's count; an int8 graph counts its int8 weights once), plus the nodes of tree ensembles.
FLOPs count the multiply-adds of Conv, ConvTranspose, QLinearConv, ConvInteger, Gemm and MatMul (2 FLOPs each) at
batch 1 and the contract's input size, from ONNX shape inference; elementwise work is left out, and a graph whose
shapes cannot be found or that holds ai.onnx.ml operators (tree ensembles) gets no FLOPs rather than a guess.
Latency is wall time of single-image runs after warm-up, within a short time budget, so it is cheap enough to run
when a version is registered (`profile_registered`, called from `projects.common.onnx_export.log_onnx_model`).
This module sits in `serving/runtime/`, not `efficiency/`: it needs the server's session options
(serving/runtime/runtime.py) and training imports it (projects/common/onnx_export.py), while `efficiency/`
imports `projects/` (study, optimize), so `efficiency/footprint.py` would close a projects <-> efficiency circle.
serving/runtime/ is the lowest place both training and efficiency/ may import.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import shape_inference

from core import vocab
from core.contract import ModelContract
from serving.runtime import runtime

LATENCY_BUDGET_S = 1.0  # wall time for the timed runs of one model (warm-up not included)
MIN_RUNS, MAX_RUNS, WARMUP_RUNS = 10, 200, 3
FALLBACK_SIDE = 224  # image side when neither the graph nor the contract fixes H and W


@dataclass(frozen=True)
class Footprint:
    parameters: int  # initializer elements
    size_bytes: int  # the serialized ONNX model
    flops: float | None  # per image; None when the graph's shapes cannot be inferred
    latency_p50_ms: float
    latency_p99_ms: float
    runs: int  # timed runs behind the percentiles
    threads: int  # onnxruntime intra-op threads (the server's choice for this task)

    def to_metrics(self) -> dict[str, float]:
        """The run metrics the leaderboard reads."""
        metrics = {
            "onnx_parameters": float(self.parameters),
            "onnx_size_bytes": float(self.size_bytes),
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
        }
        if self.flops is not None:
            metrics["flops"] = self.flops
        return metrics


def load_proto(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))


def contract_of(proto: onnx.ModelProto) -> ModelContract:
    return ModelContract.parse({p.key: p.value for p in proto.metadata_props})


def count_parameters(proto: onnx.ModelProto) -> int:
    """Initializer elements, plus the nodes of tree ensembles (whose trees live in attributes, not initializers)."""
    weights = sum(int(np.prod(init.dims)) if init.dims else 1 for init in proto.graph.initializer)
    return weights + sum(_tree_nodes(node) for node in proto.graph.node)


def _tree_nodes(node: onnx.NodeProto) -> int:
    if not node.op_type.startswith("TreeEnsemble"):
        return 0
    return next((len(a.ints) for a in node.attribute if a.name == "nodes_nodeids"), 0)


def example_feeds(proto: onnx.ModelProto, contract: ModelContract, seed: int = 0) -> dict[str, np.ndarray]:
    """One batch-1 input per graph input: free dims become 1 (batch) or the contract's H and W."""
    initializers = {i.name for i in proto.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        shape = _concrete_shape([d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim], contract)
        feeds[value.name] = rng.uniform(-1, 1, shape).astype(dtype)
    return feeds


def _concrete_shape(dims: list[int | None], contract: ModelContract) -> list[int]:
    side = contract.preprocess.size if contract.preprocess is not None else (FALLBACK_SIDE, FALLBACK_SIDE)
    first = dims[0] if dims else 1
    shape: list[int] = [first if first is not None else 1]
    for axis, dim in enumerate(dims[1:], start=1):
        if dim is not None:
            shape.append(dim)
        elif len(dims) == 4 and axis >= 2:
            shape.append(int(side[axis - 2]))
        else:
            shape.append(1)
    return shape


def count_flops(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> float | None:
    """Multiply-add FLOPs of the heavy operators at the shapes of `feeds`; None when shapes cannot be found.

    ONNX shape inference gives most shapes; tensors it cannot follow (slices by a runtime size, say) are read
    from one onnxruntime run that exposes them as outputs.
    """
    if any(node.domain == "ai.onnx.ml" for node in proto.graph.node):
        return None  # tree ensembles and other ML operators do work that is not multiply-adds
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    for value in fixed.graph.input:
        if value.name in feeds:
            for dim, size in zip(value.type.tensor_type.shape.dim, feeds[value.name].shape, strict=True):
                dim.Clear()
                dim.dim_value = int(size)
    try:
        inferred = shape_inference.infer_shapes(fixed, data_prop=True)
        shapes = _known_shapes(inferred)
        shapes.update(_run_shapes(fixed, feeds, _missing(inferred.graph.node, shapes)))
    except Exception:  # noqa: BLE001  (a graph whose shapes cannot be found simply has no FLOP count)
        return None
    total = 0.0
    for node in inferred.graph.node:
        flops = _node_flops(node, shapes)
        if flops is None:
            return None
        total += flops
    return total


def _missing(nodes: Any, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    heavy = [n for n in nodes if n.op_type in _WEIGHT_INPUT or n.op_type in _MATMUL_INPUTS]
    names = {name for n in heavy for name in (*n.input[:4], n.output[0]) if name}
    return sorted(name for name in names if name not in shapes)


def _run_shapes(proto: onnx.ModelProto, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, tuple[int, ...]]:
    """Shapes of tensors `names` from one CPU run of `proto` with them added as outputs."""
    if not names:
        return {}
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in names)
    options = runtime.session_options(1)
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    values = session.run(names, feeds)
    return {name: tuple(np.asarray(v).shape) for name, v in zip(names, values, strict=True)}


def _known_shapes(proto: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {i.name: tuple(i.dims) for i in proto.graph.initializer}
    for value in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    return shapes


_WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}
_MATMUL_INPUTS = {"Gemm": (0, 1), "MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}


def _node_flops(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> float | None:
    """FLOPs of one node; 0 for operators not counted; None when a needed shape is unknown."""
    if node.op_type in _WEIGHT_INPUT:
        weight = shapes.get(node.input[_WEIGHT_INPUT[node.op_type]])
        out = shapes.get(node.output[0])
        if weight is None or out is None:
            return None
        if node.op_type == "ConvTranspose":  # each input pixel scatters a kernel: count over the input
            source = shapes.get(node.input[0])
            return None if source is None else 2.0 * float(np.prod(source)) * float(np.prod(weight[1:]))
        return 2.0 * float(np.prod(out)) * float(np.prod(weight[1:]))
    if node.op_type in _MATMUL_INPUTS:
        a_index, b_index = _MATMUL_INPUTS[node.op_type]
        a, out = shapes.get(node.input[a_index]), shapes.get(node.output[0])
        b = shapes.get(node.input[b_index])
        if a is None or out is None or b is None:
            return None
        inner = a[-1] if not (node.op_type == "Gemm" and _attr(node, "transA")) else a[0]
        return 2.0 * float(np.prod(out)) * float(inner)
    return 0.0


def _attr(node: onnx.NodeProto, name: str) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), 0)


def latency(session: Any, feeds: dict[str, np.ndarray], budget_s: float = LATENCY_BUDGET_S) -> list[float]:
    """Milliseconds of single runs after warm-up: at least MIN_RUNS, then until `budget_s` or MAX_RUNS."""
    for _ in range(WARMUP_RUNS):
        session.run(None, feeds)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MIN_RUNS or (len(times) < MAX_RUNS and time.perf_counter() - start < budget_s):
        begin = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - begin) * 1000.0)
    return times


def open_like_server(proto: onnx.ModelProto, contract: ModelContract) -> tuple[Any, int]:
    """A session with the server's options for this model's task; returns it and its thread count."""
    import onnxruntime as ort

    options = runtime.session_options(runtime.default_threads(contract))
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=runtime.providers())
    return session, runtime.session_threads(options)


def measure(model: str | Path | onnx.ModelProto, budget_s: float = LATENCY_BUDGET_S) -> Footprint:
    """The footprint of an ONNX model (a path or a loaded proto) on this machine."""
    proto = load_proto(model)
    contract = contract_of(proto)
    feeds = example_feeds(proto, contract)
    session, threads = open_like_server(proto, contract)
    times = latency(session, feeds, budget_s)
    return Footprint(
        parameters=count_parameters(proto),
        size_bytes=proto.ByteSize(),
        flops=count_flops(proto, feeds),
        latency_p50_ms=float(np.percentile(times, 50)),
        latency_p99_ms=float(np.percentile(times, 99)),
        runs=len(times),
        threads=threads,
    )


def log_footprint(model: str | Path | onnx.ModelProto, run_id: str) -> Footprint:
    """Measure `model` and log its footprint as metrics on run `run_id` (the leaderboard's inputs)."""
    import mlflow

    footprint = measure(model)
    client = mlflow.MlflowClient()
    for key, value in footprint.to_metrics().items():
        client.log_metric(run_id, key, value)
    if "latency_threads" not in client.get_run(run_id).data.params:
        client.log_param(run_id, "latency_threads", str(footprint.threads))
    return footprint


def profile_registered(model: str | Path | onnx.ModelProto, run_id: str) -> Footprint | None:
    """The registration hook: `log_footprint`, but a model that cannot be profiled here does not undo its
    registration; the run gets the tag `kiln.footprint_error` with the reason, and one console line says so."""
    try:
        return log_footprint(model, run_id)
    except Exception as err:  # noqa: BLE001  (the version is registered already; profiling is an extra)
        import mlflow

        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:500]
        mlflow.MlflowClient().set_tag(run_id, vocab.FOOTPRINT_ERROR, reason)
        print(f"warning: footprint not measured ({reason}); `kiln leaderboard --measure` retries", flush=True)
        return None


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m serving.runtime.footprint MODEL.onnx [MODEL.onnx ...]")
    for path in argv:
        print(path, measure(path))


if __name__ == "__main__":
    from core.scripts import script_args

    main(
        script_args(
            sys.argv[1:], "python -m serving.runtime.footprint MODEL.onnx [MODEL.onnx ...]", __doc__, range(1, 1000)
        )
    )
