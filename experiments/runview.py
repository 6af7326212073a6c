"""One tracked run as the advisor sees it: params, tags, final metrics and the per-epoch series that matter.

    python -c "from experiments.runview import load_run; v = load_run('RUN_ID'); print(v.monitor, v.unit)"

Every family names its curves differently (`train_loss` in the PyTorch trainer, `train/box_loss` ... in the
YOLO bridge, `train_logloss` per boosting round in skinmodel), and its knobs too (`lr`, `lr0`,
`learning_rate`; `epochs`, `n_estimators`). This module maps them onto one vocabulary, so the advisor's rules
are written once for every family.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from core import vocab
from core.errors import UserError

# Loss curves, most specific first: (train key or prefix, val key or prefix). A prefix ending in "/" sums the
# components that end in "loss" (YOLO's box, cls and dfl losses).
LOSS_KEYS: tuple[tuple[str, str], ...] = (
    ("train_loss", "val_loss"),
    ("train/", "val/"),
    ("train_mlogloss", "val_mlogloss"),
    ("train_logloss", "val_logloss"),
    ("train_rmse", "val_rmse"),
)
# Knob -> the param names families use for it, in order of preference.
KNOBS: dict[str, tuple[str, ...]] = {
    "lr": ("lr", "learning_rate", "lr0"),
    "epochs": ("epochs", "n_estimators"),
    "patience": ("patience", "early_stopping_rounds"),
    "batch": ("batch_size", "batch"),
    "workers": ("workers",),
    "val_fraction": ("val_fraction",),
    "samples": ("num_samples",),
    "depth": ("max_depth",),
    "weight_decay": ("weight_decay",),
}
STOPPED_BY_TAG = vocab.STOPPED_BY  # set by the epoch-listener mechanism when a listener ends a run


class RunNotFound(UserError):
    status_code = 404

    def __init__(self, run_id: str, why: str) -> None:
        super().__init__(f"run {run_id!r} cannot be read from the tracking store: {why}")


Series = list[tuple[int, float]]  # (step, value), sorted by step


@dataclass
class RunView:
    run_id: str
    experiment_id: str
    name: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    final: dict[str, float]  # latest value of every metric
    series: dict[str, Series] = field(default_factory=dict)  # every non-system metric's history
    system: dict[str, Series] = field(default_factory=dict)  # system/* metrics
    monitor: str | None = None  # the per-epoch series of the ranking metric
    mode: str = "max"
    ranking: str | None = None  # the ranking metric as tagged (kiln.metric), e.g. best_val_iou
    train_loss: Series = field(default_factory=list)
    val_loss: Series = field(default_factory=list)

    @property
    def unit(self) -> str:
        """What one step is: XGBoost logs boosting rounds, every other family epochs."""
        return "round" if "n_estimators" in self.params else "epoch"

    def knob(self, name: str) -> tuple[str, float] | None:
        """(param name, value) of a knob this run has, e.g. knob('lr') -> ('learning_rate', 0.05)."""
        for param in KNOBS[name]:
            value = _number(self.params.get(param))
            if value is None:
                continue
            if param == "lr0" and value == 0:  # YOLO's lr0=0 means "auto"; the bridge logs the choice
                value = _number(self.params.get("yolo.lr0"))
                if value is None:
                    continue
            return param, value
        return None

    def values(self, key: str) -> list[float]:
        return [v for _, v in self.series.get(key, [])]

    def epochs_run(self) -> int:
        """Epochs (rounds) the run logged: the longest of its monitor and loss curves (1 for a 1-epoch run)."""
        curves = [self.series.get(self.monitor or "", []), self.val_loss, self.train_loss]
        return max(len(c) for c in curves)

    @property
    def cv_parent(self) -> bool:
        """A `kiln cv` parent: it trains nothing itself; its children do, and it holds their statistics."""
        return (
            vocab.CV_KIND in self.tags
            and vocab.CV_ROLE not in self.tags
            and vocab.CV_FOLD not in self.tags
            and vocab.CV_SEED not in self.tags
        )

    @property
    def optimized(self) -> bool:
        """A `kiln optimize` run (int8 or other post-training version): no curves, another model's numbers."""
        return vocab.OPTIMIZED_FROM in self.tags or self.tags.get(vocab.INT8) == "true"

    def baseline(self) -> float | None:
        """The ranking metric's value for the family's trivial model (`kiln.baseline`), when the run tags it."""
        return _number(self.tags.get(vocab.BASELINE))


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def load_run(run_id: str, client: MlflowClient | None = None) -> RunView:
    """Read a run and every metric history it has (one store call per metric key)."""
    client = client or MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise RunNotFound(run_id, err.message) from None
    view = RunView(
        run_id=run.info.run_id, experiment_id=str(run.info.experiment_id), name=run.info.run_name or "",
        status=str(run.info.status), params=dict(run.data.params), tags=dict(run.data.tags),
        final={k: float(v) for k, v in run.data.metrics.items()},
    )  # fmt: skip
    for key in view.final:
        history = sorted((int(m.step), float(m.value)) for m in client.get_metric_history(run_id, key))
        (view.system if key.startswith("system/") else view.series)[key] = history
    resolve_curves(view)
    return view


def resolve_curves(view: RunView) -> None:
    """Fill `train_loss`, `val_loss`, `monitor`, `mode` and `ranking` from the run's series and tags."""
    for train_key, val_key in LOSS_KEYS:
        train, val = _loss_curve(view.series, train_key), _loss_curve(view.series, val_key)
        if train or val:
            view.train_loss, view.val_loss = train, val
            break
    view.ranking = view.tags.get(vocab.METRIC)
    view.mode = view.tags.get(vocab.MODE) or "max"
    # The longest curve: `val_iou` per epoch rather than `best_val_iou`, logged once at the end.
    candidates = sorted(_monitor_candidates(view.ranking), key=lambda k: -len(view.series.get(k, [])))
    if candidates and view.series.get(candidates[0]):
        view.monitor = candidates[0]
        return
    if view.val_loss:  # no tagged metric with a curve: judge by the validation loss
        view.series["val_loss*"] = view.val_loss
        view.monitor, view.mode = "val_loss*", "min"


def _monitor_candidates(ranking: str | None) -> list[str]:
    if not ranking:
        return []
    names = [ranking]
    if ranking.startswith("best_"):
        names.append(ranking.removeprefix("best_"))
    if ranking.startswith("best/"):
        names.append("metrics/" + ranking.removeprefix("best/"))
    return names


def _loss_curve(series: Mapping[str, Series], key: str) -> Series:
    if not key.endswith("/"):
        return list(series.get(key, []))
    parts = [series[k] for k in sorted(series) if k.startswith(key) and k.endswith("loss")]
    if not parts:
        return []
    totals: dict[int, float] = {}
    for part in parts:
        for step, value in part:
            totals[step] = totals.get(step, 0.0) + value
    return sorted(totals.items())


def finite(values: Sequence[float]) -> bool:
    return all(math.isfinite(v) for v in values)
