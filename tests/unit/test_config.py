"""Config loading, overrides and validation."""

from __future__ import annotations

from dataclasses import replace

import pytest

from mgmrn.config import ConfigError, load_config, parse_overrides, save_config


def test_bundled_recipes_carry_the_published_hyper_parameters():
    cub, sun, awa2 = (load_config(name) for name in ("cub", "sun", "awa2"))
    assert (cub.data.ways, cub.data.shots, cub.train.lr, cub.train.lr_gamma) == (8, 2, 5e-4, 0.1)
    assert (cub.model.tau, cub.train.lam, cub.seed) == (20.0, 0.1, 214)
    assert (sun.model.tau, sun.train.lam, sun.train.lr_gamma) == (25.0, 1.0, 0.5)
    assert (awa2.data.ways, awa2.train.lr, awa2.seed) == (16, 5e-5, 1514)
    for cfg in (cub, sun, awa2):
        assert (cfg.train.epochs, cfg.train.batches_per_epoch, cfg.train.lr_step) == (30, 300, 10)
        assert cfg.data.image_size == 448 and cfg.model.backbone == "resnet101"


def test_without_a_recipe_the_data_named_picks_its_own(caplog):
    demo = load_config()
    assert demo.data.name == "parts" and demo.output_dir == "runs/parts-pretrained"
    assert demo.train.backbone_lr_scale == 0.01
    # the user's own folder: the shipped backbone, the heads alone first, overrides on top
    with caplog.at_level("INFO", logger="mgmrn.config"):
        own = load_config(None, ["data.name=custom", "data.root=/data/mine", "seed=3"])
    assert "runs the recipe 'custom'" in caplog.text
    assert (own.data.name, own.data.root, own.seed) == ("custom", "/data/mine", 3)
    assert own.model.pretrained_file == "package:demo_backbone.safetensors"
    assert own.model.finetune and (own.train.backbone_lr_scale, own.train.heads_only_epochs) == (0.1, 5)
    assert replace(own.train, backbone_lr_scale=0.01, heads_only_epochs=0.0) == demo.train
    assert (own.data.image_size, own.train.epochs) == (demo.data.image_size, demo.train.epochs)
    # a benchmark named without --config runs its recipe, not the demo's 96 px network
    cub = load_config(None, ["data.name=cub", "data.root=/data/zsl"])
    assert (cub.model.backbone, cub.data.image_size, cub.train.lr) == ("resnet101", 448, 5e-4)
    assert load_config(None, ["data.name=demo"]).output_dir == "runs/demo-pretrained"
    # a recipe named keeps its network whatever the data
    assert load_config("parts", ["data.name=custom"]).output_dir == "runs/parts"
    with pytest.raises(ConfigError, match="data.name"):
        load_config(None, ["data.name=imagenet"])


def test_overrides_are_typed_and_nested():
    assert parse_overrides(["train.epochs=3", "model.pretrained=false", "eval.gamma=0.5"]) == {
        "train": {"epochs": 3}, "model": {"pretrained": False}, "eval": {"gamma": 0.5}}
    cfg = load_config("demo", ["train.epochs=3", "model.pretrained_file=/x/w.pth", "eval.gamma=1"])
    assert cfg.train.epochs == 3 and cfg.model.pretrained_file == "/x/w.pth"
    assert cfg.eval.gamma == 1.0 and isinstance(cfg.eval.gamma, float)


@pytest.mark.parametrize("override, message", [
    ("train.epoch=3", "unknown config key 'train.epoch'"),
    ("trian.epochs=3", "unknown config key 'trian'"),
    ("train.epochs=three", "'train.epochs': expected an integer"),
    ("model.pretrained=maybe", "'model.pretrained': expected true or false"),
    ("train.schedule=both", "expected one of fused, alternating"),
    ("data.image_size=100", "divisible by 32"),
    ("data.ways=0", "'data.ways' must be positive"),
    ("train.epochs", "not of the form key=value"),
    ("train.compile=fast", "'train.compile': expected false, true .* or regions"),
    # values that cannot train are refused when the config is read, naming the key
    ("model.tau=0", "'model.tau': expected a temperature above 0, got 0.0"),
    ("model.tau=-20", "'model.tau': expected a temperature above 0"),
    ("train.lr=0", "'train.lr': expected a learning rate above 0"),
    ("train.lr=-0.001", "'train.lr': expected a learning rate above 0"),
    ("train.lr_gamma=-1", "'train.lr_gamma': expected a decay factor in (0, 1], got -1.0"),
    ("train.lr_gamma=0", "'train.lr_gamma': expected a decay factor in (0, 1]"),
    ("train.lr_gamma=1.5", "'train.lr_gamma': expected a decay factor in (0, 1]"),
    ("train.momentum=1", "'train.momentum': expected a momentum in "),
    ("train.weight_decay=-1", "'train.weight_decay': expected 0 or more"),
    ("train.lam=-0.1", "'train.lam': expected a loss weight of 0 or more"),
    ("eval.gamma_step=0", "'eval.gamma_step': expected a calibration step above 0"),
    ("train.lr=.nan", "'train.lr': expected a learning rate above 0, got nan"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config("demo", [override])


def test_a_key_given_twice_on_the_command_line_is_named_and_the_last_one_used(caplog):
    with caplog.at_level("WARNING", logger="mgmrn.config"):
        cfg = load_config("demo", ["train.epochs=3", "model.dim=8", " train.epochs=5"])
    assert cfg.train.epochs == 5 and cfg.model.dim == 8
    assert [r.getMessage() for r in caplog.records] == [
        "'train.epochs' is given twice on the command line ('train.epochs=3', then "
        "' train.epochs=5'): the last one is used"]


def test_config_file_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'train.epochz'"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_limits_themselves_are_accepted():
    cfg = load_config("demo", ["train.lr_gamma=1", "train.momentum=0", "train.lam=0",
                               "train.weight_decay=0"])
    assert (cfg.train.lr_gamma, cfg.train.momentum, cfg.train.lam) == (1.0, 0.0, 0.0)


def test_key_given_twice_names_the_key_and_both_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("train:\n  epochs: 1\nmodel:\n  tau: 10\ntrain:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}: key 'train' is given twice, on line 1 and line 5 (the "
                              f"first would be dropped); keep one")
    path.write_text("train:\n  epochs: 1\n  lr: 0.1\n  epochs: 2\n")
    with pytest.raises(ConfigError, match="key 'epochs' is given twice, on line 2 and line 4"):
        load_config(path)
    # a YAML merge key is no repetition: its keys may be overridden
    path.write_text("model: &m\n  tau: 10.0\n  dim: 64\ntrain:\n  epochs: 2\n"
                    "eval: {gamma_step: 0.5}\ndata:\n  demo:\n    <<: {seed: 3, num_unseen: 5}\n"
                    "    seed: 4\n")
    cfg = load_config(path)
    assert (cfg.data.demo.seed, cfg.data.demo.num_unseen, cfg.model.tau) == (4, 5, 10.0)


def test_saved_config_loads_back_identically(tmp_path):
    cfg = load_config("cub", ["train.epochs=2"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_compile_takes_false_true_or_regions_and_regions_keeps_cuda_graphs():
    import torch

    from mgmrn.distributed import DistEnv
    from mgmrn.precision import Precision, resolve_cuda_graphs

    cuda, single = torch.device("cuda"), DistEnv()
    assert load_config("demo").train.compile is False
    regions = load_config("demo", ["train.compile=regions"])
    assert regions.train.compile == "regions"
    # the heads' generated kernels are captured in the step's graph; a whole compiled network is not
    assert resolve_cuda_graphs(regions, cuda, single, Precision(torch.bfloat16)) is True
    whole = load_config("demo", ["train.compile=true"])
    assert resolve_cuda_graphs(whole, cuda, single, Precision(torch.bfloat16)) is False
    with pytest.raises(ConfigError, match="train.compile=regions works"):
        resolve_cuda_graphs(load_config("demo", ["train.compile=true", "train.cuda_graphs=true"]),
                            cuda, single, Precision(torch.bfloat16))
