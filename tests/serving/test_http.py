"""serving/edge/http.py: the JSON answers every protocol writes."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from serving.edge.http import json_response


@pytest.mark.parametrize(
    "content",
    [
        {"model": "m", "version": "3", "predictions": [1], "probabilities": [[0.002185, 0.997815]]},
        [1, 2.5, None, True, 'é \\" \\n', {"nested": [-0.0, 1e300, 5e-324]}],
        {1: "an int key", "": []},
        "a string",
        3,
    ],
)
def test_json_body_is_json_dumps_compact(content: Any) -> None:
    body = json_response(content).body
    assert body == json.dumps(content, separators=(",", ":"), allow_nan=False).encode()


def test_non_finite_numbers_become_null_and_model_headers_are_sent() -> None:
    model: Any = SimpleNamespace(name="tab", version="7")
    response = json_response({"values": [1.0, float("nan"), float("-inf")]}, model, status_code=201)
    assert response.body == b'{"values":[1.0,null,null]}' and response.status_code == 201
    assert dict(response.headers) == {
        "x-kiln-model": "tab",
        "x-kiln-model-version": "7",
        "content-length": str(len(response.body)),
        "content-type": "application/json",
    }


def test_unencodable_values_are_refused_as_json_dumps_refuses_them() -> None:
    with pytest.raises(TypeError):
        json_response({"x": object()})
