"""`kiln train FAMILY_OR_PRESET`: train any registered family in this process, with the config resolution every
entry point uses (dataclass defaults -> preset -> `--config` YAML -> `--set key=value`).

    kiln train edgnet --set epochs=2 --set img_size=64 --set num_samples=12
    kiln train cr_recon --config projects/cr_recon/configs/cpu_small.yaml --set epochs=1
    kiln train safety_detection --set epochs=3 --set imgsz=128

`mlflow run . -e <entry>` stays the way to start a tracked project run; this command is for scripts and for the
search and cross-validation commands, which call `projects.common.families.train_family` the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import click

from core.errors import ConfigError, run_cli


def parse_sets(pairs: Iterable[str]) -> dict[str, str]:
    """`["epochs=3", "model-params={cnn_gru: {hidden: 8}}"]` -> {"epochs": "3", "model_params": "..."}.

    Values stay strings: the family's config dataclass types them and names the field when one does not fit.
    """
    values: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected key=value")
        values[key] = value
    return values


def run_training(name: str, config_path: str | None, sets: Iterable[str], nproc: int = 0) -> dict[str, float]:
    from projects.common.families import train_family

    overrides = parse_sets(sets)
    if nproc:  # the family's `nproc` setting (edgnet, microseg, cr_recon, the YOLO presets)
        overrides["nproc"] = str(nproc)
    return train_family(name, overrides, config_path=config_path)


def settings_help(name: str) -> list[tuple[str, str]]:
    """(`key TYPE`, help with the default) for every setting of the family or preset `name`, its defaults being
    that preset's (`kiln train safety_detection --help` shows epochs 50 and yolov8n.yaml)."""
    import dataclasses

    from projects.common.config import _field_kind
    from projects.common.families import lookup

    family, preset = lookup(name)
    cfg = family.resolve(preset.name if preset else None)
    rows = []
    for field in dataclasses.fields(cfg):
        choices = field.metadata.get("choices")
        kind = _field_kind(type(cfg), field.name)
        shown = f"[{'|'.join(choices)}]" if choices else TYPE_NAMES.get(kind, "TEXT")
        rows.append(
            (f"{field.name} {shown}", f"{field.metadata.get('help', '')} [default: {getattr(cfg, field.name)!r}]")
        )
    return rows


TYPE_NAMES = {int: "INTEGER", float: "FLOAT", bool: "BOOLEAN"}


class TrainCommand(click.Command):
    """`kiln train NAME --help` also lists NAME's settings with that family's or preset's defaults."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if any(a in self.get_help_option_names(ctx) for a in args) and args and not args[0].startswith("-"):
            formatter = ctx.make_formatter()
            self.format_help(ctx, formatter)
            rows = run_cli(settings_help, args[0])
            heading = f"Settings of {args[0]} (--set KEY=VALUE, as mlflow run's -P KEY=VALUE)"
            with formatter.section(heading):
                formatter.write_dl(rows)
            click.echo(formatter.getvalue().rstrip("\n"), color=ctx.color)
            ctx.exit()
        return super().parse_args(ctx, args)


@click.command("train", cls=TrainCommand)
@click.argument("name", metavar="FAMILY_OR_PRESET")
@click.option("--config", "config_path", default=None, help="YAML file of option: value pairs (after the preset).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override one option; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the final metrics as one JSON object.")
@click.option(
    "--nproc", type=click.IntRange(min=1), default=None,
    help="Data-parallel processes (torch.distributed: gloo on CPU, NCCL on GPUs; YOLO: that many GPUs); "
    "the same as --set nproc=N.",
)  # fmt: skip
def train_command(name: str, config_path: str | None, sets: tuple[str, ...], as_json: bool, nproc: int | None) -> None:
    """Train FAMILY_OR_PRESET (edgnet, edgnet_large, cr_recon, skinmodel, safety_detection, visitor_detection,
    yolo_custom, ...) and register its ONNX model; prints the final metrics. `kiln train NAME --help` lists
    NAME's settings and their defaults."""
    from core.stdio import progress_to_stderr

    with progress_to_stderr(as_json):  # --json: stdout holds the JSON alone
        final = run_cli(run_training, name, config_path, sets, nproc or 0)
    if as_json:
        click.echo(json.dumps(final, sort_keys=True))
        return
    for key, value in sorted(final.items()):
        click.echo(f"{key}: {value:.6g}")
