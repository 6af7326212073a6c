"""projects/common/augment: the declared albumentations pipeline, its parsing, seeding, logging and YOLO mapping.

.venv/bin/python -m pytest tests/projects/test_augment.py -q
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from core.errors import ConfigError
from projects.common import augment
from projects.common.config import resolve_config
from projects.edgnet.config import EDGNetConfig


def square(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((size, size), dtype=np.uint8)
    image[4:14, 6:20] = 200
    return image, (image > 0).astype(np.uint8)


def test_spec_forms_parse_and_bad_keys_are_named() -> None:
    assert augment.parse_augment("default") is None
    assert augment.parse_augment("none") == {}
    assert augment.parse_augment("hflip=0.5,rotate=15") == {"hflip": 0.5, "rotate": 15.0}
    assert augment.parse_augment("{hflip: 0.5, cutout: 0.2}") == {"hflip": 0.5, "cutout": 0.2}
    with pytest.raises(ConfigError, match="unknown key 'flip'; known: hflip, vflip"):
        augment.parse_augment("flip=0.5")
    with pytest.raises(ConfigError, match="augment.hflip: 2.0 is out of range"):
        augment.parse_augment("hflip=2")


def test_yaml_mapping_reaches_the_config_as_one_value(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  epochs: 2\naugment: {hflip: 0.5, rotate: 10}\n")
    cfg = resolve_config(EDGNetConfig, path)
    assert cfg.epochs == 2 and augment.parse_augment(cfg.augment) == {"hflip": 0.5, "rotate": 10.0}


def test_image_and_mask_move_together_and_the_seed_repeats() -> None:
    image, mask = square()
    flip = augment.mask_fn({"hflip": 1.0}, (32, 32))
    out_image, out_mask = flip(image, mask, np.random.default_rng(0))
    assert (out_image == image[:, ::-1]).all() and (out_mask == mask[:, ::-1]).all()
    full = augment.mask_fn({"rotate": 30, "scale": 0.2, "brightness": 0.3, "noise": 1.0, "cutout": 1.0}, (32, 32))
    a = full(image, mask, np.random.default_rng(7))
    b = full(image, mask, np.random.default_rng(7))
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert set(np.unique(a[1])) <= {0, 1}  # masks are moved, never interpolated or jittered


def test_boxes_follow_a_flip() -> None:
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    fn = augment.boxes_fn({"hflip": 1.0}, (32, 32))
    _, boxes, classes = fn(image, np.array([[0.25, 0.5, 0.2, 0.2]]), [1], np.random.default_rng(0))
    assert np.allclose(boxes, [[0.75, 0.5, 0.2, 0.2]]) and classes == [1]


def test_ultralytics_gets_the_keys_it_has() -> None:
    assert augment.ultralytics_args({"hflip": 0.3, "rotate": 5, "blur": 0.5}) == {"fliplr": 0.3, "degrees": 5}
    assert augment.ultralytics_args({})["mosaic"] == 0.0 and augment.ultralytics_args(None) == {}


def test_params_and_sample_grid_are_logged(tmp_path: Path, mlflow_uri: str) -> None:
    image, mask = square()
    with mlflow.start_run() as run:
        augment.log_to_run({"hflip": 0.5}, [(image, mask)], augment.mask_fn({"hflip": 0.5}, (32, 32)), seed=0)
    client = mlflow.MlflowClient()
    assert client.get_run(run.info.run_id).data.params == {"augment/hflip": "0.5"}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "augment")] == ["augment/samples.png"]


@pytest.mark.slow  # a fresh interpreter importing albumentations: about 10 s on a busy 2-core machine
def test_importing_albumentations_fetches_nothing() -> None:
    """The update check is off before albumentations is imported (it would ask PyPI otherwise)."""
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise SystemExit('network used')\n"
        "socket.create_connection = refuse\nsocket.socket.connect = refuse\n"
        "from projects.common import augment\naugment._albumentations()\nprint('ok')\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
