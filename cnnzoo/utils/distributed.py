"""Multi-process training on PyTorch's own engine (torch.distributed + DistributedDataParallel).

``torchrun --nproc_per_node=N -m cnnzoo train ...`` starts N copies of the trainer with RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in the environment; ``init_from_env`` turns
those into a process group (gloo on CPU, nccl on CUDA). A plain ``cnnzoo train`` has none of them
and runs as a world of one, through the same code: every helper here is a no-op for one process.

Only rank 0 writes files or prints; every collective here is called by all ranks in the same
order, which is what keeps them from deadlocking.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    started_group: bool = False  # this call opened the process group, so it must close it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_from_env(device_type: str) -> World:
    """Join the process group torchrun describes in the environment; a world of one without it."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():  # the caller set up the group itself
        return World(dist.get_rank(), dist.get_world_size(), local_rank, started_group=False)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "gloo" and not dist.is_gloo_available():
        raise ValueError("distributed training on CPU needs torch built with gloo")
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=size)
    return World(rank, size, local_rank, started_group=True)


def close(world: World, wait_for_peers: bool = False) -> None:
    """Leave the process group. After a run that ended normally, first wait for every rank to get
    here: rank 0 still writes files after the last collective, and a rank that tears its gloo
    connections down while a peer is still using them can be aborted ("terminate called without an
    active exception"). After an error there is no waiting: the other ranks may never arrive."""
    if world.started_group and dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(world: World, values: list[float | int], device: torch.device) -> list[float]:
    """Sum a few numbers over ranks, in float64 so that counts and loss sums stay exact."""
    if not world.distributed:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(world: World, flag: bool, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on any one (e.g. 'a signal arrived, stop')."""
    if not world.distributed:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(world: World, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; for small things: errors, train state)."""
    if not world.distributed:
        return obj
    box = [obj if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_object(world: World, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def device_name(dev: torch.device) -> str:
    """The GPU's name, or the CPU's model name (from /proc/cpuinfo where there is one)."""
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"
