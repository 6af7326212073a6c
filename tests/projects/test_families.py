"""Every registered family and preset, as timm's test_models.py goes over every model: a tiny config trains,
tracks, exports and registers; the ranking metric is logged once and equals the exported step's value; the
registered ONNX carries a contract that parses; the predictor loads the registered version and answers.

.venv/bin/python -m pytest tests/projects/test_families.py -q
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import onnx
import pandas as pd
import pytest
from click.testing import CliRunner

import projects.yolo.offline  # noqa: F401  (before anything imports ultralytics)
from core.contract import ModelContract, Ranking
from core.errors import ConfigError
from projects.common import families
from projects.common.families import Family, get_family, resolve_family_config, train_family

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINTS = sorted(families.entry_points())


def per_step_twin(ranking: Ranking) -> str:
    """The per-step series whose value at the exported step the ranking summary repeats."""
    if ranking.metric.startswith("best/"):  # ultralytics' names: best/mAP50-95 <-> metrics/mAP50-95
        return "metrics/" + ranking.metric.removeprefix("best/")
    return ranking.metric.removeprefix("best_")


def test_every_family_is_complete() -> None:
    for name, family in families.load_all().items():
        assert family.smoke is not None, f"{name}: register a smoke(folder) for the registry's smoke test"
        assert family.selected_by is not None, f"{name}: say which per-step metric picks the exported step"
        assert family.ranking.metric != per_step_twin(family.ranking), f"{name}: rank by a once-logged summary"
        fields = {f.name for f in dataclasses.fields(family.config_cls)}
        assert "resume" in fields, f"{name}: kiln tune/cv register a trial by resuming its finished run (finish_in_run)"
        for entry in family.entry_points:
            family.resolve(entry if family.preset(entry) else None)  # every preset resolves with its defaults


def test_lookup_is_lazy_and_names_the_unknown() -> None:
    assert get_family("edgnet_large").name == "edgnet" and get_family("safety_detection").name == "yolo"
    with pytest.raises(ConfigError, match=r"unknown family or preset 'edgnett'; known: \['cr_recon', 'edgnet'"):
        get_family("edgnett")


def test_resolution_order_is_defaults_preset_yaml_then_overrides(tmp_path: Path) -> None:
    family, cfg = resolve_family_config("edgnet")
    assert (cfg.variant, cfg.model_name, cfg.epochs) == ("edgnet", "edgnet", 100)  # the preset over the defaults
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("variant: edgnet_large\nepochs: 5\nlr: 0.01\n")
    _, cfg = resolve_family_config("edgnet", {"epochs": "3", "img-size": 64}, config_path=str(yaml_file))
    assert (cfg.variant, cfg.epochs, cfg.lr, cfg.img_size) == ("edgnet_large", 3, 0.01, 64)
    with pytest.raises(ConfigError, match="unknown option 'epoch' for EDGNetConfig"):
        resolve_family_config("edgnet", {"epoch": 3})
    _, cfg = resolve_family_config("cr_recon", {"epochs": 4})
    assert cfg.model == "cnn_xattn" and cfg.epochs == 4  # cr_recon's default YAML still applies


def test_kiln_train_errors_are_one_line(mlflow_uri: str) -> None:
    from kiln.cli import main

    cases = {
        ("train", "unet"): "Error: unknown family or preset 'unet'; known: ['cr_recon',",
        ("train", "edgnet", "--set", "epochs"): "Error: --set 'epochs': expected key=value",
        ("train", "edgnet", "--set", "epochz=2"): "Error: unknown option 'epochz' for EDGNetConfig; known:",
        ("train", "edgnet", "--set", "epochs=two"): "Error: EDGNetConfig.epochs: expected int, got 'two'",
        ("train", "skinmodel", "--config", "/no/such.yaml"): "Error: config file not found: /no/such.yaml",
    }
    for args, message in cases.items():
        result = CliRunner().invoke(main, list(args))
        assert result.exit_code == 1 and result.output.startswith(message), (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert mlflow.search_runs(["0"], output_format="list") == []


def test_kiln_help_does_not_import_torch() -> None:
    import subprocess

    code = "import sys; from click.testing import CliRunner; from kiln.cli import main; "
    code += "r = CliRunner().invoke(main, ['train', '--help']); assert r.exit_code == 0, r.output; "
    code += "assert 'FAMILY_OR_PRESET' in r.output; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]


def probe(predictor: Any, contract: ModelContract, rows: list[dict[str, Any]]) -> Any:
    """One prediction of the task's kind: a random image for image models, sample records for tabular ones."""
    if contract.preprocess is not None:
        height, width = contract.preprocess.size
        shape = (height + 7, width + 3) if contract.preprocess.color == "gray" else (height + 7, width + 3, 3)
        image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
        (result,) = predictor.predict_images([image])
        return result.to_json()
    return predictor.predict_records(rows).to_json()


def check_ranking(family: Family, client: mlflow.MlflowClient, run: Any) -> None:
    """The ranking metric is one value, equal to its per-step twin at the step the family exported."""
    ranking, selected_by = family.ranking, family.selected_by
    assert selected_by is not None
    history = client.get_metric_history(run.info.run_id, ranking.metric)
    assert len(history) == 1, f"{ranking.metric} logged {len(history)} times"
    chooser = {m.step: m.value for m in client.get_metric_history(run.info.run_id, selected_by.metric)}
    twin = {m.step: m.value for m in client.get_metric_history(run.info.run_id, per_step_twin(ranking))}
    assert chooser and twin, (selected_by.metric, per_step_twin(ranking))
    best = (max if selected_by.mode == "max" else min)(chooser.values())
    candidates = [twin[s] for s, v in chooser.items() if v == best]  # ties: any of them may have been kept
    assert any(math.isclose(history[0].value, c, rel_tol=1e-4, abs_tol=1e-6) for c in candidates), (
        history[0].value,
        candidates,
    )


def tabular_rows(contract: ModelContract, count: int = 3) -> list[dict[str, Any]]:
    from data.tabular import ensure_breast_cancer

    assert contract.tabular_input is not None
    frame = pd.read_csv(ensure_breast_cancer()).head(count)
    return [{name: float(row[name]) for name in contract.tabular_input.feature_names} for _, row in frame.iterrows()]


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_family_trains_registers_and_serves(entry: str, mlflow_uri: str, tmp_path: Path) -> None:
    from serving.runtime.predictor import Predictor

    family, _ = families.entry_points()[entry]
    assert family.smoke is not None
    final = train_family(entry, family.smoke(tmp_path))

    (run,) = mlflow.search_runs(["0"], output_format="list")
    client = mlflow.MlflowClient()
    assert run.info.status == "FINISHED" and final[family.ranking.metric] == run.data.metrics[family.ranking.metric]
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    check_ranking(family, client, run)

    (version,) = client.search_model_versions(f"run_id = '{run.info.run_id}'")
    assert int(version.version) == int(final["registered_version"])
    assert (version.tags["kiln.task"], version.tags["kiln.metric"]) == (family.task, family.ranking.metric)
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}"))
    meta = {p.key: p.value for p in onnx.load(str(next(local.rglob("*.onnx")))).metadata_props}
    contract = ModelContract.parse(meta)
    assert (contract.task, contract.family, contract.ranking) == (family.task, family.name, family.ranking)
    assert (contract.model_name, contract.run_id) == (version.name, run.info.run_id)

    predictor = Predictor.load(f"models:/{version.name}/{version.version}")
    answer = probe(predictor, contract, tabular_rows(contract) if contract.task == "tabular" else [])
    assert isinstance(answer, dict) and answer, answer
