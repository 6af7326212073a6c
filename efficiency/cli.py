"""`kiln study budget`, `kiln optimize` and `kiln leaderboard`: what is the best model that fits?

    kiln study budget --family microseg --variants micronet,hwnet,mininet --datasets seg_cracks,seg_polyps \
        --seeds 0,1,2 --set img_size=64 --set epochs=20
    kiln optimize microseg_mininet --version 3 --int8 --max-drop 0.01
    kiln leaderboard --task segmentation --max-params 10000 --plot frontier.png

User errors print one `Error: ...` line and exit with the error's code (through core.errors.cli_errors);
`kiln optimize` exits 1 when it refuses the int8 version, as `kiln promote` does when a gate refuses.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from core.errors import ConfigError, cli_errors


def _names(value: str, flag: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if not names:
        raise click.BadParameter("must name at least one", param_hint=flag)
    return names


def _seeds(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in _names(value, "--seeds"))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}", param_hint="--seeds") from None


def _overrides(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


@click.group()
def study() -> None:
    """Studies that train many runs under one parent run."""


@study.command("budget")
@click.option("--family", default="microseg", show_default=True, help="family to train (its train module)")
@click.option("--variants", required=True, help="comma-separated variants to compare")
@click.option("--datasets", required=True, help="comma-separated sample kinds or images/+masks/ folders")
@click.option("--seeds", default="0,1,2", show_default=True, help="comma-separated seeds; every cell runs each")
@click.option("--teacher", default="", help="distil a second arm from this model; {dataset} is replaced per dataset")
@click.option("--metric", default="test_iou", show_default=True, help="metric of the table (falls back to ranking)")
@click.option("--set", "sets", multiple=True, help="config value for every cell, key=value (repeatable)")
@click.option("--out", type=click.Path(path_type=Path), help="also keep the CSV/plot files in this folder")
@click.option("--resume", help="parent run id of an interrupted study of the same plan: reuse its finished cells")
@click.option("--retries", default=1, show_default=True, type=click.IntRange(min=0), help="reruns of a failed cell")
@cli_errors
def budget(
    family: str,
    variants: str,
    datasets: str,
    seeds: str,
    teacher: str,
    metric: str,
    sets: tuple[str, ...],
    out: Path | None,
    resume: str | None,
    retries: int,
) -> None:
    """Train every variant on every dataset with every seed; tabulate mean +- std and the distillation effect."""
    from efficiency.study import StudyPlan, run_study

    plan = StudyPlan(family, _names(variants, "--variants"), _names(datasets, "--datasets"), _seeds(seeds),
                     teacher, _overrides(sets), metric)  # fmt: skip
    click.echo(f"study: {plan.size} cells ({len(plan.variants)} variants x {len(plan.datasets)} datasets x "
               f"{len(plan.seeds)} seeds{' x 2 arms' if teacher else ''})")  # fmt: skip
    result = run_study(plan, out, log=lambda text: click.echo(text), resume=resume, retries=retries)
    click.echo(f"parent run {result.parent_run_id}; files: {', '.join(str(p) for p in result.files)}")


@click.command("optimize")
@click.argument("model")
@click.option("--version", "version", required=True, type=int, help="the fp32 version to quantize")
@click.option("--int8", "int8", is_flag=True, required=True, help="quantize to int8 (the one optimization offered)")
@click.option("--max-drop", default=0.01, show_default=True, type=float, help="largest metric drop still registered")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    help="evaluation data: images/+masks/, a YOLO dataset YAML or folder, a CSV (default: the model's own)",
)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path),
    help="calibration images, for detection a YOLO dataset YAML or folder (default: --data)",
)
@click.option("--target", help="tabular: the label column (default: the training run's target param)")
@click.option("--max-samples", default=0, type=int, help="evaluate on at most this many samples (0 = all)")
@click.option("--force", is_flag=True, help="register even when the gate refuses (slower, bigger or a larger drop)")
@click.option("--json", "as_json", is_flag=True, help="print the outcome as JSON")
@cli_errors
def optimize_command(
    model: str,
    version: int,
    int8: bool,
    max_drop: float,
    data: Path | None,
    calibration: Path | None,
    target: str | None,
    max_samples: int,
    force: bool,
    as_json: bool,
) -> None:
    """Quantize MODEL's VERSION to int8; register it only if its metric drops by at most --max-drop on held-out
    data and it is neither slower nor bigger than fp32 (--force registers it anyway)."""
    from efficiency.optimize import optimize

    if not int8:
        raise click.UsageError("pass --int8 (the only optimization offered)")
    outcome = optimize(model, version, max_drop=max_drop, data=data, calibration=calibration, target=target,
                       max_samples=max_samples, force=force)  # fmt: skip
    click.echo(json.dumps(outcome.to_json(), indent=2) if as_json else outcome.describe())
    if not outcome.accepted:
        raise SystemExit(1)


@click.command("leaderboard")
@click.option("--task", help="only versions of this kiln.task (segmentation, detection, tabular, regression)")
@click.option("--metric", help="rank by this run metric (default: each version's kiln.metric)")
@click.option("--name", help="only models whose name matches this glob, e.g. 'microseg_*'")
@click.option("--max-params", type=float, help="parameter budget for 'best under budget'")
@click.option("--max-latency-ms", type=float, help="p50 latency budget (batch 1, this machine) for 'best under budget'")
@click.option("--measure", is_flag=True, help="profile versions that have no footprint yet and log it to their runs")
@click.option("--json", "as_json", is_flag=True, help="print entries, frontier and budgets as JSON")
@click.option("--plot", type=click.Path(path_type=Path), help="draw metric vs parameters with the frontier to a PNG")
@cli_errors
def leaderboard_command(
    task: str | None,
    metric: str | None,
    name: str | None,
    max_params: float | None,
    max_latency_ms: float | None,
    measure: bool,
    as_json: bool,
    plot: Path | None,
) -> None:
    """Registered versions on the Pareto frontier of metric, parameters and latency; the best under each budget."""
    from mlflow import MlflowClient

    from efficiency import leaderboard

    for flag, value in (("--max-params", max_params), ("--max-latency-ms", max_latency_ms)):
        if value is not None and value <= 0:
            raise click.BadParameter(f"must be > 0, got {value:g}", param_hint=flag)
    board = leaderboard.build(MlflowClient(), task=task, metric=metric, name=name, max_params=max_params,
                              max_latency_ms=max_latency_ms, measure=measure)  # fmt: skip
    click.echo(json.dumps(board.to_json(), indent=2) if as_json else leaderboard.render(board))
    if plot is not None:
        path = leaderboard.plot(board, plot)
        if not as_json:
            click.echo(f"plot: {path}")
