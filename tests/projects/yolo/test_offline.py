"""ultralytics under kiln's offline settings: no MLflow callback of its own, fonts local, AMP check offline.

.venv/bin/python -m pytest tests/projects/yolo/test_offline.py -q
"""

from __future__ import annotations

import types
from pathlib import Path

import torch

from projects.yolo import offline

ultralytics = offline.load_ultralytics()

import ultralytics.engine.trainer as trainer_module  # noqa: E402
import ultralytics.utils as ultralytics_utils  # noqa: E402
from ultralytics.utils.callbacks import mlflow as ultralytics_mlflow  # noqa: E402
from ultralytics.utils.checks import check_font  # noqa: E402


def test_environment_points_ultralytics_at_kiln_and_offline() -> None:
    import os

    assert os.environ["YOLO_CONFIG_DIR"] == str(offline.CONFIG_DIR)
    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "false"
    assert ultralytics_utils.ONLINE is False
    assert "ULTRALYTICS_API_KEY" not in os.environ


def test_integrations_analytics_and_platform_are_off() -> None:
    settings = ultralytics_utils.SETTINGS
    for key in ("mlflow", "sync", "clearml", "comet", "dvc", "raytune", "tensorboard", "wandb"):
        assert settings[key] is False, key
    assert settings["api_key"] == ""
    if Path(ultralytics_utils.USER_CONFIG_DIR) == offline.USER_DIR:  # kiln's own settings file says so too
        import json

        saved = json.loads((offline.USER_DIR / "settings.json").read_text())
        assert saved["mlflow"] is False and saved["sync"] is False


def test_a_trainer_gets_no_mlflow_callback(tiny_safety: Path, tmp_path: Path) -> None:
    from ultralytics.models.yolo.detect import DetectionTrainer

    trainer = DetectionTrainer(
        overrides={"model": "yolov8n.yaml", "data": str(tiny_safety), "imgsz": 64, "save_dir": str(tmp_path / "t")}
    )
    registered = {fn for fns in trainer.callbacks.values() for fn in fns}
    assert not registered & set(ultralytics_mlflow.callbacks.values())


def test_fonts_resolve_locally_without_a_download() -> None:
    for name in offline.FONTS:
        found = check_font(name)
        assert found is not None and Path(found).is_file(), name
        assert Path(found).parent == Path(ultralytics_utils.USER_CONFIG_DIR)


class FakeCudaModel:
    """Just enough of a model for the AMP check: its parameters live on cuda:0."""

    def parameters(self):  # type: ignore[no-untyped-def]
        yield types.SimpleNamespace(device=torch.device("cuda", 0))


def test_amp_check_never_loads_reference_weights(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert trainer_module.check_amp is offline.offline_check_amp
    assert offline.offline_check_amp(torch.nn.Conv2d(3, 4, 1)) is False  # CPU: no AMP, nothing loaded
    monkeypatch.setattr(ultralytics_utils, "WEIGHTS_DIR", tmp_path)  # no yolo26n.pt on disk
    loads: list[object] = []
    monkeypatch.setattr(ultralytics_utils.checks, "check_amp", lambda m: loads.append(m) or True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert offline.offline_check_amp(FakeCudaModel()) is True
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce GTX 1650")
    assert offline.offline_check_amp(FakeCudaModel()) is False  # ultralytics' list of GPUs with AMP NaNs
    assert loads == []
    (tmp_path / "yolo26n.pt").write_bytes(b"")  # weights on disk: ultralytics' own check may run
    assert offline.offline_check_amp(FakeCudaModel()) is True and len(loads) == 1


def test_kiln_home_can_be_moved(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KILN_HOME", str(tmp_path / "home"))
    assert offline.kiln_home() == tmp_path / "home"
    settings = offline.kiln_settings(tmp_path / "home")
    assert settings["weights_dir"] == str(tmp_path / "home" / "weights") and settings["mlflow"] is False


def test_cpu_training_uses_every_core(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """ultralytics would set cpu_count - 1 threads (one of 2 cores idle); kiln sets every core, or KILN_YOLO_THREADS."""
    import os

    import pytest
    from ultralytics.utils.torch_utils import select_device

    from core.errors import SettingsError

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("KILN_YOLO_THREADS", raising=False)
        offline.load_ultralytics()
        select_device("cpu", verbose=False)
        assert torch.get_num_threads() == os.cpu_count()
        monkeypatch.setenv("KILN_YOLO_THREADS", "1")
        offline.load_ultralytics()
        select_device("cpu", verbose=False)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("KILN_YOLO_THREADS", "all")
        with pytest.raises(SettingsError, match="KILN_YOLO_THREADS='all'"):
            offline.load_ultralytics()
    finally:
        monkeypatch.delenv("KILN_YOLO_THREADS", raising=False)
        offline.load_ultralytics()
        torch.set_num_threads(before)
