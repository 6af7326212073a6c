"""jobs/estimate: the time a job will take, from earlier runs of its entry point, and the quick preset.

.venv/bin/python -m pytest tests/jobs/test_estimate.py -q
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from fastapi.testclient import TestClient

from jobs.estimate import estimate, quick_params
from jobs.mlproject import load_entry_points

SEG = """\
name: seg
entry_points:
  seg:
    parameters:
      data: {type: string, default: ""}
      epochs: {type: float, default: 100}
      img_size: {type: float, default: 512}
      num_samples: {type: float, default: 200}
      lr: {type: float, default: 0.001}
    command: "python -m seg --data {data}"
"""


def past_run(samples_per_second: float, img_size: int, entry_point: str = "seg") -> None:
    with mlflow.start_run(tags={"mlflow.project.entryPoint": entry_point}):
        mlflow.log_param("img_size", img_size)
        mlflow.log_metric("samples_per_second", samples_per_second)


@pytest.fixture
def entry(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "MLproject").write_text(SEG)
    return load_entry_points(tmp_path / "MLproject")["seg"]


def test_no_earlier_run_says_so_and_offers_the_quick_preset(entry, mlflow_uri: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    answer = estimate(entry, {}, mlflow_uri, tmp_path)
    assert answer["seconds"] is None and "no finished seg run in this store" in answer["basis"]
    assert answer["quick"] == quick_params(entry) == {"epochs": 3, "img_size": 96, "num_samples": 60}


def test_seconds_scale_with_epochs_images_and_pixels(entry, mlflow_uri: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    past_run(10.0, 100)  # 100,000 image-pixels per second
    past_run(40.0, 50)  # also 100,000
    past_run(5.0, 100, entry_point="other")  # another entry point: not counted
    answer = estimate(entry, {"epochs": 2, "img_size": 200, "num_samples": 100}, mlflow_uri, tmp_path)
    # 2 epochs x 80 training images (100 less the 20% val share) x 200^2 px / 100,000 px/s = 64 s
    assert answer["seconds"] == pytest.approx(64.0) and answer["images"] == 80
    assert "latest 2 finished seg run(s)" in answer["basis"]
    default = estimate(entry, {}, mlflow_uri, tmp_path)  # the MLproject defaults: 100 epochs, 512 px, 200 images
    assert default["seconds"] == pytest.approx(100 * 160 * 512**2 / 100_000)


def test_a_data_folder_counts_its_images(entry, mlflow_uri: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    past_run(10.0, 100)
    images = tmp_path / "set" / "images"
    images.mkdir(parents=True)
    for i in range(10):
        (images / f"{i}.png").write_bytes(b"x")
    answer = estimate(entry, {"data": "set", "epochs": 1, "img_size": 100}, mlflow_uri, tmp_path)
    assert answer["images"] == 8 and answer["seconds"] == pytest.approx(0.8)


def test_the_api_answers_and_names_a_bad_entry_point(client: TestClient) -> None:
    res = client.post("/api/training/estimate", json={"entry_point": "tiny", "params": {}})
    assert res.status_code == 200 and res.json()["seconds"] is None
    assert "no image size" in res.json()["basis"]
    res = client.post("/api/training/estimate", json={"entry_point": "nope", "params": {}})
    assert res.status_code == 422 and res.json()["field"] == "entry_point"


def test_bad_numbers_are_422s_and_outside_folders_are_not_walked(client: TestClient, tmp_path: Path) -> None:
    res = client.post("/api/training/estimate", json={"entry_point": "tiny", "params": {"epochs": "many"}})
    assert res.status_code == 422 and res.json()["field"] == "params.epochs"
    res = client.post("/api/training/estimate", json={"entry_point": "tiny", "params": {"epochs": 1e300}})
    assert res.status_code == 422 and "at most" in res.json()["detail"]
    res = client.post("/api/training/estimate", json={"entry_point": "tiny", "params": {"data": "/"}})
    assert res.status_code == 200 and res.json()["images"] is None
