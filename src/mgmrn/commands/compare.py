"""Trained runs side by side: ``mgmrn compare RUN RUN ...``.

For runs trained on the same data (e.g. Mg-MRN and the pooled baseline at the same budget) it
prints one table of their figures, measures how well each names the value of every one-hot
attribute group on the unseen test images (body, wing and beak colour on the parts set), and
draws ``comparison.png`` (those accuracies, and the seen-unseen curves of every run). On the
parts set it also measures where each level of an attention model looks: the share of the
attention of the beak-, wing- and body-colour attributes that falls on the beak's, the wing's and
the body's pixels, which the generator knows (:func:`mgmrn.data.synthetic.parts.redraw_parts_image`), and
draws that attention at each level on a few unseen test images.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mgmrn import checkpoint as ckpt_io
from mgmrn.config import Config, DataConfig, PartsConfig
from mgmrn.data import build_data
from mgmrn.data.loaders import build_test_loader
from mgmrn.data.synthetic.parts import parts_classes, redraw_parts_image
from mgmrn.data.transforms import test_transform
from mgmrn.evaluation.attributes import attention_mass_share, attribute_group_accuracy, one_hot_groups
from mgmrn.evaluation.report import write_json
from mgmrn.evaluation.results import ZSLResults, read_results
from mgmrn.inference.scoring import Inference
from mgmrn.precision import Precision
from mgmrn.training.engine import predict_logits
from mgmrn.viz import level_attention_maps, plot_attention
from mgmrn.viz.comparison import plot_comparison

log = logging.getLogger(__name__)

# part -> its attribute group, finest first
PART_GROUPS = {"beak": "beak_color", "wing": "wing_color", "body": "body_color"}
MAX_MASS_IMAGES = 640  # unseen test images whose attention is measured (the parts set has 640)


@dataclass
class Run:
    """A trained run: its folder, label, last-epoch results, config and loaded last checkpoint."""

    folder: Path
    label: str
    results: ZSLResults
    config: Config
    checkpoint: Path
    saved: dict  # what load_checkpoint read from ``checkpoint``, read once


def load_run(folder: str | Path) -> Run:
    """A run folder written by ``mgmrn train`` (``results.json`` and ``checkpoints/last.pt``)."""
    folder = Path(folder)
    results_file, checkpoint = folder / "results.json", folder / "checkpoints" / "last.pt"
    for path in (results_file, checkpoint):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {folder} is not a finished run of "
                                    f"'mgmrn train'")
    results = read_results(results_file)
    saved = ckpt_io.load_checkpoint(checkpoint)
    config = ckpt_io.checkpoint_config(saved)
    return Run(folder, f"{config.model.name} ({folder.name})", results, config, checkpoint, saved)


def figures_table(runs: list[Run], extra: dict[str, list[str]] | None = None) -> str:
    """A plain-text table: one column per run, one row per figure (percent)."""
    def gzsl(part):
        return "-" if part is None else f"{part.seen:.1f} / {part.unseen:.1f} / {part.h:.1f}"

    rows = {
        "CZSL accuracy": [f"{r.results.czsl_acc:.1f}" for r in runs],
        "GZSL S / U / H, oracle gamma": [
            f"{r.results.gzsl_seen:.1f} / {r.results.gzsl_unseen:.1f} / "
            f"{r.results.gzsl_h:.1f}" for r in runs],
        "oracle gamma": [f"{r.results.gamma:.2f}" for r in runs],
        "GZSL S / U / H, fixed gamma": [gzsl(r.results.fixed_gamma) for r in runs],
        "fixed gamma": [f"{r.results.fixed_gamma.gamma:.2f}" if r.results.fixed_gamma
                        else "-" for r in runs],
        "GZSL S / U / H, gamma 0": [gzsl(r.results.gzsl_uncalibrated) for r in runs],
        "AUSUC": [f"{r.results.ausuc:.1f}" for r in runs],
        **(extra or {}),
    }
    names = ["figure (last epoch)", *rows]
    width = max(len(n) for n in names)
    columns = [max(len(r.label), *(len(v[i]) for v in rows.values())) for i, r in enumerate(runs)]
    head = "  ".join(r.label.rjust(w) for r, w in zip(runs, columns))
    lines = [f"{names[0].ljust(width)}  {head}", "-" * (width + 2 + len(head))]
    for name, values in rows.items():
        lines.append(f"{name.ljust(width)}  " + "  ".join(v.rjust(w) for v, w in zip(values, columns)))
    return "\n".join(lines)


class _RunModel:
    """A run's network and test data, loaded once; the network runs in fp32 through
    :attr:`inference`."""

    def __init__(self, run: Run, device: torch.device):
        saved = run.saved
        cfg = ckpt_io.checkpoint_config(saved, {"data": {"verify_images": False}})
        self.cfg, self.device = cfg, device
        inputs = ckpt_io.checkpoint_inputs(saved)  # the input statistics the run trained with
        self.data = build_data(cfg.data, seed=cfg.seed, inputs=inputs)
        model, _ = ckpt_io.model_from_checkpoint(saved, run.checkpoint, self.data.attribute_vectors)
        ckpt_io.check_attribute_names(saved, run.checkpoint, self.data.attribute_names,
                                      f"{cfg.data.name} data at {cfg.data.root}")
        self.model = model.to(device)
        self.inference = Inference(self.model, self.data.class_attributes, device,
                                   precision=Precision(inputs=inputs))

    def unseen_attribute_scores(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Level-mean attribute scores (N, A) and labels (N,) of the unseen test images."""
        loader = build_test_loader(self.data.test_unseen, self.cfg.data)
        _, labels, attributes = predict_logits(self.model, loader, self.data.class_attributes,
                                               self.device, self.inference.precision,
                                               desc="unseen test")
        return attributes, labels


def attribute_accuracies(model: _RunModel) -> dict[str, float]:
    """Percent of unseen test images whose predicted value of each one-hot group is right."""
    groups = one_hot_groups(model.data.attribute_names, model.data.class_attributes)
    scores, labels = model.unseen_attribute_scores()
    accuracy = attribute_group_accuracy(scores, labels, model.data.class_attributes, groups)
    return {group: 100.0 * value for group, value in accuracy.items()}


def parts_set_config(data: DataConfig) -> PartsConfig | None:
    """The generator parameters of the parts set a run was trained on, or None for other data.

    A parts set read as ``data.name=custom`` is recognised by the record it was drawn with.
    """
    if data.name == "parts":
        return data.parts
    record = Path(data.root) / "parts.json"
    if data.name != "custom" or not record.is_file():
        return None
    params = json.loads(record.read_text())
    params.pop("generator_version", None)
    return PartsConfig(**params)


def _part_masks(model: _RunModel, paths: list[str]) -> dict[str, torch.Tensor]:
    """{part: (N, H, W) coverage} of the test images, through the test transform's geometry."""
    cfg = model.cfg.data
    parts = parts_set_config(cfg)
    classes = parts_classes(parts)
    transform = test_transform(cfg.image_size, cfg.test_resize, normalize=False)
    masks: dict[str, list[torch.Tensor]] = {part: [] for part in PART_GROUPS}
    for path in paths:
        path = Path(path)
        _, drawn = redraw_parts_image(parts, path.parent.name, int(path.stem), classes)
        for part in PART_GROUPS:
            mask = transform(torch.from_numpy(drawn[part])[None])  # resized like the image
            masks[part].append(mask[0].clamp(0, 1))
    return {part: torch.stack(m) for part, m in masks.items()}


@torch.no_grad()
def part_attention(model: _RunModel, out: Path | None = None,
                   figures: int = 4) -> dict[str, dict[str, float]]:
    """Share of each level's attention that falls on the part an attribute group names.

    For each unseen test image (up to MAX_MASS_IMAGES) and each part of PART_GROUPS, the attention
    maps of all the attributes of that part's group (e.g. every ``beak_color_*``) are averaged,
    then the share of that map on the part's pixels is taken; ``area`` is the part's share of
    the image, what a map spread evenly would give.

    Args:
        model: a loaded run on the parts set, with attention.
        out: where to write ``figures`` attention figures (each part's colour, every level).
        figures: how many images get a figure.

    Returns:
        {part: {level: mean share in percent, ..., "area": mean area share in percent}}.
    """
    data, names = model.data, model.data.attribute_names
    one_hot = one_hot_groups(names, data.class_attributes)
    groups = {part: one_hot[group] for part, group in PART_GROUPS.items()}
    dataset = data.test_unseen
    count = min(len(dataset), MAX_MASS_IMAGES)
    masks = _part_masks(model, dataset.paths[:count])
    levels = model.model.levels
    shares: dict[str, list[np.ndarray]] = {part: [] for part in groups}
    batch = model.cfg.data.test_batch_size
    for start in range(0, count, batch):
        indices = list(range(start, min(start + batch, count)))
        images, output = _attend(model, dataset, indices)
        for part, members in groups.items():
            maps = level_attention_maps(output, tuple(images.shape[-2:]), members).mean(dim=2)
            shares[part].append(attention_mass_share(maps, masks[part][indices]))  # (B, L)
    if out is not None and figures > 0:  # images spread over the classes, not one class's first
        indices = np.linspace(0, count - 1, min(figures, count)).round().astype(int).tolist()
        images, output = _attend(model, dataset, indices)
        _attention_figures(images, output, groups, [dataset.labels[i] for i in indices], data,
                           levels, out)
    report = {}
    for part, values in shares.items():
        table = np.concatenate(values)
        report[part] = {level: 100.0 * float(np.nanmean(table[:, i])) for i, level in
                        enumerate(levels)}
        report[part]["area"] = 100.0 * float(masks[part].mean())
    return report


def _attend(model: _RunModel, dataset, indices: list[int]):
    """Test images ``indices`` in [0, 1] as the network sees them, and its output with
    attention."""
    images = torch.stack([dataset[i][0] for i in indices])
    scores = model.inference(images, attention=True)
    return model.inference.pictures(images), scores.output


def _attention_figures(images, output, groups, labels, data, levels, out: Path) -> None:
    """Per image of ``images`` (B, 3, H, W) in [0, 1]: the attention of its own beak, wing and
    body colour at every level."""
    size = tuple(images.shape[-2:])
    for b, label in enumerate(labels):
        label = int(label)
        row = data.class_attributes[label]
        # the class's own colour of each part
        chosen = [max(members, key=lambda i: float(row[i])) for members in groups.values()]
        maps = level_attention_maps(output, size, chosen)[b]  # (L, parts, H, W)
        plot_attention(images[b], maps, [data.attribute_names[i] for i in chosen],
                       levels, out / f"attention_{b}_{data.class_names[label]}.png",
                       title=f"{data.class_names[label]}: where each level looks")


def compare_runs(folders: list[str | Path], out: str | Path, figures: int = 4,
                 device: str = "cpu") -> dict[str, Any]:
    """Compare finished runs; write ``comparison.json``, ``comparison.png`` and figures to ``out``.

    Returns:
        What ``comparison.json`` holds: per run its label, folder, last-epoch figures,
        attribute-group accuracies and, for attention models on the parts set, the attention
        shares of :func:`part_attention`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [load_run(f) for f in folders]
    if len({r.label for r in runs}) < len(runs):
        for r in runs:
            r.label = str(r.folder)
    torch_device = torch.device(device)
    report: dict[str, Any] = {"runs": []}
    groups_rows: dict[str, list[str]] = {}
    for i, run in enumerate(runs):
        model = _RunModel(run, torch_device)
        accuracy = attribute_accuracies(model)
        entry = {"label": run.label, "folder": str(run.folder), "model": run.config.model.name,
                 "data": run.config.data.name, "attribute_accuracy": accuracy,
                 **run.results.comparison_entry()}
        for group, value in accuracy.items():
            groups_rows.setdefault(f"{group} accuracy (unseen)", ["-"] * len(runs))[i] = f"{value:.1f}"
        if parts_set_config(run.config.data) is not None and len(model.model.levels) > 1:
            folder = out / f"attention_{run.config.model.name}"
            entry["part_attention"] = part_attention(model, folder, figures)
            log.info("attention figures written to %s", folder)
        report["runs"].append(entry)
    plot_comparison(report["runs"], [r.results.to_json() for r in runs], out / "comparison.png")
    write_json(report, out / "comparison.json")
    print(figures_table(runs, groups_rows))
    for entry in report["runs"]:
        if "part_attention" in entry:
            print(format_part_attention(entry["label"], entry["part_attention"]))
    print(f"comparison written to {out / 'comparison.png'} and {out / 'comparison.json'}")
    return report


def format_part_attention(label: str, shares: dict[str, dict[str, float]]) -> str:
    """Where each level of ``label`` looks, as a small table (percent of attention mass)."""
    levels = [k for k in next(iter(shares.values())) if k != "area"]
    lines = [f"{label}: share of attention on the part (unseen test images; 'area' = chance)",
             f"{'attributes':<12}" + "".join(f"{lv:>9}" for lv in levels) + f"{'area':>9}"]
    for part, row in shares.items():
        lines.append(f"{PART_GROUPS[part]:<12}" + "".join(f"{row[lv]:9.1f}" for lv in levels)
                     + f"{row['area']:9.1f}")
    return "\n".join(lines)


def compare_command(args) -> int:
    compare_runs(args.runs, args.out or Path(args.runs[0]).parent, figures=args.figures,
                 device=args.device)
    return 0
