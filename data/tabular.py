"""Write the skinmodel sample: scikit-learn's breast-cancer table (569 rows, 30 features) as a CSV.

    python -m data.tabular --out data/samples/tabular/breast_cancer.csv

The table ships inside scikit-learn, so nothing is downloaded. The target column `diagnosis` holds the
class names (`malignant`, `benign`) rather than 0/1, as a CSV exported from a clinic's system would.
"""

from __future__ import annotations

from pathlib import Path

import click

from data.samples import SAMPLES_DIR, SampleRequest, register_sample
from data.samples import ensure_sample as ensure_registered_sample

TARGET = "diagnosis"  # name of the target column in the sample CSV
FILE_NAME = "breast_cancer.csv"
DEFAULT_PATH = SAMPLES_DIR / "tabular" / FILE_NAME


def write_breast_cancer(path: Path) -> Path:
    """Write the table with its feature names as the header and the class name in `diagnosis`."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.drop(columns=["target"])
    frame[TARGET] = [str(bunch.target_names[i]) for i in bunch.target]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


@register_sample("tabular", "scikit-learn's breast-cancer table as a CSV for skinmodel (only DST is used)")
def _sample(request: SampleRequest) -> Path:
    return write_breast_cancer(request.dst / FILE_NAME)


def ensure_breast_cancer() -> Path:
    """The sample CSV under `data/samples/tabular/`, written once and reused."""
    folder = ensure_registered_sample("tabular", SampleRequest(DEFAULT_PATH.parent))
    return folder / FILE_NAME


@click.command()
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), default=DEFAULT_PATH)
def main(out_path: Path) -> None:
    """Write scikit-learn's breast-cancer table as a CSV."""
    click.echo(write_breast_cancer(out_path))


if __name__ == "__main__":
    main()
