"""The review queue and every verdict, in DST/.kiln/review.db (sqlite), with the label files beside the images.

    python -c "from data.review.store import ReviewStore; print(ReviewStore('data/door').progress())"

An item is one image: its pre-label boxes (from `kiln data autolabel`, with the model name and version), the
priority of a human look, and the review state. Each save names the revision the person started from; a save
on an older revision is refused with 409 and a message, so two tabs never overwrite each other silently.
A save writes DST/labels/<image>.txt atomically (temp file, fsync, rename) inside the same sqlite transaction
that bumps the revision, and appends to a history table, so no verdict is ever lost, even when overwritten.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import DatasetError, KilnError
from data.collect import state_dir
from data.loop import Box, atomic_write, class_names, label_file, validate_box, write_boxes
from data.yolo_layout import list_images

DB_NAME = "review.db"
VERDICTS = ("accepted", "fixed", "rejected")
UNLABELLED_PRIORITY = -1.0  # images no model labelled go to the end of the queue

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    path TEXT PRIMARY KEY,          -- relative to DST, starts with images/
    width INTEGER, height INTEGER,
    priority REAL NOT NULL,         -- higher = a person's look is worth more
    prelabels TEXT NOT NULL,        -- JSON list of boxes with confidence
    model TEXT, model_version TEXT, labelled_at REAL,
    status TEXT NOT NULL,           -- queued | accepted | fixed | rejected
    revision INTEGER NOT NULL,      -- bumped by every save
    boxes TEXT,                     -- JSON list of the reviewed boxes
    reviewed_at REAL, reviewer TEXT
);
CREATE INDEX IF NOT EXISTS items_queue ON items (priority DESC, path);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL, revision INTEGER NOT NULL, status TEXT NOT NULL, boxes TEXT, at REAL NOT NULL,
    reviewer TEXT
);
"""


class StaleRevision(KilnError):
    status_code = 409
    code = "stale_revision"


class UnknownItem(KilnError):
    status_code = 404
    code = "not_found"


@dataclass
class Prelabel:
    """What autolabel hands the store for one image."""

    path: str
    width: int
    height: int
    boxes: list[Box]
    priority: float
    model: str
    model_version: str


class ReviewStore:
    def __init__(self, dst: str | Path) -> None:
        self.dst = Path(dst).expanduser()
        if not (self.dst / "images").is_dir():
            raise DatasetError(f"{self.dst}: no images/ folder; collect images into it first")
        state_dir(self.dst).mkdir(parents=True, exist_ok=True)
        self.db_path = state_dir(self.dst) / DB_NAME
        with self._connect() as conn:
            conn.executescript(SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        try:
            yield conn
        finally:
            conn.close()

    # ------------------------------------------------------------------------------------------- queue

    def sync_images(self) -> int:
        """Queue every image under DST/images that is not an item yet (no pre-labels), and drop queued items
        whose image is gone (moved by the filter); reviewed items always stay. Returns how many were added."""
        paths = [p.relative_to(self.dst).as_posix() for p in list_images(self.dst / "images")]
        with self._connect() as conn:
            known = {row[0]: row[1] for row in conn.execute("SELECT path, status FROM items")}
            fresh = [p for p in paths if p not in known]
            present = set(paths)
            gone = [(p,) for p, status in known.items() if status == "queued" and p not in present]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("DELETE FROM items WHERE path = ? AND status = 'queued'", gone)
            conn.executemany(
                "INSERT OR IGNORE INTO items (path, priority, prelabels, status, revision) VALUES (?, ?, '[]', "
                "'queued', 0)",
                [(p, UNLABELLED_PRIORITY) for p in fresh],
            )
            conn.execute("COMMIT")
        return len(fresh)

    def reviewed_paths(self) -> set[str]:
        with self._connect() as conn:
            return {row[0] for row in conn.execute("SELECT path FROM items WHERE status != 'queued'")}

    def add_prelabels(self, items: list[Prelabel]) -> int:
        """Store pre-labels for images not reviewed yet (a reviewed image keeps its review); returns how many."""
        rows = [
            (
                it.path, it.width, it.height, it.priority, json.dumps([b.to_json() for b in it.boxes]),
                it.model, it.model_version, time.time(),
            )
            for it in items
        ]  # fmt: skip
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            before = conn.total_changes
            conn.executemany(
                """INSERT INTO items (path, width, height, priority, prelabels, model, model_version, labelled_at,
                                      status, revision)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0)
                   ON CONFLICT (path) DO UPDATE SET width = excluded.width, height = excluded.height,
                       priority = excluded.priority, prelabels = excluded.prelabels, model = excluded.model,
                       model_version = excluded.model_version, labelled_at = excluded.labelled_at,
                       revision = items.revision + 1
                   WHERE items.status = 'queued'""",
                rows,
            )
            changed = conn.total_changes - before
            conn.execute("COMMIT")
        return changed

    def queue(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every item in review order (highest priority first), without its boxes."""
        sql = "SELECT path, priority, status, revision, model, model_version, prelabels FROM items"
        args: tuple[Any, ...] = ()
        if status:
            sql += " WHERE status = ?"
            args = (status,)
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY priority DESC, path", args).fetchall()
        return [
            {
                "path": r["path"], "priority": round(r["priority"], 4), "status": r["status"],
                "revision": r["revision"], "model": _model(r), "boxes": len(json.loads(r["prelabels"])),
            }
            for r in rows
        ]  # fmt: skip

    def progress(self) -> dict[str, Any]:
        with self._connect() as conn:
            counts = dict(conn.execute("SELECT status, COUNT(*) FROM items GROUP BY status").fetchall())
        total = sum(counts.values())
        by_verdict = {v: counts.get(v, 0) for v in VERDICTS}
        return {"total": total, "reviewed": sum(by_verdict.values()), "queued": counts.get("queued", 0), **by_verdict}

    # ------------------------------------------------------------------------------------------- items

    def get(self, path: str) -> dict[str, Any]:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM items WHERE path = ?", (path,)).fetchone()
        if row is None:
            raise UnknownItem(f"{path!r} is not in the review queue of {self.dst}")
        width, height = row["width"], row["height"]
        if width is None:
            width, height = image_size(self.dst / path)
        prelabels = json.loads(row["prelabels"])
        return {
            "path": path,
            "width": width,
            "height": height,
            "status": row["status"],
            "revision": row["revision"],
            "priority": row["priority"],
            "model": _model(row),
            "prelabels": prelabels,
            "boxes": json.loads(row["boxes"]) if row["boxes"] is not None else prelabels,
            "reviewed_at": row["reviewed_at"],
        }

    def save(
        self, path: str, revision: int, verdict: str, boxes: list[Any], reviewer: str | None = None
    ) -> dict[str, Any]:
        """Record a verdict with its boxes, if `revision` is still current; write or remove the label file."""
        if verdict not in VERDICTS:
            raise DatasetError(
                f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}", status_code=422, field="verdict"
            )
        item = self.get(path)
        width, height = int(item["width"]), int(item["height"])
        names = class_names(self.dst)
        if not names and boxes:
            raise DatasetError(
                f"{self.dst} names no classes: add classes.txt (one name a line) or data.yaml names", status_code=422
            )
        checked = [validate_box(b, i, width, height, len(names)) for i, b in enumerate(boxes)]
        if verdict == "accepted" and _differs(checked, item["prelabels"]):
            verdict = "fixed"  # accepting edited boxes is a fix, and is counted as one
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")  # one writer at a time, across processes too
            try:
                current = conn.execute("SELECT revision FROM items WHERE path = ?", (path,)).fetchone()[0]
                if current != revision:
                    raise StaleRevision(
                        f"{path} was saved elsewhere (now revision {current}) after you opened revision {revision}; "
                        "your edits are kept in this tab: reload the image to see the other save, then redo them"
                    )
                new_revision = current + 1
                boxes_json = json.dumps([b.to_json() for b in checked])
                now = time.time()
                conn.execute(
                    "UPDATE items SET status = ?, revision = ?, boxes = ?, reviewed_at = ?, reviewer = ?, width = ?, "
                    "height = ? WHERE path = ?",
                    (verdict, new_revision, boxes_json, now, reviewer, width, height, path),
                )
                conn.execute(
                    "INSERT INTO history (path, revision, status, boxes, at, reviewer) VALUES (?, ?, ?, ?, ?, ?)",
                    (path, new_revision, verdict, boxes_json, now, reviewer),
                )
                undo = self._write_label(path, verdict, checked, width, height)
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error:
                    undo()
                    raise
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return {**self.get(path), "saved": True}

    def _write_label(self, path: str, verdict: str, boxes: list[Box], width: int, height: int) -> Any:
        """Write (or, for a rejection, remove) the label file; returns a function that puts the old one back."""
        target = label_file(self.dst, path)
        old = target.read_bytes() if target.is_file() else None
        if verdict == "rejected":
            target.unlink(missing_ok=True)
        else:
            write_boxes(target, boxes, width, height)

        def undo() -> None:
            if old is None:
                target.unlink(missing_ok=True)
            else:
                atomic_write(target, old)

        return undo

    def history(self, path: str) -> list[dict[str, Any]]:
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM history WHERE path = ? ORDER BY id", (path,)).fetchall()
        return [dict(r) | {"boxes": json.loads(r["boxes"] or "[]")} for r in rows]

    def items(self) -> list[dict[str, Any]]:
        """Every item with its model and status (for dataset versions)."""
        with self._connect() as conn:
            rows = conn.execute("SELECT path, status, model, model_version FROM items").fetchall()
        return [{"path": r["path"], "status": r["status"], "model": _model(r)} for r in rows]


def _model(row: sqlite3.Row) -> str | None:
    return f"{row['model']}/{row['model_version']}" if row["model"] else None


def _differs(boxes: list[Box], prelabels: list[dict[str, Any]]) -> bool:
    if len(boxes) != len(prelabels):
        return True
    for box, pre in zip(boxes, prelabels, strict=True):
        if box.class_id != pre["class_id"]:
            return True
        if any(abs(getattr(box, k) - float(pre[k])) > 0.5 for k in ("x1", "y1", "x2", "y2")):
            return True
    return False


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header; a DatasetError naming the file when it is not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return int(image.width), int(image.height)
    except FileNotFoundError:
        raise UnknownItem(f"{path} is gone from the folder") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{path} is not a readable image: {exc}", status_code=422) from None
