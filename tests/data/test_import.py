"""`kiln data import`: each format's export, zipped as the tool writes it, lands in kiln's layout and checks out.

.venv/bin/python -m pytest tests/data/test_import.py -q
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from core.errors import DatasetError
from data.cli import data
from data.importers import detect_format, import_dataset
from data.importers.rle import (
    brush_rle_decode,
    brush_rle_encode,
    coco_counts_to_string,
    coco_rle_decode,
    coco_rle_encode,
    coco_string_to_counts,
)
from data.versions import diff, list_versions
from tests.data import exports
from tests.data.exports import NAMES, H, W, box_of

BUILDERS: dict[str, tuple[Callable[[Path], Path], str, bool]] = {
    # builder, the format auto-detection must find, whether the export has masks
    "roboflow_yolo": (exports.roboflow_yolo, "roboflow-yolo", False),
    "roboflow_coco": (exports.roboflow_coco, "coco", False),
    "coco_masks": (exports.coco_masks, "coco", True),
    "voc": (exports.voc, "voc", False),
    "cvat": (exports.cvat, "cvat", True),
    "labelstudio": (exports.labelstudio, "labelstudio", True),
}


def expected_line(seed: int) -> str:
    x0, y0, x1, y1 = box_of(seed)
    return f"{seed % 2} {(x0 + x1) / 2 / W:.6f} {(y0 + y1) / 2 / H:.6f} {(x1 - x0) / W:.6f} {(y1 - y0) / H:.6f}"


def seed_of(label: Path) -> int:
    """The builders name files with the seed in them (img003_..., frame_000003, 2024_000003, photo3)."""
    digits = "".join(c if c.isdigit() else " " for c in label.stem.split(".")[0]).split()
    return int(digits[-1])


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_every_format_lands_in_kilns_layout(tmp_path: Path, kind: str) -> None:
    build, fmt, has_masks = BUILDERS[kind]
    archive = exports.zip_folder(build(tmp_path / "export"), tmp_path / f"{kind}.zip")
    result = import_dataset(archive, tmp_path / "out")
    assert result.fmt == fmt and result.ok, result.report.lines()
    assert result.names == NAMES
    assert "val" in result.written.splits and "train" in result.written.splits
    labels = sorted((tmp_path / "out" / "labels").rglob("*.txt"))
    assert len(labels) == sum(result.written.splits.values())
    for label in labels:  # every format's box for a seed is the same YOLO line
        assert label.read_text().splitlines() == [expected_line(seed_of(label))], label
    data_yaml = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert "path" not in data_yaml and data_yaml["val"] == "images/val"
    assert data_yaml["kiln_import"]["format"] == fmt
    masks = sorted((tmp_path / "out" / "masks").rglob("*.png"))
    assert len(masks) == (len(labels) if has_masks else 0)
    for mask in masks:  # polygon, COCO RLE, CVAT RLE and brush RLE all cover the drawn rectangle exactly
        x0, y0, x1, y1 = box_of(seed_of(mask))
        pixels = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE) > 127
        assert pixels[y0:y1, x0:x1].all() and pixels.sum() <= (x1 - x0 + 1) * (y1 - y0 + 1), mask


def test_roboflow_yolo_paths_fixed_and_provenance_kept(tmp_path: Path) -> None:
    archive = exports.zip_folder(exports.roboflow_yolo(tmp_path / "export"), tmp_path / "hardhat.v1i.yolov8.zip")
    result = import_dataset(archive, tmp_path / "out")
    assert result.written.splits == {"train": 6, "val": 2, "test": 1} and not result.written.made_val
    data_yaml = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert (data_yaml["train"], data_yaml["val"], data_yaml["test"]) == ("images/train", "images/val", "images/test")
    assert data_yaml["roboflow"]["project"] == "hardhat" and data_yaml["roboflow"]["version"] == 1
    assert (tmp_path / "out" / "images" / "val" / "img006_jpg.rf.00000006.jpg").is_file()
    assert (tmp_path / "out" / "images" / "test" / "img008_jpg.rf.00000008.jpg").is_file()


def test_roboflow_coco_drops_the_project_category(tmp_path: Path) -> None:
    result = import_dataset(exports.roboflow_coco(tmp_path / "export"), tmp_path / "out")
    assert result.names == NAMES and result.written.splits == {"train": 5, "val": 2, "test": 1}


def test_problems_are_reported_as_validate_reports_them(tmp_path: Path) -> None:
    export = exports.roboflow_yolo(tmp_path / "export")
    labels = sorted((export / "train" / "labels").glob("*.txt"))
    labels[0].write_text("5 0.5 0.5 0.2 0.2\n")  # class id outside the 2 names
    labels[1].write_text("")  # an empty label file
    labels[2].write_text("0 0.95 0.5 0.2 0.2\n")  # sticks out past the right border
    valid = export / "valid" / "images"
    dup = sorted((export / "train" / "images").glob("*.jpg"))[3]
    (valid / "copy.jpg").write_bytes(dup.read_bytes())  # the same image in train and val
    result = import_dataset(export, tmp_path / "out")
    lines = result.report.lines()
    assert not result.ok
    assert f"labels/train/{labels[0].name}:1: class id 5 out of range; names has 2 classes (0..1)" in lines
    assert (
        f"warning: labels/train/{labels[1].name}: empty label file: a background image with nothing labelled" in lines
    )
    assert f"warning: labels/train/{labels[2].name}:1: box extends outside the image; training clips it" in lines
    assert f"warning: images/val/copy.jpg: duplicate image: same bytes as {dup.name} (in train and val)" in lines

    out = CliRunner().invoke(data, ["import", str(export), str(tmp_path / "out2"), "--name", "bad"])
    assert out.exit_code == 1 and "class id 5 out of range" in out.output and "not versioned" in out.output


def test_a_box_outside_the_image_is_clipped_and_named(tmp_path: Path) -> None:
    export = exports.coco_masks(tmp_path / "export", count=3)
    path = export / "annotations" / "instances_default.json"
    coco = json.loads(path.read_text())
    coco["annotations"][0]["bbox"] = [50, 10, 30, 10]  # x 50..80 on a 64 px wide image
    path.write_text(json.dumps(coco))
    result = import_dataset(export, tmp_path / "out")
    name = coco["images"][0]["file_name"]
    assert f"warning: export/annotations/instances_default.json: {name}: box (50,10)-(80,20) is outside the 64x48 " \
           "image; clipped" in result.report.lines()  # fmt: skip


def test_val_split_is_made_by_image_hash_and_kept_across_reimports(tmp_path: Path) -> None:
    first = import_dataset(exports.labelstudio(tmp_path / "a", count=6), tmp_path / "out", val=0.3)
    assert first.written.made_val
    before = {p.name: p.parent.name for p in (tmp_path / "out" / "images").rglob("*.jpg")}
    import_dataset(exports.labelstudio(tmp_path / "b", count=12), tmp_path / "out", val=0.3)  # replaces the import
    after = {p.name: p.parent.name for p in (tmp_path / "out" / "images").rglob("*.jpg")}
    assert len(after) == 12 and all(after[name] == split for name, split in before.items())


def test_name_freezes_versions_and_a_newer_export_diffs(tmp_path: Path, mlflow_uri: str) -> None:
    archive = exports.zip_folder(exports.roboflow_yolo(tmp_path / "v1"), tmp_path / "v1.zip")
    out = CliRunner().invoke(data, ["import", str(archive), str(tmp_path / "hardhat"), "--name", "hardhat"])
    assert out.exit_code == 0, out.output
    assert "created hardhat@v1; train with: -P data=dataset:hardhat@v1" in out.output
    newer = exports.zip_folder(exports.roboflow_yolo(tmp_path / "v2", extra=2), tmp_path / "v2.zip")
    out = CliRunner().invoke(data, ["import", str(newer), str(tmp_path / "hardhat"), "--name", "hardhat"])
    assert out.exit_code == 0 and "created hardhat@v2" in out.output, out.output
    versions = list_versions("hardhat")
    assert [v.ref for v in versions] == ["hardhat@v1", "hardhat@v2"]
    assert versions[1].images == 11 and "imported from v2.zip (roboflow-yolo, roboflow acme/hardhat v1)" in (
        versions[1].message
    )
    changes = diff("hardhat@v1", "hardhat@v2")
    assert len(changes.added) == 2 and not changes.removed
    listing = CliRunner().invoke(data, ["versions", "hardhat"])
    assert "imported from v2.zip" in listing.output and "head 6, helmet 5" in listing.output, listing.output


def test_zip_members_outside_the_folder_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../escape.txt", "x")
    with pytest.raises(DatasetError, match="would be written outside"):
        import_dataset(archive, tmp_path / "out")


def test_unknown_layout_and_a_foreign_destination_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="cannot tell the export format"):
        detect_format(tmp_path / "empty")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    out = CliRunner().invoke(data, ["import", str(exports.voc(tmp_path / "voc")), str(tmp_path / "busy")])
    assert out.exit_code == 1 and "not empty and holds no earlier import" in out.output


def test_rle_codecs_round_trip() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((7, 9)) > 0.6
    assert (coco_rle_decode(coco_rle_encode(mask)) == mask).all()
    runs = [3, 5, 40, 2, 13]
    assert coco_string_to_counts(coco_counts_to_string(runs)) == runs
    column_major = coco_rle_decode({"size": [2, 3], "counts": [1, 2, 3]})  # runs go down columns first
    assert column_major.tolist() == [[False, True, False], [True, False, False]]
    assert (brush_rle_decode(brush_rle_encode(mask), 9, 7, "t") == mask).all()


def _dataset_runs(ref: str) -> list[object]:
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return [r for r in runs if r.data.tags.get("kiln.dataset") == ref]


@pytest.mark.slow
def test_a_yolo_preset_and_edgnet_train_on_imported_versions(
    tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One tiny epoch each: yolo_custom on a Roboflow YOLO import, edgnet on a COCO polygon/RLE import."""
    import torch

    import projects.yolo.offline  # noqa: F401  (before ultralytics)
    from projects.edgnet.train import EDGNetConfig
    from projects.edgnet.train import train as train_edgnet
    from projects.yolo.train import YoloConfig
    from projects.yolo.train import train as train_yolo

    monkeypatch.setenv("KILN_DATASET_CACHE", str(tmp_path / "cache"))
    archive = exports.zip_folder(exports.roboflow_yolo(tmp_path / "rf"), tmp_path / "rf.zip")
    assert import_dataset(archive, tmp_path / "hardhat", name="hardhat").version.ref == "hardhat@v1"
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        train_yolo(YoloConfig(preset="yolo_custom", data="dataset:hardhat@v1", epochs=1, imgsz=64, batch=4,
                              device="cpu", model_name="hardhat_det"))  # fmt: skip
    finally:
        torch.use_deterministic_algorithms(deterministic)  # ultralytics turns it on process-wide
    assert len(_dataset_runs("hardhat@v1")) == 1

    archive = exports.zip_folder(exports.coco_masks(tmp_path / "coco", count=8), tmp_path / "coco.zip")
    info = import_dataset(archive, tmp_path / "parts", name="parts").version
    assert all("mask_sha256" in e for e in info.manifest["images"])
    metrics = train_edgnet(EDGNetConfig(variant="edgnet", data="dataset:parts@v1", epochs=1, img_size=64,
                                        batch_size=4, base_channels=8, overlay_every=0, register="never"))  # fmt: skip
    assert 0.0 <= metrics["best_val_iou"] <= 1.0
    (run,) = _dataset_runs("parts@v1")
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"parts@v1"}  # type: ignore[attr-defined]


def test_segmentation_families_keep_an_imported_split(tmp_path: Path) -> None:
    """edgnet and microseg read images/<split>/ + masks/<split>/ and train on the export's own split."""
    from projects.edgnet import data as edgdata
    from projects.microseg import data as microdata

    result = import_dataset(exports.cvat(tmp_path / "export", count=6), tmp_path / "out")
    assert result.written.splits == {"train": 4, "val": 2}
    for family in (edgdata, microdata):
        samples = family.load_folder(tmp_path / "out", 32)
        train, val = family.split(samples, 0.5, seed=0)  # the given split wins over val_fraction
        assert (len(train), len(val)) == (4, 2) and all(s.mask.any() for s in samples), family.__name__


def test_a_json_file_alone_is_read_with_the_images_around_it(tmp_path: Path) -> None:
    coco = exports.coco_masks(tmp_path / "coco", count=3) / "annotations" / "instances_default.json"
    assert import_dataset(coco, tmp_path / "a").fmt == "coco"
    studio = exports.labelstudio(tmp_path / "ls", count=3) / "project-1-at-2026-12-06.json"
    result = import_dataset(studio, tmp_path / "b")
    assert result.fmt == "labelstudio" and sum(result.written.splits.values()) == 3
