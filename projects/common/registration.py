"""Whether a run registers its model: only when the model beats its family's trivial baseline, unless told.

    mlflow run . -e edgnet --env-manager local -P epochs=1 -P register=always
    kiln train safety_detection --set epochs=1 --set register=never

Every family tags its run with the value its ranking metric would have for a trivial model of the task
(`kiln.baseline`: the IoU of the best mask that ignores the image, mAP 0 of a detector that finds nothing, the
Pearson of the mean spectrum, AUC 0.5 of a constant score). With `register=auto` (the default) the exported model
registers only when it is *significantly* better than that trivial model on the validation examples: the family
hands in the per-example evidence (`registry.baseline.BaselineTest`: validation scores and labels for an AUC,
per-row losses of the model and of the trivial model, per-image overlaps of the model's mask and of the best trivial
mask), and the one-sided test must reach `REGISTER_ALPHA` (0.05), so a model that learned nothing registers about 5%
of the time rather than half of it (bench/decisions.py measures both rates). A family without per-example evidence
(yolo's mAP) falls back to beating the baseline's value. `always` registers whatever the metric, `never` only logs
the model in the run. A run that does not register still ends FINISHED, with the tags `kiln.registered=false` and
`kiln.not_registered_reason` (with the test's p-value in `kiln.baseline_p`), one console line saying why, and its
ONNX model logged in the run (the MLflow UI's *Register model* button, or `-P register=always`, registers it later).

Bookkeeping values (the registered version, the best epoch, the ONNX check's largest difference) are tags
here, not metrics: metrics are for what was measured, and the MLflow UI charts every metric.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import mlflow

from core import vocab
from core.contract import Ranking
from core.errors import ConfigError
from projects.common.config import REGISTER_MODES as REGISTER_MODES
from projects.common.config import register_field as register_field
from projects.common.tracking import kiln_tags
from registry.baseline import (
    BASELINE_KIND_TAG,
    BASELINE_P_TAG,
    BASELINE_TAG,
    REGISTER_ALPHA,
    BaselineTest,
    at_baseline,
)

REGISTERED_TAG = vocab.REGISTERED  # "true" or "false"
REASON_TAG = vocab.NOT_REGISTERED_REASON


def check_mode(mode: str) -> str:
    if mode not in REGISTER_MODES:
        raise ConfigError(f"register={mode!r} is not one of {list(REGISTER_MODES)}", field="register")
    return mode


@dataclass(frozen=True)
class Decision:
    register: bool
    reason: str = ""  # why the model is not registered; "" when it is
    comparison: str = ""  # "best_val_iou 0.41 beats the trivial baseline 0 (all-background mask)"


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def decide(
    mode: str,
    ranking: Ranking,
    value: float | None,
    baseline: float | None,
    baseline_kind: str = "",
    evidence: BaselineTest | None = None,
    alpha: float = REGISTER_ALPHA,
) -> Decision:
    """Register or not: `mode` (auto, always, never), the exported model's ranking-metric `value` and the
    family's trivial `baseline` (None when the run has none; then auto registers). With `evidence` (the test
    on the validation examples) auto registers only when the model is significantly better, at `alpha`."""
    check_mode(mode)
    kind = f" ({baseline_kind})" if baseline_kind else ""
    if value is not None and evidence is not None:
        comparison = evidence.sentence(alpha)
        beaten = evidence.beats(alpha)
    elif value is None or baseline is None:
        comparison = f"{ranking.metric} {'missing' if value is None else _fmt(value)}; no trivial baseline known"
        if baseline is not None:
            comparison = f"{ranking.metric} was not measured; the trivial baseline is {_fmt(baseline)}{kind}"
    elif at_baseline(value, baseline, ranking.mode):
        comparison = f"{ranking.metric} {_fmt(value)} is no better than the trivial baseline {_fmt(baseline)}{kind}"
    else:
        comparison = f"{ranking.metric} {_fmt(value)} beats the trivial baseline {_fmt(baseline)}{kind}"
    if mode == "never":
        return Decision(False, "register=never", comparison)
    if mode == "always":
        return Decision(True, "", comparison)
    if value is None or evidence is None:
        beaten = baseline is None or (value is not None and not at_baseline(value, baseline, ranking.mode))
    return Decision(True, "", comparison) if beaten else Decision(False, comparison, comparison)


def run_baseline() -> tuple[float | None, str]:
    """The active run's `kiln.baseline` (None when absent or not a number) and `kiln.baseline_kind`."""
    run = mlflow.active_run()
    if run is None:
        return None, ""
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    try:
        baseline = float(tags[BASELINE_TAG])
    except (KeyError, ValueError):
        baseline = None
    return baseline, tags.get(BASELINE_KIND_TAG, "")


def decide_for_run(
    mode: str, ranking: Ranking, final: Mapping[str, float], evidence: BaselineTest | None = None
) -> Decision:
    """`decide` with the value from `final`, the baseline the active run is tagged with and the family's test."""
    baseline, kind = run_baseline()
    value = final.get(ranking.metric)
    value = None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    return decide(mode, ranking, value, baseline, kind, evidence)


def bookkeeping(**values: Any) -> None:
    """Tag the active run with counters and checks (`kiln.best_epoch`, `kiln.onnx_max_abs_diff`, ...)."""
    text = {k: (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)) for k, v in values.items()}
    mlflow.set_tags(kiln_tags(**{k: v for k, v in text.items() if v != "None"}))


@dataclass(frozen=True)
class Outcome:
    model_name: str
    version: int | None  # the registered version; None when the model was not registered
    decision: Decision | None  # None when nothing was exported (a listener's stop, kiln tune/cv trials)

    @property
    def note(self) -> str:
        """A clause for the run's description."""
        if self.version is not None:
            return f"registered {self.model_name} v{self.version}"
        return f"not registered: {self.decision.reason}" if self.decision else "not exported"


def export_and_register(
    mode: str,
    ranking: Ranking,
    final: Mapping[str, float],
    model_name: str,
    export: Callable[[bool], int | None],
    *,
    allowed: bool = True,
    evidence: Callable[[], BaselineTest | None] | None = None,
) -> Outcome:
    """Decide, then `export(register)` (which logs the ONNX model and registers it when told, returning the
    version), then tag the run with the outcome. `allowed=False` (see `callbacks.wants_export`) skips the export.
    `evidence()` runs the family's test against its trivial model (only when the run exports)."""
    if not allowed:
        mlflow.set_tags({REGISTERED_TAG: "false", REASON_TAG: "not exported (stopped by a listener, or a trial)"})
        return Outcome(model_name, None, None)
    test = evidence() if evidence is not None else None
    if test is not None:
        mlflow.set_tags({BASELINE_P_TAG: f"{test.p_value:.4g}", BASELINE_TAG: f"{test.baseline:.6g}",
                         BASELINE_KIND_TAG: test.baseline_kind})  # fmt: skip
    decision = decide_for_run(mode, ranking, final, test)
    version = export(decision.register)
    if version is not None:
        mlflow.set_tags({REGISTERED_TAG: "true", **kiln_tags(registered_version=str(version))})
        return Outcome(model_name, version, decision)
    mlflow.set_tags({REGISTERED_TAG: "false", REASON_TAG: decision.reason[:5000]})
    hint = "" if mode == "never" else "; -P register=always (--register always) registers it anyway"
    print(f"Not registered: {decision.reason}. The ONNX model is logged in the run{hint}.", flush=True)
    return Outcome(model_name, None, decision)


def record_and_register(
    mode: str,
    ranking: Ranking,
    final: dict[str, float],
    model_name: str,
    export: Callable[[bool], int | None],
    *,
    best_epoch: int,
    allowed: bool = True,
    evidence: Callable[[], BaselineTest | None] | None = None,
) -> Outcome:
    """The end of a run of the shared trainer: log `final` (what was measured), tag the best epoch, then
    `export_and_register`; `final` gains `best_epoch` and, when registered, `registered_version`."""
    mlflow.log_metrics(final)  # measured; the counters below are tags
    bookkeeping(best_epoch=best_epoch)
    outcome = export_and_register(mode, ranking, final, model_name, export, allowed=allowed, evidence=evidence)
    final["best_epoch"] = float(best_epoch)
    if outcome.version is not None:
        final["registered_version"] = float(outcome.version)
    return outcome
