"""YOLO entry points: bad input stops before training; one tracked run end to end; resume; no network.

.venv/bin/python -m pytest tests/projects/yolo/test_train.py -q
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from click.testing import CliRunner

from projects.yolo import data as yolo_data
from projects.yolo.model import load_model, raw_predictions
from projects.yolo.tracking import MlflowBridge
from projects.yolo.train import YoloConfig, main, prepare, read_hyp, train, trainer_args

REPO = Path(__file__).resolve().parents[3]
TINY = ["--epochs", "2", "--imgsz", "64", "--batch", "4", "--device", "cpu"]


def all_runs() -> list[mlflow.entities.Run]:
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tracking URI whose sqlite file must never appear: bad input has to fail before MLflow is touched."""
    path = tmp_path / "never.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_net_guard_refuses_and_records(net_log: Path) -> None:
    import socket

    with pytest.raises(OSError, match="network disabled in tests"):
        socket.getaddrinfo("example.com", 443)
    with pytest.raises(OSError, match="network disabled in tests"):
        socket.create_connection(("93.184.215.14", 80), timeout=1)
    socket.getaddrinfo("localhost", 0)  # loopback stays allowed (servers under test)
    assert len(net_log.read_text().splitlines()) == 2


@pytest.mark.parametrize("preset", ["safety_detection", "visitor_detection", "yolo_custom"])
def test_presets_accept_their_entry_point_flags(preset: str, store: Path) -> None:
    code, output = invoke("--preset", preset, "--model", "nope.yaml", *TINY)
    assert code == 1 and "model YAML 'nope.yaml' not found" in output  # flags parsed, model checked first
    assert not store.exists()


def test_yaml_pointing_at_a_missing_folder(store: Path, tiny_safety: Path) -> None:
    data = yaml.safe_load(tiny_safety.read_text())
    data["train"] = "images/missing"
    tiny_safety.write_text(yaml.safe_dump(data))
    code, output = invoke("--preset", "safety_detection", "--data", str(tiny_safety), *TINY)
    assert code == 1
    assert output.startswith(f"Error: {tiny_safety}: 'train' points at") and "images/missing" in output
    assert "Traceback" not in output and not store.exists()


def test_class_id_out_of_range(store: Path, tiny_safety: Path) -> None:
    label = sorted((tiny_safety.parent / "labels" / "val").glob("*.txt"))[0]
    label.write_text("3 0.5 0.5 0.2 0.2\n")
    code, output = invoke("--preset", "safety_detection", "--data", str(tiny_safety), *TINY)
    assert code == 1 and f"labels/val/{label.name}:1: class id 3 out of range" in output
    assert "kiln data validate" in output and not store.exists()


def test_missing_weights_and_bad_values(store: Path, tiny_safety: Path) -> None:
    code, output = invoke("--preset", "yolo_custom", "--data", str(tiny_safety), "--model", "mine.pt", *TINY)
    assert code == 1 and "model weights 'mine.pt' not found; kiln never downloads weights" in output
    code, output = invoke("--preset", "yolo_custom", "--data", str(tiny_safety), "--epochs", "0")
    assert code == 1 and "--epochs must be > 0, got 0" in output
    code, output = invoke("--preset", "yolo_custom", *TINY)
    assert code == 1 and "--data is required" in output
    code, output = invoke("--preset", "nope")
    assert code == 1 and "unknown preset 'nope'" in output
    code, output = invoke("--preset", "yolo_custom", "--data", str(tiny_safety), "--resume", "0123abc", *TINY)
    assert code == 1 and "cannot resume run '0123abc'" in output


def sitecustomize_dir(tmp_path: Path) -> Path:
    """A folder whose sitecustomize.py installs the network guard in every Python process started with it."""
    folder = tmp_path / "netguard"
    folder.mkdir()
    source = (Path(__file__).parent / "netguard.py").read_text()
    body = source + '\ninstall(os.environ["KILN_NET_GUARD_LOG"])\nmark_installed(os.environ["KILN_NET_GUARD_LOG"])\n'
    (folder / "sitecustomize.py").write_text(body)
    return folder


def run_entry_point(tmp_path: Path, data_yaml: Path, net_log: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}  # ultralytics checks it
    env.update({
        "PYTHONPATH": os.pathsep.join([str(sitecustomize_dir(tmp_path)), str(REPO)]),
        "KILN_NET_GUARD_LOG": str(net_log),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })  # fmt: skip
    params = {"data": str(data_yaml), "epochs": "2", "imgsz": "64", "batch": "4", "device": "cpu",
              "model_name": "safety_e2e", "register": "always"}  # fmt: skip
    cmd = [sys.executable, "-m", "mlflow", "run", ".", "-e", "safety_detection", "--env-manager", "local"]
    for key, value in params.items():
        cmd += ["-P", f"{key}={value}"]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def artifact_paths(client: mlflow.MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


@pytest.mark.slow
def test_mlflow_run_end_to_end(mlflow_uri: str, tiny_safety: Path, tmp_path: Path) -> None:
    net_log = tmp_path / "network.log"
    proc = run_entry_point(tmp_path, tiny_safety, net_log)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not net_log.exists(), net_log.read_text()  # no process in the chain tried the network
    guarded = Path(f"{net_log}.installed").read_text().split()
    assert len(set(guarded)) >= 2  # the guard was live in both `mlflow run` and the training process

    runs = all_runs()
    assert len(runs) == 1, [r.info.run_name for r in runs]  # ultralytics opened no run of its own
    run, client = runs[0], mlflow.MlflowClient()
    assert run.info.status == "FINISHED" and run.data.tags["kiln.family"] == "yolo"
    for key in ("metrics/mAP50", "metrics/mAP50-95", "metrics/precision", "metrics/recall", "train/box_loss",
                "train/cls_loss", "train/dfl_loss", "val/box_loss", "val/dfl_loss", "lr/pg0"):  # fmt: skip
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
    params = run.data.params
    assert "best/mAP50" in run.data.metrics and params["yolo.imgsz"] == "64" and params["yolo.mosaic"] == "1.0"
    # MLproject's lr0=0 (auto) next to what ultralytics chose for it: AdamW at 0.002 * 5 / (4 + nc)
    assert (params["lr0"], params["yolo.lr0"], params["yolo.optimizer"]) == ("0", "0.001429", "AdamW")
    assert params["preset"] == "safety_detection"

    artifacts = artifact_paths(client, run.info.run_id)
    expected = {"weights/best.pt", "weights/last.pt", "results.csv", "per_class_ap.json", "args.yaml", "config.yaml",
                "plots/confusion_matrix.png", "plots/BoxPR_curve.png", "plots/val_batch0_pred.jpg"}  # fmt: skip
    assert expected <= artifacts, expected - artifacts
    with open(client.download_artifacts(run.info.run_id, "results.csv", str(tmp_path))) as f:
        assert len(list(csv.DictReader(f))) == 2

    dataset = yolo_data.resolve_dataset(str(tiny_safety), "safety")
    (logged,) = run.inputs.dataset_inputs
    assert logged.dataset.digest == yolo_data.dataset_digest(dataset)[: len(logged.dataset.digest)]

    version = client.get_model_version("safety_e2e", "1")
    assert version.run_id == run.info.run_id
    onnx_dir = Path(mlflow.artifacts.download_artifacts("models:/safety_e2e/1", dst_path=str(tmp_path / "m")))
    onnx_path = next(onnx_dir.rglob("*.onnx"))
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert meta["kiln.task"] == "detection" and meta["kiln.family"] == "yolo"
    post, pre = json.loads(meta["kiln.postprocess"]), json.loads(meta["kiln.preprocess"])
    assert post["names"] == ["smoke", "fire", "person_down"] and post["layout"] == "[B,4+nc,N]"
    assert post["box_format"] == "xywh" and post["nms"] is False
    assert pre["size"] == [64, 64] and pre["resize"] == "letterbox" and pre["layout"] == "NCHW"

    # ONNX equals PyTorch on real validation images, batch of 2 through the dynamic batch axis.
    best = Path(client.download_artifacts(run.info.run_id, "weights/best.pt", str(tmp_path)))
    images = yolo_data.read_images(dataset.splits["val"][:2])
    batch = yolo_data.to_input(images, 64)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": batch})[0]
    import torch

    expected_out = raw_predictions(load_model(best), torch.from_numpy(batch)).numpy()
    assert got.shape == expected_out.shape == (2, 4 + 3, 84)
    np.testing.assert_allclose(got, expected_out, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_resume_continues_the_same_run_offline(
    mlflow_uri: str, tiny_safety: Path, net_log: Path, monkeypatch: pytest.MonkeyPatch, restore_torch_determinism: None
) -> None:
    original = MlflowBridge.on_fit_epoch_end

    def crash_after_first_epoch(self: MlflowBridge, trainer: object) -> None:
        original(self, trainer)
        if self.epochs_logged == 1:
            raise RuntimeError("simulated crash after epoch 1")

    cfg = YoloConfig(preset="safety_detection", data=str(tiny_safety), epochs=3, imgsz=64, batch=4, device="cpu",
                     model_name="safety_resume", register="always")  # fmt: skip
    monkeypatch.setattr(MlflowBridge, "on_fit_epoch_end", crash_after_first_epoch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    (crashed,) = all_runs()
    assert crashed.info.status == "FAILED"

    monkeypatch.setattr(MlflowBridge, "on_fit_epoch_end", original)
    cfg.resume = crashed.info.run_id
    final = train(cfg)
    (run,) = all_runs()
    assert run.info.run_id == crashed.info.run_id and run.info.status == "FINISHED"
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "metrics/mAP50")]
    assert steps == [1, 2, 3]
    assert final["epochs_run"] == 2 and final["registered_version"] == 1
    assert not net_log.exists(), net_log.read_text()

    # the run finished: resuming it trains no epoch, it exports the run's best.pt and registers it from that run
    code, output = invoke("--preset", "safety_detection", "--data", str(tiny_safety), "--resume", run.info.run_id,
                          "--model-name", "safety_resume", "--register", "always", *TINY)  # fmt: skip
    assert code == 0 and "no epoch trained" in output, output
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "metrics/mAP50")] == [1, 2, 3]
    assert client.get_model_version("safety_resume", "2").run_id == run.info.run_id
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["kiln.registered_version"] == "2" and tags["kiln.epochs_run"] == "2"


def test_hyp_file_is_checked_against_ultralytics(store: Path, tiny_safety: Path, tmp_path: Path) -> None:
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text("mosaic: 0.5\ndegrees: 10\n")
    assert read_hyp(str(hyp)) == {"mosaic": 0.5, "degrees": 10}
    cases = {
        "mosaicc: 0.5\n": r"unknown ultralytics args \['mosaicc'\]",
        "epochs: 3\n": r"\['epochs'\] are set by kiln; use --epochs instead",
        "degrees: lots\n": r"hyp.yaml: .*degrees",
    }
    for text, message in cases.items():
        hyp.write_text(text)
        code, output = invoke("--preset", "safety_detection", "--data", str(tiny_safety), "--hyp", str(hyp), *TINY)
        assert code == 1 and output.startswith("Error: ") and re.search(message, output), output
    assert not store.exists()


def test_hyp_values_reach_ultralytics_but_kiln_flags_win(tiny_safety: Path, tmp_path: Path) -> None:
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text("mosaic: 0.25\nclose_mosaic: 2\n")
    prep = prepare(YoloConfig(preset="safety_detection", data=str(tiny_safety), hyp=str(hyp)))
    args = trainer_args(YoloConfig(epochs=7, lr0=0.02), prep)
    assert (args["mosaic"], args["close_mosaic"], args["epochs"]) == (0.25, 2, 7)
    assert (args["lr0"], args["optimizer"]) == (0.02, "SGD")  # an explicit lr0 is honoured, not ignored by 'auto'
    shutil.rmtree(prep.work)
