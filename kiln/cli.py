"""The one `kiln` command line: training, dataset tools, promotion, serving and the job service.

    kiln --help
    kiln data validate data/samples/safety/data.yaml

Sub-commands are imported only when used, so `kiln data ...` never pays for importing torch.
"""

from __future__ import annotations

import importlib

import click

# name -> (module, attribute). Each module owns its commands; this table only mounts them.
COMMANDS: dict[str, tuple[str, str]] = {
    "promote": ("registry.cli", "promote_command"),
    "rollback": ("registry.cli", "rollback_command"),
    "history": ("registry.cli", "history_command"),
    "models": ("registry.cli", "models_command"),
    "jobs": ("jobs.cli", "jobs"),
    "serve": ("serving.cli", "serve"),
    "data": ("data.cli", "data"),
    "server": ("cloud.cli", "server"),
    "sagemaker": ("cloud.cli", "sagemaker"),
    "train": ("projects.train_cli", "train_command"),
    "advise": ("experiments.cli", "advise_command"),
    "tune": ("experiments.cli", "tune_command"),
    "cv": ("experiments.cli", "cv_command"),
    "study": ("efficiency.cli", "study"),
    "optimize": ("efficiency.cli", "optimize_command"),
    "leaderboard": ("efficiency.cli", "leaderboard_command"),
    "mlproject": (f"{__package__}.mlproject", "mlproject_command"),  # this package's kiln/mlproject.py
}


# name -> the one line `kiln --help` shows, so that listing the commands imports none of them (mlflow alone takes
# seconds to import). tests/kiln/test_cli.py checks that every command has one.
SHORT_HELP: dict[str, str] = {
    "advise": "Diagnose a run's curves and suggest what to change.",
    "cv": "Cross-validate a family or preset over folds or seeds.",
    "data": "Dataset tools: validate, convert, split, sample, the data loop.",
    "history": "Print the timeline of a model's aliases.",
    "jobs": "The training-job service and its web page.",
    "leaderboard": "Registered versions on the accuracy/cost Pareto frontier.",
    "mlproject": "Generate MLproject from the family registry (--write, --check).",
    "models": "List registered models, their aliases and key metrics.",
    "optimize": "Quantize a registered version to int8 and register it.",
    "promote": "Point an alias of a model at a version, through the gates.",
    "rollback": "Move an alias back to the version it held before.",
    "sagemaker": "The SageMaker training backend.",
    "serve": "Serve registered models over HTTP (try-it page, /docs).",
    "server": "The team tracking server (mlflow server).",
    "study": "Studies that train many runs under one parent run.",
    "train": "Train a family or preset and register its ONNX model.",
    "tune": "Search a family's hyperparameters (Optuna).",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands live in other packages and load on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from SHORT_HELP: no sub-command is imported for `kiln --help`."""
        rows = []
        for name in self.list_commands(ctx):
            if name in SHORT_HELP:
                rows.append((name, SHORT_HELP[name]))
            elif (command := self.get_command(ctx, name)) is not None:
                rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{module_name}.{attr} is not a click command")
        return command


@click.group(cls=LazyGroup)
@click.version_option(package_name="kiln")
def main() -> None:
    """kiln: train, track, promote and serve vision and tabular models with MLflow."""


if __name__ == "__main__":
    main()
