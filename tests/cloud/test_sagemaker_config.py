"""The backend config: every key checked before anything is created, each error naming its key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloud.sagemaker_config import load_backend_config, parse_backend_config
from core.errors import ConfigError

GOOD = {
    "role_arn": "arn:aws:iam::123456789012:role/kiln-training",
    "image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/kiln:cuda",
    "s3_prefix": "s3://kiln-bucket/jobs/",
}


def test_defaults_and_derived_values() -> None:
    config = parse_backend_config({**GOOD, "use_spot": True, "max_run_seconds": 3600, "ENV_MANAGER": "local"})
    assert (config.bucket, config.key_prefix) == ("kiln-bucket", "jobs")
    assert config.instance_type == "ml.g5.xlarge" and config.instance_count == 1
    assert config.effective_max_wait() == 7200


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"role_arn": "kiln-training"}, "role_arn"),
        ({"role_arn": "arn:aws:iam::123:role/x"}, "role_arn"),
        ({"instance_type": "ml.g9.gigantic"}, "instance_type"),
        ({"instance_type": "g5.xlarge"}, "instance_type"),
        ({"instance_count": 2}, "instance_count"),
        ({"instance_count": 101, "distribution": "ddp"}, "instance_count"),
        ({"distribution": "horovod"}, "distribution"),
        ({"volume_size_gb": "30"}, "volume_size_gb"),
        ({"max_run_seconds": 0}, "max_run_seconds"),
        ({"use_spot": "yes"}, "use_spot"),
        ({"max_wait_seconds": 100}, "max_wait_seconds"),
        ({"use_spot": True, "max_run_seconds": 1000, "max_wait_seconds": 10}, "max_wait_seconds"),
        ({"s3_prefix": "kiln-bucket/jobs"}, "s3_prefix"),
        ({"region": "Europe"}, "region"),
        ({"tags": ["a"]}, "tags"),
        ({"tracking_uri": "sqlite:///mlflow.db"}, "tracking_uri"),
        ({"image_uri": "not an image"}, "image_uri"),
        ({"instnce_type": "ml.g5.xlarge"}, "instnce_type"),
        ({"role_arn": None}, "role_arn"),
    ],
)
def test_each_bad_key_is_named(change: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_backend_config({**GOOD, **change})
    assert err.value.message.startswith(f"{key}")
    assert "\n" not in err.value.message


def test_several_hosts_train_one_run_with_ddp() -> None:
    config = parse_backend_config({**GOOD, "instance_count": 2, "distribution": "DDP"})
    assert (config.instance_count, config.distribution) == (2, "ddp")
    with pytest.raises(ConfigError, match='instance_count: 2 hosts need distribution: "ddp"'):
        parse_backend_config({**GOOD, "instance_count": 2})


def test_instance_type_error_lists_the_family() -> None:
    with pytest.raises(ConfigError, match=r"g5 types: \['ml\.g5\.") as err:
        parse_backend_config({**GOOD, "instance_type": "ml.g5.huge"})
    assert err.value.field == "instance_type"


def test_files_and_text(tmp_path: Path) -> None:
    good = tmp_path / "sm.json"
    good.write_text(json.dumps(GOOD))
    assert load_backend_config(good).role_arn == GOOD["role_arn"]
    assert load_backend_config(json.dumps(GOOD)).image_uri == GOOD["image_uri"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"role_arn": ')
    with pytest.raises(ConfigError, match=r"bad\.json: not JSON"):
        load_backend_config(bad)
    with pytest.raises(ConfigError, match="no such file"):
        load_backend_config(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        load_backend_config(tmp_path / "list.json")
