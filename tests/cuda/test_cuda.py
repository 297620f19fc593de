"""CUDA-only paths: CUDA-graph replay of the fused step and of evaluation, compiled heads inside
the graph, and training on a GPU end to end.

Skipped where no GPU is present; the CPU side of the same options is tested in test_engine.py
and test_config.py.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from mgmrn.cli import main
from mgmrn.config import ModelConfig
from mgmrn.inference.scoring import GraphedInference, predict_logits
from mgmrn.models import build_model, compile_heads
from mgmrn.precision import Precision
from mgmrn.training.engine import GraphedStep, train_one_epoch
from mgmrn.training.losses import ZSLCriterion

from ..helpers import affine_group_norm, tiny

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


@pytest.fixture
def deterministic_cudnn():
    saved = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved


def small_model(channels_last: bool = False):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="test_resnet", pretrained=False, dim=32, attn_dim=16, num_parts=3)
    model = build_model(cfg, torch.randn(12, 20)).to(CUDA)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def random_batches(sizes, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, 64, 64, generator=g).to(CUDA), torch.randint(0, 5, (n,), generator=g).to(CUDA))
            for n in sizes]


def run(model, batches, attrs, precision, graphed):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for batch in batches:  # one epoch per batch: the graph is kept across epochs
        stats = train_one_epoch(model, [batch], opt, ZSLCriterion(attrs, 0.1), CUDA, 0, precision=precision,
                                show_progress=False, graphed=graphed)
        losses.append(stats["loss"])
    return losses


def test_graphed_steps_equal_eager_steps(deterministic_cudnn):
    """3 warm-up steps, the capture, 3 replays on new batches, then a batch of another size."""
    eager = small_model()
    graphed_model = copy.deepcopy(eager)
    attrs = torch.rand(5, 12, device=CUDA)
    batches = random_batches([6] * 7 + [4])
    precision = Precision()
    graphed = GraphedStep(graphed_model, ZSLCriterion(attrs, 0.1), precision, CUDA, warmup=3)
    expected = run(eager, batches, attrs, precision, None)
    got = run(graphed_model, batches, attrs, precision, graphed)
    assert graphed.graph is not None
    # a replay that ignored the new batch would repeat the capture step's loss
    assert len(set(got[3:7])) == 4
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(graphed_model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
    for a, b in zip(graphed_model.buffers(), eager.buffers()):  # BatchNorm statistics
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_graphed_bf16_channels_last_steps_follow_eager_and_learn(deterministic_cudnn):
    eager = small_model(channels_last=True)
    graphed_model = copy.deepcopy(eager)
    attrs = torch.rand(5, 12, device=CUDA)
    precision = Precision(dtype=torch.bfloat16, channels_last=True)
    (images, labels), = random_batches([8])
    batches = [(images.contiguous(memory_format=torch.channels_last), labels)] * 10  # must learn
    expected = run(eager, batches, attrs, precision, None)
    got = run(graphed_model, batches, attrs, precision, GraphedStep(graphed_model, ZSLCriterion(attrs, 0.1),
                                                                    precision, CUDA, warmup=2))
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=2e-2, atol=1e-3)
    assert got[-1] < 0.8 * got[0]


def test_graphed_step_refuses_the_fp16_scaler():
    precision = Precision(dtype=torch.float16, scaler=torch.amp.GradScaler("cuda"))
    with pytest.raises(ValueError, match="bf16"):
        GraphedStep(small_model(), ZSLCriterion(torch.rand(5, 12, device=CUDA), 0.1), precision,
                    CUDA)


def test_graphed_steps_with_compiled_heads_equal_eager_steps(deterministic_cudnn):
    """The heads' generated kernels are captured in the step's graph and replayed."""
    eager = small_model()
    graphed_model = copy.deepcopy(eager)
    assert compile_heads(graphed_model) == 8
    attrs = torch.rand(5, 12, device=CUDA)
    batches = random_batches([6] * 6)
    precision = Precision()
    graphed = GraphedStep(graphed_model, ZSLCriterion(attrs, 0.1), precision, CUDA, warmup=2)
    expected = run(eager, batches, attrs, precision, None)
    got = run(graphed_model, batches, attrs, precision, graphed)
    assert graphed.graph is not None and len(set(got[3:])) == 3
    torch.testing.assert_close(torch.tensor(got), torch.tensor(expected), rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(graphed_model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("channels_last", [False, True])
def test_graphed_inference_equals_eager_inference(deterministic_cudnn, channels_last):
    """Full batches replay the graph, the shorter last batch runs eagerly; uint8 input is
    normalised inside the graph; new weights are followed."""
    model = small_model(channels_last)
    attrs = torch.rand(5, 12, device=CUDA)
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (22, 3, 64, 64), dtype=torch.uint8, generator=g)
    loader = [(images[i:i + 8], torch.arange(i, min(i + 8, 22))) for i in range(0, 22, 8)]
    precision = Precision(channels_last=channels_last)
    expected = predict_logits(model, loader, attrs, CUDA, precision, show_progress=False)
    got = predict_logits(model, loader, attrs, CUDA, precision, show_progress=False,
                         cuda_graphs=True)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert len(set(got[0][:, 0].tolist())) == 22  # every image got its own scores
    graphed = GraphedInference(model, attrs, precision, CUDA)
    first = graphed(images[:8])[0]
    with torch.no_grad():
        for p in model.decoders.parameters():
            p.mul_(1.5)
    after = graphed(images[:8])[0]
    assert not torch.allclose(first, after)
    torch.testing.assert_close(after, predict_logits(model, loader[:1], attrs, CUDA, precision,
                                                     show_progress=False)[0].to(CUDA),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("graphs", ["true", "false"])
def test_train_on_cuda_end_to_end(tmp_path, graphs):
    assert main(["train", *tiny(tmp_path, "run", "device=cuda", f"train.cuda_graphs={graphs}",
                                f"eval.cuda_graphs={graphs}")]) == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["loss"] > 0 for r in records)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert 0.0 <= results["gzsl_h"] <= 100.0


def test_group_norm_in_bf16_on_cuda_matches_fp32():
    ours, reference = (m.to(CUDA) for m in affine_group_norm(32, 256))
    x = (torch.randn(4, 256, 28, 28, device=CUDA) * 2 + 1).contiguous(memory_format=torch.channels_last)
    x_half = x.bfloat16().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = ours(x_half)
    assert y.dtype == torch.bfloat16
    expected = reference(x_half.detach().float())
    assert (y.float() - expected).norm() / expected.norm() < 1e-2
    y.float().square().sum().backward()
    expected.square().sum().backward()
    assert (ours.weight.grad - reference.weight.grad).norm() / reference.weight.grad.norm() < 2e-2


def test_train_on_cuda_with_compiled_heads_in_the_graphs(tmp_path):
    assert main(["train", *tiny(tmp_path, "run", "device=cuda", "train.cuda_graphs=true",
                                "eval.cuda_graphs=true", "train.compile=regions")]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert 0.0 <= results["gzsl_h"] <= 100.0
