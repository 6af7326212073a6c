"""`--data` for the image families: a folder, or a frozen dataset version `dataset:NAME@vN` (or `@latest`).

    python -c "from projects.common.datasets import data_folder; print(data_folder('data/samples/drawings'))"

A version is fetched and verified once into KILN_DATASET_CACHE by `data.versions.resolve_dataset_uri`; its
folder holds images/<split>/, labels/<split>/, masks/<split>/ (when it has masks) and a data.yaml naming the
version, which `log_data_input` records as the run's input, as the YOLO entry points do. cr_recon asks for
`kind="arrays"`: its version holds the folder's .npy files as they were, beside that data.yaml.
"""

from __future__ import annotations

from pathlib import Path

DATASET_PREFIX = "dataset:"


def is_dataset_uri(data: str) -> bool:
    return data.startswith(DATASET_PREFIX)


def data_folder(data: str, kind: str = "images") -> Path:
    """The local folder `data` names: a fetched version's copy for `dataset:...` (a version of `kind`: images,
    or arrays for cr_recon), else the path itself."""
    if is_dataset_uri(data):
        from data.versions import resolve_dataset_uri

        return resolve_dataset_uri(data, kind=kind).parent
    return Path(data).expanduser()


def log_data_input(folder: Path) -> str | None:
    """On the active run, the dataset version `folder` is a copy of (NAME@vN), or None for a plain folder."""
    from data.versions import log_dataset_version

    return log_dataset_version(folder / "data.yaml") if (folder / "data.yaml").is_file() else None
