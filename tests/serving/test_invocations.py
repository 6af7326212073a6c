"""MLflow's scoring protocol: /ping and /invocations with every input format, and model selection."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

TAB = {"X-Kiln-Model": "tab"}
ROWS = [[2, 2, 0, 0], [-2, -2, 0, 0]]


def test_ping_and_health(client: Any) -> None:
    assert client.get("/ping").status_code == 200
    assert client.get("/health").status_code == 200
    assert client.get("/version").status_code == 200


def test_inputs_tensor_gives_outputs_by_name(client: Any) -> None:
    r = client.post("/invocations", headers={"X-Kiln-Model": "plain"}, json={"inputs": [[1, 2, 3]]})
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": {"y": [[2.0, 4.0, 6.0]]}}
    named = client.post("/invocations?model=plain", json={"inputs": {"x": [[1, 1, 1]]}})
    assert named.json() == {"predictions": {"y": [[2.0, 2.0, 2.0]]}}


def test_instances_rows_and_objects(client: Any) -> None:
    r = client.post("/invocations", headers=TAB, json={"instances": ROWS})
    assert r.json()["predictions"]["label"] == [1, 0]
    objects = client.post("/invocations?model=plain", json={"instances": [{"x": [1, 2, 3]}, {"x": [0, 0, 1]}]})
    assert objects.json()["predictions"]["y"] == [[2, 4, 6], [0, 0, 2]]


def test_dataframe_split_reorders_columns_by_feature_names(client: Any) -> None:
    split = {"columns": ["f3", "f2", "f1", "f0"], "data": [[0, 0, 2, 2], [0, 0, -2, -2]]}
    r = client.post("/invocations", headers=TAB, json={"dataframe_split": split})
    assert r.status_code == 200, r.text
    records = r.json()["predictions"]
    assert [rec["label"] for rec in records] == [1, 0]
    assert len(records[0]["probabilities"]) == 2


def test_dataframe_records_and_csv_agree(client: Any) -> None:
    records = [{"f0": 2, "f1": 2, "f2": 0, "f3": 0}, {"f0": -2, "f1": -2, "f2": 0, "f3": 0}]
    by_records = client.post("/invocations", headers=TAB, json={"dataframe_records": records}).json()
    csv = "f1,f0,f2,f3\n2,2,0,0\n-2,-2,0,\n"
    by_csv = client.post("/invocations", headers={**TAB, "content-type": "text/csv"}, content=csv)
    assert by_csv.status_code == 200, by_csv.text
    assert [r["label"] for r in by_csv.json()["predictions"]] == [r["label"] for r in by_records["predictions"]]


def test_model_is_required_when_several_are_served(client: Any) -> None:
    r = client.post("/invocations", json={"inputs": [[1, 2, 3]]})
    assert r.status_code == 404
    assert "name one with the X-Kiln-Model header or ?model=" in r.json()["error"]


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"json": {"inputs": [[1, 2, 3, 4]]}}, 400, "expects shape [-1, 3]"),
        ({"json": {"inputs": [[1, 2]], "instances": [[1, 2]]}}, 400, "exactly one of"),
        ({"json": {"records": []}}, 400, "exactly one of"),
        ({"json": [1, 2, 3]}, 400, "must be a JSON object"),
        ({"json": {"inputs": [[1, 2, 3]], "params": {"t": 1}}}, 400, "`params` are not supported"),
        ({"json": {"inputs": [[1, "a", 3]]}}, 400, "must hold numbers only"),
        ({"json": {"inputs": {"q": [[1, 2, 3]]}}}, 400, "input 'x' is missing"),
        ({"json": {"instances": []}}, 400, "non-empty list"),
        ({"json": {"dataframe_split": {"data": "x"}}}, 400, "`dataframe_split` must be"),
        ({"content": b"x", "headers": {"content-type": "application/xml"}}, 415, "application/xml"),
        ({"content": b"\xff\xfe", "headers": {"content-type": "text/csv"}}, 400, "CSV body could not be read"),
        ({"content": b"a,b\n1,zz\n", "headers": {"content-type": "text/csv"}}, 400, "'zz' is not a number"),
    ],
)
def test_bad_invocations_are_clear_4xx(client: Any, kwargs: dict, status: int, message: str) -> None:
    headers = {"X-Kiln-Model": "plain", **kwargs.pop("headers", {})}
    r = client.post("/invocations", headers=headers, **kwargs)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_tabular_dataframe_missing_column_is_named(client: Any) -> None:
    split = {"columns": ["f0", "f1", "f2"], "data": [[1, 2, 3]]}
    r = client.post("/invocations", headers=TAB, json={"dataframe_split": split})
    assert r.status_code == 400 and "missing features ['f3']" in r.json()["error"]


def test_results_match_v2(client: Any) -> None:
    v2 = client.post(
        "/v2/models/tab/infer",
        json={"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": ROWS}]},
    ).json()
    probs_v2 = next(o for o in v2["outputs"] if o["name"] == "probabilities")["data"]
    probs_mlflow = client.post("/invocations", headers=TAB, json={"inputs": ROWS}).json()["predictions"]
    assert np.allclose(np.ravel(probs_mlflow["probabilities"]), probs_v2)
