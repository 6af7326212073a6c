"""Dataset versions in a real sqlite MLflow store: freeze, list, diff, fetch `dataset:NAME@vN`, log as input.

.venv/bin/python -m pytest tests/data/test_versions.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
from click.testing import CliRunner

from data.cli import data
from data.loop import Box
from data.review.store import Prelabel, ReviewStore
from data.versions import (
    VersionNotFound,
    create_version,
    diff,
    get_version,
    list_versions,
    log_dataset_input,
    log_dataset_version,
    resolve_dataset_uri,
)
from data.yolo_layout import load_dataset


def image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8))


def labelled_folder(dst: Path, n: int = 6) -> Path:
    for i in range(n):
        image(dst / "images" / f"cam/{i}.png", i)
    (dst / "classes.txt").write_text("person\npackage\n")
    store = ReviewStore(dst)
    store.add_prelabels(
        [Prelabel(f"images/cam/{i}.png", 50, 40, [Box(i % 2, 5, 5, 25, 25, 0.5)], 0.5, "door", "4") for i in range(n)]
    )
    for i in range(n - 1):  # the last one stays unreviewed: not part of a version
        item = store.get(f"images/cam/{i}.png")
        store.save(item["path"], item["revision"], "accepted", item["boxes"])
    (dst / "labels/cam/0.txt").write_text("")  # a reviewed background image
    return dst


def test_version_list_diff_and_no_op(tmp_path: Path, mlflow_uri: str) -> None:
    dst = labelled_folder(tmp_path / "dst")
    v1 = create_version(dst, "door", val=0.3, message="first")
    assert v1.ref == "door@v1" and v1.created
    manifest = v1.manifest
    assert [e["path"] for e in manifest["images"]] == [f"images/cam/{i}.png" for i in range(5)]
    assert manifest["class_counts"] == {"person": 2, "package": 2}  # 0.txt emptied: 2, 4 person; 1, 3 package
    assert manifest["prelabelled_by"] == {"door/4": 5}
    assert manifest["parent"] is None and sum(manifest["splits"].values()) == 5 and manifest["splits"]["val"] >= 1
    assert all(len(e["image_sha256"]) == 64 and e["verdict"] == "accepted" for e in manifest["images"])

    again = create_version(dst, "door")
    assert not again.created and again.ref == "door@v1"  # same content, same version

    store = ReviewStore(dst)
    item = store.get("images/cam/5.png")
    store.save(item["path"], item["revision"], "fixed", [Box(1, 1, 1, 30, 30).to_json()])  # added
    item = store.get("images/cam/2.png")
    store.save(item["path"], item["revision"], "fixed", [Box(1, 2, 2, 20, 20).to_json()])  # relabelled
    item = store.get("images/cam/3.png")
    store.save(item["path"], item["revision"], "rejected", [])  # removed
    v2 = create_version(dst, "door", val=0.3)
    assert v2.ref == "door@v2" and v2.manifest["parent"] == "door@v1"
    unchanged = {e["path"]: e for e in v2.manifest["images"]}["images/cam/1.png"]
    assert unchanged["image_run"] == v1.run_id  # stored once, in the version that first held it
    assert {e["path"]: e for e in v2.manifest["images"]}["images/cam/5.png"]["image_run"] == v2.run_id

    changes = diff("door@v1", "door@latest")
    assert changes.added == ["images/cam/5.png"]
    assert changes.removed == ["images/cam/3.png"]
    assert changes.relabelled == ["images/cam/2.png"]
    assert changes.class_delta == {"person": -1, "package": 1}
    assert [v.ref for v in list_versions("door")] == ["door@v1", "door@v2"]

    out = CliRunner().invoke(data, ["versions", "door"])
    assert out.exit_code == 0 and "door@v1" in out.output and "door@v2" in out.output
    out = CliRunner().invoke(data, ["diff", "door@v1", "door@v2"])
    assert out.exit_code == 0, out.output
    assert "1 added, 1 removed, 1 relabelled" in out.output and "~ images/cam/2.png" in out.output


def test_dataset_uri_fetches_a_verified_copy_and_logs_the_input(tmp_path: Path, mlflow_uri: str) -> None:
    dst = labelled_folder(tmp_path / "dst")
    info = create_version(dst, "door", val=0.3)
    cache = tmp_path / "cache"
    yaml_path = resolve_dataset_uri("dataset:door@v1", cache=cache)
    assert yaml_path == cache / "door/v1/data.yaml"
    dataset = load_dataset(yaml_path)
    assert dataset.names == ["person", "package"]
    assert len(dataset.images) == 5 and len(dataset.label_files()) == 5
    assert {k: len(v) for k, v in dataset.splits.items()} == info.manifest["splits"]
    one = next(p for p in dataset.images if p.name == "1.png")
    assert one.read_bytes() == (dst / "images/cam/1.png").read_bytes()
    assert resolve_dataset_uri("dataset:door@latest", cache=cache) == yaml_path  # cached: no second fetch

    with mlflow.start_run() as run:
        log_dataset_input("dataset:door@latest")
    logged = mlflow.get_run(run.info.run_id)
    inputs = logged.inputs.dataset_inputs
    assert [d.dataset.name for d in inputs] == ["door@v1"]
    assert inputs[0].dataset.digest == info.digest[:32]
    assert json.loads(inputs[0].dataset.source) == {"uri": "dataset:door@v1", "run_id": info.run_id}
    assert logged.data.tags["kiln.dataset"] == "door@v1"

    with mlflow.start_run() as run:  # what training does with the fetched data.yaml: no second store lookup
        assert log_dataset_version(yaml_path) == "door@v1"
        assert log_dataset_version(dst / "classes.txt") is None  # not a fetched version
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert [(d.dataset.name, d.dataset.digest) for d in inputs] == [("door@v1", info.digest[:32])]


def test_missing_versions_and_bad_names_are_named(tmp_path: Path, mlflow_uri: str) -> None:
    with pytest.raises(VersionNotFound, match="dataset 'ghost' has no versions"):
        get_version("ghost@v1")
    create_version(labelled_folder(tmp_path / "dst"), "door")
    with pytest.raises(VersionNotFound, match=r"door@v7 does not exist .* \(known: v1\)"):
        resolve_dataset_uri("dataset:door@v7", cache=tmp_path / "cache")
    out = CliRunner().invoke(data, ["diff", "door@v1", "door@v9"])
    assert out.exit_code == 1 and "door@v9 does not exist" in out.output and "Traceback" not in out.output
    out = CliRunner().invoke(data, ["version", str(tmp_path / "dst"), "--name", "bad name"])
    assert out.exit_code == 1 and "dataset name 'bad name'" in out.output
    out = CliRunner().invoke(data, ["diff", "door@vX", "door@v1"])
    assert out.exit_code == 1 and "'door@vX' is not a dataset version" in out.output
    empty = tmp_path / "empty"
    image(empty / "images/a.png", 1)
    (empty / "classes.txt").write_text("person\n")
    out = CliRunner().invoke(data, ["version", str(empty), "--name", "door"])
    assert out.exit_code == 1 and "no labelled images to freeze" in out.output


def test_yolo_training_resolves_a_dataset_uri(tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`-P data=dataset:NAME@vN` reaches projects.yolo.data.resolve_dataset, which fetches the version."""
    from projects.yolo.data import check_labels, resolve_dataset

    monkeypatch.setenv("KILN_DATASET_CACHE", str(tmp_path / "cache"))
    create_version(labelled_folder(tmp_path / "dst"), "door", val=0.3)
    dataset = resolve_dataset("dataset:door@latest", None)
    assert dataset.yaml_path == (tmp_path / "cache/door/v1/data.yaml").resolve()
    assert check_labels(dataset).boxes  # the fetched labels pass the trainer's own checks


@pytest.mark.slow
def test_yolo_run_records_the_dataset_version(tmp_path: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One tiny epoch of yolo_custom on `dataset:safety@latest`: the run's inputs name safety@v1 and its digest."""
    import torch

    import projects.yolo.offline  # noqa: F401  (before ultralytics)
    from data.samples import SampleRequest, make_sample
    from projects.yolo.train import YoloConfig, train

    monkeypatch.setenv("KILN_DATASET_CACHE", str(tmp_path / "cache"))
    folder = make_sample("safety", SampleRequest(tmp_path / "safety", count=8, size=64, val=0.25)).parent
    info = create_version(folder, "safety")
    assert info.manifest["splits"] == {"train": 6, "val": 2}  # the folder's own split is kept
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        train(YoloConfig(preset="yolo_custom", data="dataset:safety@latest", epochs=1, imgsz=64, batch=4,
                         device="cpu", model_name="from_version"))  # fmt: skip
    finally:
        torch.use_deterministic_algorithms(deterministic)  # ultralytics turns it on process-wide
    runs = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
            if r.data.tags.get("kiln.dataset")]  # fmt: skip
    assert len(runs) == 1 and runs[0].data.tags["kiln.dataset"] == "safety@v1"
    names = {d.dataset.name: d.dataset.digest for d in runs[0].inputs.dataset_inputs}
    assert names["safety@v1"] == info.digest[:32]
