"""`kiln --help` and the sub-commands' `--help` import no heavy library; training options have real types."""

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from kiln.cli import COMMANDS, SHORT_HELP, main

HEAVY = ("torch", "mlflow", "ultralytics", "xgboost", "onnxruntime", "fastapi", "optuna")
# experiments.cli (advise, tune, cv) still imports mlflow when loaded: see docs/training.md
LIGHT_HELP = ("promote", "rollback", "history", "models", "train", "serve", "data", "jobs")


def imported_by(args: list[str]) -> list[str]:
    """Heavy modules in sys.modules after `kiln ARGS` in a fresh interpreter."""
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom kiln.cli import main\n"
        f"r = CliRunner().invoke(main, {args!r})\nassert r.exit_code == 0, r.output\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return [m for m in out.stdout.strip().split(",") if m]


def test_kiln_help_lists_every_command_without_importing_one():
    assert set(COMMANDS) <= set(SHORT_HELP), "every command needs its one line in kiln/cli.py's SHORT_HELP"
    assert imported_by(["--help"]) == []
    result = CliRunner().invoke(main, ["--help"])
    for name, text in SHORT_HELP.items():
        assert f"{name}" in result.output and text[:30] in result.output


def test_subcommand_help_imports_no_heavy_library():
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom kiln.cli import main\n"
        f"for c in {LIGHT_HELP!r}:\n    r = CliRunner().invoke(main, [c, '--help'])\n"
        "    assert r.exit_code == 0, r.output\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("name", "defaults"),
    [("edgnet", ("[default: 'edgnet']",)), ("safety_detection", ("[default: 50]", "'yolov8n.yaml'"))],
)
def test_train_preset_help_imports_no_heavy_library(name, defaults):
    """`kiln train NAME --help` reads the family's light config module only, and shows the preset's defaults."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "kiln", "train", name, "--help"],
                         capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    modules = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert f"Settings of {name}" in out.stdout
    assert not {m.split(".")[0] for m in modules} & {"torch", "ultralytics", "mlflow", "onnxruntime"}
    assert any(m.endswith(".config") and m.startswith("projects.") for m in modules)
    assert all(d in out.stdout for d in defaults), out.stdout


def test_kiln_help_importtime_holds_no_mlflow():
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "kiln", "--help"], capture_output=True,
                         text=True, check=True, timeout=120)  # fmt: skip
    modules = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "kiln.cli" in modules and not modules & {"mlflow", "torch", "registry.promotion"}


def test_training_options_have_types_and_take_mlproject_strings():
    from projects.common.config import config_options
    from projects.skinmodel.train import SkinConfig

    seen = {}

    @click.command()
    @config_options(SkinConfig)
    def cmd(config_path, **flags):
        seen.update(flags)

    help_text = CliRunner().invoke(cmd, ["--help"]).output
    assert "--n-estimators INTEGER" in help_text and "--learning-rate FLOAT" in help_text
    assert "--register [auto|always|never]" in help_text and "--data TEXT" in help_text
    ok = CliRunner().invoke(cmd, ["--n-estimators", "3.0", "--learning-rate", "", "--register", "always"])
    assert ok.exit_code == 0 and seen["n_estimators"] == "3.0" and seen["learning_rate"] == ""
    bad = CliRunner().invoke(cmd, ["--n-estimators", "3.5"])
    assert bad.exit_code == 2 and "'3.5' is not a whole number" in bad.output


def test_a_boolean_option_is_a_flag():
    from projects.common.config import config_options, resolve_config
    from projects.edgnet.train import EDGNetConfig

    seen = {}

    @click.command()
    @config_options(EDGNetConfig)
    def cmd(config_path, **flags):
        seen["cfg"] = resolve_config(EDGNetConfig, config_path, flags)

    assert "--skip-bad / --no-skip-bad" in CliRunner().invoke(cmd, ["--help"]).output
    assert CliRunner().invoke(cmd, ["--skip-bad", "--epochs", "3.0"]).exit_code == 0
    assert seen["cfg"].skip_bad is True and seen["cfg"].epochs == 3
    CliRunner().invoke(cmd, [])
    assert seen["cfg"].skip_bad is False


def test_a_preset_help_shows_the_preset_defaults():
    import projects.yolo.offline  # noqa: F401  (before ultralytics)

    result = CliRunner().invoke(main, ["train", "safety_detection", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split("Settings of safety_detection", 1)[1].split())
    assert "epochs INTEGER training epochs [default: 50]" in text  # the preset's, not the dataclass's 100
    assert "[default: 'yolov8n.yaml']" in text and "verbose BOOLEAN" in text
    assert "model_name TEXT registered model name; empty = the preset name [default: 'safety_detection']" in text
    assert "register [auto|always|never]" in text
