"""Reading a job's log file: the whole log, its tail, or the lines added since a byte offset.

    python -m jobs.logs .kiln/job-logs/edgnet_large-1a2b3c4d.log 20     # the last 20 lines, as the page shows them

`mlflow run` and the training script write stdout and stderr into one file per job. Progress bars (tqdm)
redraw a line with carriage returns; like a terminal, only the text after the last `\\r` of a line is kept.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# Lines that carry the cause of a failure: Python's last traceback line, click's "Error: ...".
_ERROR_LINE = re.compile(r"^(?:[\w.]*(?:Error|Exception)\b.*|Error: .*)$")
_MAX_ERROR_CHARS = 2000


def clean_line(line: str) -> str:
    """A log line as a terminal shows it: the last carriage-return segment, without the newline."""
    text = line.rstrip("\n").rstrip("\r")
    return text.rsplit("\r", 1)[-1]


def read_text(path: Path, offset: int = 0, final: bool = False, max_bytes: int = 1 << 20) -> tuple[list[str], int]:
    """Complete lines from byte `offset` on (at most `max_bytes` of them), and the offset just past them.

    A line still being written (no newline yet) is left for the next call, so a follower never splits one;
    with `final` (the writer is gone) it is returned too. A single line longer than `max_bytes` comes in pieces.
    """
    if not path.exists():
        return [], offset
    with path.open("rb") as fh:
        fh.seek(offset)
        data = fh.read(max_bytes)
    if final and data:
        end = len(data) - 1
    else:
        end = data.rfind(b"\n")
        if end < 0 and len(data) == max_bytes:
            end = len(data) - 1
    if end < 0:
        return [], offset
    chunk = data[: end + 1].decode("utf-8", errors="replace")
    return [clean_line(line) for line in chunk.splitlines(keepends=True)], offset + end + 1


def read_all(path: Path, tail: int | None = None) -> str:
    """The whole log (a last unfinished line included), or its last `tail` lines."""
    if not path.exists():
        return ""
    raw = path.read_bytes() if tail is None else _last_lines_bytes(path, tail)
    lines = [clean_line(line) for line in raw.decode("utf-8", errors="replace").splitlines(keepends=True)]
    if tail is not None:
        lines = lines[-tail:] if tail > 0 else []
    return "\n".join(lines) + ("\n" if lines else "")


def _last_lines_bytes(path: Path, count: int, block: int = 1 << 16) -> bytes:
    """Enough of the end of the file to hold its last `count` lines, read backwards block by block."""
    with path.open("rb") as fh:
        size = fh.seek(0, 2)
        start, data = size, b""
        while start > 0 and data.count(b"\n") <= count:
            start = max(0, start - block)
            fh.seek(start)
            data = fh.read(size - start)
    return data if start == 0 else data[data.find(b"\n") + 1 :]


def last_error(path: Path, window: int = 200) -> str | None:
    """The last line of the log that names an error, for a failed job's message."""
    for line in reversed(read_all(path, tail=window).splitlines()):
        stripped = line.strip()
        if _ERROR_LINE.match(stripped):
            return stripped[:_MAX_ERROR_CHARS]
    return None


if __name__ == "__main__":
    from core.scripts import script_args

    script_args(sys.argv[1:], "python -m jobs.logs LOG [OFFSET]", __doc__, range(1, 3))
    print(read_all(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else None), end="")
