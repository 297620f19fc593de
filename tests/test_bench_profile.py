"""benchmarks/throughput.py's FLOP rates: the peak lookup, and each mode's settings and fields."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = ["--device", "cpu", "--backbone", "test_resnet", "--image-size", "64", "--dim", "32",
        "--attn-dim", "16", "--batch-size", "2"]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def throughput():
    return load("throughput")


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
        assert not r["infer_cuda_graphs"]
        assert r["train_tflops"] == pytest.approx(
            r["train_images_per_s"] * r["train_gflop_per_image"] / 1e3, rel=1e-3, abs=1e-4)
        assert r["train_peak_fraction"] == pytest.approx(r["train_tflops"] / 0.5, rel=1e-3,
                                                         abs=1e-4)
        assert r["infer_peak_fraction"] == pytest.approx(r["infer_tflops"] / 0.5, rel=1e-3,
                                                         abs=1e-4)
