"""ultralytics' console output under kiln: its layer table and its 1,700-character args line only with --verbose,
and, when stdout is not a terminal (a job log, CI), no ANSI colour codes and no progress-bar redraws.

    python -m projects.yolo.train --preset safety_detection --epochs 1 --imgsz 64 --verbose

ultralytics decides "non-interactive" only for GitHub Actions; kiln also counts any stdout that is not a TTY,
so a job log gets one line per finished bar instead of a line per redraw.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
LOGGER_NAME = "ultralytics"


class StripAnsi(logging.Filter):
    """Remove colour codes from ultralytics' log records (its `colorstr` adds them whatever the output)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = ANSI.sub("", record.msg)
        return True


def configure(tty: bool | None = None) -> None:
    """Plain output when stdout is not a terminal: no colour codes, one line per finished progress bar."""
    import ultralytics.utils.tqdm as ultralytics_tqdm

    tty = sys.stdout.isatty() if tty is None else tty
    logger = logging.getLogger(LOGGER_NAME)
    logger.filters = [f for f in logger.filters if not isinstance(f, StripAnsi)]
    if tty:
        return
    logger.addFilter(StripAnsi())
    ultralytics_tqdm.is_noninteractive_console = _non_interactive
    bar = ultralytics_tqdm.TQDM
    if not getattr(bar._display, "kiln_plain", False):  # bars write their (coloured) description themselves
        bar._display = _plain_display(bar._display)


def _plain_display(display: Any) -> Any:
    def plain(self: Any, final: bool = False) -> None:
        self.desc = ANSI.sub("", self.desc)
        display(self, final)

    plain.kiln_plain = True  # type: ignore[attr-defined]
    return plain


def _non_interactive() -> bool:
    return True


@contextlib.contextmanager
def quiet(enabled: bool) -> Iterator[None]:
    """Inside, ultralytics logs warnings only (its trainer prints every resolved arg when it is built)."""
    logger = logging.getLogger(LOGGER_NAME)
    level = logger.level
    if enabled:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def layer_table(verbose: bool, wanted: Any) -> bool:
    """ultralytics' `verbose` for building the model: its layer table, shown with --verbose only."""
    return bool(wanted) and verbose
