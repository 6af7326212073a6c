"""`kiln tune`, `kiln cv` and `kiln advise`: experiments over any registered family from the command line.

    kiln advise 3f2a... --json
    kiln tune skinmodel --space space.yaml --trials 20 --pruner median
    kiln cv skinmodel --folds 5

Each command reads the tracking store from MLFLOW_TRACKING_URI (or --tracking-uri). Errors are one line
(`Error: ...`) with exit code 1 for a refused request and 2 for bad input; never a traceback.
"""

from __future__ import annotations

import json
from typing import Any

import click
import mlflow

from core.errors import cli_errors


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


def _sets(pairs: tuple[str, ...], joined: str) -> dict[str, str]:
    """`--set k=v` (repeatable) plus `--sets "k=v k2=v2"` (the MLproject entry points pass one string)."""
    from projects.train_cli import parse_sets

    return parse_sets([*pairs, *joined.split()])


@click.command("tune")
@click.argument("target", metavar="FAMILY_OR_PRESET")
@click.option("--space", "space_path", required=True, help="YAML search space (see docs/experiments.md).")
@click.option("--trials", type=int, default=20, show_default=True, help="Trials to run (added to a resumed study).")
@click.option("--metric", help="Objective [default: the family's ranking metric, e.g. best_val_iou].")
@click.option("--mode", type=click.Choice(["max", "min"]), help="Objective direction [default: the family's].")
@click.option("--pruner", type=click.Choice(["median", "hyperband", "none"]), default="median", show_default=True)
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
              help="Train the best trial's config once more and register it.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="Tracking store [default: MLFLOW_TRACKING_URI].")
@cli_errors
def tune_command(target: str, space_path: str, trials: int, metric: str | None, mode: str | None, pruner: str,
                 sampler: str, seed: int | None, timeout: float | None, study: str | None, storage: str | None,
                 workers: int, sets: tuple[str, ...], joined: str, experiment: str | None, register_best: bool,
                 as_json: bool, tracking_uri: str | None) -> None:  # fmt: skip
    """Search hyperparameters of FAMILY_OR_PRESET with Optuna; one MLflow parent run, one child run per trial."""
    import dataclasses

    from experiments.tune import tune

    _use_store(tracking_uri)
    result = tune(
        target, space_path, trials, metric=metric, mode=mode, pruner=pruner, sampler=sampler, seed=seed,
        study=study or None, storage=storage or None, workers=workers, timeout=timeout or None,
        sets=_sets(sets, joined), experiment=experiment or None, register_best=register_best,
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
    result = cv(
        target, folds=folds or None, seeds=seeds, sets=_sets(sets, joined), metric=metric or None, refit=refit,
        register=register, experiment=experiment or None, seed=fold_seed,
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


# ---------------------------------------------------------------- the MLproject entry points (`mlflow run -e tune|cv`)
# MLproject parameters cannot be absent, so every optional value arrives as a string and "" means "not given".


def _optional_number(text: str, flag: str, kind: type = float) -> Any:
    if not text.strip():
        return None
    try:
        return kind(float(text))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a number", param_hint=flag) from None


def _flag(text: str, flag: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise click.BadParameter(f"{text!r} is not true or false", param_hint=flag)
    return value in ("true", "1", "yes")


@click.command("tune")
@click.option("--target", required=True, help="Family or preset to tune.")
@click.option("--space", "space_path", required=True, help="YAML search space.")
@click.option("--trials", default="20", help="Trials to run.")
@click.option("--metric", default="", help="Objective ('' = the family's ranking metric).")
@click.option("--mode", default="", help="max or min ('' = the family's).")
@click.option("--pruner", default="median", help="median, hyperband or none.")
@click.option("--sampler", default="tpe", help="tpe or random.")
@click.option("--seed", default="", help="Sampler seed ('' = random).")
@click.option("--timeout", default="", help="Seconds after which no new trial starts ('' = none).")
@click.option("--study", default="", help="Study name; the same name resumes ('' = TARGET-<time>).")
@click.option("--storage", default="", help="Optuna RDB URL ('' = sqlite file under $KILN_HOME).")
@click.option("--workers", default="1", help="Processes sharing the study.")
@click.option("--sets", "joined", default="", help="Space-separated key=value config overrides for every trial.")
@click.option("--register-best", "register_best", default="true", help="true: refit and register the best trial.")
@cli_errors
def tune_entry(target: str, space_path: str, trials: str, metric: str, mode: str, pruner: str, sampler: str,
               seed: str, timeout: str, study: str, storage: str, workers: str, joined: str,
               register_best: str) -> None:  # fmt: skip
    """`mlflow run . -e tune`: the same search as `kiln tune`, in the run `mlflow run` created (the parent)."""
    from experiments.tune import tune

    if mode.strip() and mode not in ("max", "min"):
        raise click.BadParameter(f"{mode!r} is not max or min", param_hint="--mode")
    result = tune(
        target, space_path, _optional_number(trials, "--trials", int), metric=metric or None, mode=mode or None,
        pruner=pruner, sampler=sampler, seed=_optional_number(seed, "--seed", int), study=study or None,
        storage=storage or None, workers=_optional_number(workers, "--workers", int) or 1,
        timeout=_optional_number(timeout, "--timeout"), sets=_sets((), joined),
        register_best=_flag(register_best, "--register-best"),
    )  # fmt: skip
    click.echo(result.note)


@click.command("cv")
@click.option("--target", required=True, help="Family or preset to cross-validate.")
@click.option("--folds", default="", help="K folds ('' = use --seeds).")
@click.option("--seeds", "seeds_text", default="", help="Comma-separated seeds ('' = use --folds).")
@click.option("--metric", default="", help="Metric that picks the registered part ('' = the family's).")
@click.option("--fold-seed", default="0", help="Shuffle seed for dealing items into folds.")
@click.option("--refit", default="false", help="true: register a refit instead of the fold closest to the mean.")
@click.option("--register", default="true", help="false: register nothing.")
@click.option("--sets", "joined", default="", help="Space-separated key=value config overrides.")
@cli_errors
def cv_entry(target: str, folds: str, seeds_text: str, metric: str, fold_seed: str, refit: str, register: str,
             joined: str) -> None:  # fmt: skip
    """`mlflow run . -e cv`: the same run as `kiln cv`, in the run `mlflow run` created (the parent)."""
    from experiments.cv import cv, parse_seeds

    result = cv(
        target, folds=_optional_number(folds, "--folds", int), seeds=parse_seeds(seeds_text) if seeds_text else None,
        sets=_sets((), joined), metric=metric or None, refit=_flag(refit, "--refit"),
        register=_flag(register, "--register"), seed=_optional_number(fold_seed, "--fold-seed", int) or 0,
    )  # fmt: skip
    click.echo(result.note)
