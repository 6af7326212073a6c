"""Errors the registry raises, each naming the bad value, with an HTTP status a web caller can pass on.

    python -c "from registry.errors import ModelNotFoundError; print(ModelNotFoundError('edgnet'))"

The CLI turns these into a one-line message and an exit code; the jobs web page turns them into a 4xx
response with `status_code` and `detail`. Nothing here imports MLflow.
"""

from __future__ import annotations

from core.errors import KilnError
from registry.checks import GateCheck


class RegistryError(KilnError):
    """Base class: a request the registry cannot carry out, with a message the user can act on."""

    exit_code = 2  # CLI exit code: 2 for bad input (as click's usage errors), 1 for a refused promotion


class InvalidRequestError(RegistryError):
    """Flags that contradict each other or a value of the wrong form (an alias name, a mode)."""


class ModelNotFoundError(RegistryError):
    status_code = 404

    def __init__(self, model: str, known: list[str]) -> None:
        shown = ", ".join(sorted(known)[:20]) or "none"
        super().__init__(f"unknown registered model {model!r}; registered models: {shown}")


class VersionNotFoundError(RegistryError):
    status_code = 404

    def __init__(self, model: str, version: int | str) -> None:
        super().__init__(f"model {model!r} has no version {version!r}")


class RunNotFoundError(RegistryError):
    status_code = 404

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id!r} does not exist in the tracking store")


class NoRegisteredVersionError(RegistryError):
    status_code = 404

    def __init__(self, model: str, run_id: str) -> None:
        super().__init__(
            f"run {run_id!r} has no registered version of model {model!r}; register it first "
            "(training does this) or pass --version"
        )


class MetricMissingError(RegistryError):
    status_code = 422

    def __init__(self, metric: str, model: str, version: int, run_id: str, available: list[str]) -> None:
        shown = ", ".join(sorted(available)) or "none"
        super().__init__(
            f"metric {metric!r} is not logged on run {run_id} (source of {model} v{version}); "
            f"metrics on that run: {shown}"
        )


class MetricRequiredError(RegistryError):
    """A gate needs a metric, and neither a flag nor the model's `kiln.metric` tag names one."""

    status_code = 422


class PromotionRefusedError(RegistryError):
    """A gate failed; `checks` holds every gate's verdict, and `detail` says why with both numbers."""

    status_code = 409
    exit_code = 1

    def __init__(self, detail: str, checks: tuple[GateCheck, ...] = ()) -> None:
        super().__init__(detail)
        self.checks = checks


class NothingToRollBackError(RegistryError):
    status_code = 409
    exit_code = 1
