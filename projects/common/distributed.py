"""Data-parallel training for the shared trainer: N processes with torchrun semantics, one MLflow run.

    kiln train edgnet --nproc 2 --set epochs=3 --set img_size=64
    python -m projects.microseg.train --nproc 2 --epochs 3 --img-size 32
    torchrun --nproc-per-node 2 -m projects.edgnet.train --epochs 3     # the same, launched by torchrun

`run(fn, cfg, nproc)` is what a family's `train(cfg)` calls. With `nproc` 1 and no torchrun environment it is
`fn(cfg)`. With `RANK`/`WORLD_SIZE` already set (torchrun, or `cloud.container` on a SageMaker host) it joins that
process group. Otherwise this process becomes rank 0 and spawns ranks 1..N-1, which call the same `fn(cfg)`.
Rank 0 keeps the MLflow run, the epoch listeners and the return value; the others train in step and log nothing.

The backend is NCCL when the ranks train on CUDA (one GPU each, `cuda:LOCAL_RANK`) and gloo on CPU, with one
torch thread per process. `batch_size` stays the global batch: each rank takes `batch_size // world_size` from its
`DistributedSampler` shard, so a recipe means the same thing at any `nproc`. Validation is sharded without padding
and its sums are reduced over the ranks, so the logged value is the whole validation set's.

Batch norm is synchronised: `torch.nn.SyncBatchNorm` on GPUs, and on CPU (which SyncBatchNorm refuses)
`GlooSyncBatchNorm`, which all-reduces each batch's sums with autograd so that the statistics and their gradients
are those of the global batch.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import os
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from core.errors import ConfigError

T = TypeVar("T")
ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# A rank that stops answering (killed, or hung) fails the others' next collective after this long; gloo notices a
# closed connection at once, so this only bounds a silent hang.
TIMEOUT = timedelta(seconds=float(os.environ.get("KILN_DIST_TIMEOUT_SECONDS", "600")))


@dataclass(frozen=True)
class World:
    """This process's place in the process group; `World()` is a plain single-process run."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def sum(self, *values: float) -> list[float]:
        """Each value summed over the ranks (float64 on CPU; gloo and NCCL both reduce it)."""
        if not self.active:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.cpu()]

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` on every rank (a stop decision, a resume id)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=_collective_device())
        return box[0]

    def reduce_metric(self, metric: Any) -> None:
        """Sum the metric's accumulators (its `sums` attribute names them) over the ranks, before `compute()`."""
        if not self.active:
            return
        names = getattr(metric, "sums", None)
        if not names:
            raise TypeError(
                f"metric {type(metric).__name__} ({getattr(metric, 'name', '?')}) cannot be reduced over ranks: "
                "give it a `sums` tuple naming the accumulators that add up over validation shards"
            )
        totals = self.sum(*(float(getattr(metric, n)) for n in names))
        for name, total in zip(names, totals, strict=True):
            setattr(metric, name, type(getattr(metric, name))(total))


def world() -> World:
    """The current process group, or a single-process World when none is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def launched() -> bool:
    """True when torchrun (or the SageMaker container) already set this process's rank."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def run(fn: Callable[..., dict[str, float]], cfg: T, nproc: int, **main_kwargs: Any) -> dict[str, float]:
    """`fn(cfg)` on `nproc` data-parallel ranks (see the module docstring); returns rank 0's result.
    `main_kwargs` (the epoch listeners) go to this process's call only: spawned ranks get `fn(cfg)`."""
    if nproc < 1:
        raise ConfigError(f"nproc must be >= 1, got {nproc}", field="nproc")
    if launched():
        with _process_group(_uses_cuda(cfg)):
            return fn(cfg, **main_kwargs)
    nodes, node = hosts()
    if nproc == 1 and nodes == 1:
        return fn(cfg, **main_kwargs)
    check_batch(cfg, nproc * nodes)
    env = rendezvous(nproc, nodes)
    base = node * nproc  # this host's first global rank
    ctx = mp.get_context("spawn")
    target = _target_name(fn)
    children = [
        ctx.Process(target=_child, args=(target, cfg, {**env, "RANK": str(base + r), "LOCAL_RANK": str(r)}),
                    name=f"kiln-rank{base + r}", daemon=False)
        for r in range(1, nproc)
    ]  # fmt: skip
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    os.environ.update({**env, "RANK": str(base), "LOCAL_RANK": "0"})
    try:
        for child in children:
            child.start()
        with _process_group(_uses_cuda(cfg)):
            result = fn(cfg, **main_kwargs)
        _join(children)
        return result
    finally:
        _stop(children)
        _restore_env(saved)


NODES_ENV, NODE_RANK_ENV = "KILN_NNODES", "KILN_NODE_RANK"  # set by cloud.container on each SageMaker host


def hosts() -> tuple[int, int]:
    """(number of hosts, this host's index): (1, 0) unless `cloud.container` set KILN_NNODES / KILN_NODE_RANK
    from SageMaker's SM_HOSTS / SM_CURRENT_HOST."""
    try:
        nodes, node = int(os.environ.get(NODES_ENV, "1")), int(os.environ.get(NODE_RANK_ENV, "0"))
    except ValueError:
        raise ConfigError(f"{NODES_ENV} and {NODE_RANK_ENV} must be whole numbers") from None
    if nodes < 1 or not 0 <= node < nodes:
        raise ConfigError(f"{NODE_RANK_ENV}={node} is not a host of {NODES_ENV}={nodes}")
    return nodes, node


def rendezvous(nproc: int, nodes: int) -> dict[str, str]:
    """Where the ranks meet: one host picks a free local port; several take MASTER_ADDR / MASTER_PORT as set
    (the first host's, from cloud.container)."""
    if nodes == 1:
        addr, port = "127.0.0.1", str(_free_port())
    else:
        addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
        if not addr or not port:
            raise ConfigError(f"{NODES_ENV}={nodes} needs MASTER_ADDR and MASTER_PORT (the first host's)")
    return {"MASTER_ADDR": addr, "MASTER_PORT": port, "WORLD_SIZE": str(nproc * nodes), "LOCAL_WORLD_SIZE": str(nproc)}


def check_batch(cfg: Any, ranks: int) -> None:
    batch = getattr(cfg, "batch_size", None)
    if batch is not None and batch % ranks:
        raise ConfigError(
            f"batch_size {batch} is the global batch and must be divisible by the {ranks} processes (each takes "
            f"batch_size / {ranks})",
            field="batch_size",
        )


def _uses_cuda(cfg: Any) -> bool:
    pref = str(getattr(cfg, "device", "auto") or "auto").lower()
    return torch.cuda.is_available() and pref != "cpu"


@contextlib.contextmanager
def _process_group(cuda: bool) -> Iterator[World]:
    """init_process_group from the environment; NCCL on `cuda:LOCAL_RANK`, else gloo with one thread."""
    threads = torch.get_num_threads()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    else:
        torch.set_num_threads(1)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    try:
        yield world()
    finally:
        with contextlib.suppress(Exception):  # a peer already gone must not hide the error that brought us here
            dist.destroy_process_group()
        torch.set_num_threads(threads)


def _target_name(fn: Callable[..., Any]) -> str:
    module = fn.__module__
    if module == "__main__":  # `python -m projects.edgnet.train`: the children import it by its real name
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is None:
            raise RuntimeError("data-parallel training needs the train function in an importable module")
        module = spec.name
    return f"{module}:{fn.__qualname__}"


def _child(target: str, cfg: Any, env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.pop("MLFLOW_RUN_ID", None)  # only rank 0 joins the run `mlflow run` opened
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    with _process_group(_uses_cuda(cfg)):
        fn(cfg)


def _join(children: list[Any]) -> None:
    for child in children:
        child.join()
    failed = [f"{c.name} exit {c.exitcode}" for c in children if c.exitcode != 0]
    if failed:
        raise RuntimeError(f"data-parallel training: {', '.join(failed)}")


def _stop(children: list[Any]) -> None:
    """Rank 0 failed or was interrupted: end the other ranks too, never leaving one training alone."""
    for child in children:
        if child.is_alive():
            child.terminate()
    for child in children:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
            child.join()


def _restore_env(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (generating a sample dataset, downloading), then the others: no two ranks
    write the same files at once."""
    w = world()
    if w.active and not w.is_main:
        dist.barrier()
    yield
    if w.active and w.is_main:
        dist.barrier()


class ShardSampler(Sampler[int]):
    """Indices rank, rank + W, ...: every validation sample on exactly one rank (DistributedSampler pads)."""

    def __init__(self, length: int, w: World) -> None:
        self.indices = list(range(w.rank, length, w.size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def shard(loader: DataLoader[Any], seed: int, train: bool) -> DataLoader[Any]:
    """The same loader on this rank's shard, with batch_size / world_size per step; `loader` when not distributed.

    A training loader gets a `DistributedSampler` (shuffled when the original was, seeded with `seed`; the trainer
    calls `set_epoch`), a validation loader a `ShardSampler`.
    """
    w = world()
    if not w.active:
        return loader
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise TypeError(f"cannot shard {type(loader).__name__}: data-parallel training needs a batched DataLoader")
    if loader.batch_size % w.size:
        raise ConfigError(f"batch_size {loader.batch_size} must be divisible by nproc {w.size}", field="batch_size")
    dataset: Any = loader.dataset
    sampler: Sampler[int]
    if train:
        shuffle = isinstance(loader.sampler, RandomSampler)
        sampler = DistributedSampler(dataset, w.size, w.rank, shuffle=shuffle, seed=seed)
    else:
        sampler = ShardSampler(len(dataset), w)
    return DataLoader(
        dataset, loader.batch_size // w.size, sampler=sampler, num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
        worker_init_fn=loader.worker_init_fn, persistent_workers=loader.persistent_workers,
    )  # fmt: skip


def set_epoch(loader: Any, epoch: int) -> None:
    """Reshuffle a DistributedSampler for `epoch` (a no-op for other loaders)."""
    while not hasattr(loader, "sampler") and hasattr(loader, "loader"):  # a wrapper (microseg's DistilledLoader)
        loader = loader.loader
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of a sum shared by every rank is the sum of the ranks'
    gradients. (torch.distributed.nn.functional.all_reduce did this; it is deprecated.)"""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        out = grad.contiguous().clone()
        dist.all_reduce(out)
        return out


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are the global batch's, on CPU (gloo), where SyncBatchNorm refuses.

    Per-channel sums, sums of squares and the count are all-reduced with autograd (`_AllReduceSum`), so the
    backward pass sums the statistics' gradients over the ranks as SyncBatchNorm's own kernel does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        dims = [d for d in range(x.dim()) if d != 1]
        count = torch.tensor([x.numel() / channels], dtype=x.dtype)
        stats: torch.Tensor = _AllReduceSum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        total = stats[-1]
        mean = stats[:channels] / total
        var = (stats[channels : 2 * channels] / total - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            self._update_running(mean.detach(), var.detach() * total.detach() / (total.detach() - 1).clamp_min(1))
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        assert self.running_mean is not None and self.running_var is not None and self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased_var, alpha=momentum)


def sync_batchnorm(model: nn.Module, cuda: bool) -> nn.Module:
    """Every BatchNorm2d of `model` synchronised over the ranks, in place (parameters and buffers are kept)."""
    if cuda:
        converted: nn.Module = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
        return converted
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            setattr(model, name, _gloo_bn(child))
        else:
            sync_batchnorm(child, cuda)
    return model


def _gloo_bn(bn: nn.BatchNorm2d) -> GlooSyncBatchNorm:
    new = GlooSyncBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new.load_state_dict(bn.state_dict())
    return new.to(next(iter(bn.state_dict().values())).device) if bn.state_dict() else new


def plain_batchnorm(model: nn.Module) -> nn.Module:
    """Undo `sync_batchnorm` (for the ONNX export and for checkpoints that load anywhere): plain BatchNorm2d."""
    for name, child in model.named_children():
        if isinstance(child, nn.SyncBatchNorm | GlooSyncBatchNorm):
            bn = nn.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            bn.load_state_dict(child.state_dict())
            setattr(model, name, bn.to(child.weight.device) if child.affine else bn)
        else:
            plain_batchnorm(child)
    return model


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` with batch norm synchronised, inside DistributedDataParallel; `model` itself when not distributed.

    The trainer keeps the bare module for checkpoints, validation and export and trains through the wrapper.
    """
    if not world().active:
        return model
    cuda = device.type == "cuda"
    sync_batchnorm(model, cuda)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)
