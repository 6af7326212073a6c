"""`kiln data import SRC DST`: a Roboflow, COCO, Pascal VOC, CVAT or Label Studio export (zip or folder) into
kiln's layout, checked as `kiln data validate` checks it, and optionally frozen as a dataset version.

    kiln data import hardhat.v3i.yolov8.zip data/hardhat --name hardhat
    python -c "from data.importers import detect_format; print(detect_format(__import__('pathlib').Path('.')))"

Each reader (`data.importers.<format>`) returns `Annotations`; `data.importers.writer` writes them; the report
is `data.yolo_validate`'s, plus what only the import sees (a box clipped to its image, an empty label file).
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import DatasetError, UserError
from data.importers.common import Annotations, ImportFormatError, unpack
from data.importers.writer import Written, sha256_of, write_dataset
from data.yolo_validate import Problem, Report

Reader = Callable[[Path], Annotations]


def _readers() -> dict[str, Reader]:
    from data.importers.coco import read_coco
    from data.importers.cvat import read_cvat
    from data.importers.labelstudio import read_labelstudio
    from data.importers.voc import read_voc_export
    from data.importers.yolo import read_yolo

    return {"roboflow-yolo": read_yolo, "coco": read_coco, "voc": read_voc_export, "cvat": read_cvat,
            "labelstudio": read_labelstudio}  # fmt: skip


FORMATS = ("roboflow-yolo", "coco", "voc", "cvat", "labelstudio")


def detect_format(root: Path) -> str:
    """The format of an unpacked export, from the files that only that format has."""
    from data.importers.coco import coco_files
    from data.importers.cvat import cvat_file
    from data.importers.labelstudio import labelstudio_file
    from data.importers.voc import voc_files
    from data.importers.yolo import find_data_yaml

    if root.is_file():
        checks: list[tuple[str, Callable[[Path], Any]]] = [("coco", coco_files), ("labelstudio", labelstudio_file)]
    else:
        checks = [("roboflow-yolo", find_data_yaml), ("coco", coco_files), ("cvat", cvat_file),
                  ("labelstudio", labelstudio_file), ("voc", voc_files)]  # fmt: skip
    for name, found in checks:
        if found(root):
            return name
    raise ImportFormatError(
        f"{root}: cannot tell the export format (looked for data.yaml, _annotations.coco.json or a COCO .json, "
        "annotations.xml, a Label Studio .json, Pascal VOC .xml); pass --format"
    )


@dataclass
class ImportResult:
    fmt: str
    dst: Path
    names: list[str]
    written: Written
    report: Report
    skipped: dict[str, int] = field(default_factory=dict)
    version: Any = None  # data.versions.VersionInfo when --name froze it

    @property
    def ok(self) -> bool:
        return self.report.ok

    def summary(self) -> str:
        splits = ", ".join(f"{k} {v}" for k, v in self.written.splits.items())
        made = " (val taken by image hash)" if self.written.made_val else ""
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) or "none"
        masks = f", {self.written.masks} masks" if self.written.masks else ""
        return (
            f"imported {self.fmt}: {sum(self.written.splits.values())} images ({splits}){made}, "
            f"{self.written.boxes} boxes{masks}, {len(self.names)} classes ({', '.join(self.names)}); "
            f"skipped shapes: {skipped}; wrote {self.written.yaml_path}"
        )


def import_dataset(
    src: str | Path,
    dst: str | Path,
    fmt: str = "auto",
    val: float = 0.2,
    name: str | None = None,
    message: str = "",
    tracking_uri: str | None = None,
) -> ImportResult:
    """Read SRC, write DST, validate it; with `name` and no problem found, freeze DST as NAME's next version."""
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if fmt != "auto" and fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; known: auto, {', '.join(FORMATS)}")
    if not 0.0 <= val < 1.0:
        raise UserError(f"--val must be in [0, 1), got {val}")
    with tempfile.TemporaryDirectory(prefix="kiln-import-") as work:
        if not src.exists():
            raise DatasetError(f"{src}: no such file or folder")
        root = unpack(src, Path(work)) if src.is_file() and zipfile.is_zipfile(src) else src
        kind = detect_format(root) if fmt == "auto" else fmt
        ann = _readers()[kind](root)
        source = {"source": src.name, "source_sha256": sha256_of(src) if src.is_file() else None}
        written = write_dataset(ann, dst, val, source)
        report = _report(dst, ann, written, src, root if root.is_dir() else root.parent)
    result = ImportResult(kind, dst, ann.names, written, report, dict(ann.skipped))
    if name and result.ok:
        from data.versions import create_version

        note = message or f"imported from {src.name} ({kind}{_roboflow_note(ann)})"
        result.version = create_version(dst, name, val=val, message=note, tracking_uri=tracking_uri)
    return result


def _report(dst: Path, ann: Annotations, written: Written, src: Path, root: Path) -> Report:
    from data.yolo_validate import validate

    try:
        report = validate(dst / "data.yaml")
    except DatasetError as exc:
        raise DatasetError(f"the imported {dst} does not load: {exc}") from None

    def shown(path: Path) -> Path:  # paths inside a zip's temporary folder are shown as SRC/<path in the export>
        return Path(src.name) / path.relative_to(root) if path.is_relative_to(root) else path

    report.warnings += [Problem(shown(p), 0, m) for p, m in ann.warnings + written.warnings]
    return report


def _roboflow_note(ann: Annotations) -> str:
    block = ann.provenance.get("roboflow") or {}
    if not block:
        return ""
    return f", roboflow {block.get('workspace', '?')}/{block.get('project', '?')} v{block.get('version', '?')}"


__all__ = ["FORMATS", "ImportFormatError", "ImportResult", "detect_format", "import_dataset"]
