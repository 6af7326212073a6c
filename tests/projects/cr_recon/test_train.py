"""CR_recon entry point: config resolution (defaults -> YAML -> flags), bad input, and `mlflow run` end to end."""

import json
import re

import mlflow
import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from click.testing import CliRunner

from core.errors import UserError
from data.spectra import generate
from projects.common.checkpoint import load_checkpoint
from projects.common.config import ConfigError
from projects.cr_recon import data as crdata
from projects.cr_recon.model import create_model
from projects.cr_recon.train import DEFAULT_CONFIG, CRConfig, load_config, main

TINY_MODEL = {"d_model": 16, "nhead": 2, "dec_layers": 1, "widths": [8, 8, 8, 8, 8]}


def test_default_yaml_matches_the_dataclass_defaults():
    assert load_config(None, {}) == CRConfig()
    assert yaml.safe_load(DEFAULT_CONFIG.read_text())["model"]["model"] == "cnn_xattn"


def test_flags_override_yaml_only_when_given(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  epochs: 7\n  lr: 0.01\nmodel:\n  model: cnn_gru\n")
    cfg = load_config(str(path), {"epochs": "3", "lr": "", "model": None, "loss": "weighted_smooth"})
    assert (cfg.epochs, cfg.lr, cfg.model, cfg.loss) == (3, 0.01, "cnn_gru", "weighted_smooth")
    assert cfg.batch_size == CRConfig().batch_size


@pytest.mark.parametrize(
    ("flags", "error", "message"),
    [({"model": "unet"}, UserError, "unknown model 'unet'; known: ['cnn_gru', 'cnn_xattn']"),
     ({"loss": "l1"}, UserError, "unknown loss 'l1'"),
     ({"epochs": "0"}, UserError, "epochs must be > 0, got 0"),
     ({"batch_size": "big"}, ConfigError, "CRConfig.batch_size: expected int, got 'big'"),
     ({"model_params": "{resnet: {}}"}, UserError, "model_params has entries for unknown name(s) ['resnet']")],
)  # fmt: skip
def test_bad_config_is_named(flags, error, message):
    with pytest.raises(error) as info:
        load_config(None, flags)
    assert message in str(info.value)


def test_bad_input_is_one_line_before_any_run(mlflow_uri, tmp_path):
    generate(tmp_path / "d", num_samples=4, num_files=1)
    result = CliRunner().invoke(main, ["--data", str(tmp_path / "d"), "--model-params", "{cnn_xattn: {depth: 3}}"])
    assert result.exit_code == 1 and "model 'cnn_xattn' has no parameter(s) ['depth']" in result.output
    result = CliRunner().invoke(main, ["--data", str(tmp_path / "nope")])
    assert result.exit_code == 1 and f"Error: data folder not found: {tmp_path / 'nope'}" in result.output
    assert result.exc_info[0] is SystemExit
    assert mlflow.search_runs(["0"], output_format="list") == []


@pytest.mark.slow
def test_mlflow_run_trains_exports_and_registers(mlflow_run, tmp_path):
    data = tmp_path / "spectra"
    generate(data, num_samples=40, num_files=2, seed=1)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"data": str(data), "train_ratio": 0.8, "cache_dir": str(tmp_path / "cache")},
        "model": {"model_params": {"cnn_xattn": TINY_MODEL}},
        "training": {"plot_every": 2, "patience": 0, "num_threads": 1},
    }))  # fmt: skip
    output = mlflow_run(
        "cr_recon", {"config": config, "epochs": 2, "batch_size": 16, "model_name": "cr_test", "register": "always"}
    )
    assert "best val Pearson" in output and "predict-the-mean baseline" in output
    (run,) = mlflow.search_runs(["0"], output_format="list")
    client = mlflow.MlflowClient()
    assert run.data.params["epochs"] == "2" and run.data.params["batch_size"] == "16"
    # `mlflow run` logs the raw MLproject values ("" = from the YAML); the resolved ones sit beside them
    assert run.data.params["model"] == "''" and run.data.params["resolved.model"] == "cnn_xattn"
    assert run.data.params["resolved.loss"] == "mse_pearson" and run.data.params["weight_decay"] == "0.005"
    for metric in ("train_loss", "val_loss", "val_mse", "val_pearson", "lr"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, metric)] == [1, 2], metric
    assert -1 <= run.data.metrics["best_val_pearson"] <= 1 and run.data.tags["kiln.registered_version"] == "1"
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/spectra_epoch_002.png", "plots/spectra_best.png"}
    dataset_input = run.inputs.dataset_inputs[0]
    tags = {t.key: t.value for t in dataset_input.tags}
    assert dataset_input.dataset.name == "spectra" and (tags["samples"], tags["dropped_zero_padded"]) == ("40", "2")

    version = client.get_model_version("cr_test", "1")
    assert version.run_id == run.info.run_id
    session = ort.InferenceSession(f"{mlflow.artifacts.download_artifacts('models:/cr_test/1')}/model.onnx")
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["kiln.task"] == "regression" and meta["kiln.family"] == "cr_recon"
    assert json.loads(meta["kiln.postprocess"])["output_shape"] == [2, 2, 30]
    assert json.loads(meta["kiln.postprocess"])["layout"] == "BGGR"

    model = create_model("cnn_xattn", **TINY_MODEL).eval()
    model.load_state_dict(load_checkpoint(run.info.run_id, "best")["model"])
    prepared = crdata.preprocess(data, tmp_path / "cache")
    batch = torch.stack([crdata.CRDataset(prepared, np.arange(3))[i][0] for i in range(3)])
    with torch.no_grad():
        expected = model(batch).numpy()
    got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    assert got.shape == (3, 2, 2, 30)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_resume_continues_the_run_with_cnn_gru_and_weighted_smooth(mlflow_uri, tmp_path):
    from projects.cr_recon.train import train

    data = tmp_path / "spectra"
    generate(data, num_samples=24, num_files=1, seed=2)
    flags = {"data": str(data), "cache_dir": str(tmp_path / "cache"), "model": "cnn_gru", "loss": "weighted_smooth",
             "model_params": "{cnn_gru: {hidden: 16, widths: [8, 8, 8, 8, 8]}}", "batch_size": "8",
             "patience": "0", "plot_every": "0", "num_threads": "1", "model_name": "cr_gru",
             "register": "always"}  # fmt: skip
    first = train(load_config(None, {**flags, "epochs": "1"}))
    (run,) = mlflow.search_runs(["0"], output_format="list")
    second = train(load_config(None, {**flags, "epochs": "2", "resume": run.info.run_id}))
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_pearson")] == [1, 2]
    assert (first["registered_version"], second["registered_version"]) == (1, 2)
    assert client.get_model_version("cr_gru", "2").run_id == run.info.run_id
    assert run.data.params["loss"] == "weighted_smooth" and run.data.params["model"] == "cnn_gru"


@pytest.mark.slow
def test_early_stopped_run_is_promoted_by_its_best_epoch(mlflow_uri, tmp_path):
    """patience=1 ends training an epoch after the best one; `kiln promote` must judge the exported (best) epoch's
    Pearson, logged once as best_val_pearson, not the last epoch's val_pearson."""
    from kiln.cli import main as kiln
    from projects.common.families import train_family
    from projects.cr_recon.train import FAMILY

    overrides = {**FAMILY.smoke(tmp_path), "epochs": 8, "patience": 1, "lr": 0.05, "model_name": "cr_es"}
    final = train_family("cr_recon", overrides)
    (run,) = mlflow.search_runs(["0"], output_format="list")
    pearson = {m.step: m.value for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "val_pearson")}
    best_epoch, last_epoch = int(final["best_epoch"]), max(pearson)
    assert best_epoch < last_epoch < 8, (best_epoch, pearson)  # early stopping ended the run
    assert final["best_val_pearson"] == pytest.approx(pearson[best_epoch], rel=1e-5)
    assert pearson[best_epoch] != pytest.approx(pearson[last_epoch], rel=1e-3)

    # --min halfway between the best and the last epoch's value: only the best epoch's number decides it right
    halfway = (pearson[best_epoch] + pearson[last_epoch]) / 2
    result = CliRunner().invoke(kiln, ["promote", "cr_es", "--version", "1", "--min", str(halfway), "--json"])
    if pearson[best_epoch] > halfway:
        assert result.exit_code == 0, result.output
        moved = json.loads(result.output)
        assert (
            moved["metric"]["metric"] == "best_val_pearson" and moved["metric"]["source"] == "version tag kiln.metric"
        )
        assert moved["value"] == pytest.approx(pearson[best_epoch], rel=1e-5)
    else:
        assert result.exit_code != 0 and "best_val_pearson" in result.output, result.output
        assert re.search(r"best_val_pearson \S+ is below --min", result.output), result.output


def test_config_names_match_the_registries():
    """projects/cr_recon/config.py names the models and losses without importing torch; they must stay in step."""
    from projects.cr_recon import config
    from projects.cr_recon.losses import LOSSES
    from projects.cr_recon.model import MODELS

    assert sorted(config.MODEL_NAMES) == sorted(MODELS) and sorted(config.LOSS_NAMES) == sorted(LOSSES)
