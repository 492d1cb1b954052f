"""Scale-out under ``torchrun``: shard files across ranks, gather the rows on every rank.

Ranks read RANK, WORLD_SIZE and LOCAL_RANK from the environment torchrun sets. Rank r
checks files r, r + W, r + 2W, ... of the sorted file list, on cuda:LOCAL_RANK when CUDA
is there (else the CPU), with its own journal shard ``<journal>.rank<r>`` (resuming
therefore needs the same number of ranks). At the end the rows are exchanged with
``all_gather_object`` (gloo on the CPU, nccl on CUDA); rank 0 writes the outputs.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Ranks finish their shards at different times and then wait for each other in the gather.
_GATHER_TIMEOUT = datetime.timedelta(hours=24)


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def from_env() -> Ranks:
    """This process's place in a torchrun job (a single process outside one)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as e:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers: {e}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must be in [0, WORLD_SIZE={world})")
    return Ranks(rank, world, local)


def default_device(ranks: Ranks) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", ranks.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def shard(items: list, ranks: Ranks) -> list:
    return items[ranks.rank::ranks.world_size]


def journal_shard(path, ranks: Ranks):
    return path if path is None or not ranks.distributed else f"{os.fspath(path)}.rank{ranks.rank}"


def gather_rows(rows: list[dict], ranks: Ranks, device: torch.device) -> list[dict]:
    """Every rank's rows, concatenated in rank order, on every rank."""
    if not ranks.distributed:
        return rows
    created = not dist.is_initialized()
    if created:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=_GATHER_TIMEOUT)
    try:
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, rows)
    finally:
        if created:
            dist.destroy_process_group()
    return [row for part in parts for row in part]
