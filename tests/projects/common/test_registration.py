"""Registration against the family's trivial baseline, bookkeeping as tags, the model card and its history."""

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from core.contract import Ranking
from projects.common.registration import decide


@pytest.mark.parametrize(
    ("mode", "value", "baseline", "ranking", "register"),
    [
        ("auto", 0.0, 0.0, Ranking("best_val_iou", "max"), False),  # a tie has learnt nothing
        ("auto", 0.01, 0.0, Ranking("best_val_iou", "max"), True),
        ("auto", 0.6, 0.5, Ranking("best_val_rmse", "min"), False),  # min mode: higher is worse
        ("auto", 0.4, 0.5, Ranking("best_val_rmse", "min"), True),
        ("auto", None, 0.0, Ranking("best/mAP50-95", "max"), False),  # not measured: not registered
        ("auto", 0.3, None, Ranking("best_val_iou", "max"), True),  # no baseline known: registered
        ("always", 0.0, 0.0, Ranking("best_val_iou", "max"), True),
        ("never", 0.9, 0.0, Ranking("best_val_iou", "max"), False),
    ],
)
def test_decide_honours_the_ranking_mode_and_the_register_option(mode, value, baseline, ranking, register):
    decision = decide(mode, ranking, value, baseline, "all-background mask")
    assert decision.register is register
    assert (decision.reason == "") is register
    if mode == "auto" and not register and value is not None:
        assert "no better than the trivial baseline" in decision.reason and "all-background mask" in decision.reason


def test_an_unknown_register_value_names_the_field():
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="register='maybe' is not one of"):
        decide("maybe", Ranking("x", "max"), 1.0, 0.0)


@pytest.fixture
def constant_csv(tmp_path):
    """A feature that never varies: every score is the same, so the AUC is exactly the constant-score 0.5."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"flat": np.ones(60), "label": rng.integers(0, 2, 60)})
    path = tmp_path / "flat.csv"
    frame.to_csv(path, index=False)
    return path


def _train(csv, capsys, **extra):
    from projects.common.config import resolve_config
    from projects.skinmodel.train import SkinConfig, train

    flags = {"data": str(csv), "target": "label", "n_estimators": 5, "max_depth": 2, "early_stopping_rounds": 0,
             "model_name": "flat", **extra}  # fmt: skip
    final = train(resolve_config(SkinConfig, None, flags))
    return final, capsys.readouterr().out


def test_a_model_at_its_baseline_is_not_registered_unless_forced(mlflow_uri, constant_csv, capsys):
    client = MlflowClient()
    final, out = _train(constant_csv, capsys)
    assert final["best_val_auc"] == 0.5 and "registered_version" not in final
    (run,) = client.search_runs(["0"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["kiln.registered"] == "false"
    reason = run.data.tags["kiln.not_registered_reason"]  # the Mann-Whitney test on the 12 val rows, in words
    assert reason.startswith("AUC 0.5 on 12 validation rows is not significantly above 0.5, the trivial baseline")
    assert "(a constant score; Mann-Whitney U, p=1 > 0.05)" in reason and run.data.tags["kiln.baseline_p"] == "1"
    assert client.search_registered_models() == []
    logged = mlflow.search_logged_models(experiment_ids=["0"], output_format="list")
    assert [m.source_run_id for m in logged] == [run.info.run_id]  # the ONNX model is logged, only not registered
    lines = out.strip().splitlines()
    assert any(line.startswith("Not registered: AUC 0.5 on 12 validation rows is not") for line in lines)
    assert lines[0].startswith("kiln · skinmodel (binary) · data flat.csv (60 rows, 1 features) · device cpu")
    assert lines[1].startswith("run flat · http://127.0.0.1:5000/#/experiments/0/runs/")
    assert lines[-1].startswith("Done: http://") and "next: train longer" in lines[-1]

    final, out = _train(constant_csv, capsys, register="always")
    assert final["registered_version"] == 1.0
    assert out.strip().splitlines()[-1].endswith("next: kiln promote flat --version 1")
    run = client.get_run(client.get_model_version("flat", "1").run_id)
    assert run.data.tags["kiln.registered"] == "true" and run.data.tags["kiln.registered_version"] == "1"


def test_bookkeeping_values_are_tags_and_the_card_describes_the_version(mlflow_uri, constant_csv, capsys):
    from registry.promotion import promote

    _train(constant_csv, capsys, register="always", n_estimators=4)
    client = MlflowClient()
    version = client.get_model_version("flat", "1")
    run = client.get_run(version.run_id)
    for key in ("registered_version", "onnx_max_abs_diff", "n_trees", "best_iteration", "best_epoch"):
        assert key not in run.data.metrics, key
    assert run.data.tags["kiln.n_trees"] == "4" and float(run.data.tags["kiln.onnx_max_abs_diff"]) < 1e-4
    assert "best_val_auc" in run.data.metrics  # measured values stay metrics
    card = version.description
    assert card.startswith("**flat v1**: tabular (family skinmodel)")
    assert "`best_val_auc` = 0.5 (higher is better); trivial baseline 0.5 (a constant score)" in card
    assert "**Data:** flat (digest " in card and "60 rows" in card
    assert "**Contract:** records of flat (float32, missing = NaN) -> binary: classes [0, 1]" in card
    assert "curl -H 'content-type: application/json' -d '[{\"flat\": 0}]' 127.0.0.1:8080/v1/models/flat/predict" in card
    assert f"/#/experiments/0/runs/{run.info.run_id}?workflowType=machine_learning)" in card
    model = client.get_registered_model("flat")
    assert model.description.startswith("### flat") and card in model.description

    promote("flat", version=1, reason="first model", client=client)
    described = client.get_registered_model("flat").description
    assert card in described  # the card stays above the history
    history = described.split("### Promotion history", 1)[1]
    assert "promote production -> v1 by" in history and '"first model"' in history

    _train(constant_csv, capsys, register="always", n_estimators=4)  # a new version keeps the history section
    described = client.get_registered_model("flat").description
    assert "**flat v2**" in described and "promote production -> v1 by" in described


def test_the_contract_fits_one_line_for_every_task():
    from projects.common.modelcard import contract_line, curl_line
    from projects.cr_recon.train import CRConfig
    from projects.cr_recon.train import contract as cr_contract
    from projects.edgnet.train import EDGNetConfig
    from projects.edgnet.train import contract as edgnet_contract

    seg = edgnet_contract(EDGNetConfig(img_size=96), 16)
    assert contract_line(seg) == "gray 96x96 image (stretch), (x/255 - 0.5)/0.5 -> sigmoid mask > 0.5"
    assert curl_line("edgnet", seg) == "curl -F image=@picture.png 127.0.0.1:8080/v1/models/edgnet/predict"
    assert contract_line(cr_contract(CRConfig(), 64)).endswith("-> values of shape [2, 2, 30] (BGGR)")


@pytest.mark.slow
def test_a_skinmodel_regression_on_noise_is_not_registered(mlflow_uri, tmp_path):
    from projects.common.config import resolve_config
    from projects.skinmodel.train import SkinConfig, train

    rng = np.random.default_rng(7)
    frame = pd.DataFrame(rng.normal(size=(120, 3)), columns=["a", "b", "c"]).assign(y=rng.normal(size=120))
    frame.to_csv(tmp_path / "noise.csv", index=False)
    flags = {"data": str(tmp_path / "noise.csv"), "target": "y", "task": "regression", "n_estimators": 20,
             "max_depth": 3, "early_stopping_rounds": 0, "model_name": "noise"}  # fmt: skip
    final = train(resolve_config(SkinConfig, None, flags))
    assert "registered_version" not in final
    (run,) = MlflowClient().search_runs(["0"])
    assert run.info.status == "FINISHED" and run.data.tags["kiln.registered"] == "false"
    reason = run.data.tags["kiln.not_registered_reason"]
    assert "validation rows is not significantly below" in reason and "(the training mean; paired t-test" in reason
    assert float(run.data.tags["kiln.baseline_p"]) > 0.05
