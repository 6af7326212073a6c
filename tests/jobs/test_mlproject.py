"""MLproject reading and start-request validation: every refusal names the entry point, the param and the value.

.venv/bin/python -m pytest tests/jobs/test_mlproject.py -q
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobs.mlproject import PARAM_TYPES, MLproject, MLprojectError, ParamError, load_entry_points

ONE_PARAM = "entry_points:\n  main:\n    parameters:\n      {spec}\n    command: x\n"
REPO_MLPROJECT = Path(__file__).resolve().parents[2] / "MLproject"


@pytest.mark.parametrize("entry_point", sorted(load_entry_points(REPO_MLPROJECT)))
def test_every_repo_entry_point_is_offered_with_typed_params(entry_point: str) -> None:
    ep = load_entry_points(REPO_MLPROJECT)[entry_point]
    assert ep.command
    assert all(p.type in PARAM_TYPES for p in ep.params.values())
    assert ep.as_json()["name"] == entry_point


def test_params_keep_file_order_type_and_default(tiny_project: Path) -> None:
    ep = MLproject(tiny_project).get("tiny")
    assert [(p.name, p.type, p.default) for p in ep.params.values()] == [
        ("epochs", "float", 3),
        ("sleep", "float", 0.05),
        ("note", "string", "hello"),
        ("data", "path", "."),
    ]
    assert MLproject(tiny_project).get("needs_name").params["name"].required


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ({"epochs": 100}, {"epochs": "100"}),
        ({"epochs": 100.0}, {"epochs": "100"}),  # click int options reject "100.0"
        ({"epochs": "7"}, {"epochs": "7"}),
        ({"sleep": 0.25}, {"sleep": "0.25"}),
        ({"sleep": "1e-3"}, {"sleep": "0.001"}),
        ({"note": "a b; rm -rf / #"}, {"note": "a b; rm -rf / #"}),
        ({"note": 5}, {"note": "5"}),
        ({"data": "train.py"}, {"data": "train.py"}),
        ({}, {}),
    ],
)
def test_valid_values_become_minus_p_strings(tiny_project: Path, given: dict[str, Any], sent: dict[str, str]) -> None:
    assert MLproject(tiny_project).validate("tiny", given) == sent


@pytest.mark.parametrize(
    ("entry_point", "params", "field", "words"),
    [
        ("nope", {}, "entry_point", ["unknown entry point 'nope'", "'tiny'"]),
        ("tiny", {"epoch": 3}, "params.epoch", ["'tiny' has no param 'epoch'", "'epochs'"]),
        ("tiny", {"epochs": "ten"}, "params.epochs", ["'epochs' (float)", "'ten' is not a number"]),
        ("tiny", {"epochs": True}, "params.epochs", ["'epochs' (float)", "True is not a number"]),
        ("tiny", {"epochs": [1]}, "params.epochs", ["[1] is not a number"]),
        ("tiny", {"epochs": "nan"}, "params.epochs", ["'nan' is not a finite number"]),
        ("tiny", {"note": {"a": 1}}, "params.note", ["'note' (string)", "is not a string"]),
        ("tiny", {"note": None}, "params.note", ["None is not a string"]),
        ("tiny", {"note": "a\x00b"}, "params.note", ["NUL"]),
        ("tiny", {"data": "no/such/dir"}, "params.data", ["'data' (path)", "'no/such/dir' does not exist"]),
        ("needs_name", {}, "params.name", ["'needs_name' needs a value for 'name'"]),
    ],
)
def test_bad_requests_name_what_is_wrong(
    tiny_project: Path, entry_point: str, params: dict[str, Any], field: str, words: list[str]
) -> None:
    with pytest.raises(ParamError) as caught:
        MLproject(tiny_project).validate(entry_point, params)
    assert caught.value.field == field
    for word in words:
        assert word in caught.value.detail


def test_uri_params_need_a_scheme(tmp_path: Path) -> None:
    (tmp_path / "MLproject").write_text(ONE_PARAM.format(spec="src: uri"))
    project = MLproject(tmp_path)
    assert project.validate("main", {"src": "s3://bucket/data"}) == {"src": "s3://bucket/data"}
    with pytest.raises(ParamError, match="is not a URI"):
        project.validate("main", {"src": "bucket/data"})


def test_unknown_param_type_in_the_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "MLproject").write_text(ONE_PARAM.format(spec="n: {type: int}"))
    with pytest.raises(MLprojectError, match="entry point 'main' param 'n' has type 'int'"):
        MLproject(tmp_path).entry_points()


def test_edits_to_the_file_are_picked_up(tiny_project: Path) -> None:
    project = MLproject(tiny_project)
    assert "extra" not in project.entry_points()
    path = tiny_project / "MLproject"
    path.write_text(path.read_text() + "  extra:\n    command: python -c 'print(2)'\n")
    import os

    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    assert "extra" in project.entry_points()
