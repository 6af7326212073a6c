"""Every MLproject entry point: its params, its command's flags and its click options agree one for one."""

import importlib
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]

SPEC = yaml.safe_load((REPO_ROOT / "MLproject").read_text())
ENTRY_POINTS = sorted(SPEC["entry_points"])


def command_parts(name: str) -> tuple[str, list[str], set[str]]:
    command = SPEC["entry_points"][name]["command"]
    tokens = shlex.split(command)
    assert tokens[:2] == ["python", "-m"], f"{name}: command must be `python -m <module> ...`"
    flags = [t for t in tokens[3:] if t.startswith("--")]
    placeholders = set(re.findall(r"\{(\w+)\}", command))
    return tokens[2], flags, placeholders


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_params_flags_and_click_options_agree(name):
    module_name, flags, placeholders = command_parts(name)
    params = SPEC["entry_points"][name].get("parameters", {})
    assert placeholders == set(params), f"{name}: params and command placeholders differ"
    for param, spec in params.items():
        assert spec["type"] in {"string", "float", "path", "uri"}, f"{name}.{param}: type {spec['type']!r}"
    command = importlib.import_module(module_name).main
    assert isinstance(command, click.Command)
    options = {opt for p in command.params for opt in p.opts}
    missing = [f for f in flags if f not in options]
    assert not missing, f"{name}: {module_name} has no options {missing}"


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_placeholders_are_bare(name):
    # mlflow shell-quotes every value; a quoted placeholder breaks on values with spaces
    assert not re.search(r"'\{\w+\}'", SPEC["entry_points"][name]["command"]), name


def fixed_flags(name: str) -> dict[str, str]:
    """Flags the command sets to a literal value (`--variant edgnet`, `--preset safety_detection`)."""
    tokens = shlex.split(SPEC["entry_points"][name]["command"])[3:]
    pairs = zip(tokens, [*tokens[1:], ""], strict=True)
    return {
        t[2:].replace("-", "_"): v for t, v in pairs if t.startswith("--") and v and not re.fullmatch(r"\{\w+\}", v)
    }


def family_entry_points() -> dict:
    import projects.yolo.offline  # noqa: F401  (before ultralytics is imported by the yolo family)
    from projects.common.families import entry_points

    return entry_points()


def test_training_entry_points_are_the_registered_families_and_presets():
    registered = family_entry_points()
    training = {n for n in ENTRY_POINTS if command_parts(n)[0].startswith("projects.")}
    assert training == set(registered), f"MLproject {sorted(training)} vs registry {sorted(registered)}"
    for name, (family, _) in registered.items():
        assert command_parts(name)[0] == family.module, name


@pytest.mark.parametrize("name", sorted(n for n in ENTRY_POINTS if command_parts(n)[0].startswith("projects.")))
def test_entry_point_defaults_match_the_registered_preset(name):
    """`mlflow run . -e NAME` with its defaults trains the same config as `kiln train NAME`."""
    family, preset = family_entry_points()[name]
    params = {k: str(v["default"]) for k, v in SPEC["entry_points"][name].get("parameters", {}).items()}
    config_path = params.pop("config", "") or None  # the YAML option, not a config field
    from_mlproject = family.resolve(None, config_path, {**fixed_flags(name), **params})
    assert from_mlproject == family.resolve(preset.name if preset else None, config_path), name


def test_mlproject_is_generated_from_the_registry(tmp_path):
    """MLproject is `kiln mlproject --write`'s output; --check fails on a stale copy, naming the fix."""
    from click.testing import CliRunner

    from kiln.mlproject import mlproject_command, render

    assert (REPO_ROOT / "MLproject").read_text() == render(), "MLproject is stale: run `kiln mlproject --write`"
    stale = tmp_path / "MLproject"
    stale.write_text(render().replace("default: 100}", "default: 99}", 1))
    result = CliRunner().invoke(mlproject_command, ["--check", "--path", str(stale)])
    assert result.exit_code == 1 and "kiln mlproject --write" in result.output
    assert CliRunner().invoke(mlproject_command, ["--write", "--path", str(stale)]).exit_code == 0
    assert CliRunner().invoke(mlproject_command, ["--check", "--path", str(stale)]).exit_code == 0
