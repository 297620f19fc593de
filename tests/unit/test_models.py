"""Tests of the Mg-MRN network pieces: backbone, MgM, MRM, VSD, classifier and the whole net."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from mgmrn.config import ModelConfig
from mgmrn.models import (
    Backbone,
    GlobalBaseline,
    PretrainedWeightsError,
    build_model,
    compile_heads,
    spatial_attention,
)
from mgmrn.models.classifier import cosine_class_scores
from mgmrn.models.decoder import AttributeDecoder
from mgmrn.models.granularity import GranularityModule, RegionGrouping
from mgmrn.models.refinement import MutualRefinement, SpatialChannelAttention

from ..helpers import affine_group_norm, needs_cxx, tiny_net

TINY = "test_resnet"  # timm's tiny ResNet: strides 8/16/32 with 48/192/96 channels


# --- backbone -------------------------------------------------------------------------------

def test_full_size_shapes_and_parameter_count():
    cfg = ModelConfig(pretrained=False)
    net = build_model(cfg, torch.randn(312, 300)).eval()
    features = []
    net.backbone.register_forward_hook(lambda m, i, o: features.extend(o))
    maps = []
    for g in net.granularity:
        g.register_forward_hook(lambda m, i, o: maps.append(o[0]))
    with torch.no_grad():
        out = net(torch.randn(1, 3, 448, 448), torch.rand(200, 312), return_attention=True)
    assert [tuple(f.shape[1:]) for f in features] == [(512, 56, 56), (1024, 28, 28), (2048, 14, 14)]
    assert [tuple(m.shape[1:]) for m in maps] == [(2048, 28, 28), (2048, 14, 14), (2048, 14, 14)]
    assert [tuple(s.shape) for s in out.attribute_scores] == [(1, 312)] * 3
    assert out.logits.shape == (1, 200)
    # tokens: own map + borrowed coarser map + K=5 region tokens
    assert [a.shape[-1] for a in out.attention] == [28 * 28 + 14 * 14 + 5, 14 * 14 * 2 + 5, 14 * 14 + 5]
    n_params = sum(p.numel() for p in net.parameters())
    print(f"\nMg-MRN (ResNet-101, D=2048, M=1024, A=312) parameters: {n_params:,}")
    assert 200e6 < n_params < 300e6


def test_frozen_backbone_keeps_batchnorm_statistics():
    backbone = Backbone(TINY, pretrained=False, finetune=False).train()
    assert not any(p.requires_grad for p in backbone.parameters())
    before = {k: v.clone() for k, v in backbone.state_dict().items() if "running_mean" in k}
    backbone(torch.randn(4, 3, 64, 64) * 3 + 1)
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not backbone.body.training


def test_pretrained_without_network_or_file_says_what_to_do(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(PretrainedWeightsError, match="model.pretrained=false"):
        Backbone("resnet18", pretrained=True)
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        Backbone("resnet18", pretrained=True, pretrained_file=str(tmp_path / "missing.pth"))


def test_pretrained_weights_load_from_a_local_torchvision_file(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = Backbone("resnet18", pretrained=True, pretrained_file=str(path))
    assert torch.equal(backbone.body.layer4[0].conv1.weight, reference.layer4[0].conv1.weight)
    assert backbone.name == "resnet18.tv_in1k"


# --- region grouping ------------------------------------------------------------------------

def test_region_grouping_assignments_gradient_and_parts():
    torch.manual_seed(0)
    grouping = RegionGrouping(channels=8, num_parts=4)
    x = torch.rand(2, 8, 5, 6) * 2
    regions, a = grouping(x)
    assert a.shape == (2, 4, 5, 6) and regions.shape == (2, 4, 8)
    torch.testing.assert_close(a.sum(1), torch.ones(2, 5, 6))
    # region token k is the assignment-weighted mean of the locations
    w = a[0, 1].flatten()
    expected = (x[0].flatten(1) * w).sum(1) / w.sum()
    torch.testing.assert_close(regions[0, 1], expected, rtol=1e-4, atol=1e-5)
    # not the release's identity x / K
    assert not torch.allclose(regions.mean(1), x.flatten(2).mean(-1) / 4)
    # different parts weight different locations
    flat = a.flatten(2)
    assert (flat[:, :, None] - flat[:, None]).abs().amax(-1).triu(1).gt(1e-3).sum() >= 2 * 6
    regions.square().sum().backward()
    assert grouping.centres.grad is not None and grouping.centres.grad.abs().sum() > 0
    assert grouping.smoothing.grad is not None and grouping.smoothing.grad.abs().sum() > 0


def test_region_grouping_matches_the_formula():
    torch.manual_seed(1)
    grouping = RegionGrouping(channels=3, num_parts=2)
    with torch.no_grad():
        grouping.centres.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
        grouping.smoothing.copy_(torch.tensor([0.0, math.log(3.0)]))  # beta = 0.5, 0.75
    x = torch.tensor([0.2, 0.4, 0.9]).view(1, 3, 1, 1)
    d0 = (0.04 + 0.16 + 0.81) / 3
    d1 = (0.64 + 0.36 + 0.01) / 3
    logits = torch.tensor([-d0 / 0.5, -d1 / 0.75])
    torch.testing.assert_close(grouping.assign(x).flatten(), logits.softmax(0))


def test_granularity_module_halves_in_either_order():
    x = torch.rand(2, 16, 8, 8)
    after = GranularityModule(16, 32, num_parts=3, downsample=True)
    before = GranularityModule(16, 32, num_parts=3, downsample=True, resize_before_projection=True)
    y_after, regions, a = after(x)
    y_before, _, _ = before(x)
    assert y_after.shape == y_before.shape == (2, 32, 4, 4)
    assert regions.shape == (2, 3, 32) and a.shape == (2, 3, 8, 8)
    assert (y_after >= 0).all()  # ReLU output


# --- refinement -----------------------------------------------------------------------------

def test_spatial_channel_attention_is_projection_times_gates():
    torch.manual_seed(0)
    scam = SpatialChannelAttention(6, 4)
    x = torch.randn(2, 6, 3, 3)
    y = scam.project(x)
    g_c = torch.sigmoid(scam.channel_gate[2](torch.relu(scam.channel_gate[0](y.mean((2, 3))))))
    g_s = torch.sigmoid(F.conv2d(y, scam.spatial_gate[0].weight, padding=1))
    torch.testing.assert_close(scam(x), y * g_c[:, :, None, None] * g_s)


def test_refinement_wiring_and_stop_gradient():
    refine = MutualRefinement(dim=4, num_levels=3)
    maps = [torch.randn(1, 4, 6, 6, requires_grad=True)] + [
        torch.randn(1, 4, 3, 3, requires_grad=True) for _ in range(2)]
    borrowed = refine(maps)
    assert borrowed[0].shape == (1, 4, 3, 3) and borrowed[1].shape == (1, 4, 3, 3)
    assert borrowed[2] is None
    assert refine.attention[0].project.in_channels == 8  # concat(middle, coarse)
    assert refine.attention[1].project.in_channels == 4  # coarse
    (borrowed[0].sum() + borrowed[1].sum()).backward()
    assert all(m.grad is None for m in maps)


def test_fine_loss_does_not_train_coarser_projections_but_coarse_loss_trains_backbone():
    net = tiny_net()
    images, attrs = torch.randn(2, 3, 64, 64), torch.rand(5, 6)
    out = net(images, attrs)
    out.class_scores[0].sum().backward()
    for level in (1, 2):
        assert all(p.grad is None or p.grad.abs().sum() == 0
                   for p in net.granularity[level].parameters())
    assert net.granularity[0].project[0].weight.grad.abs().sum() > 0
    assert net.refinement.attention[0].project.weight.grad.abs().sum() > 0
    net.zero_grad(set_to_none=True)
    out = net(images, attrs)
    out.class_scores[2].sum().backward()
    first = next(p for p in net.backbone.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.refinement.parameters())


# --- decoder --------------------------------------------------------------------------------

def test_decoder_attention_rows_sum_to_one_and_scores_are_prototype_products():
    torch.manual_seed(0)
    dec = AttributeDecoder(num_attributes=5, word_dim=7, dim=8, attn_dim=4)
    tokens, words = torch.randn(3, 11, 8), torch.randn(5, 7)
    scores, attn = dec(tokens, words, return_attention=True)
    assert attn.shape == (3, 5, 11)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 5))
    logits = dec.query(words) @ dec.key(tokens).transpose(1, 2)  # unscaled by default
    torch.testing.assert_close(attn, logits.softmax(-1))
    features = dec.out(attn @ dec.value(tokens))
    torch.testing.assert_close(scores, (features * dec.prototypes).sum(-1))


def test_decoder_with_one_token_attends_to_its_value():
    torch.manual_seed(0)
    dec = AttributeDecoder(num_attributes=4, word_dim=3, dim=6, attn_dim=5, scaled=True)
    token = torch.randn(2, 1, 6)
    scores, attn = dec(token, torch.randn(4, 3), return_attention=True)
    torch.testing.assert_close(attn, torch.ones(2, 4, 1))
    expected_feature = dec.out(dec.value(token))  # (2, 1, D), the same for every attribute
    torch.testing.assert_close(scores, (expected_feature * dec.prototypes).sum(-1))


def test_scaled_attention_divides_logits_by_sqrt_m():
    torch.manual_seed(0)
    plain = AttributeDecoder(3, 4, 8, 16, scaled=False)
    scaled = AttributeDecoder(3, 4, 8, 16, scaled=True)
    scaled.load_state_dict(plain.state_dict())
    tokens, words = torch.randn(1, 5, 8), torch.randn(3, 4)
    _, a_plain = plain(tokens, words, return_attention=True)
    _, a_scaled = scaled(tokens, words, return_attention=True)
    logits = a_plain.log()
    torch.testing.assert_close(a_scaled, (logits / 4.0).softmax(-1), rtol=1e-4, atol=1e-6)



@pytest.mark.parametrize("scaled", [False, True])
def test_fused_attention_path_equals_the_explicit_one_with_gradients(scaled):
    """Without attention weights the decoder runs scaled_dot_product_attention with its own
    scale (1 as published, not SDPA's default 1/sqrt(M)): scores and every gradient match."""
    torch.manual_seed(0)
    dec = AttributeDecoder(6, 5, 8, 16, scaled=scaled).double()
    tokens = (3 * torch.randn(3, 9, 8, dtype=torch.float64)).requires_grad_()
    words = torch.randn(6, 5, dtype=torch.float64)
    results = []
    for explicit in (True, False):
        dec.zero_grad()
        tokens.grad = None
        scores, attn = dec(tokens, words, return_attention=explicit)
        assert (attn is not None) == explicit
        (scores * torch.linspace(-1, 1, 6, dtype=torch.float64)).sum().backward()
        results.append([scores.detach(), tokens.grad.clone()]
                       + [p.grad.clone() for p in dec.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # SDPA's default scale would give other scores: the scale is passed on
    default = F.scaled_dot_product_attention(
        dec.query(words).expand(3, 1, 6, 16), dec.key(tokens)[:, None], dec.value(tokens)[:, None])
    if not scaled:
        assert not torch.allclose(default[:, 0], dec(tokens, words, True)[1] @ dec.value(tokens))
# --- classifier and the whole network ------------------------------------------------------

def test_cosine_classifier_by_hand():
    s = torch.tensor([[3.0, 4.0]])
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    # cos = (3/5, 4/5, -3/5), times tau = 20
    torch.testing.assert_close(cosine_class_scores(s, z, 20.0), torch.tensor([[12.0, 16.0, -12.0]]))


def test_network_output_sums_levels_and_attention_folds_onto_grid():
    net = tiny_net().eval()
    attrs = torch.rand(7, 6)
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 64), attrs, return_attention=True)
    torch.testing.assert_close(out.logits, sum(out.class_scores))
    for level in range(3):
        torch.testing.assert_close(
            out.class_scores[level], cosine_class_scores(out.attribute_scores[level], attrs, 20.0))
        maps = spatial_attention(out.attention[level], out.layouts[level], out.assignments[level])
        assert maps.shape[-2:] == out.layouts[level].own
        torch.testing.assert_close(maps.sum((2, 3)), torch.ones(2, 6), rtol=1e-4, atol=1e-4)
    assert out.attention[0].shape[-1] == 4 * 4 + 2 * 2 + 3


def test_baseline_shares_the_classifier():
    cfg = ModelConfig(name="baseline", backbone=TINY, pretrained=False, tau=10.0)
    net = build_model(cfg, torch.randn(6, 10))
    attrs = torch.rand(5, 6)
    out = net(torch.randn(2, 3, 64, 64), attrs)
    assert len(out.class_scores) == 1
    torch.testing.assert_close(out.logits, cosine_class_scores(out.attribute_scores[0], attrs, 10.0))


def test_tiny_network_overfits_eight_images():
    """All pieces learn together: 8 images of 4 classes reach 100% training accuracy."""
    from mgmrn.training.losses import ZSLCriterion

    net = tiny_net(num_attributes=6)
    torch.manual_seed(1)
    images = torch.randn(8, 3, 64, 64)
    labels = torch.arange(4).repeat(2)
    attrs = torch.rand(4, 6)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for step in range(300):
        out = net(images, attrs)
        loss = sum(ZSLCriterion(attrs, 0.1)(out, labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 19 and (out.logits.argmax(1) == labels).all():
            break
    net.eval()
    with torch.no_grad():
        accuracy = (net(images, attrs).logits.argmax(1) == labels).float().mean().item()
    print(f"\noverfit: {accuracy:.0%} training accuracy after {step + 1} steps")
    assert accuracy == 1.0


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (56, 56)])
def test_halving_equals_bilinear_resize(size):
    from mgmrn.models.granularity import _halve

    x = torch.randn(2, 3, *size)
    expected = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
    torch.testing.assert_close(_halve(x), expected)


def test_batch_norm_option_replaces_only_the_projection_norm():
    gn = GranularityModule(16, 32, num_parts=2)
    bn = GranularityModule(16, 32, num_parts=2, norm="batch")
    assert isinstance(gn.project[1], torch.nn.GroupNorm) and gn.project[1].num_groups == 32
    assert isinstance(bn.project[1], torch.nn.BatchNorm2d)
    assert isinstance(bn.project_regions[1], torch.nn.LayerNorm)


def test_group_norm_equals_torch_group_norm_in_fp32():
    ours, reference = affine_group_norm()
    x = torch.randn(3, 16, 5, 7) * 3 + 1
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


def test_group_norm_keeps_bf16_under_autocast_and_matches_fp32():
    """Same function as the fp32 GroupNorm, to bf16 rounding; gradients reach its parameters."""
    ours, reference = affine_group_norm(seed=1)
    x = (torch.randn(2, 16, 12, 12) * 2 + 3).contiguous(memory_format=torch.channels_last)
    x_half = x.bfloat16().requires_grad_()
    x_full = x_half.detach().float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ours(x_half)
    assert y.dtype == torch.bfloat16
    expected = reference(x_full)
    assert (y.float() - expected).norm() / expected.norm() < 1e-2
    weights = torch.randn_like(expected)
    (y.float() * weights).sum().backward()
    (expected * weights).sum().backward()
    assert ours.weight.grad.dtype == torch.float32
    for got, want in ((ours.weight.grad, reference.weight.grad), (ours.bias.grad, reference.bias.grad),
                      (x_half.grad.float(), x_full.grad)):
        assert (got - want).norm() / want.norm() < 2e-2


def test_region_tokens_keep_their_information_after_projection():
    """Tokens are normalised over all D channels: distinct regions stay distinct."""
    torch.manual_seed(0)
    module = GranularityModule(8, 64, num_parts=4)
    _, regions, _ = module(torch.rand(2, 8, 6, 6) * 3)
    # with per-pair GroupNorm every token would collapse to +-1 patterns; LayerNorm keeps a spread
    assert regions.std(dim=-1).min() > 0.1
    assert (regions[:, :, None] - regions[:, None]).abs().sum(-1).triu(1).gt(1e-3).sum() == 2 * 6


# --- compiled heads -------------------------------------------------------------------------

@needs_cxx
def test_compiled_heads_give_the_eager_outputs_and_gradients_under_the_same_names():
    # float64: in float32 the fused kernels' rounding can move a pre-activation across a ReLU's
    # kink, which changes that element's gradient outright; in float64 both agree to ~1e-14
    eager = tiny_net().double()
    compiled = copy.deepcopy(eager)
    assert compile_heads(compiled) == 3 + 2 + 3  # granularity, spatial-channel attention, decoder
    assert compile_heads(GlobalBaseline(Backbone(TINY, pretrained=False), 6)) == 0
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    images = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    attrs = torch.rand(4, 6, dtype=torch.float64)
    outputs = []
    for net in (eager, compiled):
        out = net(images, attrs)
        (out.logits * torch.linspace(-1, 1, 4, dtype=torch.float64)).sum().backward()
        outputs.append((out, {n: p.grad for n, p in net.named_parameters()}))
    (a, grads_a), (b, grads_b) = outputs
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-10, atol=1e-12)
    for x, y in zip(b.attribute_scores, a.attribute_scores):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
    assert grads_a.keys() == grads_b.keys()
    for name, grad in grads_a.items():
        if grad is None:
            assert grads_b[name] is None, name
        else:  # absolute floor: a key bias's gradient is pure rounding noise (~1e-15)
            torch.testing.assert_close(grads_b[name], grad, rtol=1e-9, atol=1e-12, msg=name)
    # the heads run compiled: the second network's granularity modules went through dynamo
    assert all(m._compiled_call_impl is not None for m in compiled.granularity)
