"""kiln's vocabulary: every `kiln.*` tag name, ONNX metadata key and MLflow system tag kiln reads or writes.

    python -c "from core import vocab; print(vocab.METRIC, vocab.run_tag('stopped_by'), sorted(vocab.CONTRACT_KEYS))"

This module is the one place such a name is spelled (as timm's `_registry.py` is the one place a model name
exists); everything else imports it. Tags are MLflow run, model-version, registered-model and experiment tags;
metadata keys are the ONNX `metadata_props` of an exported model (the contract in `core/contract.py`, plus the
drift reference profile). `run_tag(name)` turns a short name (`"best_epoch"`) into its tag and refuses a name
not declared here, so a typo fails at once instead of writing a tag nobody reads.
"""

from __future__ import annotations

PREFIX = "kiln."

# --- MLflow's own tags (spelled by MLflow; kiln writes or filters on them) ---
PARENT_TAG = "mlflow.parentRunId"  # a nested run's parent (kiln cv / tune / study children)
NOTE_TAG = "mlflow.note.content"  # a run's description in the MLflow UI
RUN_NAME_TAG = "mlflow.runName"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # experiment tag; MLflow 3's UI picks runs vs GenAI views by it
TRAINING_KIND = "custom_model_development"  # its value for model training: the UI opens on the runs table

# --- the model contract: ONNX metadata_props keys (also version tags: task, metric, mode) ---
TASK = "kiln.task"  # segmentation, detection, tabular or regression
FAMILY = "kiln.family"  # the model family that trained it (edgnet, microseg, yolo, ...)
PREPROCESS = "kiln.preprocess"  # JSON: how an image (or a table row) becomes the input tensor
POSTPROCESS = "kiln.postprocess"  # JSON: how the output becomes an answer
METRIC = "kiln.metric"  # the ranking metric versions are promoted by (also a run, version and model tag)
MODE = "kiln.mode"  # "max" or "min" for METRIC
MODEL_NAME = "kiln.model_name"  # the registered model name it was exported for
RUN_ID = "kiln.run_id"  # the MLflow run that produced it
CONTRACT_KEYS = frozenset({TASK, FAMILY, PREPROCESS, POSTPROCESS, METRIC, MODE, MODEL_NAME, RUN_ID})
PROFILE_KEY = "kiln_profile"  # metadata key (not a contract key): the drift reference profile, JSON
METADATA_KEYS = CONTRACT_KEYS | {PROFILE_KEY}  # every metadata key kiln writes into a model

# --- run tags written by training (projects/common/tracking.py, registration.py, callbacks.py, the families) ---
PRESET = "kiln.preset"
VARIANT = "kiln.variant"
MODEL = "kiln.model"  # cr_recon's architecture
LOSS = "kiln.loss"
MODEL_YAML = "kiln.model_yaml"
MODEL_SOURCE = "kiln.model_source"
TEACHER = "kiln.teacher"  # microseg's distillation teacher
DATASET = "kiln.dataset"  # the dataset used: a name, or a dataset:NAME@vN reference
BASELINE = "kiln.baseline"  # the ranking metric's value for the family's trivial model
BASELINE_KIND = "kiln.baseline_kind"  # what that trivial model is ("all-background mask")
BASELINE_P = "kiln.baseline_p"  # one-sided p-value of "the model beats its trivial baseline" (register=auto)
STOPPED_BY = "kiln.stopped_by"  # an epoch listener ended the run early, and why
RESUMED_INTO = "kiln.resumed_into"  # on a launcher run: the run training resumed in
PHASE = "kiln.phase"  # after the epochs: "exporting", then "registering" (the jobs page shows it)
REGISTERED = "kiln.registered"  # "true" or "false"
NOT_REGISTERED_REASON = "kiln.not_registered_reason"
REGISTERED_VERSION = "kiln.registered_version"
BEST_EPOCH = "kiln.best_epoch"
BEST_ITERATION = "kiln.best_iteration"
N_TREES = "kiln.n_trees"
EPOCHS_RUN = "kiln.epochs_run"
ONNX_MAX_ABS_DIFF = "kiln.onnx_max_abs_diff"  # the exported model against torch on a validation batch
FUSE_MAX_ABS_DIFF = "kiln.fuse_max_abs_diff"
PER_CLASS_AP50 = "kiln.per_class_ap50"  # JSON: class -> AP50
ERROR = "kiln.error"  # a failed child run's error message (kiln tune, kiln cv)
ADVICE = "kiln.advice"  # kiln advise: the kinds of advice found, or "healthy"
FOOTPRINT_ERROR = "kiln.footprint_error"  # why the footprint profile of a registered model failed

# --- the jobs service ---
JOB_ID = "kiln.job_id"

# --- efficiency: kiln optimize, kiln study ---
SOURCE_VERSION = "kiln.source_version"  # an int8 version: the fp32 version it was quantized from
OPTIMIZED_FROM = "kiln.optimized_from"  # run tag: "<model>/<version>"
INT8 = "kiln.int8"
METRIC_DROP = "kiln.metric_drop"
SPEEDUP = "kiln.speedup"
STUDY = "kiln.study"  # a study cell's parent run id, or "budget" on a budget study's parent
CELL = "kiln.cell"

# --- kiln tune: run tags are TUNE_PREFIX + a key; the Optuna study's user attributes ---
TUNE_PREFIX = "kiln.tune."
TUNE_STUDY = TUNE_PREFIX + "study"
TUNE_STORAGE = TUNE_PREFIX + "storage"
TUNE_TARGET = TUNE_PREFIX + "target"
TUNE_TRIAL = TUNE_PREFIX + "trial"
TUNE_STATE = TUNE_PREFIX + "state"  # running, complete, pruned, failed, refit
TUNE_WORKER = TUNE_PREFIX + "worker"
TUNE_VALUE = TUNE_PREFIX + "value"
TUNE_BEST_TRIAL = TUNE_PREFIX + "best_trial"
TUNE_BEST_RUN = TUNE_PREFIX + "best_run"
CURVE_NOISE = "kiln.curve_noise"  # an Optuna trial attribute: its epoch-to-epoch noise (the forecast pruner's margin)
TUNE_BEST_PREFIX = TUNE_PREFIX + "best."  # + a hyperparameter: the best trial's value
TUNE_REGISTERED_VERSION = TUNE_PREFIX + "registered_version"
TUNE_REGISTERED_RUN = TUNE_PREFIX + "registered_run"  # the trial run the registered version was exported from
STUDY_WORKER_ATTR = "kiln.worker"  # Optuna trial user attribute: the worker process that ran it
STUDY_PARENT_ATTR = "kiln.parent_run_id"  # Optuna study user attributes
STUDY_TARGET_ATTR = "kiln.target"
STUDY_METRIC_ATTR = METRIC

# --- kiln cv ---
CV_PREFIX = "kiln.cv."
CV_KIND = CV_PREFIX + "kind"  # "folds" or "seeds"
CV_N = CV_PREFIX + "n"
CV_TARGET = CV_PREFIX + "target"
CV_SEED = CV_PREFIX + "seed"
CV_FOLD = CV_PREFIX + "fold"
CV_ROLE = CV_PREFIX + "role"  # refit, registered
CV_REGISTERED_VERSION = CV_PREFIX + "registered_version"
CV_REGISTERED_RUN = CV_PREFIX + "registered_run"
CV_VALUES_PREFIX = CV_PREFIX + "values."  # + metric: JSON list of the per-fold or per-seed values

# --- registry ---
DEFAULT_ALIAS = "production"  # the alias promotions move unless told otherwise (an MLflow alias, not a tag)
CANARY_ALIAS = "canary"  # the alias of a running canary's candidate
HISTORY_PREFIX = "kiln.history."  # registered-model tags, + a UTC time: the promotion timeline (JSON)
CANARY = "kiln.canary"  # registered-model tag: the running canary (JSON)
PROMOTION_MODEL = "kiln.promotion.model"  # run tags of the MLproject `promote` entry point
PROMOTION_OUTCOME = "kiln.promotion.outcome"
PROMOTION_ALIAS = "kiln.promotion.alias"
PROMOTION_VERSION = "kiln.promotion.version"

# --- dataset versions (data/versions.py) ---
DATASET_NAME = "kiln.dataset.name"
DATASET_VERSION = "kiln.dataset.version"
DATASET_DIGEST = "kiln.dataset.digest"
DATASET_PARENT = "kiln.dataset.parent"
DATASET_RUN_ID = "kiln.dataset.run_id"
DATASET_KIND = "kiln.dataset.kind"  # images (images/labels/masks) or arrays (a folder of .npy files)
DATASET_SHAPES = "kiln.dataset.shapes"  # an arrays version: each file group's per-sample shape and dtype

# --- cloud training (cloud/sagemaker_backend.py) ---
SAGEMAKER_PREFIX = "kiln.sagemaker."
SAGEMAKER_JOB_NAME = SAGEMAKER_PREFIX + "job_name"
SAGEMAKER_JOB_ARN = SAGEMAKER_PREFIX + "job_arn"
SAGEMAKER_INSTANCE_TYPE = SAGEMAKER_PREFIX + "instance_type"
SAGEMAKER_SPOT = SAGEMAKER_PREFIX + "spot"
SAGEMAKER_SOURCE = SAGEMAKER_PREFIX + "source"
SAGEMAKER_CHECKPOINTS = SAGEMAKER_PREFIX + "checkpoints"
SAGEMAKER_FAILURE_REASON = SAGEMAKER_PREFIX + "failure_reason"
SAGEMAKER_BILLABLE_SECONDS = SAGEMAKER_PREFIX + "billable_seconds"

# --- logger names (documented: KILN_ACCESS_LOG writes to SERVING_LOG + ".access") ---
SERVING_LOG = "kiln.serving"  # + ".access", ".errors", ".canary", ...: the server's loggers

# Every plain `kiln.<name>` tag declared above, by its short name (what `run_tag` accepts).
TAGS: dict[str, str] = {
    value[len(PREFIX) :]: value
    for name, value in dict(globals()).items()
    if name.isupper()
    and isinstance(value, str)
    and value.startswith(PREFIX)
    and not value.endswith(".")
    and name != "SERVING_LOG"
}


def run_tag(name: str) -> str:
    """`run_tag("best_epoch")` -> "kiln.best_epoch"; an undeclared name raises ValueError naming it."""
    tag = TAGS.get(name)
    if tag is None:
        raise ValueError(f"unknown kiln tag {PREFIX}{name}; declare it in core/vocab.py (known: {sorted(TAGS)})")
    return tag
