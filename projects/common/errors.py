"""User-facing errors: bad flags, config files or dataset files. Entry points print them without a traceback.

python -m projects.edgnet.train --data /no/such/dir   # -> Error: data folder not found: /no/such/dir
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


class KilnUserError(Exception):
    """Something the user can fix; the message names the file, field or value."""


class DatasetError(KilnUserError):
    """A dataset folder or file that cannot be used."""


def run_cli(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call `func`, turning user errors into click's `Error: ...` and exit code 1."""
    from projects.common.checkpoint import ResumeError
    from projects.common.config import ConfigError

    try:
        return func(*args, **kwargs)
    except (KilnUserError, ConfigError, ResumeError) as exc:
        raise click.ClickException(str(exc)) from None
