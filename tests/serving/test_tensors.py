"""Tensor specs and the request checks that keep malformed tensors away from onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest

from serving.errors import BadRequest
from serving.runtime.tensors import TensorSpec, as_array, cast_to_spec, check_shape

SPEC = TensorSpec("input", "FP32", (None, 3, 32, 32))


def test_check_shape_accepts_dynamic_batch() -> None:
    check_shape(SPEC, [5, 3, 32, 32], "t")


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ([3, 32, 32], "expects rank 4 with shape [-1, 3, 32, 32], got shape [3, 32, 32]"),
        ([1, 1, 32, 32], "(axis 1 is 1)"),
        ([0, 3, 32, 32], "(axis 0 is 0)"),
    ],
)
def test_check_shape_names_the_axis(shape: list[int], message: str) -> None:
    with pytest.raises(BadRequest) as err:
        check_shape(SPEC, shape, "t")
    assert message in err.value.detail


def test_cast_is_lossless_or_refused() -> None:
    ints = TensorSpec("ids", "INT64", (None,))
    assert cast_to_spec(np.array([1.0, 2.0]), ints, "t").dtype == np.int64
    with pytest.raises(BadRequest, match="non-integer values"):
        cast_to_spec(np.array([1.5]), ints, "t")
    assert cast_to_spec(np.array([1, 2]), SPEC, "t").dtype == np.float32
    with pytest.raises(BadRequest, match="expects BOOL"):
        cast_to_spec(np.array([1.0]), TensorSpec("b", "BOOL", (None,)), "t")


@pytest.mark.parametrize("data", [[[1, 2], [3]], ["a", "b"], [{"x": 1}]])
def test_as_array_refuses_ragged_or_non_numeric(data: object) -> None:
    with pytest.raises(BadRequest, match="input 'x'"):
        as_array(data, "t", "x")


def test_wire_shape_uses_minus_one_for_dynamic() -> None:
    assert SPEC.to_json() == {"name": "input", "datatype": "FP32", "shape": [-1, 3, 32, 32]}
