"""kiln's one error type: a message the user can act on, an HTTP status for services, an exit code for CLIs.

    python -c "from core.errors import KilnError; e = KilnError('no model x', status_code=404); print(e.status_code)"

Every package raises subclasses of `KilnError`; `run_cli` and `cli_errors` turn one into click's `Error: ...`
line and its exit code, and `core.http.install_error_handler` turns one into a service's JSON error body.
Nothing here imports a framework, so the lowest modules can raise these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class KilnError(Exception):
    """A request kiln refuses, with a message that names the file, field or value.

    Subclasses set the class defaults; a raise site may override them for one error.
    """

    status_code: ClassVar[int] = 400  # what an HTTP caller gets
    exit_code: ClassVar[int] = 1  # what a CLI exits with
    code: ClassVar[str] = "bad_request"  # a short machine-readable kind, for JSON bodies

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        exit_code: int | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field  # the request or config field at fault, when there is one
        self.headers = dict(headers or {})
        if status_code is not None:
            self.status_code = status_code  # type: ignore[misc]  # per-instance override of the class default
        if exit_code is not None:
            self.exit_code = exit_code  # type: ignore[misc]

    @property
    def detail(self) -> str:
        """The message under the name Starlette and FastAPI give it."""
        return self.message


class UserError(KilnError):
    """Something the user can fix: a flag, a config value, a dataset file."""


class ConfigError(UserError, ValueError):
    """A config file, flag or setting that cannot be used; the message names the file, key or value."""


class DatasetError(UserError):
    """A dataset folder or file that cannot be used."""


class ContractError(KilnError, ValueError):
    """A `kiln.*` model metadata value that is missing or malformed."""

    status_code = 422
    code = "bad_contract"


class SettingsError(ConfigError):
    """An environment variable a service cannot use; the message names the variable and its value."""


def run_cli(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `func`, turning a `KilnError` into click's one-line `Error: ...` and the error's exit code."""
    import click

    try:
        return func(*args, **kwargs)
    except KilnError as err:
        exc = click.ClickException(err.message)
        exc.exit_code = err.exit_code  # type: ignore[misc]  # click declares it a ClassVar; this error has its own
        raise exc from None


def cli_errors(func: F) -> F:
    """Decorator form of `run_cli`, for click command callbacks."""
    import functools

    @functools.wraps(func)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        return run_cli(func, *args, **kwargs)

    return wrapped  # type: ignore[return-value]
