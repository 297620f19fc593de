"""Training loop, evaluation pass, schedules and checkpoints, on a tiny network in memory."""

from __future__ import annotations

import copy

import pytest
import torch

from mgmrn.checkpoint import CheckpointError, load_checkpoint, save_atomic
from mgmrn.inference.scoring import predict_logits
from mgmrn.training.engine import EpochProgress, NonFiniteLossError, train_one_epoch
from mgmrn.training.losses import ZSLCriterion, attribute_regression, semantic_cross_entropy

from ..helpers import tiny_net


def batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 64, 64, generator=g), torch.randint(0, 3, (4,), generator=g))
            for _ in range(n)]


@pytest.mark.parametrize("schedule, steps_per_batch", [("fused", 1), ("alternating", 3)])
def test_schedules_step_the_optimizer_once_or_once_per_level(schedule, steps_per_batch):
    net = tiny_net(word_dim=8)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    calls = []
    opt.register_step_post_hook(lambda *_: calls.append(1))
    stats = train_one_epoch(net, batches(2), opt, ZSLCriterion(torch.rand(3, 6), 0.1), torch.device("cpu"),
                            epoch=0, schedule=schedule, show_progress=False)
    assert len(calls) == 2 * steps_per_batch
    assert stats["loss"] == pytest.approx(
        stats["loss_fine"] + stats["loss_middle"] + stats["loss_coarse"])


def test_fused_step_equals_a_manual_step_on_the_summed_loss():
    data, attrs = batches(1), torch.rand(3, 6)
    a, b = tiny_net(word_dim=8), tiny_net(word_dim=8)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    train_one_epoch(a, data, opt_a, ZSLCriterion(attrs, 0.5), torch.device("cpu"), 0, show_progress=False)
    images, labels = data[0]
    b.train()
    out = b(images, attrs)
    loss = sum((semantic_cross_entropy(c, labels) + 0.5 * attribute_regression(s, attrs, labels))
               for c, s in zip(out.class_scores, out.attribute_scores))
    opt_b.zero_grad()
    loss.backward()
    opt_b.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)


@pytest.mark.parametrize("schedule", ["fused", "alternating"])
@pytest.mark.parametrize("bad", [1, 2])  # losses are read one step late: the last batch at the end
def test_non_finite_loss_names_epoch_batch_and_level(schedule, bad):
    net = tiny_net(word_dim=8)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    data = batches(3)
    data[bad] = (torch.full_like(data[bad][0], float("nan")), data[bad][1])
    with pytest.raises(NonFiniteLossError, match=f"epoch 4, batch {bad}, level 'fine'"):
        train_one_epoch(net, data, opt, ZSLCriterion(torch.rand(3, 6), 0.1), torch.device("cpu"), 4,
                        schedule=schedule, show_progress=False)


def test_epoch_loss_counts_every_batch_once():
    """Read one step late, every batch's losses (taken before its own step) still count once."""
    torch.manual_seed(0)
    net, data, attrs = tiny_net(word_dim=8), batches(3), torch.rand(3, 6)
    probe = copy.deepcopy(net)
    stats = train_one_epoch(net, data, torch.optim.SGD(net.parameters(), lr=0.1), ZSLCriterion(attrs, 0.5),
                            torch.device("cpu"), 0, show_progress=False)
    opt = torch.optim.SGD(probe.parameters(), lr=0.1)
    expected = []
    for images, labels in data:
        probe.train()
        out = probe(images, attrs)
        losses = [(semantic_cross_entropy(c, labels) + 0.5 * attribute_regression(s, attrs, labels))
                  for c, s in zip(out.class_scores, out.attribute_scores)]
        expected.append([loss.item() for loss in losses])
        opt.zero_grad()
        sum(losses).backward()
        opt.step()
    expected = torch.tensor(expected).mean(0)
    for i, name in enumerate(("fine", "middle", "coarse")):
        assert stats[f"loss_{name}"] == pytest.approx(expected[i].item(), rel=1e-5)


@pytest.mark.parametrize("schedule", ["fused", "alternating"])
def test_epoch_stopped_after_a_step_and_continued_equals_one_pass(schedule):
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(2, 3, 32, 32, generator=g), torch.randint(0, 3, (2,), generator=g))
            for _ in range(3)]
    attrs, cpu = torch.rand(3, 6), torch.device("cpu")
    straight, stopped = tiny_net(word_dim=8), tiny_net(word_dim=8)
    opt_a = torch.optim.SGD(straight.parameters(), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(stopped.parameters(), lr=0.1, momentum=0.9)
    expected = train_one_epoch(straight, data, opt_a, ZSLCriterion(attrs, 0.5), cpu, 0, schedule,
                               show_progress=False)
    asked = []
    progress = EpochProgress()
    train_one_epoch(stopped, data, opt_b, ZSLCriterion(attrs, 0.5), cpu, 0, schedule, show_progress=False,
                    stop=lambda: asked.append(1) or len(asked) == 2, progress=progress)
    # stopped after its second step, with both steps' losses read
    assert progress.stopped and progress.batches == 2 and len(progress.loss_sums) == 3
    resumed = EpochProgress(progress.batches, list(progress.loss_sums))
    got = train_one_epoch(stopped, data[2:], opt_b, ZSLCriterion(attrs, 0.5), cpu, 0, schedule,
                          show_progress=False, stop=lambda: True, progress=resumed)
    # the last step of an epoch is not followed by a stop
    assert not resumed.stopped and resumed.batches == 3
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, stopped.state_dict()[name]), name
    for key in ("loss", "loss_fine", "loss_middle", "loss_coarse"):
        assert got[key] == expected[key]


def test_predict_logits_returns_every_image_in_order():
    net = tiny_net(word_dim=8)
    data = [(torch.randn(3, 3, 64, 64), torch.tensor([0, 4, 2])),
            (torch.randn(2, 3, 64, 64), torch.tensor([1, 3]))]
    attrs = torch.rand(5, 6)
    logits, labels, attributes = predict_logits(net, data, attrs, torch.device("cpu"),
                                                show_progress=False)
    assert logits.shape == (5, 5) and attributes.shape == (5, 6)
    assert labels.tolist() == [0, 4, 2, 1, 3]
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(logits[3:], net(data[1][0], attrs).logits)


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"model": {"w": torch.ones(2)}, "config": {}}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        save_atomic({"model": Unpicklable(), "config": {}}, path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_loading_refuses_code_and_foreign_files(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": Evil(), "config": {}}))
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(path)
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not written by mgmrn"):
        load_checkpoint(tmp_path / "other.pt")
