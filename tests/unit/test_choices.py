"""Each switch spelled once: closed choices are Literal types, the config's validation table is
derived from them, and ``build_model`` passes every model field to the network by name."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
import torch
from torch import nn

from mgmrn import choices
from mgmrn.config import (
    CHOICES,
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
    load_config,
)
from mgmrn.models import BUILD_FIELDS, GlobalBaseline, MgMRN, build_model
from mgmrn.models.decoder import AttributeDecoder
from mgmrn.models.granularity import GranularityModule, _halve_align_corners, map_norm

TINY = "test_resnet"  # timm's tiny ResNet: strides 8/16/32 with 48/192/96 channels


def literal_fields(obj, prefix=""):
    """(dotted key, Literal type) of every field of a config (section) annotated by one."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from literal_fields(value, f"{prefix}{f.name}.")
        elif typing.get_origin(hints[f.name]) is typing.Literal:
            yield f"{prefix}{f.name}", hints[f.name]


def test_validation_table_is_the_literal_types_of_the_fields():
    fields = dict(literal_fields(Config()))
    assert CHOICES == {key: typing.get_args(kind) for key, kind in fields.items()}
    # the switches that used to be listed by hand are all typed
    assert {"model.halving", "model.grouping", "model.norm", "model.prototype_init", "model.name",
            "data.name", "data.test_resize", "train.amp", "eval.ausuc_order"} <= set(fields)
    assert CHOICES["model.halving"] == ("mean", "align_corners")
    assert typing.get_type_hints(ModelConfig)["halving"] is choices.Halving


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_every_choice_field_refuses_another_value_listing_the_choices(key):
    expected = ", ".join(CHOICES[key])
    with pytest.raises(ConfigError) as err:
        load_config("demo", [f"{key}=not_a_choice"])
    assert str(err.value) == f"config key '{key}': expected one of {expected}, got 'not_a_choice'"


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_every_choice_of_every_field_is_accepted(key):
    for value in CHOICES[key]:
        if key == "data.name" and value == "custom":
            continue  # a custom set needs files; its choice is checked by the table test above
        cfg = load_config("demo", [f"{key}={value}"])
        section, _, name = key.rpartition(".")
        assert getattr(getattr(cfg, section), name) == value


def test_a_value_added_to_a_literal_joins_the_validation_table(monkeypatch):
    widened = typing.Literal["mean", "align_corners", "nearest"]
    monkeypatch.setitem(ModelConfig.__annotations__, "halving", widened)
    derived = choices.choice_fields(Config)
    assert derived["model.halving"] == ("mean", "align_corners", "nearest")


@pytest.mark.parametrize("override, message", [
    ("model.halving=3", "'model.halving': expected one of mean, align_corners, got 3"),
    ("train.amp=true", "'train.amp': expected one of auto, bf16, fp16, none, got True"),
    ("train.compile=1", "'train.compile': expected bool or regions, got 1"),
    ("data.num_workers=1.5", "'data.num_workers': expected int or auto, got 1.5"),
])
def test_a_value_of_another_type_than_the_choices_is_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", [override])


def test_fields_with_a_choice_beside_another_type_take_it_from_their_literal():
    compile_type = typing.get_type_hints(TrainConfig)["compile"]
    workers_type = typing.get_type_hints(DataConfig)["num_workers"]
    assert typing.get_args(compile_type) == (bool, choices.CompileHeads)
    assert typing.get_args(workers_type) == (int, choices.AutoWorkers)
    assert load_config("demo", ["train.compile=regions"]).train.compile == "regions"
    assert load_config("demo", ["data.num_workers=auto"]).data.num_workers == "auto"


def test_the_configuration_reference_lists_each_fields_choices():
    from ..helpers import load_script

    text = load_script("scripts/config_reference.py").render().split("## Every key")[1]
    for key, values in CHOICES.items():
        cell = " \\| ".join(f"`{value}`" for value in values)
        assert f"| `{key}` | {cell} |" in text, key
    assert "| `train.compile` | `bool` \\| `regions` |" in text
    assert "| `data.num_workers` | `int` \\| `auto` |" in text


@pytest.mark.parametrize("build, kind, value", [
    (lambda: GranularityModule(4, 8, halving="nearest"), "halving", "nearest"),
    (lambda: GranularityModule(4, 8, grouping="parts"), "grouping", "parts"),
    (lambda: map_norm("layer", 8), "norm", "layer"),
    (lambda: AttributeDecoder(3, 4, 8, 4, prototype_init="zeros"), "prototype_init", "zeros"),
])
def test_modules_below_build_model_check_the_same_choices(build, kind, value):
    allowed = ", ".join(CHOICES[f"model.{kind}"])
    with pytest.raises(ValueError, match=f"^{kind} must be one of {allowed}, got '{value}'$"):
        build()


# every ModelConfig field outside BUILD_FIELDS, a value other than its default, and how to read
# that value back from the built network
PROBES = {
    "num_parts": (3, lambda net: net.granularity[0].grouping.num_parts),
    "dim": (24, lambda net: net.granularity[0].project[0].out_channels),
    "attn_dim": (12, lambda net: net.decoders[0].query.out_features),
    "scaled_attention": (True, lambda net: net.decoders[0].scale == 1 / math.sqrt(12)),
    "resize_before_projection": (True, lambda net: net.granularity[0].resize_before_projection),
    "tau": (7.5, lambda net: net.tau),
    "norm": ("batch", lambda net: "batch" if isinstance(net.granularity[0].project[1], nn.BatchNorm2d)
             else "group"),
    "grouping": ("identity", lambda net: "identity" if net.granularity[0].project_regions is None
                 else "regions"),
    "halving": ("align_corners", lambda net: "align_corners"
                if net.granularity[0].halve is _halve_align_corners else "mean"),
    # std 24^-0.5 = 0.2 against 1 for the published init
    "prototype_init": ("scaled", lambda net: "scaled" if net.decoders[0].prototypes.std() < 0.5
                       else "normal"),
}


def test_build_model_passes_every_model_field_to_the_network():
    network_fields = [f.name for f in dataclasses.fields(ModelConfig) if f.name not in BUILD_FIELDS]
    assert sorted(PROBES) == sorted(network_fields), "a ModelConfig field without a probe here"
    defaults = ModelConfig()
    for name, (value, _) in PROBES.items():
        assert getattr(defaults, name) != value, name
    cfg = ModelConfig(backbone=TINY, pretrained=False,
                      **{name: value for name, (value, _) in PROBES.items()})
    torch.manual_seed(0)
    net = build_model(cfg, torch.randn(40, 10))
    assert isinstance(net, MgMRN)
    for name, (value, read) in PROBES.items():
        assert read(net) == value, name


def test_baseline_takes_the_fields_it_has():
    cfg = ModelConfig(name="baseline", backbone=TINY, pretrained=False, tau=3.0, halving="align_corners")
    net = build_model(cfg, torch.randn(6, 10))
    assert isinstance(net, GlobalBaseline) and net.tau == 3.0


def test_a_model_field_no_network_takes_is_refused(monkeypatch):
    @dataclasses.dataclass
    class Wider(ModelConfig):
        dropout: float = 0.1

    with pytest.raises(TypeError, match=r"\['dropout'\] are not keywords of MgMRN"):
        build_model(Wider(backbone=TINY, pretrained=False, dim=8, attn_dim=4),
                    torch.randn(6, 10), backbone=nn.Identity())
