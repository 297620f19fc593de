"""DataLoaders for training (episodic or random batches) and testing (disjoint shards per rank)."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mgmrn.choices import Sampler, check_choice
from mgmrn.config import DataConfig
from mgmrn.data.samplers import EpisodicBatchSampler, RandomBatchSampler, ShardSampler


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from the seed torch gave it.

    torch seeds each worker with (loader base seed + worker id); numpy and ``random`` would
    otherwise start from the same state in every forked worker.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


AUTO_WORKERS_MAX = 16


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def resolve_num_workers(value: int | str, cores: int | None = None,
                        local_processes: int | None = None) -> int:
    """Loading processes for ``data.num_workers``: a count as given, or ``auto``.

    ``auto``: this machine's cores shared among its training processes (``LOCAL_WORLD_SIZE``
    under torchrun), less one core for each training process itself, at most
    ``AUTO_WORKERS_MAX``; 0 (load in the training process) on a single core.

    Args:
        value: ``data.num_workers``.
        cores: cores available; default :func:`available_cores`.
        local_processes: training processes on this machine; default from the environment.
    """
    if value != "auto":
        return int(value)
    cores = available_cores() if cores is None else cores
    if local_processes is None:
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(AUTO_WORKERS_MAX, cores // max(1, local_processes) - 1))


def _worker_options(cfg: DataConfig) -> dict:
    """Worker count, seeding and host-memory pinning shared by the train and test loaders.

    Workers are not persistent: the training loader draws its workers' seeds at each pass, so
    that each epoch's augmentations are a function of (seed, epoch), also after a resume.
    """
    return {"num_workers": resolve_num_workers(cfg.num_workers), "worker_init_fn": seed_worker,
            # pinned batches copy to the GPU without blocking the host (Precision.prepare)
            "pin_memory": torch.cuda.is_available()}
class SeededBatches(Dataset):
    """``dataset`` fetched a batch at a time, each batch's randomness drawn from its own seed.

    The training samplers yield :class:`~mgmrn.data.samplers.SeededBatch` lists. While a batch
    loads, torch's default generator, NumPy's and Python's global ones are seeded with the batch's
    seed (and restored after), so its random crops and flips are the same whichever process loads
    it: with or without workers, and after resuming in the middle of an epoch.

    Args:
        dataset: a map-style dataset whose transforms draw from the global generators.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index]

    def __getitems__(self, indices: list[int]) -> list:
        seed = getattr(indices, "seed", None)
        if seed is None:
            return [self.dataset[i] for i in indices]
        with seeded_randomness(seed):
            return [self.dataset[i] for i in indices]


@contextlib.contextmanager
def seeded_randomness(seed: int):
    """Seed torch's default CPU generator, NumPy's and Python's; restore them on exit."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    torch_state = torch.get_rng_state()
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def build_train_loader(data, cfg: DataConfig, batches_per_epoch: int, seed: int,
                       rank: int = 0, world_size: int = 1) -> DataLoader:
    """Training loader over ``data.train``; ``loader.batch_sampler`` controls the stream.

    Call ``loader.batch_sampler.set_epoch(epoch)`` before each epoch. To resume mid-epoch, store
    ``loader.batch_sampler.state_dict(batches_done=k)`` and on restart call ``load_state_dict`` (or
    ``set_epoch(epoch, start_batch=k)``): the batches that follow are those of the uninterrupted
    run. Each batch's augmentations draw from that batch's own seed (:class:`SeededBatches`).

    Args:
        data: a ``ZSLData``.
        cfg: data config (``sampler``, ``ways``, ``shots``, ``num_workers``).
        batches_per_epoch: batches per epoch on each rank.
        seed: seed of the batch stream and the augmentations.
        rank: this process's rank.
        world_size: number of processes; ranks get disjoint batch streams.
    """
    # the loader draws its workers' base seed from this generator at each pass; the sampler
    # re-seeds it in set_epoch, so whatever else a worker draws repeats per epoch
    generator = torch.Generator()
    check_choice("data.sampler", cfg.sampler, Sampler)
    if cfg.sampler == "episodic":
        sampler = EpisodicBatchSampler(data.train_labels, cfg.ways, cfg.shots, batches_per_epoch,
                                       seed, rank, world_size, generator=generator)
    else:
        sampler = RandomBatchSampler(data.train_labels, cfg.ways * cfg.shots, batches_per_epoch,
                                     seed, rank, world_size, generator=generator)
    return DataLoader(
        SeededBatches(data.train),
        batch_sampler=sampler,
        generator=generator,
        **_worker_options(cfg),
    )


def build_test_loader(dataset: Dataset, cfg: DataConfig, rank: int = 0,
                      world_size: int = 1) -> DataLoader:
    """Test loader in dataset order; with several ranks each gets a disjoint contiguous shard.

    Shards are not padded, so gathering the ranks' outputs in rank order gives every image once.

    Args:
        dataset: a test dataset.
        cfg: data config (``test_batch_size``, ``num_workers``).
        rank: this process's rank.
        world_size: number of processes.
    """
    return DataLoader(
        dataset,
        batch_size=cfg.test_batch_size,
        sampler=ShardSampler(len(dataset), rank, world_size),
        **_worker_options(cfg),
    )
