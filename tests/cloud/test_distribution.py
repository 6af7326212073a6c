"""Data-parallel SageMaker jobs: each host's rendezvous from SageMaker's environment, the job request, and a 2-host
job run by the container side in two local /opt/ml trees against the team server.

    .venv/bin/python -m pytest tests/cloud/test_distribution.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import mlflow
import pytest
from conftest import REPO, Team

from cloud import distribution
from cloud.distribution import host_plan
from cloud.localstack import free_port
from cloud.sagemaker_backend import HP_DISTRIBUTION, pack_source, tracked_files, training_job_request
from cloud.sagemaker_config import parse_backend_config
from core.errors import UserError
from projects.common import distributed

GOOD = {
    "role_arn": "arn:aws:iam::123456789012:role/kiln-training",
    "image_uri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/kiln:cuda",
    "s3_prefix": "s3://kiln-bucket/jobs",
}


def test_sm_variables_give_the_hosts_rank_and_processes() -> None:
    plan = host_plan({"SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-2", "SM_NUM_GPUS": "4"})
    assert (plan.node_rank, plan.nproc, plan.is_leader) == (1, 4, False)
    assert plan.env() == {"KILN_NNODES": "2", "KILN_NODE_RANK": "1", "MASTER_ADDR": "algo-1", "MASTER_PORT": "29500"}


def test_resourceconfig_is_the_fallback_and_a_cpu_host_runs_one_process(tmp_path: Path) -> None:
    config = tmp_path / "resourceconfig.json"
    config.write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1", "algo-2"],
                                  "network_interface_name": "eth0"}))  # fmt: skip
    plan = host_plan({}, config, gpus=0)
    assert (plan.node_rank, plan.nproc, plan.is_leader) == (0, 1, True)
    assert plan.env()["GLOO_SOCKET_IFNAME"] == "eth0" and plan.env()["NCCL_SOCKET_IFNAME"] == "eth0"


def test_a_host_outside_the_list_is_refused() -> None:
    with pytest.raises(UserError, match=r"SM_CURRENT_HOST 'algo-3' is not one of SM_HOSTS \['algo-1'\]"):
        host_plan({"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-3"}, gpus=0)
    with pytest.raises(UserError, match="no hosts"):
        host_plan({}, None, gpus=0)


def test_the_trainer_reads_the_variables_the_container_sets() -> None:
    assert (distribution.NODES_ENV, distribution.NODE_RANK_ENV) == (distributed.NODES_ENV, distributed.NODE_RANK_ENV)


def test_a_ddp_job_asks_for_every_host_and_tells_the_container() -> None:
    config = parse_backend_config({**GOOD, "instance_count": 2, "distribution": "ddp"})
    request = training_job_request(config, "job", "edgnet", {"epochs": "3"}, "r" * 32, "1", "s3://b/k/source.tar.gz")
    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert request["HyperParameters"][HP_DISTRIBUTION] == "ddp" and request["HyperParameters"]["epochs"] == "3"
    single = training_job_request(parse_backend_config(GOOD), "job", "edgnet", {}, "r" * 32, "1", "s3://b/k/s.tgz")
    assert HP_DISTRIBUTION not in single["HyperParameters"]


def opt_ml(folder: Path, hyperparameters: dict[str, str]) -> Path:
    root = folder / "opt" / "ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    return root


@pytest.mark.slow
def test_two_hosts_train_one_run_and_the_first_keeps_the_model(team: Team, tmp_path: Path) -> None:
    client = mlflow.MlflowClient(team.uri)
    experiment = client.create_experiment("ddp-container-tests")
    run_id = client.create_run(experiment).info.run_id
    archive = pack_source(REPO, tracked_files(REPO), tmp_path / "source.tar.gz")
    boto3.client("s3", endpoint_url=team.stack.s3.url).upload_file(str(archive), "kiln-artifacts", "ddp/source.tar.gz")
    hyperparameters = {"kiln_entry_point": "edgnet", "kiln_run_id": run_id, "kiln_exp": experiment,
                       "kiln_source": "s3://kiln-artifacts/ddp/source.tar.gz", HP_DISTRIBUTION: "ddp",
                       "epochs": "3", "img_size": "32", "num_samples": "8", "batch_size": "4", "patience": "0",
                       "model_name": "sm_ddp_edgnet", "register": "always"}  # fmt: skip
    hosts = ["127.0.0.1", "127.0.0.2"]  # loopback addresses: the first is the rendezvous
    port = str(free_port())
    procs = []
    for index, host in enumerate(hosts):
        root = opt_ml(tmp_path / f"host{index + 1}", hyperparameters)
        env = team.aws_env(SM_HOSTS=json.dumps(hosts), SM_CURRENT_HOST=host, SM_NUM_GPUS="0", KILN_DIST_PORT=port)
        argv = [sys.executable, "-m", "cloud.container", "train", "--root", str(root)]
        procs.append((root, subprocess.Popen(argv, env=env, cwd=root, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT, text=True)))  # fmt: skip
    outputs = [proc.communicate(timeout=400)[0] for _, proc in procs]
    for (root, proc), out in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out[-4000:]
        assert not (root / "output" / "failure").exists()
    assert "host 127.0.0.1 (1 of 2), 1 process(es)" in outputs[0]
    assert "the model is on host 127.0.0.1" in outputs[1] and "Epoch 1/3" not in outputs[1]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["nproc"] == "1"
    for metric in ("train_loss", "val_iou"):
        assert sorted(m.step for m in client.get_metric_history(run_id, metric)) == [1, 2, 3], metric
    assert len(client.search_runs([experiment])) == 1
    first, second = (root for root, _ in procs)
    assert json.loads((first / "model" / "kiln-model.json").read_text())["name"] == "sm_ddp_edgnet"
    assert not (second / "model").exists()
