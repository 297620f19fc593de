"""Run configuration: nested dataclasses, loaded from YAML plus ``key=value`` overrides.

Every field below is part of the public interface; docs/configuration.md is generated from
this file (scripts/config_reference.py). The defaults of the model and training fields are the
published model's at full size; a recipe (``configs/*.yaml``) sets what differs, and ``mgmrn
train`` without ``--config`` runs the ``parts-pretrained`` recipe, whose set is the data default.
A closed choice is a ``Literal`` type of :mod:`mgmrn.choices`, and the accepted values are read
from it.
Loading validates names and types, so a typo fails before anything heavy starts, with a message
that names the key and says what was expected.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mgmrn.choices import (
    Amp,
    AusucOrder,
    AutoWorkers,
    CompileHeads,
    DatasetName,
    Grouping,
    Halving,
    LrSchedule,
    LrStepAt,
    ModelName,
    Norm,
    Optimizer,
    PrototypeInit,
    Sampler,
    Schedule,
    Semantic,
    Split,
    TestResize,
    choice_fields,
)
from mgmrn.errors import MgmrnError
from mgmrn.io.atomic import write_atomic

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_RECIPE = "parts-pretrained"  # what `mgmrn train` runs without --config: the parts demo,
# fine-tuned from the backbone that ships with the package
# without --config, a data.name override picks the recipe made for that data (a CUB run on the
# demo's 96 px toy network would be a trap); any other override applies over that recipe
DATA_RECIPES = {"parts": DEFAULT_RECIPE, "demo": "demo-pretrained", "custom": "custom",
                "cub": "cub", "sun": "sun", "awa2": "awa2"}


class ConfigError(MgmrnError, ValueError):
    """A configuration that cannot be used; the message says what to change."""


@dataclass
class ModelConfig:
    name: ModelName = "mgmrn"
    backbone: str = "resnet101"
    backbone_args: dict = field(default_factory=dict)  # extra timm.create_model arguments
    pretrained: bool = True
    # local weights file, or package:<name> for one shipped in the package (the demo backbone:
    # package:demo_backbone.safetensors); otherwise timm's hub cache / URL
    pretrained_file: str | None = None
    finetune: bool = True  # False freezes the backbone and its batch-norm statistics
    # freeze the stem and the first N blocks (plain ViTs) or stages (CNNs, Swin), with their
    # batch-norm statistics; 0: none (docs/backbones.md: Fine-tuning)
    freeze: int = 0
    grad_checkpointing: bool = False  # recompute the backbone's blocks in backward (timm's)
    # plain ViTs: the three blocks (from 0, fine level first) the levels are read from;
    # null: the last block of each third of the depth (3, 7, 11 of 12)
    out_indices: list[int] | None = None
    num_parts: int = 5  # K, region-grouping parts per level
    dim: int = 2048  # D, channel width of the level maps
    attn_dim: int = 1024  # M, attention width of the decoder
    scaled_attention: bool = False  # divide Q K^T by sqrt(M); the published model does not
    resize_before_projection: bool = False  # halve fine/middle maps before the 3x3 projection
    tau: float = 20.0  # temperature of the cosine classifier
    norm: Norm = "group"  # normalisation of the level projections; "group" is GroupNorm(32), as published
    grouping: Grouping = "regions"  # "regions": K region tokens per level; "identity": x/K, as published
    halving: Halving = "mean"  # how fine/middle maps are halved: 2x2 mean, or align_corners (published)
    prototype_init: PrototypeInit = "normal"  # prototypes: std 1 ("normal", published) or D^-1/2 ("scaled")


@dataclass
class DemoConfig:
    image_size: int = 64
    num_shapes: int = 5
    num_colors: int = 5
    num_patterns: int = 3
    num_unseen: int = 15
    num_withheld: int = 0  # classes kept out of the run entirely, to be added at prediction time
    images_per_class: int = 40
    seed: int = 0


@dataclass
class PartsConfig:
    image_size: int = 96
    num_body_colors: int = 4  # coarse part
    num_wing_colors: int = 4  # middle part
    num_beak_colors: int = 5  # fine part
    num_unseen: int = 16
    images_per_class: int = 40
    seed: int = 0


@dataclass
class DataConfig:
    name: DatasetName = "parts"  # the default recipe's set (configs/parts.yaml, its base)
    root: str = ".cache/mgmrn/parts"
    attribute_vectors: str | None = None  # (A, E) .pkl or .npy; default per dataset
    semantic: Semantic = "original"  # class attributes: xlsa17's original_att, or its normalized att
    split: Split = "trainval"  # "trainval": the test splits; "val": the validation classes
    image_size: int = 448
    test_resize: TestResize = "ratio"  # test images: "ratio" resizes to size*8/7, crops; "crop": published
    flip: bool = True  # mirror training images at random, as published; false: attributes know left/right
    ways: int = 8
    shots: int = 2
    sampler: Sampler = "episodic"  # training batches: "episodic" draws ways classes x shots images
    num_workers: int | AutoWorkers = "auto"  # loading processes, or "auto" (from the cores present)
    test_batch_size: int = 32
    verify_images: bool = True
    skip_bad_images: bool = False
    val_fraction: float = 0.2  # seen images held out as the seen test set of the val split
    demo: DemoConfig = field(default_factory=DemoConfig)
    parts: PartsConfig = field(default_factory=PartsConfig)


@dataclass
class TrainConfig:
    epochs: int = 30
    batches_per_epoch: int = 300
    optimizer: Optimizer = "sgd"  # "sgd" is the published recipe's
    lr: float = 5e-4
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-5
    lr_step: int = 10  # StepLR step, in epochs
    lr_gamma: float = 0.1
    lr_step_at: LrStepAt = "end"  # when StepLR steps in each epoch ("start", published, decays early)
    # "step": lr * lr_gamma every lr_step epochs; "cosine": to 0 over the run, set every batch
    scheduler: LrSchedule = "step"
    warmup_epochs: float = 0.0  # linear warm-up from lr / (its batches), set every batch
    backbone_lr_scale: float = 1.0  # the pretrained backbone's lr = lr * this; the heads' = lr
    # the backbone's lr is 0 for this many epochs, then follows the schedule: the new heads learn
    # on the pretrained features first, as a linear probe does, before these move (LP-FT)
    heads_only_epochs: float = 0.0
    # layer-wise lr decay: block or stage i of n gets lr * layer_decay^(n - i), as timm groups
    # them (BEiT); null: off
    layer_decay: float | None = None
    # no weight decay for norms, biases, position embeddings, cls/register tokens and the
    # backbone's no_weight_decay() names (timm's rules); false: every parameter decays
    decay_exclusions: bool = False
    lam: float = 0.1  # weight of the attribute regression loss
    schedule: Schedule = "fused"  # how the three level losses are optimised per batch
    amp: Amp = "auto"  # mixed precision; auto = bf16 on CUDA, none on CPU
    channels_last: bool | None = None  # None = on for CUDA, off for CPU
    compile: bool | CompileHeads = False  # true: the whole network; "regions": each head module
    cuda_graphs: bool | None = None  # replay each fused step as a CUDA graph; None = on where supported
    eval_every: int = 1  # epochs between evaluations; 0 evaluates only at the end
    auto_resume: bool | None = None  # continue from output_dir's last.pt; None = under torchrun


@dataclass
class EvalConfig:
    gamma: float | None = None  # fixed calibration constant, reported beside the oracle
    gamma_step: float = 0.01
    ausuc_order: AusucOrder = "gamma"  # AUSUC points ordered by "gamma" (the curve) or as the "release" does
    # replay full evaluation batches as a CUDA graph; None = where it works. Off by default: only
    # tests/cuda/test_cuda.py, which needs a GPU, checks the replay against the eager pass
    cuda_graphs: bool | None = False


@dataclass
class Config:
    seed: int = 214
    output_dir: str = "runs/demo"
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# the closed choices, derived from the fields' types: a value added to a Literal is accepted
CHOICES = choice_fields(Config)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field annotation, allowing int where float is expected."""
    hint = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if hint is typing.Literal:
        return _coerce_choice(value, args, key)
    if hint in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"config key '{key}': expected {names}, got {value!r}")
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
    if annotation is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
    if annotation in (float, str) and not isinstance(value, annotation):
        raise ConfigError(f"config key '{key}': expected {annotation.__name__}, got {value!r}")
    return value


def _coerce_choice(value: Any, choices: tuple, key: str) -> Any:
    """A ``Literal`` field's value must have its choices' type (``model.halving=3`` is refused
    here); whether it is one of them is left to :func:`validate`, whose messages can say more
    (the meaning of each choice, ``train.compile``)."""
    if not any(type(value) is type(choice) for choice in choices):
        raise ConfigError(f"config key '{key}': expected one of {', '.join(map(str, choices))}, "
                          f"got {value!r}")
    return value


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if typing.get_origin(annotation) is typing.Literal:
        return " or ".join(map(str, typing.get_args(annotation)))
    return annotation.__name__


def _update(obj: Any, values: dict[str, Any], prefix: str = "") -> None:
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in names:
            close = ", ".join(sorted(names))
            raise ConfigError(f"unknown config key '{key}'; known keys here: {close}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{key}' is a section; give its fields, not {value!r}")
            _update(current, value, prefix=f"{key}.")
        else:
            setattr(obj, name, _coerce(value, hints[name], key))


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["train.epochs=3", "model.pretrained=false"]`` into a nested dict."""
    nested: dict[str, Any] = {}
    given: dict[str, str] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.epochs=3)")
        key, raw = item.split("=", 1)
        if key.strip() in given:  # scripts append overrides to a list: the last one is meant
            log.warning("'%s' is given twice on the command line ('%s', then '%s'): the last one "
                        "is used", key.strip(), given[key.strip()], item)
        given[key.strip()] = item
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or type(err).__name__
            raise ConfigError(f"override '{item}': the value is not valid YAML ({problem}); "
                              f"quote it to give a string") from err
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with an earlier one")
        node[parts[-1]] = value
    return nested


def resolve_config_path(name: str | Path) -> Path:
    """A YAML path, or a bundled recipe's name (``cub``, ``sun``, ``awa2``, ``demo``, ``parts``)."""
    path = Path(name)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / f"{name}.yaml"
    if bundled.is_file():
        return bundled
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config file '{name}' not found; give a YAML path or one of: {known}")


def from_dict(values: dict[str, Any]) -> Config:
    cfg = Config()
    _update(cfg, values)
    _imply(cfg)
    validate(cfg)
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader refusing a key given twice in one mapping, which plain YAML loaders
    resolve silently by keeping the last (a second ``train:`` block drops the first)."""

    def construct_mapping(self, node, deep=False):
        first: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base" may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                seen = first.setdefault(key, line)
            except TypeError:  # an unhashable key: the base loader says so
                break
            if seen != line:
                raise ConfigError(f"key '{key}' is given twice, on line {seen} and line {line} "
                                  f"(the first would be dropped); keep one")
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """The parser's complaint in one line, with the line and column where it arose (its own
    message spans several lines, quoting the file)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context = getattr(err, "context", None)
    return " ".join(f"{where}{problem}{f' ({context})' if context else ''}".split())


def _read_recipe(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """A config file and the files it builds on (``base: <recipe or path>``), base first."""
    if path in chain:
        raise ConfigError(f"{path}: 'base' refers back to itself through "
                          f"{' -> '.join(str(p) for p in chain)}")
    try:
        values = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(err)}") from err
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    base = values.pop("base", None)
    if base is None:
        return [(path, values)]
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'base' must name a recipe or a YAML file, got {base!r}")
    base_path = Path(base) if Path(base).is_absolute() else path.parent / base
    base_path = base_path if base_path.is_file() else resolve_config_path(base)
    return _read_recipe(base_path, chain + (path,)) + [(path, values)]


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                check: bool = True) -> Config:
    """Load a config file and apply overrides. Without a file: the recipe for the ``data.name``
    among the overrides (:func:`default_recipe`), else parts-pretrained, the built-in demo.

    A file may build on another with ``base: <recipe name or YAML path>``: the base is loaded
    first, then the file's own keys override it. ``check=False`` skips :func:`validate`, whose
    backbone check imports torch and timm: for what is needed before them (``output_dir``).
    """
    given = parse_overrides(overrides or [])
    if path is None:
        path = default_recipe(given)
        if check and path != DEFAULT_RECIPE:
            log.info("no --config: the data named runs the recipe '%s' (configs/%s.yaml)",
                     path, path)
    path = resolve_config_path(path)
    cfg = Config()
    for source, values in _read_recipe(path):
        try:
            _update(cfg, values)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from err
    _update(cfg, given)
    _imply(cfg)
    if check:
        validate(cfg)
        if cfg.model.finetune and cfg.train.heads_only_epochs >= cfg.train.epochs:
            log.warning("train.heads_only_epochs (%g) is not below train.epochs (%d): the heads "
                        "learn alone for the whole run and the backbone never moves; lower "
                        "train.heads_only_epochs to fine-tune it", cfg.train.heads_only_epochs,
                        cfg.train.epochs)
    return cfg


def default_recipe(overrides: dict[str, Any]) -> str:
    """The recipe run without ``--config``: the one for the ``data.name`` among the parsed
    overrides (:data:`DATA_RECIPES`), else the parts demo's."""
    data = overrides.get("data")
    name = data.get("name") if isinstance(data, dict) else None
    return DATA_RECIPES.get(name, DEFAULT_RECIPE) if isinstance(name, str) else DEFAULT_RECIPE


def _imply(cfg: Config) -> None:
    """A weights file means pretrained weights: ``model.pretrained_file`` sets
    ``model.pretrained=true`` (recipes that train from scratch, parts and demo, set it false)."""
    if cfg.model.pretrained_file is not None and not cfg.model.pretrained:
        log.info("model.pretrained_file is given: the backbone starts from it "
                 "(model.pretrained=true)")
        cfg.model.pretrained = True


def _get(cfg: Config, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: Config) -> None:
    """Checks that need no data: choices, positive sizes, divisibility."""
    for key, choices in CHOICES.items():
        value = _get(cfg, key)
        if value not in choices:
            raise ConfigError(f"config key '{key}': expected one of {', '.join(choices)}, got {value!r}")
    positive = ["data.image_size", "data.ways", "data.shots", "data.test_batch_size",
                "train.epochs", "train.batches_per_epoch", "model.num_parts", "model.dim",
                "model.attn_dim", "train.lr_step"]
    for key in positive:
        if _get(cfg, key) <= 0:
            raise ConfigError(f"config key '{key}' must be positive, got {_get(cfg, key)}")
    _check_backbone(cfg)
    if not 0.0 < cfg.data.val_fraction < 1.0:
        raise ConfigError(f"config key 'data.val_fraction' must lie in (0, 1), got {cfg.data.val_fraction}")
    workers = cfg.data.num_workers
    if workers not in typing.get_args(AutoWorkers) and not (isinstance(workers, int) and workers >= 0):
        raise ConfigError(f"config key 'data.num_workers': expected auto or a count of 0 or more, "
                          f"got {workers!r}")
    if cfg.train.compile not in (False, True, *typing.get_args(CompileHeads)):
        raise ConfigError(f"config key 'train.compile': expected false, true (the whole network) "
                          f"or regions (each head module), got {cfg.train.compile!r}")
    if cfg.train.eval_every < 0:
        raise ConfigError("config key 'train.eval_every' must be 0 or more")
    if cfg.model.freeze < 0:
        raise ConfigError(f"config key 'model.freeze': expected 0 (nothing frozen) or a count of "
                          f"blocks or stages, got {cfg.model.freeze}")
    if cfg.train.warmup_epochs > cfg.train.epochs:
        raise ConfigError(f"config key 'train.warmup_epochs': expected at most train.epochs "
                          f"({cfg.train.epochs}), got {cfg.train.warmup_epochs}")
    if cfg.train.heads_only_epochs > 0 and not cfg.model.finetune:
        raise ConfigError("config key 'train.heads_only_epochs': the backbone never learns with "
                          "model.finetune=false; set model.finetune=true or "
                          "train.heads_only_epochs=0")
    _check_trainable(cfg)


def _check_trainable(cfg: Config) -> None:
    """Values that train nothing (or the wrong way) are refused before a run starts."""
    inf = float("inf")
    ranges = {  # key: (lowest, highest, which ends are allowed, what the range means)
        "model.tau": (0.0, inf, "", "a temperature above 0"),
        "train.lr": (0.0, inf, "", "a learning rate above 0"),
        "train.lr_gamma": (0.0, 1.0, "high", "a decay factor in (0, 1]"),
        "train.momentum": (0.0, 1.0, "low", "a momentum in [0, 1)"),
        "train.weight_decay": (0.0, inf, "low", "0 or more"),
        "train.lam": (0.0, inf, "low", "a loss weight of 0 or more"),
        "train.warmup_epochs": (0.0, inf, "low", "0 or more epochs"),
        "train.heads_only_epochs": (0.0, inf, "low", "0 or more epochs"),
        "train.backbone_lr_scale": (0.0, inf, "", "a factor above 0 (model.finetune=false "
                                    "freezes the backbone)"),
        "eval.gamma_step": (0.0, inf, "", "a calibration step above 0"),
    }
    if cfg.train.layer_decay is not None:
        ranges["train.layer_decay"] = (0.0, 1.0, "high", "a factor in (0, 1], or null (off)")
    for key, (low, high, ends, meaning) in ranges.items():
        value = _get(cfg, key)
        inside = (low <= value if "low" in ends else low < value) and \
            (value <= high if "high" in ends else value < high)
        if not inside:  # NaN is never inside
            raise ConfigError(f"config key '{key}': expected {meaning}, got {value!r}")


def _check_backbone(cfg: Config) -> None:
    """The backbone exists, gives three levels, and takes ``data.image_size``: checked on the meta
    device (no weights, no data), so a backbone that cannot work stops here, not mid-run."""
    from mgmrn.models.backbone_spec import BackboneError, describe_backbone

    args = dict(cfg.model.backbone_args)
    if cfg.model.out_indices is not None:
        if "out_indices" in args:
            raise ConfigError("config keys 'model.out_indices' and 'model.backbone_args.out_indices' "
                              "are both given; keep model.out_indices")
        args["out_indices"] = cfg.model.out_indices
    try:
        describe_backbone(cfg.model.backbone, args, cfg.data.image_size)
    except BackboneError as err:
        raise ConfigError(str(err)) from err


def save_config(cfg: Config, path: str | Path) -> None:
    write_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
