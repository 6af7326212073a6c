"""ServeSettings: defaults, KILN_* parsing, CLI overrides, and errors that name the variable and value."""

from __future__ import annotations

import pytest

from serving.settings import ServeSettings, parse_model_list


def test_defaults_match_the_issue() -> None:
    settings = ServeSettings.from_env({})
    assert settings.poll_seconds == 2.0
    assert settings.alias == "production"
    assert settings.api_token is None and settings.webhook_secret is None
    assert settings.models == ()


def test_environment_is_parsed_into_typed_fields() -> None:
    env = {
        "KILN_POLL_SECONDS": "0.5",
        "KILN_MODELS": " a, b ,,c",
        "KILN_ORT_SPINNING": "yes",
        "KILN_MAX_BATCH_SIZE": "32",
        "KILN_API_TOKEN": "t0k",
        "MLFLOW_TRACKING_URI": "sqlite:///x.db",
    }
    settings = ServeSettings.from_env(env)
    assert settings.poll_seconds == 0.5
    assert settings.models == ("a", "b", "c")
    assert settings.ort_spinning is True
    assert settings.max_batch_size == 32
    assert settings.api_token == "t0k"
    assert settings.tracking_uri == "sqlite:///x.db"


def test_cli_overrides_beat_the_environment_and_none_does_not() -> None:
    settings = ServeSettings.from_env({"KILN_ALIAS": "staging", "KILN_MODELS": "a"}, alias=None, models=("b",))
    assert settings.alias == "staging"
    assert settings.models == ("b",)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KILN_MAX_BATCH_SIZE": "lots"}, "KILN_MAX_BATCH_SIZE='lots' is not a valid int"),
        ({"KILN_POLL_SECONDS": "-1"}, "KILN_POLL_SECONDS=-1.0 is out of range"),
        ({"KILN_ACCESS_LOG": "maybe"}, "KILN_ACCESS_LOG='maybe' is not a boolean"),
        ({"KILN_INSTANCES": "0"}, "KILN_INSTANCES=0 is out of range"),
        ({"KILN_MODELS": "a,a"}, "model names given twice: ['a']"),
    ],
)
def test_bad_values_fail_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as err:
        ServeSettings.from_env(env)
    assert message in str(err.value)


def test_env_round_trips_for_worker_processes() -> None:
    settings = ServeSettings.from_env({}, models=("a", "b"), alias="staging", api_token="x", ort_spinning=True)
    assert ServeSettings.from_env(settings.env()) == settings


def test_parse_model_list_drops_blanks() -> None:
    assert parse_model_list(" x ,, y") == ("x", "y")
