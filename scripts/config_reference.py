"""Write docs/configuration.md from the config dataclasses, so the reference cannot drift.

Every field of ``mgmrn.config.Config`` is listed with its dotted key, type, default and meaning.
The meaning is the comment next to the field in ``src/mgmrn/config.py`` (on its line, or the
comment lines just above it); ``MEANINGS`` below gives those that have none or too terse a one, and
``DETAILS`` adds what a one-line comment cannot hold. Types and choices come from the fields'
annotations (a ``Literal`` of ``mgmrn.choices`` lists its values), the published values of the
switches from ``RELEASE_SWITCHES`` (read from ``models/release.py`` without importing torch), and
the recipes from the bundled YAML files.

    python scripts/config_reference.py           # rewrite docs/configuration.md
    python scripts/config_reference.py --check   # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import tokenize
import types
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "configuration.md"
COMMAND = "python scripts/config_reference.py"
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from mgmrn import config as config_module  # noqa: E402

# meanings of the fields whose comment in config.py is missing or too terse for a reference
MEANINGS = {
    "seed": "seed of initialisation, sampling and augmentation",
    "output_dir": "run folder; never overwritten (`--resume` continues it)",
    "model.name": "the network: `mgmrn`, or `baseline` (global average pooled stride-32 features, a "
                  "linear map to attributes, the same cosine classifier)",
    "model.backbone": "a timm CNN or hierarchical transformer with stages at strides 8/16/32, or a "
                      "plain ViT (levels from three depths through a simple feature pyramid); "
                      "checked when the config is read ([backbones.md](backbones.md))",
    "model.pretrained": "ImageNet weights (torchvision's, through timm's hub cache or URL)",
    "data.name": "the dataset: the drawn `demo` (shapes) or `parts` set, a benchmark (xlsa17 splits), "
                 "or `custom` (see docs/data.md)",
    "data.root": "dataset folder; the drawn sets are written here once",
    "data.image_size": "input size in pixels (train: resize to size*8/7, random crop); a multiple "
                       "of 32 for CNNs, of twice the patch for plain ViTs; the backbone's rule "
                       "is checked when the config is read",
    "data.ways": "episodic batch: classes per batch",
    "data.shots": "episodic batch: images per class",
    "data.test_batch_size": "evaluation batch size",
    "data.verify_images": "decode-check every image before training (parallel, with progress)",
    "data.skip_bad_images": "warn about unreadable images and leave them out instead of stopping",
    "data.demo.image_size": "side of the drawn images, in pixels",
    "data.demo.num_shapes": "shapes (one attribute each)",
    "data.demo.num_colors": "colours (one attribute each)",
    "data.demo.num_patterns": "surface patterns (one attribute each)",
    "data.demo.num_unseen": "shape x colour x pattern combinations kept unseen",
    "data.demo.images_per_class": "images drawn per class",
    "data.demo.seed": "seed of the drawing",
    "data.parts.image_size": "side of the drawn images, in pixels",
    "data.parts.num_body_colors": "body colours (the coarse part; one attribute each)",
    "data.parts.num_wing_colors": "wing colours (the middle part; one attribute each)",
    "data.parts.num_beak_colors": "beak colours (the fine part; one attribute each)",
    "data.parts.num_unseen": "body x wing x beak colour combinations kept unseen",
    "data.parts.images_per_class": "images drawn per class",
    "data.parts.seed": "seed of the drawing",
    "train.epochs": "epochs",
    "train.batches_per_epoch": "batches per epoch (per process under torchrun)",
    "train.lr": "learning rate",
    "train.weight_decay": "weight decay",
    "train.lr_gamma": "StepLR decay factor",
    "eval.gamma_step": "step of the calibration (γ) sweep",
}

# what follows the comment in the table: conditions and consequences a one-line comment omits
DETAILS = {
    "model.backbone_args": "(e.g. a ResNet's `layers`, `channels`)",
    "model.pretrained_file": "(a timm or torchvision state dict); implies `model.pretrained=true`; "
                             "weights that leave a backbone tensor unloaded, bring names it lacks "
                             "(beyond a classifier head) or other shapes are refused",
    "model.out_indices": "(hierarchical backbones: their stride 8/16/32 stages; refused here)",
    "train.layer_decay": "(the heads count as the last layer; docs/backbones.md: Fine-tuning)",
    "train.scheduler": "`step` with `train.warmup_epochs` > 0 is also set every batch",
    "model.resize_before_projection": "(4x cheaper heads; not published)",
    "model.norm": "`batch` serves inputs so small that the level maps have only a few cells",
    "data.root": "(benchmarks: the folder holding `xlsa17/`, `w2v/` and the images)",
    "data.attribute_vectors": "(else `<root>/w2v/<NAME>_attribute.pkl`, else the packaged copy)",
    "data.num_workers": "`auto`: the cores this process may use, shared among the training processes "
                        "of the machine, less one per training process, at most 16",
    "train.amp": "`fp16` uses gradient scaling",
    "train.compile": "the compiled heads keep the checkpoint's parameter names and combine with CUDA "
                     "graphs",
    "train.cuda_graphs": "Supported with one CUDA process, `train.schedule=fused`, not `train.amp=fp16`, "
                         "not `train.compile=true`; `true` requires it (stops with the reason where it "
                         "cannot), `false` turns it off",
    "train.schedule": "`fused`: one forward, summed level losses, one step; `alternating`: the published "
                      "three forward/backward/step rounds per batch",
    "eval.gamma": "GZSL at this γ is reported under `fixed_gamma` in results.json",
    "eval.cuda_graphs": "The shorter last batch runs eagerly; `true` requires it, `null` uses it on CUDA "
                        "unless `train.compile=true`",
}

SECTION_TITLES = {
    "": "Top level",
    "model": "`model`: the network",
    "data": "`data`: the dataset and its loading",
    "data.demo": "`data.demo`: the drawn shapes set",
    "data.parts": "`data.parts`: the drawn parts set",
    "train": "`train`: optimisation and speed",
    "eval": "`eval`: evaluation and calibration",
}


def _comments(source: str) -> dict[int, str]:
    """Comment text by line number."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found[token.start[0]] = token.string.lstrip("#").strip()
    return found


def field_comments() -> dict[str, dict[str, str]]:
    """For each dataclass of config.py, its fields' comments: on the field's line, else the
    comment lines directly above it."""
    source = inspect.getsource(config_module)
    comments = _comments(source)
    lines = source.splitlines()
    found: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields = found.setdefault(node.name, {})
        for item in node.body:
            if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                continue
            line = item.lineno
            if line in comments:
                fields[item.target.id] = comments[line]
                continue
            above = []
            while line - 1 in comments and lines[line - 2].lstrip().startswith("#"):
                line -= 1
                above.insert(0, comments[line])
            if above:
                fields[item.target.id] = " ".join(above)
    return found


def type_cell(annotation) -> str:
    """A field's resolved type as the table shows it: each arm of a union in turn, the values of
    a ``Literal`` (its choices) in place of its name."""
    arms = typing.get_args(annotation) if typing.get_origin(annotation) in (
        typing.Union, types.UnionType) else (annotation,)
    parts = []
    for arm in arms:
        if typing.get_origin(arm) is typing.Literal:
            parts += [str(choice) for choice in typing.get_args(arm)]
        else:
            parts.append("None" if arm is type(None) else arm.__name__)
    return " \\| ".join(f"`{part}`" for part in parts)


def release_switches() -> dict:
    """``RELEASE_SWITCHES`` of models/release.py, read as a literal (no torch import)."""
    path = Path(config_module.__file__).parent / "models" / "release.py"
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "RELEASE_SWITCHES"
                                                 for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"{path}: no RELEASE_SWITCHES")


def show(value) -> str:
    """A value as it is written in YAML."""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value is None:
        return "`null`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value}`"


def _rows(obj, prefix: str, comments, sections: dict[str, list]) -> None:
    cls = type(obj).__name__
    for f in dataclasses.fields(obj):
        key = f"{prefix}{f.name}"
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _rows(value, f"{key}.", comments, sections)
            continue
        meaning = MEANINGS.get(key) or comments.get(cls, {}).get(f.name)
        if not meaning:
            raise SystemExit(f"config field '{key}' has no meaning: add a comment next to it in "
                             f"src/mgmrn/config.py or an entry to MEANINGS in {COMMAND.split()[1]}")
        detail = DETAILS.get(key)
        if detail:
            lower = detail[0] == "`" or detail[0].islower()
            joint = " " if detail.startswith("(") else "; " if lower else ". "
            meaning = f"{meaning}{joint}{detail}"
        kind = type_cell(typing.get_type_hints(type(obj))[f.name])
        sections.setdefault(prefix.rstrip("."), []).append((key, kind, show(value), meaning))


def recipes() -> list[tuple[str, str, str]]:
    """(name, base, first sentence of the leading comment) of every bundled recipe."""
    found = []
    for path in sorted(config_module.CONFIG_DIR.glob("*.yaml"), key=lambda p: p.stem):
        lines = path.read_text().splitlines()
        leading = []
        for line in lines:
            if not line.startswith("#"):
                break
            leading.append(line.lstrip("#").strip())
        base = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("base:")), "")
        comment = " ".join(leading)
        sentence = comment.split(". ")[0].split(" (see")[0].rstrip(".:") + "."
        found.append((path.stem, base, sentence))
    return found


def switch_rows(defaults) -> list[tuple[str, str, str, str, str]]:
    """(key, mgmrn default, published value, recipes that set another value, meaning)."""
    rows = []
    plain = [name for name, _, _ in recipes() if not name.endswith("-release")]
    loaded = {name: config_module.load_config(name) for name in plain}
    for key, published in release_switches().items():
        default = config_module._get(defaults, key)
        others = {}
        for name, cfg in loaded.items():
            value = config_module._get(cfg, key)
            if value != default:
                others.setdefault(show(value), []).append(f"`{name}`")
        elsewhere = "; ".join(f"{', '.join(names)}: {value}" for value, names in others.items())
        rows.append((f"`{key}`", show(default), show(published), elsewhere or "-"))
    return rows


def render() -> str:
    defaults = config_module.Config()
    sections: dict[str, list] = {}
    _rows(defaults, "", field_comments(), sections)
    out = [
        "# Configuration",
        "",
        f"<!-- Generated by `{COMMAND}` from src/mgmrn/config.py, src/mgmrn/models/release.py",
        "     and src/mgmrn/configs/*.yaml. Do not edit by hand: tests/unit/test_config_reference.py",
        "     fails when this file is stale. -->",
        "",
        "A run is configured by a recipe (`--config NAME` or a YAML path; without `--config`,",
        f"`mgmrn train` and `mgmrn data check` read `{config_module.DEFAULT_RECIPE}`) and `key=value`",
        "overrides with dotted keys, e.g. `mgmrn train --config cub data.root=/data/zsl train.epochs=5`.",
        "A recipe may build on another with `base: <recipe or YAML path>`. Unknown keys, wrong types,",
        "values outside the choices and values that cannot train are refused before anything heavy",
        "starts, with the key named. The resolved config is written to `<output_dir>/config.yaml`.",
        "",
        "## Bundled recipes",
        "",
        "In `src/mgmrn/configs/` (also reachable as `configs/`); the defaults below are the",
        "dataclasses' own, which every recipe overrides in part.",
        "",
        "| recipe | builds on | what it is |",
        "|---|---|---|",
    ]
    for name, base, sentence in recipes():
        out.append(f"| `{name}` | {f'`{base}`' if base else '-'} | {sentence} |")
    out += [
        "",
        "## Switches: mgmrn's choice against the published code",
        "",
        "Every place where mgmrn's default differs from the authors' published code is a switch;",
        "the `*-release` recipes set all of them to the published value (`RELEASE_SWITCHES` in",
        "`src/mgmrn/models/release.py`), and `mgmrn convert-release` refuses a recipe that does not.",
        "See [fidelity.md](fidelity.md) for what each one changes and what it was measured to give.",
        "",
        "| switch | mgmrn default | published (`*-release`) | bundled recipes that set another value |",
        "|---|---|---|---|",
    ]
    out += [f"| {' | '.join(row)} |" for row in switch_rows(defaults)]
    out += [
        "",
        "## Every key",
        "",
        "Type as annotated in `src/mgmrn/config.py`, or the accepted values where the choice is",
        "closed (the field's `Literal` type in `src/mgmrn/choices.py`). `null` is YAML's None.",
    ]
    for prefix, rows in sections.items():
        out += ["", f"### {SECTION_TITLES.get(prefix, f'`{prefix}`')}", "",
                "| key | type | default | meaning |", "|---|---|---|---|"]
        out += [f"| `{key}` | {kind} | {default} | {meaning} |" for key, kind, default, meaning in rows]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write docs/configuration.md from the config dataclasses.")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(ROOT)} is stale; regenerate it with: {COMMAND}")
            return 1
        return 0
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
