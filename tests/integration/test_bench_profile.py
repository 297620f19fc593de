"""benchmarks/profile_step.py's time by category and benchmarks/throughput.py's FLOP rates: the
category rules on real operator names, the table's arithmetic on a real CPU profile, the peak
lookup, and each mode's settings and fields."""

from __future__ import annotations

import json

import pytest
import torch

from mgmrn.training.engine import Precision

from ..helpers import load_script, tiny_net

STEPS = 2
TINY = ["--device", "cpu", "--backbone", "test_resnet", "--image-size", "64", "--dim", "32",
        "--attn-dim", "16", "--batch-size", "2"]


def load(name: str):
    return load_script(f"benchmarks/{name}.py")


@pytest.fixture(scope="module")
def prof_step():
    return load("profile_step")


@pytest.fixture(scope="module")
def throughput():
    return load("throughput")


@pytest.fixture(scope="module")
def cpu_events(prof_step):
    """The profiler's events over STEPS fused training steps of the tiny network on the CPU."""
    torch.manual_seed(0)
    batch = (torch.randn(2, 3, 64, 64), torch.randint(0, 5, (2,)))
    steps = prof_step.make_steps(tiny_net(), Precision(), torch.rand(5, 6), batch,
                                 torch.device("cpu"))
    steps(1)  # the first step allocates the optimizer's state
    return prof_step.profile_steps(steps, STEPS, gpu=False).events()


# --- profile_step.py ------------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("aten::cudnn_convolution", "convolutions"),
    ("aten::convolution_backward", "convolutions"),
    ("autograd::engine::evaluate_function: ConvolutionBackward0", "convolutions"),
    ("aten::native_group_norm_backward", "normalisation"),
    ("aten::native_batch_norm", "normalisation"),
    ("NativeLayerNormBackward0", "normalisation"),
    ("aten::_efficient_attention_backward", "attention"),
    ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
    ("aten::_softmax_backward_data", "attention"),
    ("aten::_log_softmax", "other elementwise/reductions"),  # the loss, not attention
    ("aten::threshold_backward", "activations"),
    ("aten::clamp_min_", "activations"),
    ("aten::sigmoid_backward", "activations"),
    ("aten::_fused_sgd_", "optimizer"),
    ("aten::_foreach_zero_", "optimizer"),
    ("Optimizer.step#SGD.step", "optimizer"),
    ("triton_per_fused_native_group_norm_relu_0", "generated kernels"),
    ("cpp_fused_mean_0", "generated kernels"),
    ("Torch-Compiled Region: 2/0", "generated kernels"),
    ("CompiledFunctionBackward", "generated kernels"),
    ("aten::addmm", "matrix products"),
    ("aten::bmm", "matrix products"),
    ("autograd::engine::evaluate_function: MmBackward0", "matrix products"),
    ("aten::copy_", "copies and layout"),
    ("aten::cat", "copies and layout"),
    ("aten::_to_copy", "copies and layout"),
    ("aten::t", "copies and layout"),
    ("aten::mean", "resizes and pooling"),
    ("aten::upsample_bilinear2d_backward", "resizes and pooling"),
    ("aten::max_pool2d_with_indices", "resizes and pooling"),
    ("aten::linalg_vector_norm", "other elementwise/reductions"),
    ("aten::mul", "other elementwise/reductions"),
])
def test_category_of_real_operator_names(prof_step, name, expected):
    assert prof_step.category(name) == expected


def test_time_by_category_counts_each_self_cpu_time_once(prof_step, cpu_events):
    times = prof_step.time_by_category(cpu_events, STEPS, device=False)
    self_ms = sum(e.self_cpu_time_total for e in cpu_events) / 1e3
    assert sum(times.values()) * STEPS == pytest.approx(self_ms, rel=1e-9)
    assert times["convolutions"] > 0 and times["matrix products"] > 0 and times["attention"] > 0
    assert prof_step.UNATTRIBUTED not in times  # a CPU profile attributes every microsecond
    assert list(times.values()) == sorted(times.values(), reverse=True)
    per_profile = prof_step.time_by_category(cpu_events, 1, device=False)
    assert per_profile.keys() == times.keys()
    assert all(times[k] == pytest.approx(per_profile[k] / STEPS) for k in times)


def test_operators_inside_the_optimizer_step_count_as_optimizer(prof_step, cpu_events):
    """On the CPU SGD's update runs as plain aten::add_ and mul_: whole subtrees count."""
    times = prof_step.time_by_category(cpu_events, STEPS, device=False)
    optimizer = [e for e in cpu_events if e.name.startswith("Optimizer.")]
    assert any(e.name == "Optimizer.step#SGD.step" for e in optimizer)
    subtrees_ms = sum(e.cpu_time_total for e in optimizer) / 1e3
    assert times["optimizer"] * STEPS == pytest.approx(subtrees_ms, rel=1e-9)


def test_table_shares_sum_to_one(prof_step, cpu_events):
    times = prof_step.time_by_category(cpu_events, STEPS, device=False)
    shares = prof_step.shares(times)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["convolutions"] == pytest.approx(times["convolutions"] / sum(times.values()))
    lines = prof_step.markdown_table(times).splitlines()
    assert lines[0] == "| category | ms per step | share |"
    assert len(lines) == 2 + len(times) + 1
    assert lines[-1] == f"| total | {sum(times.values()):.2f} | 100.0% |"
    first = next(iter(times))
    assert lines[2] == f"| {first} | {times[first]:.2f} | {shares[first]:.1%} |"


def test_profile_step_main_prints_the_table_and_the_json(prof_step, capsys):
    result = prof_step.main(TINY + ["--steps", "1", "--rows", "5"])
    out = capsys.readouterr().out
    assert "| category | ms per step | share |" in out
    printed = json.loads(out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(result))
    where = printed["where_the_time_goes"]
    assert where["convolutions"] > 0 and "unattributed" not in where
    assert printed["compiled_head_modules"] == 0 and "graphed_ms_per_step" not in printed


# --- throughput.py --------------------------------------------------------------------------

@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.4),
    ("NVIDIA H100 PCIe", 756.5),
    ("NVIDIA H100 NVL", 835.5),
    ("NVIDIA H200", 989.4),
    ("NVIDIA H200 NVL", 835.5),
    ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA L40S", 362.05),
    ("NVIDIA L40", 181.05),
    ("NVIDIA L4", 121.0),
])
def test_peak_of_known_gpus(throughput, name, peak):
    value, source = throughput.peak_bf16_tflops(name)
    assert value == peak and source.startswith("datasheet")


def test_peak_of_unknown_device_is_none_unless_given(throughput):
    for name in ("NVIDIA GeForce RTX 4090", None):
        value, source = throughput.peak_bf16_tflops(name)
        assert value is None and "--peak-tflops" in source
    assert throughput.peak_bf16_tflops("NVIDIA H200", 500.0) == (500.0, "--peak-tflops")
    assert throughput.peak_bf16_tflops(None, 80.0) == (80.0, "--peak-tflops")


def test_achieved_rates_and_fractions(throughput):
    assert throughput.achieved(300.0, 500.0, 1000.0) == pytest.approx((150.0, 0.15))
    assert throughput.achieved(300.0, 500.0, None) == (pytest.approx(150.0), None)
    fields = throughput.rate_fields({"train_images_per_s": 200.0, "infer_images_per_s": 800.0},
                                    train_gflop=600.0, infer_gflop=220.0,
                                    peak=(989.4, "datasheet"))
    assert fields["train_tflops"] == 120.0 and fields["infer_tflops"] == 176.0
    assert fields["train_peak_fraction"] == round(120.0 / 989.4, 5)
    assert fields["infer_peak_fraction"] == round(176.0 / 989.4, 5)
    assert fields["peak_bf16_tflops"] == 989.4 and fields["peak_source"] == "datasheet"
    unknown = throughput.rate_fields({"train_images_per_s": 1.0, "infer_images_per_s": 1.0},
                                     1.0, 1.0, (None, "none"))
    assert unknown["train_peak_fraction"] is None and unknown["infer_peak_fraction"] is None


def test_mode_settings(throughput):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    args = throughput.parse_args(["--device", "cpu", "--modes", "fused_regions"])
    regions_cpu = throughput.mode_settings("fused_regions", args, cpu)
    assert regions_cpu["compile_heads"] and regions_cpu["amp"] == "none"
    assert not regions_cpu["cuda_graphs"] and not regions_cpu["infer_cuda_graphs"]
    regions = throughput.mode_settings("fused_regions", args, cuda)
    assert regions == {"schedule": "fused", "amp": "bf16", "channels_last": True,
                       "cuda_graphs": True, "infer_cuda_graphs": True, "compile": False,
                       "compile_heads": True}
    fast = throughput.mode_settings("fused_fast", args, cuda)
    assert fast["infer_cuda_graphs"] and not fast["compile_heads"]
    assert not throughput.mode_settings("fused_eager", args, cuda)["infer_cuda_graphs"]
    assert throughput.mode_settings("alternating_fp32", args, cuda)["amp"] == "none"
    compiled = throughput.parse_args(["--device", "cpu", "--compile"])
    assert throughput.mode_settings("fused_fast", compiled, cuda)["compile"]
    assert not throughput.mode_settings("fused_fast", compiled, cuda)["cuda_graphs"]
    assert throughput.mode_settings("fused_regions", compiled, cuda)["cuda_graphs"]
    eager = throughput.parse_args(["--device", "cpu", "--no-cuda-graphs"])
    assert not throughput.mode_settings("fused_regions", eager, cuda)["infer_cuda_graphs"]
    with pytest.raises(SystemExit):
        throughput.parse_args(["--modes", "fused_fast,fused_fastest"])


@pytest.mark.parametrize("graphs", [False, True])
def test_inference_rate_leaves_the_capture_out(throughput, monkeypatch, graphs):
    """A call costs 0.1 s a batch, plus 0.5 s for its capture with graphs."""
    calls = []
    monkeypatch.setattr(throughput, "predict_logits",
                        lambda *a, cuda_graphs, **k: calls.append((len(a[1]), cuda_graphs)))
    monkeypatch.setattr(throughput, "timed",
                        lambda run, n, device: run(n) or 0.1 * n + (0.5 if graphs else 0.0))
    args = throughput.parse_args(TINY + ["--steps", "7", "--warmup", "2"])
    rate, capture = throughput.infer_rate_and_capture(None, [None], None, None, args, None, graphs)
    assert calls == [(2, graphs), (2, graphs), (9, graphs)]
    assert rate == pytest.approx(2 / 0.1)  # batch size 2
    assert capture == (pytest.approx(0.5) if graphs else None)


@pytest.mark.slow  # compiles the heads: a minute of a loaded 2-core machine
def test_fused_regions_compiles_the_heads(throughput, monkeypatch):
    compiled = []
    monkeypatch.setattr(throughput, "compile_heads", lambda model: compiled.append(model) or 8)
    args = throughput.parse_args(TINY + ["--steps", "1", "--warmup", "1"])
    result = throughput.run_mode("fused_regions", args, torch.device("cpu"))
    assert len(compiled) == 1 and result["compiled_head_modules"] == 8
    assert result["train_images_per_s"] > 0 and result["infer_images_per_s"] > 0
    assert throughput.run_mode("fused_fast", args, torch.device("cpu"))["compiled_head_modules"] == 0
    assert len(compiled) == 1


def test_throughput_main_rates_use_each_schedules_counted_flops(throughput, capsys):
    throughput.main(TINY + ["--steps", "1", "--warmup", "1", "--peak-tflops", "0.5",
                            "--modes", "alternating_fp32,fused_fast"])
    *modes, summary = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    alternating, fused = modes
    assert alternating["infer_gflop_per_image"] == fused["infer_gflop_per_image"] == pytest.approx(
        summary["backbone_gflop_per_image"] + summary["heads_gflop_per_image"], abs=0.01)
    ratio = alternating["train_gflop_per_image"] / fused["train_gflop_per_image"]
    assert ratio == pytest.approx(summary["op_count_ratio_counted"], abs=2e-3)
    for r in modes:
        assert r["peak_bf16_tflops"] == 0.5 and r["peak_source"] == "--peak-tflops"
        assert not r["infer_cuda_graphs"] and r["infer_capture_ms"] is None
        assert r["train_tflops"] == pytest.approx(
            r["train_images_per_s"] * r["train_gflop_per_image"] / 1e3, rel=1e-3, abs=1e-4)
        # TFLOP/s are printed to 4 decimals (off by up to 5e-5, 1e-4 once divided by the peak of
        # 0.5) and fractions to 5: slow rates (a loaded machine) leave only these roundings
        rounding = 0.5e-4 / 0.5 + 0.5e-5
        assert r["train_peak_fraction"] == pytest.approx(r["train_tflops"] / 0.5, rel=1e-3,
                                                         abs=rounding * 1.01)
        assert r["infer_peak_fraction"] == pytest.approx(r["infer_tflops"] / 0.5, rel=1e-3,
                                                         abs=rounding * 1.01)


def test_throughput_count_only_prints_the_counts_without_timing(throughput, capsys, monkeypatch):
    monkeypatch.setattr(throughput, "run_mode", lambda *a: pytest.fail("count-only must not time"))
    throughput.main(TINY + ["--count-only"])
    (counts,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert counts["backbone_gflop_per_image"] > 0 and counts["heads_gflop_per_image"] > 0
    # the alternating schedule runs three forward passes per step, the fused one a single one
    assert 1 < counts["alternating_step_gflop_per_image"] / counts["fused_step_gflop_per_image"] < 3
