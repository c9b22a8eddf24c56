"""Scoring over several processes: ``torchrun --nproc-per-node N validate score ...``.

Under torchrun (``WORLD_SIZE`` > 1 in the environment) each process takes every N-th shard of each
site, scores it on its own device (``cuda:<LOCAL_RANK>`` when CUDA is used) and the shard results are
gathered to every rank; rank 0 writes the files. The backend is NCCL for CUDA, gloo otherwise.
Shards are assigned by index, so any rank count gives the same predictions as one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, shards: range | list[int]) -> list[int]:
        return [s for s in shards if s % self.world == self.rank]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (just ``[obj]`` in a single process)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def all_ok(self, ok: bool) -> bool:
        """True only if every rank says so (so that an error on one rank stops all of them)."""
        if not self.active:
            return ok
        return all(self.gather(bool(ok)))

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def setup(device_name: str) -> Context:
    """Join the process group torchrun describes; a plain single-process context otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Context()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return Context(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank)
    wants_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    backend = "nccl" if wants_cuda and dist.is_nccl_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return Context(rank=rank, world=world, local_rank=local_rank, owns_group=True)
