"""Log reading: carriage-return redraws, partial lines, the error line of a failed job.

.venv/bin/python -m pytest tests/jobs/test_logs.py -q
"""

from __future__ import annotations

from pathlib import Path

from jobs.logs import clean_line, last_error, read_all, read_text


def test_progress_bar_redraws_keep_the_last_state() -> None:
    assert clean_line("Epoch 1:  10%|#\rEpoch 1:  50%|#####\rEpoch 1: 100%|##########\n") == "Epoch 1: 100%|##########"
    assert clean_line("plain\r\n") == "plain"


def test_follower_never_splits_a_line(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    path.write_bytes(b"one\ntwo\npart")
    lines, offset = read_text(path, 0)
    assert (lines, offset) == (["one", "two"], 8)
    with path.open("ab") as fh:
        fh.write(b"ial\nthree\n")
    assert read_text(path, offset) == (["partial", "three"], path.stat().st_size)
    assert read_text(tmp_path / "missing.log", 5) == ([], 5)


def test_final_read_returns_an_unterminated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    path.write_bytes(b"one\nlast words")
    assert read_text(path, 4, final=True) == (["last words"], path.stat().st_size)


def test_tail_and_error_line(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    path.write_text(
        "loading\nTraceback (most recent call last):\n  File 'x.py', line 1\n"
        "ValueError: sample 3 has no mask\n2026/01/01 ERROR mlflow.cli: === Run (ID 'x') failed ===\n"
    )
    assert read_all(path, tail=1) == "2026/01/01 ERROR mlflow.cli: === Run (ID 'x') failed ===\n"
    assert last_error(path) == "ValueError: sample 3 has no mask"
    path.write_text("Error: data folder not found: /nope\n")
    assert last_error(path) == "Error: data folder not found: /nope"
    path.write_text("all fine\n")
    assert last_error(path) is None


def test_reads_are_bounded_and_tails_come_from_the_end(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    path.write_text("".join(f"line {i}\n" for i in range(50_000)))
    lines, offset = read_text(path, 0, max_bytes=100)
    assert lines[0] == "line 0" and offset <= 100
    following, _ = read_text(path, offset, max_bytes=100)
    assert following[0] == f"line {len(lines)}"  # the next read starts on the next whole line
    assert read_all(path, tail=3) == "line 49997\nline 49998\nline 49999\n"
    path.write_bytes(b"x" * 300)  # one line longer than a read, still being written
    assert read_text(path, 0, max_bytes=100) == (["x" * 100], 100)
