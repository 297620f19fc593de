"""Batch samplers: episodic (ways x shots) and random training batches, and test shards.

Every training batch is a pure function of (seed, epoch, global batch index): batch ``b`` of an
epoch is drawn from a generator seeded by ``(seed, epoch, b)``. Hence

* resuming is exact: ``set_epoch(epoch, start_batch=k)`` makes the next pass yield batches
  ``k, k+1, ...`` of that epoch, identical to the uninterrupted run. Equivalently, save
  ``state_dict(batches_done=k)`` in the checkpoint and call ``load_state_dict`` on resume: the
  loop's usual ``set_epoch(epoch)`` then starts that epoch at batch ``k``;
* a batch carries its own seed (:class:`SeededBatch`), from which its random augmentations draw
  (see ``loaders.SeededBatches``): they too depend on (seed, epoch, global batch index) alone, not
  on which worker loads the batch, nor on whether the epoch was resumed part way;
* distributed ranks never share a batch: rank ``r`` of ``world_size`` takes the global batches
  ``r, r + world_size, r + 2 * world_size, ...``, so with one process the stream is unchanged.
  ``batches_per_epoch`` counts the batches of one rank.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from mgmrn.data.errors import DataError


def check_episodes_fit(counts: np.ndarray, ways: int, shots: int,
                       class_names: list[str] | None = None, hint: str = "",
                       dataset: str = "") -> None:
    """Raise :class:`DataError` when episodes of ``ways`` classes x ``shots`` images cannot be drawn.

    Args:
        counts: (K,) training images of each of the K classes (zero for a class without any).
        ways: classes per batch (``data.ways``).
        shots: images per class (``data.shots``).
        class_names: the K names, to name the smallest class.
        hint: a second fix appended to the shots message (``" or add images to ..."``).
        dataset: the dataset's name, for the ways message.
    """
    of = f" of {dataset}" if dataset else ""
    if ways > len(counts):
        raise DataError(f"data.ways={ways} exceeds the {len(counts)} seen classes{of}; set "
                        f"data.ways to at most {len(counts)}")
    smallest = int(np.argmin(counts))
    if shots > counts[smallest]:
        which = f" (seen class '{class_names[smallest]}')" if class_names else ""
        raise DataError(f"data.shots={shots} but the smallest class{which} has "
                        f"{counts[smallest]} training images; set data.shots to at most "
                        f"{counts[smallest]}{hint}")


def check_random_batch_fits(batch_size: int, n_images: int) -> None:
    """Raise :class:`DataError` when a random batch has more images than the training set."""
    if batch_size > n_images:
        raise DataError(f"a random batch of data.ways*data.shots = {batch_size} images exceeds "
                        f"the {n_images} training images; lower data.ways or data.shots")


class SeededBatch(list):
    """Dataset indices of one batch, with the seed of its augmentations as ``seed``."""

    def __init__(self, indices: list[int], seed: int):
        super().__init__(indices)
        self.seed = seed


class _SeededBatchSampler(Sampler[list[int]]):
    """Shared epoch, resume and rank bookkeeping; subclasses define :meth:`draw`."""

    def __init__(self, labels: np.ndarray, batches_per_epoch: int, seed: int,
                 rank: int = 0, world_size: int = 1, generator: torch.Generator | None = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.batches_per_epoch = batches_per_epoch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.generator = generator
        self.set_epoch(0)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch of the next pass.

        Args:
            epoch: epoch number.
            start_batch: batches of this epoch to skip (an epoch resumed part way).
        """
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch {start_batch} is not in 0..{self.batches_per_epoch}")
        self.epoch, self.start_batch = epoch, start_batch
        if self.generator is not None:
            seed = np.random.default_rng([self.seed, epoch, self.rank, 1]).integers(2**62)
            self.generator.manual_seed(int(seed))

    def batch(self, epoch: int, index: int) -> SeededBatch:
        """Batch ``index`` (0-based, of this rank) of ``epoch``: dataset indices and their seed."""
        global_index = index * self.world_size + self.rank
        rng = np.random.default_rng([self.seed, epoch, global_index])
        indices = self.draw(rng)
        return SeededBatch(indices, int(rng.integers(2**63)))

    def draw(self, rng: np.random.Generator) -> list[int]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        epoch, start = self.epoch, self.start_batch
        for index in range(start, self.batches_per_epoch):
            yield self.batch(epoch, index)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch


class EpisodicBatchSampler(_SeededBatchSampler):
    """Each batch: ``ways`` distinct classes, then ``shots`` distinct images of each.

    Args:
        labels: (N,) training label of every dataset item.
        ways: classes per batch.
        shots: images per class.
        batches_per_epoch: batches per epoch (per rank).
        seed: base seed of the stream.
        rank: this process's rank.
        world_size: number of processes.
        generator: a DataLoader's generator, re-seeded from (seed, epoch, rank) by ``set_epoch``.
    """

    def __init__(self, labels: np.ndarray, ways: int, shots: int, batches_per_epoch: int,
                 seed: int, rank: int = 0, world_size: int = 1,
                 generator: torch.Generator | None = None):
        super().__init__(labels, batches_per_epoch, seed, rank, world_size, generator)
        self.classes = np.unique(self.labels)
        self.items = {int(c): np.flatnonzero(self.labels == c) for c in self.classes}
        check_episodes_fit(np.array([len(v) for v in self.items.values()]), ways, shots)
        self.ways, self.shots = ways, shots

    def draw(self, rng: np.random.Generator) -> list[int]:
        classes = rng.choice(self.classes, size=self.ways, replace=False)
        batch = []
        for c in classes:
            batch.extend(rng.choice(self.items[int(c)], size=self.shots, replace=False).tolist())
        return batch


class RandomBatchSampler(_SeededBatchSampler):
    """Each batch: ``batch_size`` distinct images drawn uniformly.

    Args:
        labels: (N,) label of every dataset item (only its length is used).
        batch_size: images per batch.
        batches_per_epoch: batches per epoch (per rank).
        seed: base seed of the stream.
        rank: this process's rank.
        world_size: number of processes.
        generator: a DataLoader's generator, re-seeded from (seed, epoch, rank) by ``set_epoch``.
    """

    def __init__(self, labels: np.ndarray, batch_size: int, batches_per_epoch: int, seed: int,
                 rank: int = 0, world_size: int = 1, generator: torch.Generator | None = None):
        super().__init__(labels, batches_per_epoch, seed, rank, world_size, generator)
        check_random_batch_fits(batch_size, len(self.labels))
        self.batch_size = batch_size

    def draw(self, rng: np.random.Generator) -> list[int]:
        return rng.choice(len(self.labels), size=self.batch_size, replace=False).tolist()


class ShardSampler(Sampler[int]):
    """Contiguous shard ``rank`` of ``range(n)``, without padding.

    Shards are disjoint and cover every index once, in order, so concatenating the ranks' outputs
    in rank order restores the dataset order.

    Args:
        n: dataset length.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        bounds = np.linspace(0, n, world_size + 1).round().astype(int)
        self.start, self.stop = int(bounds[rank]), int(bounds[rank + 1])

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
