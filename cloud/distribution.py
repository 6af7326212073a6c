"""Data-parallel SageMaker jobs: the rendezvous each host takes from SageMaker's environment.

    python -c "from cloud.distribution import host_plan; print(host_plan({'SM_HOSTS': '[\\"algo-1\\"]'}))"

A job made with `distribution: ddp` (`cloud.sagemaker_config`) runs the same entry point command on every host.
On each one `cloud.container` asks `host_plan` for this host's place: the hosts and the current host come from
`SM_HOSTS` / `SM_CURRENT_HOST` (the SageMaker training toolkit's variables), else from
`/opt/ml/input/config/resourceconfig.json`, which SageMaker writes into every container; the processes per host
are `SM_NUM_GPUS` (else the GPUs torch sees), at least one. The first host is the rendezvous (`MASTER_ADDR`, port
`KILN_DIST_PORT`, default 29500). `projects.common.distributed.run` reads `KILN_NNODES` / `KILN_NODE_RANK` and
starts `nproc` ranks on its host; only global rank 0 (on the first host) logs to the MLflow run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError

DEFAULT_PORT = 29500
NODES_ENV, NODE_RANK_ENV = "KILN_NNODES", "KILN_NODE_RANK"  # read by projects.common.distributed.hosts


@dataclass(frozen=True)
class HostPlan:
    hosts: tuple[str, ...]  # every host of the job, in SageMaker's order; the first one is the rendezvous
    current: str  # this host
    nproc: int  # processes on this host: one per GPU, one on a CPU instance
    port: int = DEFAULT_PORT
    interface: str = ""  # the network interface SageMaker names (eth0); gloo and NCCL bind to it

    @property
    def node_rank(self) -> int:
        return self.hosts.index(self.current)

    @property
    def is_leader(self) -> bool:
        """The first host holds global rank 0: the one that logs, exports and registers."""
        return self.node_rank == 0

    def env(self) -> dict[str, str]:
        """The variables the entry point's processes need to meet the other hosts'."""
        values = {
            NODES_ENV: str(len(self.hosts)),
            NODE_RANK_ENV: str(self.node_rank),
            "MASTER_ADDR": self.hosts[0],
            "MASTER_PORT": str(self.port),
        }
        if self.interface:
            values.update(GLOO_SOCKET_IFNAME=self.interface, NCCL_SOCKET_IFNAME=self.interface)
        return values


def host_plan(environ: Mapping[str, str], resource_config: Path | None = None, gpus: int | None = None) -> HostPlan:
    """This host's place in a data-parallel job, from SM_* variables or SageMaker's resourceconfig.json."""
    resource = _read_resource_config(resource_config)
    hosts = _hosts(environ.get("SM_HOSTS"), resource.get("hosts"))
    current = environ.get("SM_CURRENT_HOST") or str(resource.get("current_host") or "")
    if not current and len(hosts) == 1:
        current = hosts[0]
    if current not in hosts:
        raise UserError(f"SM_CURRENT_HOST {current!r} is not one of SM_HOSTS {list(hosts)}")
    nproc = max(_whole("SM_NUM_GPUS", environ["SM_NUM_GPUS"]) if "SM_NUM_GPUS" in environ else _gpus(gpus), 1)
    port = _whole("KILN_DIST_PORT", environ.get("KILN_DIST_PORT", str(DEFAULT_PORT)))
    interface = str(resource.get("network_interface_name") or "")
    return HostPlan(tuple(hosts), current, nproc, port, interface)


def _read_resource_config(path: Path | None) -> dict[str, object]:
    if path is None or not path.is_file():
        return {}
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    return loaded if isinstance(loaded, dict) else {}


def _hosts(raw: str | None, fallback: object) -> list[str]:
    if raw:
        try:
            hosts = json.loads(raw)
        except json.JSONDecodeError:
            raise UserError(f"SM_HOSTS {raw!r} is not a JSON list of host names") from None
    else:
        hosts = fallback
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise UserError(
            "distribution ddp: no hosts (SM_HOSTS unset and no hosts in /opt/ml/input/config/resourceconfig.json)"
        )
    return list(hosts)


def _whole(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{name} {value!r} is not a whole number") from None


def _gpus(known: int | None) -> int:
    if known is not None:
        return known
    import torch

    return int(torch.cuda.device_count())
