"""The README's quickstart, checked command by command so that it cannot go stale.

    .venv/bin/python -m pytest tests/test_readme.py -q            # the fast checks
    .venv/bin/python -m pytest tests/test_readme.py -q -m slow    # and the quickstart run for real, tiny

Every fenced `bash` command of the "Quickstart" section must be one this file knows how to check:
- `make TARGET`: the target exists; for `make run`, the `mlflow run` it makes names an MLproject entry point
  and only parameters that entry point has;
- `kiln ...`: the sub-command exists and click accepts the arguments as written (parsed, not run); a model
  name in them is the one `make run` registers;
- `curl ...`: the route exists on `kiln serve`, names the model `make run` registers on the port the
  quickstart serves on, and the uploaded file is one `make run` generates.
The slow test then does the whole walk with tiny training parameters: train, list, promote, history, serve
(in-process) and the curl request.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
MLPROJECT = yaml.safe_load((REPO_ROOT / "MLproject").read_text())["entry_points"]


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def shell_commands(markdown: str) -> list[list[str]]:
    """Each command line of the fenced bash blocks, joined across `\\` continuations, split as a shell would."""
    commands: list[list[str]] = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


QUICKSTART = shell_commands(section(README.read_text(), "Quickstart"))


@dataclass(frozen=True)
class MakeRun:
    """What `make run` trains: its entry point, `-P` values and the model and sample folder that come out."""

    entry_point: str
    params: dict[str, str]

    @property
    def model_name(self) -> str:
        declared = MLPROJECT[self.entry_point]["parameters"]["model_name"]["default"]
        return self.params.get("model_name") or str(declared)

    def param(self, name: str) -> int:
        value = self.params.get(name, MLPROJECT[self.entry_point]["parameters"][name]["default"])
        return int(float(value))


def make_targets() -> dict[str, list[str]]:
    """Makefile target -> its recipe lines (continuations joined)."""
    targets: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in (REPO_ROOT / "Makefile").read_text().replace("\\\n", " ").splitlines():
        found = re.match(r"^([\w.-]+):", line)
        if found:
            current = targets.setdefault(found.group(1), [])
        elif line.startswith("\t") and current is not None:
            current.append(line.strip())
    return targets


def make_run() -> MakeRun:
    (line,) = [r for r in make_targets()["run"] if " mlflow run " in f" {r.replace('/', ' ')} "]
    words = shlex.split(line)
    entry_point = words[words.index("-e") + 1]
    params = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "-P")
    return MakeRun(entry_point, params)


def serve_port() -> int:
    serve = [c for c in QUICKSTART if c[:2] == ["kiln", "serve"]]
    assert serve, "the quickstart never starts `kiln serve`"
    words = serve[0]
    return int(words[words.index("--port") + 1]) if "--port" in words else 8080


def resolve_kiln(args: list[str]) -> click.Context:
    """Parse `kiln ARGS` the way click would, without running anything; raises click's usage errors."""
    from kiln.cli import main

    ctx = main.make_context("kiln", list(args), resilient_parsing=False)
    command: click.Command = main
    rest = list(args)
    while isinstance(command, click.Group):
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None, f"kiln has no command {name!r}"
        ctx = sub.make_context(str(name), list(rest), parent=ctx)
        command, rest = sub, ctx.protected_args + ctx.args
    return ctx


def sample_image() -> Path:
    from data.drawings import default_sample_dir

    run = make_run()
    return default_sample_dir(run.param("num_samples"), run.param("img_size"), run.param("seed"))


def check_make(words: list[str]) -> None:
    targets = make_targets()
    assert len(words) == 2 and words[1] in targets, f"`{shlex.join(words)}`: the Makefile has no such target"
    if words[1] == "run":
        run = make_run()
        assert run.entry_point in MLPROJECT, f"make run trains {run.entry_point!r}, not an MLproject entry point"
        unknown = set(run.params) - set(MLPROJECT[run.entry_point]["parameters"])
        assert not unknown, f"make run passes {sorted(unknown)}, which {run.entry_point} does not take"


def check_kiln(words: list[str]) -> None:
    ctx = resolve_kiln(words[1:])
    model = ctx.params.get("model")
    if model is not None:
        assert model == make_run().model_name, f"`{shlex.join(words)}` names {model!r}; make run registers another"


def check_curl(words: list[str]) -> None:
    from serving.edge.task_routes import router

    url = next(w for w in words if re.match(r"^(https?://)?[\w.-]+:\d+/", w))
    host_port, _, path = url.removeprefix("http://").partition("/")
    assert int(host_port.rsplit(":", 1)[1]) == serve_port(), f"{url}: not the port the quickstart serves on"
    templates = [getattr(r, "path", "") for r in router.routes]
    model = make_run().model_name
    assert f"/{path.split('?')[0]}" in [t.replace("{name}", model) for t in templates], f"{url}: no such route"
    for i, word in enumerate(words):
        if word == "-F":
            field, _, value = words[i + 1].partition("=@")
            upload = (REPO_ROOT / value).resolve()
            assert upload.parent.parent == sample_image(), f"{value}: make run generates its drawings elsewhere"


CHECKS = {"make": check_make, "kiln": check_kiln, "curl": check_curl}


def test_the_quickstart_has_the_walk() -> None:
    programs = [c[0] for c in QUICKSTART]
    assert programs[0] == "make" and QUICKSTART[0] == ["make", "run"], "the quickstart starts with `make run`"
    steps = {tuple(c[:2]) for c in QUICKSTART}
    for step in [("make", "run"), ("make", "ui"), ("kiln", "promote"), ("kiln", "serve")]:
        assert step in steps, f"the quickstart lost the step `{' '.join(step)}`"
    assert "curl" in programs


@pytest.mark.parametrize("words", QUICKSTART, ids=[shlex.join(c)[:60] for c in QUICKSTART])
def test_each_quickstart_command_is_real(words: list[str]) -> None:
    if words == ["source", ".venv/bin/activate"]:
        assert (REPO_ROOT / "Makefile").read_text().count("python3 -m venv $(VENV)") == 1  # make creates .venv
        return
    check = CHECKS.get(words[0])
    assert check is not None, f"tests/test_readme.py cannot check `{shlex.join(words)}`; teach it, or fix the README"
    check(words)


def test_readme_links_resolve() -> None:
    text = README.read_text()
    links = re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", text)
    assert links, "the README lost its reference index"
    missing = [link for link in links if not (REPO_ROOT / link).is_file()]
    assert not missing, f"README links to missing pages: {missing}"
    for page in sorted((REPO_ROOT / "docs").glob("*.md")):
        for link in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / link).is_file(), f"{page.name} links to missing {link}"


def test_a_stale_command_fails_the_checks() -> None:
    with pytest.raises(click.UsageError):
        resolve_kiln(["promote", "edgnet_large", "--versoin", "1"])
    with pytest.raises(AssertionError, match="make run registers another"):
        check_kiln(["kiln", "promote", "yolo", "--version", "1"])
    with pytest.raises(AssertionError, match="no such route"):
        check_curl(["curl", f"127.0.0.1:{serve_port()}/v1/models/{make_run().model_name}/predikt"])


# --- the walk itself, tiny ----------------------------------------------------------------------------------------

TINY = {
    "epochs": 1,
    "img_size": 32,
    "num_samples": 4,
    "batch_size": 2,  # flags that shrink make run's training
    "register": "always",
}  # a 1-epoch model may sit at its baseline; make run's 6 epochs beat it


@pytest.mark.slow
def test_the_quickstart_runs(mlflow_run: Any, mlflow_uri: str, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from fastapi.testclient import TestClient

    from data.drawings import default_sample_dir
    from kiln.cli import main
    from serving.edge.app import create_app
    from serving.settings import ServeSettings

    run = make_run()
    params = {**run.params, **TINY}
    mlflow_run(run.entry_point, params)
    from mlflow import MlflowClient

    (trained,) = MlflowClient().search_runs(["0"])
    assert float(trained.data.tags["kiln.baseline"]) > 0  # the best mask that ignores the image scores above 0
    assert trained.data.tags["kiln.baseline_kind"] != "all-background mask"  # a first promotion is compared with it
    assert trained.data.tags["kiln.phase"] == "registering"  # the job page's phase while it registered
    kind = MlflowClient().get_experiment("0").tags.get("mlflow.experimentKind")
    assert kind == "custom_model_development"  # the MLflow UI opens the experiment on its runs
    runner = CliRunner()
    for words in QUICKSTART:
        if words[0] != "kiln" or words[1] == "serve":
            continue
        result = runner.invoke(main, words[1:])
        assert result.exit_code == 0, f"`{shlex.join(words)}` failed:\n{result.output}"
        if words[1] == "models":
            assert run.model_name in result.output and "v1" in result.output
    tiny_dir = default_sample_dir(TINY["num_samples"], TINY["img_size"], run.param("seed"))
    settings = ServeSettings.from_env(models=(run.model_name,), alias="production")
    with TestClient(create_app(settings)) as client:
        assert client.get("/").status_code == 200 and client.get("/docs").status_code == 200  # the pages it names
        for curl in [c for c in QUICKSTART if c[0] == "curl"]:
            upload = next(c.partition("=@")[2] for c in curl if c.startswith("image=@"))
            image = tiny_dir / Path(upload).relative_to(Path(upload).parents[1])  # the same file of the tiny set
            path = "/" + next(w for w in curl if re.match(r"^(https?://)?[\w.-]+:\d+/", w)).partition("/")[2]
            answer = client.post(path, files={"image": image.read_bytes()})
            assert answer.status_code == 200, answer.text
            if "-o" in curl:  # a picture, saved to a file
                assert answer.headers["content-type"] == "image/png" and answer.content[:4] == b"\x89PNG"
            else:
                body = answer.json()
                assert (body["model"], str(body["version"])) == (run.model_name, "1") and body["mask_png"]
