"""cr_recon on a frozen dataset version: `kiln data version` freezes a folder of .npy arrays (kind `arrays`),
`kiln data versions` shows its samples and shapes, and `--data dataset:NAME@vN` trains on it, logged as the input.

.venv/bin/python -m pytest tests/projects/cr_recon/test_dataset_version.py -q
"""

from __future__ import annotations

from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
from click.testing import CliRunner

from core.errors import DatasetError
from data.cli import data
from data.spectra import generate
from data.versions import create_version, diff, resolve_dataset_uri
from projects.cr_recon.train import load_config, main, train

SHAPES = "spectra (3, 301) float32; struct (1, 128, 128) uint8"


def frozen(tmp_path: Path) -> Path:
    folder = tmp_path / "spectra"
    generate(folder, num_samples=24, num_files=2, seed=2)
    out = CliRunner().invoke(data, ["version", str(folder), "--name", "rays", "-m", "first sweep"])
    assert out.exit_code == 0, out.output
    assert "created rays@v1" in out.output and "train with: -P data=dataset:rays@v1" in out.output
    rows = sum(len(np.load(p, mmap_mode="r")) for p in folder.glob("struct_*.npy"))
    assert f"{rows} samples in 4 .npy files; {SHAPES}" in out.output
    return folder


def test_freeze_list_diff_and_refuse_the_wrong_kind(tmp_path: Path, mlflow_uri: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KILN_DATASET_CACHE", str(tmp_path / "cache"))
    folder = frozen(tmp_path)
    again = CliRunner().invoke(data, ["version", str(folder), "--name", "rays"])
    assert again.exit_code == 0 and "no change since rays@v1" in again.output
    listed = CliRunner().invoke(data, ["versions", "rays"])
    assert listed.exit_code == 0 and f"arrays: {SHAPES}" in listed.output and "first sweep" in listed.output

    for name in ("struct_1.npy", "spectra_1.npy"):
        (folder / name).unlink()
    v2 = create_version(folder, "rays")
    assert (v2.ref, v2.kind, len(v2.manifest["files"])) == ("rays@v2", "arrays", 2)
    assert all(e["array_run"] != v2.run_id for e in v2.manifest["files"])  # unchanged bytes stay in v1's run
    change = diff("rays@v1", "rays@v2")
    assert change.removed == ["spectra_1.npy", "struct_1.npy"] and change.added == change.changed == []

    fetched = resolve_dataset_uri("dataset:rays@v1", kind="arrays").parent
    assert sorted(p.name for p in fetched.glob("*.npy")) == ["spectra_0.npy", "spectra_1.npy", "struct_0.npy",
                                                             "struct_1.npy"]  # fmt: skip
    with pytest.raises(DatasetError, match=r"dataset:rays@v1: rays@v1 holds arrays .* but this needs images"):
        resolve_dataset_uri("dataset:rays@v1")  # what the image families and YOLO ask for

    pictures = tmp_path / "pictures"
    (pictures / "images").mkdir(parents=True)
    (pictures / "labels").mkdir()
    cv2.imwrite(str(pictures / "images" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (pictures / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (pictures / "classes.txt").write_text("dot\n")
    with pytest.raises(DatasetError, match=r"dataset 'rays' holds arrays .* freeze it under another --name"):
        create_version(pictures, "rays")
    create_version(pictures, "dots")
    bad = {"dataset:dots@v1": "dots@v1 holds images", "dataset:rays@v9": "rays@v9 does not exist",
           "dataset:no such": "is not a dataset version"}  # fmt: skip
    for uri, message in bad.items():
        result = CliRunner().invoke(main, ["--data", uri, "--cache-dir", str(tmp_path / "prep")])
        assert result.exit_code == 1 and message in result.output, result.output
    assert mlflow.search_runs(["0"], output_format="list") == []  # each refused before any run


@pytest.mark.slow
def test_cr_recon_trains_on_a_version_and_logs_it_as_input(tmp_path: Path, mlflow_uri: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KILN_DATASET_CACHE", str(tmp_path / "cache"))
    frozen(tmp_path)
    tiny = "{cnn_xattn: {d_model: 16, nhead: 2, dec_layers: 1, widths: [8, 8, 8, 8, 8]}}"
    flags = {"data": "dataset:rays@v1", "cache_dir": str(tmp_path / "prep"), "epochs": "1", "batch_size": "8",
             "model_params": tiny, "patience": "0", "plot_every": "0", "num_threads": "1",
             "register": "never"}  # fmt: skip
    train(load_config(None, flags))
    (run,) = mlflow.search_runs(["0"], output_format="list")
    (logged,) = run.inputs.dataset_inputs
    version = mlflow.MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("kiln-datasets").experiment_id], "tags.`kiln.dataset.version` = '1'"
    )[0]
    assert logged.dataset.name == "rays@v1" and logged.dataset.digest == version.data.tags["kiln.dataset.digest"][:32]
    tags = {t.key: t.value for t in logged.tags}
    assert tags["kiln.dataset.run_id"] == version.info.run_id and int(tags["samples"]) > 0
    assert run.data.tags["kiln.dataset"] == "rays@v1"
