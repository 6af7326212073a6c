"""skinmodel data: read a CSV, check it before any training, pick the task, encode the target, split.

    python -m projects.skinmodel.data data/samples/tabular/breast_cancer.csv diagnosis   # prints a profile

Every problem a CSV can have is reported as a `TableError` naming the file and the column or value:
a missing file, an empty file, a header without rows, a missing target column, empty target values, a
non-numeric feature column, a target with one class, or a task that does not fit the target.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import DatasetError
from projects.common.folds import active_fold, fold_indices

TASKS = ("auto", "binary", "multiclass", "regression")
# An integer-valued numeric target with at most this many distinct values is read as class labels.
MAX_INTEGER_CLASSES = 20


class TableError(DatasetError, ValueError):
    """A CSV that cannot be trained on; the message names the file and the column or value."""


@dataclass
class Table:
    features: np.ndarray  # (n, f) float32, NaN for missing values
    target: np.ndarray  # (n,) int class index (classification) or float32 (regression)
    feature_names: list[str]
    target_name: str
    task: str  # binary | multiclass | regression
    classes: list[object] = field(default_factory=list)  # class index -> original label; [] for regression

    def profile(self) -> dict[str, object]:
        """Counts logged with the dataset, so a run shows what it was trained on."""
        out: dict[str, object] = {
            "rows": len(self.target),
            "features": len(self.feature_names),
            "target": self.target_name,
            "task": self.task,
            "missing_values": int(np.isnan(self.features).sum()),
        }
        if self.classes:
            counts = np.bincount(self.target, minlength=len(self.classes))
            out["class_counts"] = {str(c): int(n) for c, n in zip(self.classes, counts, strict=True)}
        return out


def read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise TableError(f"data file not found: {path}")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise TableError(f"{path}: the CSV file is empty (no header, no rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise TableError(f"{path}: not a readable CSV: {exc}") from None
    if frame.empty:
        raise TableError(f"{path}: the CSV has a header ({len(frame.columns)} columns) but no data rows")
    return frame


def load_table(path: Path, target: str, task: str = "auto", drop_columns: list[str] | None = None) -> Table:
    """Read and check `path`, returning numeric features and an encoded target."""
    if task not in TASKS:
        raise TableError(f"unknown task {task!r}; choose one of {list(TASKS)}")
    frame = read_csv(path)
    frame = _drop(frame, drop_columns or [], path)
    if target not in frame.columns:
        raise TableError(f"{path}: no target column {target!r}; columns are {list(frame.columns)}")
    y_raw = frame[target]
    _check_target_present(y_raw, path, target)
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise TableError(f"{path}: no feature columns besides the target {target!r}")
    x = _numeric_features(features, path)
    resolved = resolve_task(y_raw, task, path)
    if resolved == "regression":
        return Table(x, y_raw.to_numpy(dtype=np.float32), [str(c) for c in features.columns], target, resolved)
    classes, encoded = np.unique(y_raw.to_numpy(), return_inverse=True)
    return Table(x, encoded.astype(np.int64), [str(c) for c in features.columns], target, resolved, _plain(classes))


def _drop(frame: pd.DataFrame, columns: list[str], path: Path) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TableError(f"{path}: cannot drop column(s) {missing}: not in {list(frame.columns)}")
    return frame.drop(columns=columns)


def _check_target_present(y: pd.Series, path: Path, target: str) -> None:
    empty = np.flatnonzero(y.isna().to_numpy())
    if len(empty):
        rows = ", ".join(str(i + 2) for i in empty[:5])  # +2: 1-based and the header line
        raise TableError(f"{path}: target column {target!r} is empty in {len(empty)} row(s) (CSV lines {rows}...)")


def _numeric_features(features: pd.DataFrame, path: Path) -> np.ndarray:
    columns = {}
    for name in features.columns:
        column = features[name]
        if pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
            columns[name] = column.astype(np.float32)
            continue
        converted = pd.to_numeric(column, errors="coerce")
        bad = column[converted.isna() & column.notna()]
        if len(bad):
            raise TableError(
                f"{path}: feature column {name!r} is not numeric (e.g. {bad.iloc[0]!r} on CSV line "
                f"{bad.index[0] + 2}); encode it as numbers or leave it out with --drop-columns"
            )
        columns[name] = converted.astype(np.float32)
    matrix: np.ndarray = pd.DataFrame(columns).to_numpy(dtype=np.float32, na_value=np.nan)
    return matrix


def resolve_task(y: pd.Series, task: str, path: Path) -> str:
    """`auto`: text/bool targets are classes; integer targets with few values are classes; else regression."""
    name = y.name
    numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
    n_classes = int(y.nunique())
    if task == "regression":
        if not numeric:
            raise TableError(f"{path}: task 'regression' needs a numeric target, but {name!r} holds {y.iloc[0]!r}")
        return task
    if task == "auto":
        integral = numeric and bool(np.all(np.mod(y.to_numpy(dtype=np.float64), 1) == 0))
        if numeric and not (integral and n_classes <= MAX_INTEGER_CLASSES):
            return "regression"
    if n_classes < 2:
        raise TableError(f"{path}: target column {name!r} has a single class ({y.iloc[0]!r}); need at least two")
    if task == "binary" and n_classes != 2:
        raise TableError(f"{path}: task 'binary' needs 2 classes, but {name!r} has {n_classes}")
    return "binary" if n_classes == 2 else "multiclass"


def _plain(values: np.ndarray) -> list[object]:
    """numpy scalars -> JSON-friendly Python values (the class list goes into ONNX metadata)."""
    return [v.item() if hasattr(v, "item") else v for v in values]


@dataclass
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def split_table(table: Table, val_fraction: float, seed: int) -> Split:
    """A seeded split, stratified by class for classification so every class appears in val."""
    from sklearn.model_selection import train_test_split

    if not 0 < val_fraction < 1:
        raise TableError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if (fold := active_fold()) is not None:  # kiln cv: this fold is the validation part (stratified by class)
        tr, va = fold_indices(len(table.target), fold, table.target if table.classes else None)
        return Split(table.features[tr], table.target[tr], table.features[va], table.target[va])
    stratify = None
    if table.classes:
        counts = np.bincount(table.target, minlength=len(table.classes))
        rare = [str(table.classes[i]) for i in np.flatnonzero(counts < 2)]
        if rare:
            raise TableError(f"class(es) {rare} of {table.target_name!r} have fewer than 2 rows; cannot split")
        stratify = table.target
    try:
        x_tr, x_val, y_tr, y_val = train_test_split(
            table.features, table.target, test_size=val_fraction, random_state=seed, stratify=stratify
        )
    except ValueError as exc:
        raise TableError(f"cannot split {len(table.target)} rows with val_fraction={val_fraction}: {exc}") from None
    return Split(x_tr, y_tr, x_val, y_val)


def main(argv: list[str]) -> None:
    if len(argv) not in (2, 3):
        raise SystemExit("usage: python -m projects.skinmodel.data CSV TARGET [TASK]")
    try:
        table = load_table(Path(argv[0]), argv[1], argv[2] if len(argv) == 3 else "auto")
    except DatasetError as err:  # one line, as the train entry point prints it
        raise SystemExit(f"Error: {err.message}") from None
    print(json.dumps({**table.profile(), "classes": table.classes, "feature_names": table.feature_names}, indent=2))


if __name__ == "__main__":
    from core.scripts import script_args

    main(script_args(sys.argv[1:], "python -m projects.skinmodel.data CSV TARGET [TASK]", __doc__, range(2, 4)))
