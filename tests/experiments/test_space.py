"""The search space file: parsed, and checked against the family's config before any trial.

.venv/bin/python -m pytest tests/experiments/test_space.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import ConfigError
from experiments.space import load_space


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_parses_every_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "learning_rate: {type: float, low: 0.01, high: 0.3, log: true}\n"
                           "max_depth: {type: int, low: 2, high: 6}\n"
                           "subsample: {type: categorical, choices: [0.7, 1.0]}\n"
                           "n_estimators: 50\n")  # fmt: skip
    space = load_space(path, "skinmodel", {})
    assert set(space.searched) == {"learning_rate", "max_depth", "subsample"}
    assert space.fixed == {"n_estimators": 50}
    assert space.searched["learning_rate"].log and space.searched["max_depth"].kind == "int"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lr: {type: float, low: 0.1, high: 0.2}", "'lr' is not an option of SkinConfig"),
        ("max_depth: {type: int, low: 6, high: 2}", "low (6) must be below high (2)"),
        ("learning_rate: {type: float, low: 0, high: 1, log: true}", "a log scale needs low > 0"),
        ("max_depth: {type: int, low: 1.5, high: 4}", "low must be an integer"),
        ("max_depth: {type: integer, low: 1, high: 4}", "type must be one of"),
        ("max_depth: {type: int, low: 1, hi: 4}", "unknown key(s) ['hi']"),
        ("task: {type: categorical, choices: []}", "non-empty list `choices`"),
        ("max_depth: {type: categorical, choices: [2, deep]}", "max_depth='deep'"),
        ("n_estimators: many\nmax_depth: {type: int, low: 1, high: 3}", "fixed values"),
        ("n_estimators: 50", "no searched parameter"),
        ("- just a list", "expected a mapping"),
    ],
)
def test_bad_space_fails_before_training(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_space(write(tmp_path, text), "skinmodel", {})
    assert message in err.value.message and "space.yaml" in err.value.message


def test_key_given_twice(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="also given by --set"):
        load_space(write(tmp_path, "max_depth: {type: int, low: 1, high: 3}"), "skinmodel", {"max_depth": "2"})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="space file not found"):
        load_space(tmp_path / "nope.yaml", "skinmodel", {})


def test_a_missing_relative_file_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_space(Path("space.yaml"), "skinmodel", {})
    where = tmp_path.resolve()
    assert str(info.value) == (f"space file not found: {where / 'space.yaml'} (a relative path is read from the "
                               f"working folder {where})")  # fmt: skip
