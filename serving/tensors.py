"""Tensor specs of a loaded model and the checks every request tensor passes before it reaches onnxruntime.

    python -c "from serving.tensors import V2_TO_NUMPY; print(sorted(V2_TO_NUMPY))"

Names follow the Open Inference Protocol (`FP32`, `INT64`, ...). A dynamic dimension is `None` here and `-1`
on the wire. A request that does not fit the spec raises `BadRequest` naming the tensor, the expected and the
received shape or datatype, so that onnxruntime never sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.errors import BadRequest

V2_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
NUMPY_TO_V2: dict[np.dtype[Any], str] = {v: k for k, v in V2_TO_NUMPY.items()}

ORT_TO_V2: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, V2 datatype, and shape with `None` for a dynamic axis."""

    name: str
    datatype: str
    shape: tuple[int | None, ...]

    @classmethod
    def from_ort(cls, node: Any) -> TensorSpec:
        """From an onnxruntime NodeArg; symbolic or missing dims become dynamic."""
        datatype = ORT_TO_V2.get(node.type)
        if datatype is None:
            raise ValueError(f"tensor {node.name!r} has type {node.type!r}, which this server cannot serve")
        dims = tuple(d if isinstance(d, int) and d >= 0 else None for d in (node.shape or []))
        return cls(name=node.name, datatype=datatype, shape=dims)

    @property
    def dtype(self) -> np.dtype[Any]:
        return V2_TO_NUMPY[self.datatype]

    @property
    def wire_shape(self) -> list[int]:
        return [-1 if d is None else d for d in self.shape]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.wire_shape}


def check_shape(spec: TensorSpec, shape: Sequence[int], where: str) -> None:
    """Rank and every fixed dimension must match; dynamic ones must be positive."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != len(spec.shape):
        raise BadRequest(
            f"{where}: input {spec.name!r} expects rank {len(spec.shape)} with shape {spec.wire_shape}, "
            f"got shape {list(shape)}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, shape, strict=True)):
        if got < 0 or (want is not None and want != got) or (want is None and got == 0):
            raise BadRequest(
                f"{where}: input {spec.name!r} expects shape {spec.wire_shape}, got {list(shape)} "
                f"(axis {axis} is {got})"
            )


def cast_to_spec(array: np.ndarray, spec: TensorSpec, where: str) -> np.ndarray:
    """Cast a decoded array (JSON numbers come in as int64/float64) to the model's dtype, refusing lossy casts."""
    target = spec.dtype
    if array.dtype == target:
        return array
    if array.dtype == np.object_ or target == np.object_:
        raise BadRequest(f"{where}: input {spec.name!r} expects {spec.datatype}, got non-numeric values")
    if np.issubdtype(target, np.integer) and not np.issubdtype(array.dtype, np.integer) and not _integral(array):
        raise BadRequest(f"{where}: input {spec.name!r} expects {spec.datatype}, got non-integer values")
    if target == np.bool_ and array.dtype != np.bool_:
        raise BadRequest(f"{where}: input {spec.name!r} expects BOOL, got {array.dtype}")
    return array.astype(target, copy=False)


def _integral(array: np.ndarray) -> bool:
    if array.dtype == np.bool_:
        return False
    return bool(np.all(np.isfinite(array)) and np.all(np.mod(array, 1) == 0))


def as_array(data: Any, where: str, name: str) -> np.ndarray:
    """A JSON value (nested lists of numbers) as an array; ragged or non-numeric data is a 400."""
    try:
        array = np.asarray(data)
    except (ValueError, TypeError) as err:
        raise BadRequest(f"{where}: input {name!r} is not a rectangular array of numbers ({err})") from None
    if array.dtype == np.object_ or array.dtype.kind in "USV":
        raise BadRequest(f"{where}: input {name!r} must hold numbers only, got {_sample(data)}")
    return array


def _sample(data: Any) -> str:
    text = repr(data)
    return text if len(text) <= 60 else text[:57] + "..."
