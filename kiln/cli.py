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
    "train": ("projects.train_cli", "train_command"),
    "train": ("projects.train_cli", "train_command"),
    "advise": ("experiments.cli", "advise_command"),
    "tune": ("experiments.cli", "tune_command"),
    "cv": ("experiments.cli", "cv_command"),
}


class LazyGroup(click.Group):
    """A click group whose sub-commands live in other packages and load on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

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
