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
