"""Samplers and loaders: episode invariants, seeding, resuming, ranks, test shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from mgmrn.config import DataConfig
from mgmrn.data import DataError, build_test_loader, build_train_loader, check_sampler_fits
from mgmrn.data.samplers import EpisodicBatchSampler, RandomBatchSampler, ShardSampler

# 6 classes of 3..8 images, shuffled so that a class's images are not contiguous
LABELS = np.random.default_rng(0).permutation(np.repeat(np.arange(6), [3, 4, 5, 6, 7, 8]))


def episodes(sampler, epoch):
    sampler.set_epoch(epoch)
    return [tuple(b) for b in sampler]


def test_episode_invariants():
    sampler = EpisodicBatchSampler(LABELS, ways=4, shots=3, batches_per_epoch=50, seed=1)
    assert len(sampler) == 50
    for batch in episodes(sampler, 0):
        assert len(batch) == 12 and len(set(batch)) == 12  # distinct images
        groups = np.asarray(batch).reshape(4, 3)
        classes = LABELS[groups]
        assert (classes == classes[:, :1]).all()  # shots consecutive images of one class
        assert len(set(classes[:, 0])) == 4  # distinct classes


def test_every_class_and_image_gets_drawn():
    sampler = EpisodicBatchSampler(LABELS, ways=3, shots=2, batches_per_epoch=400, seed=0)
    drawn = np.concatenate([np.asarray(b) for b in episodes(sampler, 0)])
    assert set(drawn) == set(range(len(LABELS)))


def test_seeded_reproducible_and_epochs_differ():
    a = EpisodicBatchSampler(LABELS, 3, 2, 20, seed=5)
    b = EpisodicBatchSampler(LABELS, 3, 2, 20, seed=5)
    c = EpisodicBatchSampler(LABELS, 3, 2, 20, seed=6)
    assert episodes(a, 0) == episodes(b, 0)
    assert episodes(a, 0) != episodes(a, 1)
    assert episodes(a, 0) != episodes(c, 0)
    assert episodes(a, 3) == episodes(b, 3)  # no hidden state carried from earlier epochs


def test_resume_mid_epoch_is_exact():
    full = episodes(EpisodicBatchSampler(LABELS, 3, 2, 20, seed=5), 2)
    sampler = EpisodicBatchSampler(LABELS, 3, 2, 20, seed=5)
    sampler.set_epoch(2, start_batch=7)
    assert len(sampler) == 13 and list(map(tuple, sampler)) == full[7:]
    # the next epoch starts at its first batch again
    assert episodes(sampler, 3) == episodes(EpisodicBatchSampler(LABELS, 3, 2, 20, seed=5), 3)


def test_distributed_ranks_are_disjoint_slices_of_one_stream():
    world = 3
    single = episodes(EpisodicBatchSampler(LABELS, 3, 2, 30, seed=2), 1)
    ranks = [episodes(EpisodicBatchSampler(LABELS, 3, 2, 10, seed=2, rank=r, world_size=world), 1)
             for r in range(world)]
    for r in range(world):
        assert ranks[r] == single[r::world]  # rank r takes global batches r, r+3, ...
    flat = [b for rank in ranks for b in rank]
    assert len(set(flat)) == len(flat)  # no episode repeated across ranks
    with pytest.raises(ValueError, match="rank 3"):
        EpisodicBatchSampler(LABELS, 3, 2, 10, seed=2, rank=3, world_size=3)


def test_random_batches():
    sampler = RandomBatchSampler(LABELS, batch_size=10, batches_per_epoch=30, seed=0)
    batches = episodes(sampler, 0)
    assert all(len(set(b)) == 10 for b in batches)
    assert len({LABELS[list(b)].tolist().__repr__() for b in batches}) > 1
    assert batches == episodes(RandomBatchSampler(LABELS, 10, 30, seed=0), 0)
    assert batches != episodes(sampler, 1)


def test_sampler_refuses_impossible_episodes():
    with pytest.raises(ValueError, match="ways=7"):
        EpisodicBatchSampler(LABELS, ways=7, shots=1, batches_per_epoch=1, seed=0)
    with pytest.raises(ValueError, match="shots=4 but the smallest class has 3"):
        EpisodicBatchSampler(LABELS, ways=2, shots=4, batches_per_epoch=1, seed=0)


class _Labels:
    """The fields of a ZSLData that check_sampler_fits reads, over LABELS."""

    name, files = "shapes", {}
    class_names = [f"c{i}" for i in range(8)]
    seen_classes = torch.tensor([1, 2, 3, 4, 5, 6])
    train_labels = LABELS


@pytest.mark.parametrize("kind, ways, shots", [("episodic", 7, 1), ("episodic", 2, 4),
                                               ("random", 10, 4)])
def test_the_samplers_and_the_check_before_training_say_the_same(kind, ways, shots):
    cfg = DataConfig(sampler=kind, ways=ways, shots=shots)
    with pytest.raises(DataError) as before:
        check_sampler_fits(_Labels(), cfg)
    with pytest.raises(DataError) as sampler:
        if kind == "random":
            RandomBatchSampler(LABELS, ways * shots, batches_per_epoch=1, seed=0)
        else:
            EpisodicBatchSampler(LABELS, ways, shots, batches_per_epoch=1, seed=0)
    expected = {
        7: "data.ways=7 exceeds the 6 seen classes of shapes; set data.ways to at most 6",
        2: "data.shots=4 but the smallest class (seen class 'c1') has 3 training images; set "
           "data.shots to at most 3",
        10: "a random batch of data.ways*data.shots = 40 images exceeds the 33 training images; "
            "lower data.ways or data.shots"}[ways]
    assert str(before.value) == expected
    # the sampler knows neither names nor the dataset: the same sentence without them
    assert str(sampler.value) == expected.replace(" of shapes", "").replace(
        " (seen class 'c1')", "")


@pytest.mark.parametrize("n,world", [(10, 3), (2, 4), (32, 1)])
def test_shards_cover_each_index_once(n, world):
    shards = [list(ShardSampler(n, r, world)) for r in range(world)]
    assert [i for shard in shards for i in shard] == list(range(n))  # rank order = data order


class RandomItems(Dataset):
    """Items record the worker's random state: (torch draw, numpy draw, label)."""

    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return torch.rand(()), float(np.random.rand()), int(self.labels[index])


class FakeData:
    def __init__(self, labels):
        self.train = RandomItems(labels)
        self.train_labels = labels


def draws(loader, epoch):
    loader.batch_sampler.set_epoch(epoch)
    return [(t.tolist(), n.tolist()) for t, n, _ in loader]


def test_train_loader_randomness_depends_on_seed_epoch_and_batch_alone():
    data = FakeData(LABELS)
    workers = build_train_loader(data, DataConfig(ways=2, shots=2, num_workers=2), 4, seed=3)
    again = build_train_loader(data, DataConfig(ways=2, shots=2, num_workers=2), 4, seed=3)
    main = build_train_loader(data, DataConfig(ways=2, shots=2, num_workers=0), 4, seed=3)
    a = draws(workers, 1)
    assert a == draws(again, 1)  # same seed and epoch: same augmentation randomness
    assert a == draws(main, 1)  # whichever process loads a batch
    assert a != draws(workers, 2)
    numpy_draws = [x for _, n in a for x in n]
    assert len(set(numpy_draws)) == len(numpy_draws)  # no two batches share a random state
    # resumed after two batches, the rest of the epoch is drawn as in one pass
    main.batch_sampler.set_epoch(1, start_batch=2)
    assert [(t.tolist(), n.tolist()) for t, n, _ in main] == a[2:]
    # loading a batch leaves the loading process's own random state alone
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    draws(main, 0)
    assert torch.equal(torch.rand(3), expected)


def test_train_loader_modes_and_test_loader_shards():
    data = FakeData(LABELS)
    random_cfg = DataConfig(ways=3, shots=3, sampler="random", num_workers=0)
    loader = build_train_loader(data, random_cfg, 5, seed=0)
    assert [len(labels) for _, _, labels in loader] == [9] * 5
    test_cfg = DataConfig(test_batch_size=4, num_workers=0)
    got = []
    for rank in range(3):
        for _, _, labels in build_test_loader(RandomItems(np.arange(11)), test_cfg, rank, 3):
            assert len(labels) <= 4
            got.extend(labels.tolist())
    assert got == list(range(11))
