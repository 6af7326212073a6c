"""Tensor specs of a loaded model and the checks every request tensor passes before it reaches onnxruntime.

    python -c "from serving.runtime.tensors import V2_TO_NUMPY; print(sorted(V2_TO_NUMPY))"

Names follow the Open Inference Protocol (`FP32`, `INT64`, ...). A dynamic dimension is `None` here and `-1`
on the wire. A request that does not fit the spec raises `BadRequest` naming the tensor, the expected and the
received shape or datatype, so that onnxruntime never sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.errors import BadRequest, PayloadTooLarge

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
    if np.issubdtype(target, np.integer) and array.size and not _fits_integer(array, target):
        info = np.iinfo(target)
        raise BadRequest(f"{where}: input {spec.name!r} expects {spec.datatype} values in [{info.min}, {info.max}]")
    return array.astype(target, copy=False)


def _fits_integer(array: np.ndarray, target: np.dtype[Any]) -> bool:
    """Whether every value survives the cast to the integer `target` (numpy would wrap or saturate silently)."""
    info = np.iinfo(target)
    low, high = array.min(), array.max()
    return bool(low >= info.min and high <= info.max)


def _integral(array: np.ndarray) -> bool:
    if array.dtype == np.bool_:
        return False
    return bool(np.all(np.isfinite(array)) and np.all(np.mod(array, 1) == 0))


def as_array(data: Any, where: str, name: str) -> np.ndarray:
    """A JSON value (nested lists of numbers) as an array; ragged or non-numeric data is a 400."""
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError) as err:
        raise BadRequest(f"{where}: input {name!r} is not a rectangular array of numbers ({_cut(str(err))})") from None
    if array.dtype == np.object_ or array.dtype.kind in "USV":
        raise BadRequest(f"{where}: input {name!r} must hold numbers only, got {_sample(data)}")
    return array


def _sample(data: Any) -> str:
    try:
        text = repr(data)
    except RecursionError:
        return f"a deeply nested {type(data).__name__}"
    return _cut(text)


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- what one request may ask of a model ------------------------------------------------------------------

FALLBACK_NATIVE_PIXELS = 512 * 512  # an image model whose size neither the contract nor the graph fixes
AUTO_PIXEL_FACTOR = 4  # the automatic cap: this many full batches of native-size images (2x each side)


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask of one model, checked before the run: pixels over its image inputs (N*H*W of
    every rank-4 input) and the side multiple its contract declares for dynamic H/W graphs."""

    max_pixels: int  # 0 = no cap
    usual_pixels: int = 0  # a full batch at the model's own size: larger runs give the ORT arena back afterwards
    size_multiple: int = 1  # every H and W of a rank-4 input must be a multiple of this
    native: tuple[int, int] | None = None  # (H, W) the model was trained at, for messages

    @classmethod
    def for_model(
        cls, inputs: Sequence[TensorSpec], preprocess: Any, batch_rows: int, max_pixels: int
    ) -> RequestLimits:
        """`max_pixels` from the setting, or (0) sized for the model: AUTO_PIXEL_FACTOR x its batch x its
        native H*W (the contract's size, else the graph's fixed H and W)."""
        images = [s for s in inputs if len(s.shape) == 4]
        native: tuple[int, int] | None = None
        if preprocess is not None:
            native = (int(preprocess.size[0]), int(preprocess.size[1]))
        elif images and images[0].shape[2] is not None and images[0].shape[3] is not None:
            native = (int(images[0].shape[2] or 0), int(images[0].shape[3] or 0))
        multiple = int(getattr(preprocess, "size_multiple", 1) or 1)
        if not images:
            return cls(max_pixels=0, size_multiple=1, native=native)
        usual = max(1, batch_rows) * (native[0] * native[1] if native else FALLBACK_NATIVE_PIXELS)
        if max_pixels == 0:
            max_pixels = AUTO_PIXEL_FACTOR * usual
        return cls(max_pixels=max_pixels, usual_pixels=usual, size_multiple=multiple, native=native)

    def check(self, model: str, feeds: dict[str, np.ndarray]) -> None:
        """Raise PayloadTooLarge or BadRequest before a run this model should not be asked to do."""
        pixels = 0
        for name, array in feeds.items():
            if array.ndim != 4:
                continue
            height, width = int(array.shape[2]), int(array.shape[3])
            if self.size_multiple > 1 and (height % self.size_multiple or width % self.size_multiple):
                raise BadRequest(
                    f"model {model!r} takes {name!r} with height and width multiples of {self.size_multiple} "
                    f"(kiln.preprocess.size_multiple); got {height}x{width}{self._trained_at()}"
                )
            pixels += int(array.shape[0]) * height * width
        if self.max_pixels and pixels > self.max_pixels:
            raise PayloadTooLarge(
                f"the request asks model {model!r} to run {pixels:,} pixels (batch x height x width); the limit "
                f"is {self.max_pixels:,} (KILN_MAX_REQUEST_PIXELS){self._trained_at()}"
            )

    def _trained_at(self) -> str:
        return f"; it was trained at {self.native[0]}x{self.native[1]}" if self.native else ""


def accepted_inputs(inputs: Sequence[TensorSpec], limits: RequestLimits) -> str:
    """What a model accepts, for the message of a run onnxruntime refused."""
    shapes = ", ".join(f"{s.name!r} {s.datatype} {s.wire_shape}" for s in inputs)
    extra = f", height and width multiples of {limits.size_multiple}" if limits.size_multiple > 1 else ""
    trained = f", trained at {limits.native[0]}x{limits.native[1]}" if limits.native else ""
    return f"it accepts {shapes} (-1 = any size{extra}{trained})"
