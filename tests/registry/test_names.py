"""One name rule for models, aliases and experiments (registry.names), enforced by every front end that creates one.

.venv/bin/python -m pytest tests/registry/test_names.py -q
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from core.errors import ConfigError
from projects.common.config import resolve_config
from projects.skinmodel.config import SkinConfig
from registry.cli import promote_command
from registry.errors import InvalidRequestError
from registry.names import check_alias, check_experiment_name, check_model_name
from registry.promote import main as promote_entry_point

MakeVersion = Callable[..., int]
# What a fuzzer got MLflow to accept through the jobs API, and the neighbours of the rule.
BAD_NAMES = ["Üq4dZ3", "¼", "__main__", "_x", "9lives", "latest", "LATEST", "v3", "V12", "a b", "a.b", "a/b", "a:b", "",
             "x" * 65, "naïve", "a\nb", "a;rm -rf", "-rf"]  # fmt: skip
GOOD_NAMES = ["production", "staging", "canary", "edgnet_large", "e", "seg-v2", "v", "vnext", "latest2", "x" * 64]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_model_and_alias_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequestError, match="alias"):
        check_alias(name)
    with pytest.raises(InvalidRequestError, match="model name"):
        check_model_name(name)


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_pass(name: str) -> None:
    assert check_alias(name) == name and check_model_name(name) == name


@pytest.mark.parametrize(
    "name", ["$(reboot)", "a;b", "`id`", "x|y", "a'b", "é", " lead", "trail ", "a\tb", "", "x" * 201]
)
def test_bad_experiment_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequestError, match="experiment name"):
        check_experiment_name(name)


@pytest.mark.parametrize("name", ["Default", "team/edge detection 2", "kiln-tune:edgnet@2026", "a"])
def test_good_experiment_names_pass(name: str) -> None:
    assert check_experiment_name(name) == name


def test_cli_and_mlproject_entry_point_refuse_the_same_alias(client: MlflowClient, make_version: MakeVersion) -> None:
    make_version("seg", {"val_iou": 0.8})
    for argv, invoke in (
        (["seg", "--version", "1", "--alias", "__main__", "--force"], promote_command),
        (["--model", "seg", "--version", "1", "--alias", "__main__", "--force", "true"], promote_entry_point),
    ):
        result = CliRunner().invoke(invoke, argv)
        assert result.exit_code == 2, result.output
        assert "alias '__main__' is not a valid name" in result.output
    assert client.get_registered_model("seg").aliases == {}


def test_training_refuses_a_bad_model_name_before_it_trains() -> None:
    with pytest.raises(ConfigError, match=r"SkinConfig.model_name: model name 'Üq4dZ3' is not a valid name"):
        resolve_config(SkinConfig, flags={"model_name": "Üq4dZ3"})
    assert resolve_config(SkinConfig, flags={"model_name": "skin_v2"}).model_name == "skin_v2"
