"""Look-ups in the MLflow registry that turn "not found" into a registry error naming the missing thing.

    python -c "from registry.lookup import get_model; from mlflow import MlflowClient; get_model(MlflowClient(), 'x')"

MLflow answers a missing model, version or run with an `MlflowException` whose message varies by store;
these helpers check the error code and raise `ModelNotFoundError`, `VersionNotFoundError`, ... instead.
"""

from __future__ import annotations

import re

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException

from registry import names
from registry.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    NoRegisteredVersionError,
    RunNotFoundError,
    VersionNotFoundError,
)

_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def is_not_found(err: MlflowException) -> bool:
    return bool(err.error_code == _NOT_FOUND)


def check_alias(alias: str) -> str:
    """The one alias rule (registry.names), kept here for the modules that import it from lookup."""
    return names.check_alias(alias)


def parse_version(version: int | str) -> int:
    text = str(version).strip().removeprefix("v")
    if not text.isdigit() or int(text) < 1:
        raise InvalidRequestError(f"version {version!r} is not a positive whole number")
    return int(text)


def model_names(client: MlflowClient) -> list[str]:
    return [str(m.name) for m in client.search_registered_models(max_results=200)]


def get_model(client: MlflowClient, name: str) -> RegisteredModel:
    try:
        return client.get_registered_model(name)
    except MlflowException as err:
        if is_not_found(err):
            raise ModelNotFoundError(name, model_names(client)) from None
        raise


def get_version(client: MlflowClient, model: str, version: int) -> ModelVersion:
    try:
        return client.get_model_version(model, str(version))
    except MlflowException as err:
        if is_not_found(err):
            raise VersionNotFoundError(model, version) from None
        raise


def get_run(client: MlflowClient, run_id: str) -> Run:
    if not _RUN_ID.match(run_id):
        raise InvalidRequestError(f"run id {run_id!r} is not of the form MLflow gives runs")
    try:
        return client.get_run(run_id)
    except MlflowException as err:
        if is_not_found(err):
            raise RunNotFoundError(run_id) from None
        raise


def version_for_run(client: MlflowClient, model: str, run_id: str) -> ModelVersion:
    """The newest version of `model` registered from `run_id` (a run that registered twice gives its last)."""
    get_run(client, run_id)
    found = [v for v in client.search_model_versions(f"run_id = '{run_id}'") if v.name == model]
    if not found:
        raise NoRegisteredVersionError(model, run_id)
    return max(found, key=lambda v: int(v.version))


def alias_holder(model: RegisteredModel, alias: str) -> int | None:
    aliases = {str(k): int(v) for k, v in model.aliases.items()}
    return aliases.get(alias)


def run_data(client: MlflowClient, run_id: str | None) -> tuple[dict[str, float], dict[str, str]]:
    """The latest value of every metric on `run_id` (what the MLflow runs table shows) and its tags.

    Empty for a version registered without a run, or whose run has been deleted for good.
    """
    if not run_id:
        return {}, {}
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        if is_not_found(err):
            return {}, {}
        raise
    metrics = {str(k): float(v) for k, v in run.data.metrics.items()}
    return metrics, {str(k): str(v) for k, v in run.data.tags.items()}


def run_metrics(client: MlflowClient, run_id: str | None) -> dict[str, float]:
    return run_data(client, run_id)[0]


def tags_of(entity: ModelVersion | RegisteredModel) -> dict[str, str]:
    return {str(k): str(v) for k, v in (entity.tags or {}).items()}


def metric_hints(
    client: MlflowClient, version: ModelVersion | None, model: RegisteredModel
) -> list[tuple[str, dict[str, str]]]:
    """Where a `kiln.metric` hint may sit, most specific first: the version, its source run, the model."""
    if version is None:
        return [("model tag", tags_of(model))]
    run_tags = run_data(client, version.run_id)[1]
    return [("version tag", tags_of(version)), ("run tag", run_tags), ("model tag", tags_of(model))]


def latest_version(model: RegisteredModel) -> int | None:
    versions = [int(v.version) for v in model.latest_versions or ()]
    return max(versions) if versions else None


def all_registered_models(client: MlflowClient) -> list[RegisteredModel]:
    """Every registered model, following the search's pages."""
    models: list[RegisteredModel] = []
    token: str | None = None
    while True:
        page = client.search_registered_models(max_results=200, page_token=token)
        models.extend(page)
        token = page.token
        if not token:
            return models
