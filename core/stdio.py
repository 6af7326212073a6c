"""`--json` owns stdout: while a command works, progress written to stdout goes to stderr instead.

    python -c "from core.stdio import progress_to_stderr; exec('with progress_to_stderr():\\n print(1)')" 2>/dev/null

Redirects at the file-descriptor level as well as `sys.stdout`, so subprocesses (tune workers, DDP ranks),
ultralytics' logger (which kept a reference to the stdout it saw at import) and C libraries are caught too.
Where stdout has no descriptor (click's CliRunner), only `sys.stdout` is swapped.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator


def _fileno(stream: object) -> int | None:
    try:
        return int(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


@contextlib.contextmanager
def progress_to_stderr(enabled: bool = True) -> Iterator[None]:
    """While the body runs, what is written to stdout goes to stderr; stdout is restored afterwards."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    out, err = _fileno(sys.stdout), _fileno(sys.stderr)
    saved = os.dup(out) if out is not None and err is not None else None
    try:
        if saved is not None:
            os.dup2(err, out)  # type: ignore[arg-type]
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, out)  # type: ignore[arg-type]
            os.close(saved)
