"""Every `--help` only prints help: each module with a `__main__` block and every `kiln` command.

    .venv/bin/python -m pytest tests/test_help.py -q

`python -m cloud.localstack --help` once ignored the flag and started PostgreSQL, moto and an MLflow server. One
child process runs every module's `--help` in turn (imports are shared, so the whole sweep costs about one import of
torch and mlflow; each module then runs as `__main__` in a forked child) in an empty working folder, with process
starts, listening sockets and connects made to fail: a module that does anything but print its help and exit 0 is
named with what it tried.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from kiln.cli import main as kiln_main

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cloud", "core", "data", "efficiency", "experiments", "jobs", "kiln", "projects", "registry", "serving")

PROBE = r"""
import contextlib, importlib, io, json, os, runpy, socket, subprocess, sys

modules = json.loads(sys.argv[1])
# The heavy libraries, imported once and shared by the forks (torch runs `ldconfig` as it loads); kiln's own
# modules are not: each runs as `__main__` in a fresh child, as `python -m` would run it.
for library in ("projects.yolo.offline", "torch", "torchvision", "mlflow", "mlflow.pyfunc", "onnxruntime", "onnx",
                "ultralytics", "xgboost", "sklearn", "fastapi", "uvicorn", "boto3", "PIL.Image", "cv2", "pandas",
                "optuna", "matplotlib.pyplot", "albumentations"):
    with contextlib.suppress(BaseException):
        importlib.import_module(library)


class Tried(BaseException):
    pass


def refuse(what):
    def fail(*args, **kwargs):
        raise Tried(what)

    return fail


def probe(module):
    subprocess.Popen.__init__ = refuse("started a process")
    socket.socket.listen = refuse("listened on a socket")
    socket.socket.connect = refuse("opened a connection")
    sys.argv = [module, "--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        result = "" if "usage" in out.getvalue().lower() else "returned without printing help"
    except SystemExit as exc:
        ok = exc.code in (0, None) and "usage" in out.getvalue().lower()
        result = "" if ok else f"exit {exc.code!r}: {out.getvalue()[-300:]!r}"
    except Tried as exc:
        result = str(exc)
    except BaseException as exc:
        result = f"{type(exc).__name__}: {exc}"[:300]
    leftovers = sorted(os.listdir("."))
    return (result + f"; wrote {leftovers}").lstrip("; ") if leftovers else result


results = {}
for module in modules:  # each in a forked child: a fresh __main__, and nothing it does reaches the next one
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, probe(module).encode()[:4000])
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        results[module] = pipe.read()
    os.waitpid(pid, 0)
    for name in os.listdir("."):  # a module that wrote here is reported; the next one starts clean
        os.remove(name) if os.path.isfile(name) else None
print(json.dumps(results))
"""


def main_modules() -> list[str]:
    """Every module of kiln's packages with an `if __name__ == "__main__":` block."""
    found = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            if any(_is_main_guard(node) for node in tree.body):
                parts = path.relative_to(REPO).with_suffix("").parts
                found.append(".".join(parts[:-1] if parts[-1] == "__main__" else parts))
    return found


def _is_main_guard(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators)
    )


@pytest.mark.slow  # one child that imports torch, mlflow and ultralytics once: 10-30 s on a busy machine
def test_every_module_help_only_prints_help(tmp_path: Path) -> None:
    modules = main_modules()
    assert "cloud.localstack" in modules and "serving.cli" in modules and len(modules) > 20
    env = dict(os.environ, PYTHONPATH=str(REPO), HOME=str(tmp_path / "home"))
    env.pop("MLFLOW_TRACKING_URI", None)
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(modules)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {m: r for m, r in results.items() if r} == {}


def kiln_commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path under `group`, through click's own listing (kiln's groups load sub-commands lazily)."""
    ctx = click.Context(group)
    paths = [path]
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            paths += kiln_commands(command, (*path, name))
        elif command is not None:
            paths.append((*path, name))
    return paths


@pytest.mark.slow  # imports every sub-command: about 9 s on a busy machine
def test_every_kiln_command_help_only_prints_help(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    commands = kiln_commands(kiln_main)
    assert ("serve",) in commands and len(commands) > 10
    for path in commands:
        result = CliRunner().invoke(kiln_main, [*path, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, (path, result.output[-500:])
    assert list(tmp_path.iterdir()) == []
