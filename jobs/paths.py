"""Keeps job params that name files inside the folders the operator lists (`KILN_JOBS_FILE_ROOTS`).

    KILN_JOBS_FILE_ROOTS=/srv/data:/srv/configs kiln jobs serve      # default: the project folder and data/samples

A start request's `data`, `config`, `hyp`, `space`, `teacher`, `model` and `storage` params, any param the
MLproject types `path`, and the same keys inside a `sets` override list, may name a local file. Each such value is
resolved the way `mlflow run` would read it (relative to the project folder, `~` expanded, symlinks followed) and
must land under one of the roots; anything else is refused with one message that does not depend on whether the
path exists, so the API cannot be used to probe the server's files. Values that are not local paths (`dataset:`,
`runs:/`, `models:/`, `s3://`, `postgresql://` URIs) pass: their own resolver reads them. `file:` and `sqlite:` URIs
name local files and are confined like paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

# Params that name a file wherever they appear (every family's `data`, cr_recon's `config`, YOLO's `hyp`, kiln tune's
# `space` and `storage`, microseg's `teacher`, YOLO's and cr_recon's `model`, which may be a YAML or weights file).
FILE_PARAMS = frozenset({"data", "config", "hyp", "space", "storage", "teacher", "model"})
# Params holding space-separated key=value overrides for another entry point (kiln tune / kiln cv `sets`).
OVERRIDE_PARAMS = frozenset({"sets"})
LOCAL_SCHEMES = frozenset({"file", "sqlite"})  # URIs whose path is a file on this machine


class PathNotAllowedError(ValueError):
    """A param names a file outside the allowed roots; `field` is the JSON field to fix."""

    def __init__(self, detail: str, field: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


def default_roots(project_dir: Path) -> tuple[Path, ...]:
    """The project folder and the folder the entry points keep their bundled sample sets in."""
    from data.samples import SAMPLES_DIR

    return (project_dir.resolve(), SAMPLES_DIR.resolve())


def confine_params(
    params: Mapping[str, Any], roots: Iterable[Path], project_dir: Path, path_params: Iterable[str] = ()
) -> None:
    """Raise PathNotAllowedError for the first file-naming value in `params` that lies outside `roots`."""
    roots = tuple(Path(os.path.realpath(r)) for r in roots)
    file_params = FILE_PARAMS | set(path_params)
    for name, value in params.items():
        if not isinstance(value, str):
            continue  # the MLproject's type check refuses it with its own message
        if name in file_params:
            _confine(value, roots, project_dir, field=f"params.{name}")
        elif name in OVERRIDE_PARAMS:
            for key, item in _overrides(value):
                if key in file_params:
                    _confine(item, roots, project_dir, field=f"params.{name}")


def _overrides(text: str) -> list[tuple[str, str]]:
    pairs = []
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep:
            pairs.append((key.strip().lstrip("-").replace("-", "_"), value))
    return pairs


def _confine(value: str, roots: tuple[Path, ...], project_dir: Path, field: str) -> None:
    local = _local_path(value)
    if local is None:
        return
    path = Path(local).expanduser()
    resolved = Path(os.path.realpath(path if path.is_absolute() else project_dir / path))
    if any(resolved == root or resolved.is_relative_to(root) for root in roots):
        return
    shown = ", ".join(str(r) for r in roots)
    raise PathNotAllowedError(
        f"{field}: {value[:200]!r} is outside the folders jobs may read ({shown}; KILN_JOBS_FILE_ROOTS); "
        "relative paths start at the project folder",
        field,
    )


def _local_path(value: str) -> str | None:
    """The local path a value names, or None for an empty value or a URI that is not a local file."""
    if not value.strip():
        return None
    parsed = urlparse(value)
    if len(parsed.scheme) <= 1:  # no scheme, or a Windows drive letter
        return value
    if parsed.scheme.lower() in LOCAL_SCHEMES:
        # sqlite:///rel.db and sqlite:////abs.db (SQLAlchemy), file:///abs and file:rel
        path = unquote(parsed.path)
        if parsed.scheme.lower() == "sqlite" and path.startswith("/"):
            path = path[1:]
        return path or "."
    return None
