"""`kiln data`: check, convert, split and generate datasets.

    kiln data validate data/samples/safety/data.yaml
    kiln data convert --from coco instances.json out/ && kiln data split out/ --val 0.2 --seed 0
    kiln data sample safety data/samples/safety
    kiln data import hardhat.v3i.yolov8.zip data/hardhat --name hardhat       # Roboflow, COCO, VOC, CVAT, LS
    kiln data collect s3://cams/door/ door && kiln data filter door && kiln data autolabel door --model det@production
    kiln data review door && kiln data version door --name door    # see docs/data-loop.md

Sample kinds come from the registry in `data.samples` (`@register_sample`), so a new kind needs no change here.
User errors print `Error: ...` and exit 1; `validate` exits 1 when it finds any problem.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from core.errors import UserError, run_cli


def _names(value: str | None) -> list[str] | None:
    return [n.strip() for n in value.split(",") if n.strip()] if value else None


def _user_errors(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run `func`, turning the errors a user can fix into click's `Error: ...` and exit code 1."""
    try:
        return func(*args, **kwargs)
    except (UserError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def data() -> None:
    """Dataset tools: validate, convert, split, sample; the data loop: collect, filter, autolabel, review, version."""


@data.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--names", help="comma-separated class names for a bare folder without data.yaml or classes.txt")
@click.option("--max-lines", type=int, default=200, show_default=True, help="problems printed before eliding")
def validate(path: Path, names: str | None, max_lines: int) -> None:
    """Check a YOLO dataset (a dataset YAML, or a folder) and report every problem as file:line: message."""
    from data.yolo_validate import validate as run_validate

    report = _user_errors(run_validate, path, _names(names))
    lines = report.lines()
    for line in lines[:max_lines]:
        click.echo(line)
    if len(lines) > max_lines:
        click.echo(f"... and {len(lines) - max_lines} more")
    click.echo(report.summary())
    if not report.ok:
        raise SystemExit(1)


@data.command()
@click.option("--from", "kind", type=click.Choice(["coco", "voc"]), required=True, help="annotation format of SRC")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--images", "images_dir", type=click.Path(path_type=Path), help="COCO: folder holding the images")
@click.option("--classes", help="VOC: comma-separated class order (default: sorted names found)")
@click.option("--keep-difficult", is_flag=True, help="VOC: keep objects marked difficult")
def convert(
    kind: str, src: Path, dst: Path, images_dir: Path | None, classes: str | None, keep_difficult: bool
) -> None:
    """Convert COCO JSON (SRC = the .json) or Pascal VOC XML (SRC = the VOC folder) to YOLO layout in DST."""
    from data.yolo_convert import convert as run_convert

    options: dict[str, Any] = (
        {"images_dir": images_dir} if kind == "coco" else {"classes": _names(classes), "keep_difficult": keep_difficult}
    )
    result = _user_errors(run_convert, kind, src, dst, **options)
    click.echo(result.summary())


@data.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--val", type=float, default=0.2, show_default=True, help="share of images for validation")
@click.option("--test", type=float, default=0.0, show_default=True, help="share of images for a test split")
@click.option("--seed", type=int, default=0, show_default=True, help="the same seed always gives the same split")
@click.option("--names", help="comma-separated class names when the folder has no data.yaml or classes.txt")
def split(folder: Path, val: float, test: float, seed: int, names: str | None) -> None:
    """Split FOLDER's images (and labels) into images/train, images/val (and images/test) reproducibly."""
    from data.yolo_split import split as run_split

    result = _user_errors(run_split, folder, val=val, test=test, seed=seed, names=_names(names))
    click.echo(result.summary())


def _sample_help() -> str:
    from data.samples import sample_kinds

    kinds = "\n".join(f"  {k.name}: {k.summary}" for k in sorted(sample_kinds().values(), key=lambda k: k.name))
    # "\b" stops click from re-wrapping the list into one paragraph.
    return f"Write a procedural sample set of KIND into DST (deterministic for a seed).\n\n\b\nKinds:\n{kinds}"


class _SampleCommand(click.Command):
    """Help text lists the registered kinds, read when help is shown rather than at import."""

    def get_help(self, ctx: click.Context) -> str:
        self.help = _sample_help()
        return super().get_help(ctx)


@data.command(cls=_SampleCommand)
@click.argument("kind")
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--count", type=int, help="images in all (default: the kind's own)")
@click.option("--size", type=int, help="image side in pixels (default: the kind's own)")
@click.option("--val", type=float, default=0.2, show_default=True, help="share of images in the val split")
@click.option("--seed", type=int, default=0, show_default=True)
def sample(kind: str, dst: Path, count: int | None, size: int | None, val: float, seed: int) -> None:
    """Write a procedural sample set of KIND into DST."""
    from data.samples import SampleRequest, make_sample

    if not 0.0 < val < 1.0:
        raise click.BadParameter(f"must be in (0, 1), got {val}", param_hint="--val")
    request = SampleRequest(dst=dst, count=count, size=size, val=val, seed=seed)
    result = _user_errors(make_sample, kind, request)
    click.echo(f"wrote {kind} sample to {result}")


@data.command(name="import")
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option(
    "--format", "fmt", default="auto", show_default=True,
    type=click.Choice(["auto", "roboflow-yolo", "coco", "voc", "cvat", "labelstudio"]),
    help="export format of SRC; auto tells it from the files",
)  # fmt: skip
@click.option("--name", help="freeze the import as the next version of this dataset (NAME@v1, @v2, ...)")
@click.option("--val", type=float, default=0.2, show_default=True,
              help="share of images for val, by image hash, when the export has no validation split")  # fmt: skip
@click.option("-m", "--message", default="", help="the version's note (default: where it was imported from)")
@click.option("--tracking-uri", help="MLflow tracking URI for --name (default MLFLOW_TRACKING_URI)")
@click.option("--max-lines", type=int, default=50, show_default=True, help="problems printed before eliding")
def import_command(
    src: Path, dst: Path, fmt: str, name: str | None, val: float, message: str, tracking_uri: str | None,
    max_lines: int,
) -> None:  # fmt: skip
    """Import a Roboflow, COCO, VOC, CVAT or Label Studio export (zip or folder) SRC into kiln's layout in DST."""
    from data.importers import import_dataset

    result = run_cli(import_dataset, src, dst, fmt=fmt, val=val, name=name, message=message,
                     tracking_uri=tracking_uri)  # fmt: skip
    lines = result.report.lines()
    for line in lines[:max_lines]:
        click.echo(line)
    if len(lines) > max_lines:
        click.echo(f"... and {len(lines) - max_lines} more")
    click.echo(result.summary())
    click.echo(f"check: {result.report.summary()}")
    if not result.ok:
        hint = f"; fix them in {dst} and run `kiln data version {dst} --name {name}`" if name else ""
        click.echo(f"not versioned: the import has problems{hint}" if name else "the import has problems")
        raise SystemExit(1)
    if result.version is not None:
        info = result.version
        made = "created" if info.created else "unchanged, still"
        click.echo(f"{made} {info.ref}; train with: -P data=dataset:{info.ref}")


# ------------------------------------------------------------------------------------------ the data loop


@data.command()
@click.argument("src")
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--endpoint-url", help="S3-compatible endpoint (MinIO: http://host:9000); default AWS_ENDPOINT_URL")
@click.option("--workers", type=int, default=8, show_default=True, help="parallel downloads")
@click.option("--quiet", is_flag=True, help="no progress bar and no list of skipped keys")
def collect(src: str, dst: Path, endpoint_url: str | None, workers: int, quiet: bool) -> None:
    """Copy the images of SRC (s3://bucket/prefix or a folder) into DST/images, fetching only what is new."""
    from data.collect import MAX_LISTED
    from data.collect import collect as run_collect

    listed: list[str] = []

    def skipped(key: str) -> None:
        if not quiet and len(listed) < MAX_LISTED:
            click.echo(f"skipped (not an image): {key}")
        listed.append(key)

    result = run_cli(
        run_collect, src, dst, endpoint_url=endpoint_url, workers=workers, progress=not quiet, on_skipped=skipped
    )
    if not quiet and len(listed) > MAX_LISTED:
        click.echo(f"... and {len(listed) - MAX_LISTED} more skipped")
    click.echo(result.summary())


@data.command(name="filter")
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--min-side", type=int, default=32, show_default=True, help="reject images whose shorter side is smaller")
@click.option(
    "--min-blur", type=float, default=30.0, show_default=True,
    help="reject when the variance of the Laplacian (grey, long side 512 px) is lower: blurred",
)  # fmt: skip
@click.option("--min-brightness", type=float, default=25.0, show_default=True, help="reject a darker mean grey (0-255)")
@click.option("--max-brightness", type=float, default=230.0, show_default=True, help="reject a brighter mean grey")
@click.option(
    "--max-clipped", type=float, default=0.35, show_default=True,
    help="reject when a larger share of pixels is at 0-2 or 253-255",
)  # fmt: skip
@click.option(
    "--max-distance", type=int, default=6, show_default=True,
    help="reject as duplicate when a kept image's 64-bit perceptual hash is within this Hamming distance",
)  # fmt: skip
@click.option("--report", type=click.Path(path_type=Path), help="CSV report path (default DST/filter_report.csv)")
@click.option("--workers", type=int, default=2, show_default=True, help="decoding threads")
@click.option("--dry-run", is_flag=True, help="only write the report; move nothing")
def filter_command(dst: Path, report: Path | None, **thresholds: Any) -> None:
    """Reject undecodable, small, blurred, badly exposed and near-duplicate images of DST/images."""
    from data.filter import FilterOptions, filter_images

    result = run_cli(filter_images, dst, FilterOptions(**thresholds), report)
    click.echo(result.summary())


@data.command()
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--host", help="bind address (default 127.0.0.1, or KILN_REVIEW_HOST)")
@click.option("--port", type=int, help="port (default 8765, or KILN_REVIEW_PORT)")
def review(dst: Path, host: str | None, port: int | None) -> None:
    """Serve the review page for DST: accept, fix or reject each queued image's boxes."""
    import uvicorn

    from core.settings import read_env
    from data.review.app import ReviewSettings, create_app

    settings = run_cli(read_env, ReviewSettings, prefix="KILN_REVIEW_", host=host, port=port)
    app = run_cli(create_app, dst)
    click.echo(f"reviewing {dst} on http://{settings.host}:{settings.port}")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=settings.access_log)


@data.command()
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="dataset name; versions are NAME@v1, NAME@v2, ...")
@click.option("--val", type=float, default=0.2, show_default=True,
              help="share of images for val, split by image hash (images/train|val|test folders win)")  # fmt: skip
@click.option("-m", "--message", default="", help="a note stored with the version")
@click.option("--tracking-uri", help="MLflow tracking URI (default MLFLOW_TRACKING_URI)")
def version(dst: Path, name: str, val: float, message: str, tracking_uri: str | None) -> None:
    """Freeze DST's labelled images (or a cr_recon folder of .npy arrays) into an immutable, content-addressed
    version of NAME in MLflow."""
    from data.versions import create_version

    info = run_cli(create_version, dst, name, val=val, message=message, tracking_uri=tracking_uri)
    manifest = info.manifest
    if not info.created:
        click.echo(f"no change since {info.ref} (digest {info.digest[:12]}); nothing created")
        return
    parent = f"parent {manifest['parent']}" if manifest["parent"] else "the first version"
    click.echo(f"created {info.ref} (run {info.run_id}, digest {info.digest[:12]}, {parent})")
    if info.kind == "arrays":
        click.echo(f"{info.samples} samples in {len(manifest['files'])} .npy files; {info.shapes}")
    else:
        splits = ", ".join(f"{k} {v}" for k, v in manifest["splits"].items())
        counts = ", ".join(f"{k} {v}" for k, v in manifest["class_counts"].items())
        click.echo(f"{len(manifest['images'])} images ({splits}); boxes: {counts}")
    click.echo(f"train with: -P data=dataset:{info.ref}")


@data.command()
@click.argument("name")
@click.option("--tracking-uri", help="MLflow tracking URI (default MLFLOW_TRACKING_URI)")
def versions(name: str, tracking_uri: str | None) -> None:
    """List the versions of dataset NAME: images and boxes per class, or an arrays version's samples and shapes."""
    import datetime

    from data.versions import list_versions

    found = run_cli(list_versions, name, tracking_uri)
    if not found:
        raise click.ClickException(f"dataset {name!r} has no versions")
    click.echo(f"{'version':<12} {'created (UTC)':<20} {'images':>6}  {'boxes per class':<28} {'digest':<14} note")
    for info in found:
        when = datetime.datetime.fromtimestamp(info.created_at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        counts = ", ".join(f"{k} {v}" for k, v in sorted(info.class_counts.items())) or "-"
        size = info.images
        if info.kind == "arrays":  # samples and per-sample shapes in place of images and boxes
            size, counts = info.samples, f"arrays: {info.shapes}"
        note = info.message.replace("\n", " ") or "-"
        click.echo(f"{info.ref:<12} {when:<20} {size:>6}  {counts:<28} {info.digest[:12]:<14} {note}")


@data.command()
@click.argument("a")
@click.argument("b")
@click.option("--tracking-uri", help="MLflow tracking URI (default MLFLOW_TRACKING_URI)")
@click.option("--json", "as_json", is_flag=True, help="the full lists as JSON")
@click.option("--max-lines", type=int, default=20, show_default=True, help="paths listed per kind")
def diff(a: str, b: str, tracking_uri: str | None, as_json: bool, max_lines: int) -> None:
    """What changed from dataset version A to B (e.g. door@v2 door@v3): added, removed, relabelled."""
    import json

    from data.versions import diff as run_diff

    result = run_cli(run_diff, a, b, tracking_uri)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
        return
    for line in result.lines(max_lines):
        click.echo(line)


@data.command()
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--model", required=True, help="registered detector: NAME@ALIAS, NAME/VERSION, models:/... or a .onnx")
@click.option("--conf", type=float, default=0.25, show_default=True, help="confidence a box needs to be a pre-label")
@click.option(
    "--margin", type=float, default=None,
    help="candidates this far below --conf count as near the threshold when ordering the queue "
    "[default: 0.1, or --conf/2 when that is smaller]",
)  # fmt: skip
@click.option("--batch", type=int, default=8, show_default=True, help="images per model run")
@click.option("--tracking-uri", help="MLflow registry URI (default MLFLOW_TRACKING_URI)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def autolabel(
    dst: Path, model: str, conf: float, margin: float | None, batch: int, tracking_uri: str | None, quiet: bool
) -> None:
    """Pre-label DST's unreviewed images with a registered detector and queue them for review."""
    from data.autolabel import autolabel as run_autolabel

    result = run_cli(
        run_autolabel, dst, model, conf=conf, margin=margin, batch=batch, tracking_uri=tracking_uri,
        progress=not quiet,
    )  # fmt: skip
    click.echo(result.summary())
