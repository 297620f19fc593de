"""Distributed data parallel helpers: the torchrun environment, rank-0 checks, gathering."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.constants import default_pg_timeout

from mgmrn.config import ConfigError


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """Whether this process is rank 0 (or the only one): the process that writes files and
    shows progress. Reads the process group when there is one, else the launcher's ``RANK``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") in ("", "0")


def under_torchrun() -> bool:
    """Whether torchrun (torch.distributed.run) started this process; it may restart it."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    NCCL is used when the processes run on CUDA, gloo otherwise.
    """
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return DistEnv()
    env = DistEnv(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                  int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(env.local_rank)
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        store = _restart_scoped_store(env)
        if store is None:
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, store=store, rank=env.rank,
                                    world_size=env.world_size)
    return env


def _restart_scoped_store(env: DistEnv):
    """The store of torchrun's agent, its keys scoped to this restart; None outside torchrun.

    torchrun keeps one store for all the restarts of its workers, and the keys of the default
    process group do not name the attempt: a restarted group would read the addresses its
    previous attempt left there and fail to connect, or hang (pytorch/pytorch#135712).
    """
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or attempt is None:
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                          env.world_size, is_master=False, timeout=default_pg_timeout)
    return dist.PrefixStore(f"mgmrn/attempt_{attempt}", store)


def resolve_device(name: str | torch.device, env: DistEnv | None = None) -> torch.device:
    """``auto`` picks this process's GPU when there is one, else the CPU; a GPU asked for where
    CUDA is not available is a clear error."""
    env = env or DistEnv()
    if str(name) == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' was asked for but CUDA is not available here; "
                          f"use the CPU (device cpu)")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", env.local_rank)
    if device.type == "cuda":
        # shapes repeat from batch to batch: cuDNN times its algorithms once per shape
        torch.backends.cudnn.benchmark = True
    return device


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_gather_variable(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 the tensors of every process, of any length, without padding.

    Each process may hold a different number of rows; the result holds every row exactly once,
    so an evaluation shard that is not a multiple of the batch size biases nothing.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    world = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes)])


def gather_objects(obj, group=None) -> list:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    gathered = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, obj, group=group)
    return gathered


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
