"""onnxruntime sessions as kiln opens them, for the server, the predictor and the benches alike.

    python -c "from serving.runtime.runtime import session_options, physical_cores; print(physical_cores())"

Options are chosen on purpose: sequential execution with one inter-op thread, intra-op threads = physical
cores for image models and 1 for tabular ones (their runs are microseconds long; more threads only wake up
and spin), spinning off unless asked, full graph optimisation, CUDA first when the build has it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import onnxruntime as ort

from core.contract import ModelContract


def session_options(threads: int, spinning: bool = False) -> Any:
    """The `ort.SessionOptions` every kiln session runs with (untyped upstream, hence Any)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # sequential execution: a second pool would only add idle threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return options


def shrink_arena_options() -> Any:
    """Run options that give the memory arena's unused regions back after the run (CPU, and GPU when used):
    an unusually large request would otherwise leave the process holding its peak for good."""
    options = ort.RunOptions()
    devices = "cpu:0;gpu:0" if "CUDAExecutionProvider" in providers() else "cpu:0"
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", devices)
    return options


def default_threads(contract: ModelContract) -> int:
    """Tabular runs are microseconds long: extra threads only wake up and spin. Image models get every core."""
    if contract.task == "tabular":
        return 1
    return physical_cores()


def physical_cores() -> int:
    import psutil

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    physical = psutil.cpu_count(logical=False) or usable
    return max(1, min(usable, physical))


def providers() -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def open_session(onnx_file: Path, options: Any) -> Any:
    """An `ort.InferenceSession` on `onnx_file` with `options` (from `session_options`) and kiln's providers."""
    return ort.InferenceSession(str(onnx_file), options, providers=providers())


def session_threads(options: Any) -> int:
    """The intra-op threads a session runs with (0 in the options means onnxruntime's own default)."""
    return int(options.intra_op_num_threads) or physical_cores()
