"""`kiln tune`, `kiln cv` and `kiln advise`: experiments over any registered family from the command line.

    kiln advise 3f2a... --json
    kiln tune skinmodel --space space.yaml --trials 20 --pruner forecast
    kiln cv skinmodel --folds 5

Each command reads the tracking store from MLFLOW_TRACKING_URI (or --tracking-uri). Errors are one line
(`Error: ...`) with exit code 1 for a refused request and 2 for bad input; never a traceback.
"""

from __future__ import annotations

import json

import click
import mlflow

from core.errors import cli_errors
from core.stdio import progress_to_stderr
from experiments.options import parse_overrides


def _use_store(tracking_uri: str | None) -> None:
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)


@click.command("advise")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--no-log", is_flag=True, help="Do not write advice.md and the kiln.advice tag to the run.")
@click.option("--no-compare", is_flag=True, help="Skip the comparison with the other runs of the experiment.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="Tracking store [default: MLFLOW_TRACKING_URI].")
@cli_errors
def advise_command(run_id: str, as_json: bool, no_log: bool, no_compare: bool, tracking_uri: str | None) -> None:
    """Read RUN_ID's curves, params and system metrics; say what happened and what to try next."""
    from experiments.advise import advise, log_advice

    _use_store(tracking_uri)
    advice = advise(run_id, compare=not no_compare)
    if not no_log:
        log_advice(advice)
    click.echo(json.dumps(advice.to_json(), indent=2) if as_json else advice.markdown())


@click.command("tune")
@click.argument("target", metavar="FAMILY_OR_PRESET")
@click.option("--space", "space_path", required=True, help="YAML search space (see docs/experiments.md).")
@click.option("--trials", type=int, default=20, show_default=True, help="Trials to run (added to a resumed study).")
@click.option("--metric", help="Objective [default: the family's ranking metric, e.g. best_val_iou].")
@click.option("--mode", type=click.Choice(["max", "min"]), help="Objective direction [default: the family's].")
@click.option(
    "--pruner",
    type=click.Choice(["forecast", "median", "hyperband", "none"]),
    default="forecast",
    show_default=True,
    help="forecast: prune only a trial that cannot reach the best (docs/decisions.md).",
)
@click.option("--sampler", type=click.Choice(["tpe", "random"]), default="tpe", show_default=True)
@click.option("--seed", type=int, help="Sampler seed, for a repeatable sequence of trials.")
@click.option("--timeout", type=float, help="Stop starting trials after this many seconds.")
@click.option("--study", help="Study name; the same name resumes it [default: TARGET-<time>].")
@click.option("--storage", help="Optuna RDB URL shared by workers [default: sqlite:///$KILN_HOME/optuna.db].")
@click.option("--workers", type=int, default=1, show_default=True, help="Processes on this machine sharing the study.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Fix a config option for every trial.")
@click.option("--sets", "joined", default="", hidden=True)
@click.option("--experiment", help="MLflow experiment name [default: the current experiment].")
@click.option("--register-best/--no-register-best", default=True, show_default=True,
              help="Register the best trial from its own run (no training).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="Tracking store [default: MLFLOW_TRACKING_URI].")
@click.option("--backend", type=click.Choice(["local", "sagemaker"]), default="local", show_default=True,
              help="Where trials train: this machine, or one SageMaker training job each.")  # fmt: skip
@click.option(
    "--backend-config", help="SageMaker backend config (sm.json, docs/sagemaker.md); with --backend sagemaker."
)
@click.option("--parallel", type=click.IntRange(min=1), default=2, show_default=True,
              help="SageMaker jobs running at once (--backend sagemaker).")  # fmt: skip
@click.option("--resume", is_flag=True, help="Reattach to the study's running SageMaker jobs (--backend sagemaker).")
@cli_errors
def tune_command(target: str, space_path: str, trials: int, metric: str | None, mode: str | None, pruner: str,
                 sampler: str, seed: int | None, timeout: float | None, study: str | None, storage: str | None,
                 workers: int, sets: tuple[str, ...], joined: str, experiment: str | None, register_best: bool,
                 as_json: bool, tracking_uri: str | None, backend: str, backend_config: str | None, parallel: int,
                 resume: bool) -> None:  # fmt: skip
    """Search hyperparameters of FAMILY_OR_PRESET with Optuna; one MLflow parent run, one child run per trial."""
    import dataclasses

    from experiments.tune import tune

    _use_store(tracking_uri)
    if backend == "sagemaker":
        from experiments.tune_sagemaker import tune_on_sagemaker

        if not backend_config:
            raise click.UsageError("--backend sagemaker needs --backend-config sm.json")
        with progress_to_stderr(as_json):  # --json: stdout holds the JSON alone
            found = tune_on_sagemaker(
                target, space_path, trials, backend_config=backend_config, parallel=parallel, resume=resume,
                register=register_best, metric=metric, mode=mode, pruner=pruner, sampler=sampler, seed=seed,
                study=study or None, storage=storage or None, timeout=timeout or None,
                sets=parse_overrides(sets, joined), experiment=experiment or None,
            )  # fmt: skip
        click.echo(json.dumps(dataclasses.asdict(found), indent=2, default=str) if as_json else found.note)
        return
    if backend_config or resume:
        raise click.UsageError("--backend-config and --resume go with --backend sagemaker")
    with progress_to_stderr(as_json):  # --json: stdout holds the JSON alone
        result = tune(
            target, space_path, trials, metric=metric, mode=mode, pruner=pruner, sampler=sampler, seed=seed,
            study=study or None, storage=storage or None, workers=workers, timeout=timeout or None,
            sets=parse_overrides(sets, joined), experiment=experiment or None, register_best=register_best,
        )  # fmt: skip
    click.echo(json.dumps(dataclasses.asdict(result), indent=2, default=str) if as_json else result.note)


@click.command("cv")
@click.argument("target", metavar="FAMILY_OR_PRESET")
@click.option("--folds", type=int, help="K-fold cross-validation with K folds.")
@click.option("--seeds", "seeds_text", help="Comma-separated seeds, one run each (e.g. 0,1,2).")
@click.option("--metric", help="Metric to summarise first and pick the registered part by [default: the family's].")
@click.option("--fold-seed", type=int, default=0, show_default=True, help="Shuffle seed for dealing items into folds.")
@click.option("--refit", is_flag=True, help="Register a refit on the family's usual split instead of the mean fold.")
@click.option("--register/--no-register", default=True, show_default=True, help="Register one version at the end.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config option; repeatable.")
@click.option("--sets", "joined", default="", hidden=True)
@click.option("--experiment", help="MLflow experiment name [default: the current experiment].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="Tracking store [default: MLFLOW_TRACKING_URI].")
@cli_errors
def cv_command(target: str, folds: int | None, seeds_text: str | None, metric: str | None, fold_seed: int,
               refit: bool, register: bool, sets: tuple[str, ...], joined: str, experiment: str | None,
               as_json: bool, tracking_uri: str | None) -> None:  # fmt: skip
    """Cross-validate FAMILY_OR_PRESET over K folds or several seeds; statistics on the parent run."""
    import dataclasses

    from experiments.cv import cv, parse_seeds

    _use_store(tracking_uri)
    seeds = parse_seeds(seeds_text) if seeds_text else None
    with progress_to_stderr(as_json):  # --json: stdout holds the JSON alone
        result = cv(
            target, folds=folds or None, seeds=seeds, sets=parse_overrides(sets, joined), metric=metric or None,
            refit=refit, register=register, experiment=experiment or None, seed=fold_seed,
        )  # fmt: skip
    click.echo(json.dumps(dataclasses.asdict(result), indent=2, default=str) if as_json else result.note)


@click.group("experiments")
def main() -> None:
    """kiln's experiment commands, also reachable as `kiln tune`, `kiln cv` and `kiln advise`."""


main.add_command(tune_command)
main.add_command(cv_command)
main.add_command(advise_command)

if __name__ == "__main__":
    main()
