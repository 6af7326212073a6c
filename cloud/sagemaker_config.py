"""The SageMaker backend's config (`--backend-config sm.json`): every key typed, defaulted and checked up front.

    python -m cloud.sagemaker_config sm.json        # prints the resolved config or one line naming the bad key

Nothing here talks to AWS: `parse_backend_config` checks types, ranges and formats (the role is an IAM role ARN,
the instance type is one SageMaker trains on, the S3 prefix is `s3://bucket/...`), so a typo stops before any
job or run exists. `cloud.sagemaker_backend` then checks what needs AWS (the bucket exists).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from core.errors import ConfigError

# Keys `mlflow run` adds to every backend config (mlflow.projects.utils.PROJECT_*); they are not ours to check.
MLFLOW_KEYS = frozenset(
    {
        "ENV_MANAGER",
        "SYNCHRONOUS",
        "DOCKER_ARGS",
        "STORAGE_DIR",
        "build_image",
        "docker_auth",
        "_mlflow_local_backend_run_id",
    }
)
# Set by the job service, which opens the MLflow run itself before it calls `mlflow run`.
RUN_ID_KEY = "run_id"

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_S3_PREFIX = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(?P<key>.*))?$")
_IMAGE = re.compile(r"^[\w.\-]+(:\d+)?/[\w.\-/]+(:[\w.\-]+|@sha256:[0-9a-f]{64})?$")
MAX_RUN_LIMIT = 28 * 24 * 3600  # SageMaker's cap on MaxRuntimeInSeconds (28 days)
MAX_INSTANCES = 100  # hosts in one data-parallel job (SageMaker's own quota is per account and usually lower)


@dataclass(frozen=True)
class SageMakerConfig:
    role_arn: str  # IAM role the job runs as: arn:aws:iam::<account>:role/<name>
    image_uri: str  # the training image (deploy/Dockerfile), pushed to ECR
    s3_prefix: str  # s3://bucket/prefix; the job's code, checkpoints and output go under <prefix>/<job name>/
    instance_type: str = "ml.g5.xlarge"  # one A10G GPU; any instance type SageMaker trains on
    instance_count: int = 1  # hosts; more than 1 needs distribution "ddp" (else each would train the run again)
    distribution: str = "none"  # "ddp": every host and GPU trains one run data-parallel (torch.distributed)
    volume_size_gb: int = 30  # EBS volume for /opt/ml (data, checkpoints, model)
    max_run_seconds: int = 24 * 3600  # SageMaker stops the job after this much training time
    use_spot: bool = False  # managed spot training: cheaper, may be interrupted and restarted from checkpoints
    max_wait_seconds: int | None = None  # spot only: training plus waiting for capacity; default 2x max_run_seconds
    region: str | None = None  # AWS region; default: the AWS SDK's (AWS_DEFAULT_REGION, ~/.aws/config)
    tags: dict[str, str] = field(default_factory=dict)  # AWS tags on the training job
    tracking_uri: str | None = None  # the server the job reports to; default: the client's MLFLOW_TRACKING_URI
    run_id: str | None = None  # the MLflow run to report into (the job service opens it); default: a new run
    wait: bool = True  # wait for the job, streaming its log lines; false: return once the job is created

    @property
    def bucket(self) -> str:
        match = _S3_PREFIX.match(self.s3_prefix)
        assert match is not None  # checked in parse_backend_config
        return match["bucket"]

    @property
    def key_prefix(self) -> str:
        match = _S3_PREFIX.match(self.s3_prefix)
        assert match is not None
        return (match["key"] or "").strip("/")

    def effective_max_wait(self) -> int | None:
        if not self.use_spot:
            return None
        return self.max_wait_seconds or min(2 * self.max_run_seconds, MAX_RUN_LIMIT)


def load_backend_config(source: str | Path | Mapping[str, Any]) -> SageMakerConfig:
    """A dict (what `mlflow run` hands a backend), a JSON file, or a JSON text -> checked config."""
    if isinstance(source, Mapping):
        return parse_backend_config(source)
    text = str(source)
    path = Path(text)
    if not text.lstrip().startswith("{"):
        if not path.is_file():
            raise ConfigError(f"backend config {text!r}: no such file", field="backend_config")
        text = path.read_text(encoding="utf-8")
        where = str(path)
    else:
        where = "--backend-config"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"backend config {where}: not JSON ({err.msg} at line {err.lineno} column {err.colno})",
            field="backend_config",
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"backend config {where}: expected a JSON object, got {type(data).__name__}")
    return parse_backend_config(data)


def parse_backend_config(raw: Mapping[str, Any]) -> SageMakerConfig:
    """Check every key; the first problem raises a ConfigError whose message starts with the key."""
    known = {f.name for f in dataclasses.fields(SageMakerConfig)}
    unknown = sorted(k for k in raw if k not in known and k not in MLFLOW_KEYS)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown SageMaker backend key; known: {sorted(known)}", field=unknown[0])
    values = {k: v for k, v in raw.items() if k in known and v is not None}
    for key in ("role_arn", "image_uri", "s3_prefix"):
        if not values.get(key):
            raise ConfigError(f"{key}: required in the SageMaker backend config", field=key)
    for name, check in _CHECKS.items():
        if name in values:
            values[name] = check(name, values[name])
    config = SageMakerConfig(**values)
    _check_together(config)
    return config


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name}: expected a non-empty string, got {value!r}", field=name)
    return value.strip()


def _integer(low: int, high: int) -> Any:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
            raise ConfigError(f"{name}: expected a whole number, got {value!r}", field=name)
        if not low <= int(value) <= high:
            raise ConfigError(f"{name}: must be between {low} and {high}, got {value!r}", field=name)
        return int(value)

    return check


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name}: expected true or false, got {value!r}", field=name)
    return value


def _role_arn(name: str, value: Any) -> str:
    text = _text(name, value)
    if not _ROLE_ARN.match(text):
        raise ConfigError(
            f"{name}: {text!r} is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)", field=name
        )
    return text


def _image_uri(name: str, value: Any) -> str:
    text = _text(name, value)
    if not _IMAGE.match(text):
        raise ConfigError(
            f"{name}: {text!r} is not an image URI (<account>.dkr.ecr.<region>.amazonaws.com/<repo>:<tag>)",
            field=name,
        )
    return text


def _instance_type(name: str, value: Any) -> str:
    text = _text(name, value)
    known = training_instance_types()
    if text not in known:
        close = sorted(t for t in known if t.split(".")[1:2] == text.split(".")[1:2])[:8]
        hint = f"; {text.split('.')[1]} types: {close}" if close else "; e.g. ml.g5.xlarge, ml.m5.xlarge"
        raise ConfigError(f"{name}: {text!r} is not a SageMaker training instance type{hint}", field=name)
    return text


def _s3_prefix(name: str, value: Any) -> str:
    text = _text(name, value).rstrip("/")
    if not _S3_PREFIX.match(text):
        raise ConfigError(f"{name}: {text!r} is not an S3 prefix (s3://bucket/prefix)", field=name)
    return text


def _region(name: str, value: Any) -> str:
    text = _text(name, value)
    if not _REGION.match(text):
        raise ConfigError(f"{name}: {text!r} is not an AWS region name (e.g. eu-west-1)", field=name)
    return text


def _tags(name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected an object of tag names to values, got {value!r}", field=name)
    for key, item in value.items():
        if not isinstance(item, str) or not 1 <= len(key) <= 128 or len(item) > 256:
            raise ConfigError(f"{name}.{key}: tag names are 1-128 characters, values strings up to 256", field=name)
    return dict(value)


DISTRIBUTIONS = ("none", "ddp")


def _distribution(name: str, value: Any) -> str:
    text = _text(name, value).lower()
    if text not in DISTRIBUTIONS:
        raise ConfigError(f"{name}: {value!r} is not one of {list(DISTRIBUTIONS)}", field=name)
    return text


def _tracking_uri(name: str, value: Any) -> str:
    text = _text(name, value)
    if not text.startswith(("http://", "https://")):
        raise ConfigError(
            f"{name}: a SageMaker job reports to a tracking server over http(s); got {text.split(':')[0]}:...",
            field=name,
        )
    return text.rstrip("/")


_CHECKS: dict[str, Any] = {
    "role_arn": _role_arn,
    "image_uri": _image_uri,
    "s3_prefix": _s3_prefix,
    "instance_type": _instance_type,
    "instance_count": _integer(1, MAX_INSTANCES),
    "distribution": _distribution,
    "volume_size_gb": _integer(1, 16384),
    "max_run_seconds": _integer(1, MAX_RUN_LIMIT),
    "use_spot": _boolean,
    "max_wait_seconds": _integer(1, MAX_RUN_LIMIT),
    "region": _region,
    "tags": _tags,
    "tracking_uri": _tracking_uri,
    "run_id": _text,
    "wait": _boolean,
}


def _check_together(config: SageMakerConfig) -> None:
    if config.instance_count > 1 and config.distribution != "ddp":
        raise ConfigError(
            f'instance_count: {config.instance_count} hosts need distribution: "ddp" (without it each host would '
            "train the same run again)",
            field="instance_count",
        )
    if config.max_wait_seconds is not None and not config.use_spot:
        raise ConfigError("max_wait_seconds: only used with use_spot: true", field="max_wait_seconds")
    wait = config.effective_max_wait()
    if wait is not None and wait < config.max_run_seconds:
        raise ConfigError(
            f"max_wait_seconds: must be at least max_run_seconds ({config.max_run_seconds}), got {wait}",
            field="max_wait_seconds",
        )


@cache
def training_instance_types() -> frozenset[str]:
    """The instance types SageMaker's API accepts for training, from botocore's service model (no network)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return frozenset(model.shape_for("TrainingInstanceType").enum)


def main(argv: list[str]) -> None:
    from core.errors import KilnError

    try:
        config = load_backend_config(argv[0] if argv else "sm.json")
    except KilnError as err:
        sys.exit(f"Error: {err.message}")
    print(json.dumps(dataclasses.asdict(config), indent=2))


if __name__ == "__main__":
    from core.scripts import script_args

    main(script_args(sys.argv[1:], "python -m cloud.sagemaker_config [SM.json]", __doc__, range(0, 2)))
