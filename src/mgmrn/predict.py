"""Classify images with a trained checkpoint: top-k classes, strongest attributes, attention.

``load(checkpoint)`` rebuilds the network from the checkpoint alone (its config and the dataset
description saved with it), so no dataset is needed; ``mgmrn predict`` is :func:`run_predict`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
from PIL import Image

from .checkpoint import CheckpointError, load_checkpoint, load_weights
from .config import Config, from_dict
from .data.transforms import denormalize, test_transform
from .models import build_model

log = logging.getLogger(__name__)

CLASS_SETS = ("all", "unseen", "seen")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

ImageInput = str | Path | Image.Image


class Predictor:
    """A trained network with what it needs to name its predictions.

    Args:
        model: the network (Mg-MRN or the baseline), already holding its trained weights.
        config: the run's config; ``data.image_size`` sets the test transform.
        class_names: C names.
        attribute_names: A names.
        class_attributes: (C, A) class attribute vectors, the classifier's targets.
        seen_classes: (S,) indices of the classes seen in training.
        unseen_classes: (U,) indices of the unseen classes.
        device: where the network runs.
    """

    def __init__(self, model: torch.nn.Module, config: Config, class_names: Sequence[str],
                 attribute_names: Sequence[str], class_attributes: torch.Tensor,
                 seen_classes: torch.Tensor, unseen_classes: torch.Tensor,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.class_names = list(class_names)
        self.attribute_names = list(attribute_names)
        self.class_attributes = class_attributes.float().to(self.device)
        self.seen_classes = seen_classes.long().cpu()
        self.unseen_classes = unseen_classes.long().cpu()
        self._seen = set(self.seen_classes.tolist())
        self.image_size = config.data.image_size
        self.transform = test_transform(self.image_size)

    def candidates(self, classes: str = "all") -> torch.Tensor:
        """Sorted indices of the classes to search: ``all``, ``unseen`` or ``seen``."""
        if classes not in CLASS_SETS:
            raise ValueError(f"classes must be one of {', '.join(CLASS_SETS)}, got {classes!r}")
        if classes == "all":
            return torch.arange(len(self.class_names))
        return torch.sort(self.seen_classes if classes == "seen" else self.unseen_classes).values

    @torch.no_grad()
    def predict(self, images: ImageInput | Sequence[ImageInput] | torch.Tensor, top_k: int = 5,
                classes: str = "all", top_attributes: int = 5, gamma: float = 0.0,
                explain_dir: str | Path | None = None, explain_attributes: int = 3,
                batch_size: int | None = None) -> list[dict[str, Any]]:
        """Top-k classes and strongest attributes of each image.

        Args:
            images: image files, PIL images, or a tensor batch (B, 3, H, W) / one image
                (3, H, W). A float tensor is taken as already transformed (normalised as by
                ``test_transform``); a uint8 tensor is transformed first.
            top_k: classes per image (fewer if the class set is smaller).
            classes: the classes to search: ``all`` (generalized ZSL), ``unseen`` or ``seen``.
            top_attributes: attributes per image, by predicted strength (mean over levels).
            gamma: calibrated stacking, subtracted from seen-class scores when ``classes`` is
                ``all``; 0 leaves the scores as the network gives them.
            explain_dir: when given, one attention figure per image is written there (models
                with attention only) and its path is returned under ``explanation``.
            explain_attributes: attributes shown in each figure.
            batch_size: images per forward pass; default: the config's test batch size.

        Returns:
            One dict per image: ``image`` (its name), ``classes`` (list of {rank, name, index,
            score, probability, seen}; score = summed tau-scaled cosine over levels,
            probability = softmax of the scores over the searched classes), ``attributes``
            (list of {name, index, value}) and, with ``explain_dir``, ``explanation``.
        """
        if top_k < 1 or top_attributes < 0:
            raise ValueError(f"top_k must be at least 1 and top_attributes at least 0, got "
                             f"{top_k} and {top_attributes}")
        candidates = self.candidates(classes)
        explain = explain_dir is not None
        used_names: set[str] = set()
        results = []
        for batch, names in _batches(images, self.transform, batch_size
                                     or self.config.data.test_batch_size):
            batch = batch.to(self.device)
            output = self.model(batch, self.class_attributes[candidates.to(self.device)],
                                return_attention=explain)
            if explain and output.attention is None:
                log.warning("this %s model has no attention maps: no explanation figures are "
                            "drawn", self.config.model.name)
                explain = False
            scores = output.logits.float().cpu()
            if classes == "all" and gamma:
                scores[:, torch.isin(candidates, self.seen_classes)] -= gamma
            strength = torch.stack(output.attribute_scores).float().mean(0).cpu()  # (B, A)
            found = [self._describe(name, s, a, candidates, top_k, top_attributes)
                     for name, s, a in zip(names, scores, strength, strict=True)]
            if explain:
                self._explain(batch, output, strength, found, Path(explain_dir),
                              explain_attributes, used_names)
            results.extend(found)
        return results

    def _describe(self, name: str, scores: torch.Tensor, strength: torch.Tensor,
                  candidates: torch.Tensor, top_k: int, top_attributes: int) -> dict[str, Any]:
        """scores: (C',) over ``candidates``; strength: (A,) attribute scores."""
        probabilities = scores.softmax(0)
        best = scores.topk(min(top_k, len(candidates))).indices
        ranked = [{"rank": r + 1, "name": self.class_names[int(candidates[i])],
                   "index": int(candidates[i]), "score": float(scores[i]),
                   "probability": float(probabilities[i]), "seen": int(candidates[i]) in self._seen}
                  for r, i in enumerate(best)]
        strongest = strength.topk(min(top_attributes, len(strength))).indices
        attributes = [{"name": self.attribute_names[int(a)], "index": int(a),
                       "value": float(strength[a])} for a in strongest]
        return {"image": name, "classes": ranked, "attributes": attributes}

    def _explain(self, batch: torch.Tensor, output, strength: torch.Tensor,
                 found: list[dict[str, Any]], folder: Path, n_attributes: int,
                 used_names: set[str]) -> None:
        """Write one attention figure per image of ``batch`` (B, 3, H, W)."""
        from .viz import level_attention_maps, plot_attention

        maps = level_attention_maps(output, tuple(batch.shape[-2:])).cpu()  # (B, L, A, H, W)
        pictures = denormalize(batch.float()).cpu()
        for i, result in enumerate(found):
            chosen = strength[i].topk(min(n_attributes, strength.shape[1])).indices
            top = result["classes"][0]
            path = folder / f"{_unique_stem(result['image'], used_names)}.png"
            plot_attention(pictures[i], maps[i][:, chosen],
                           [self.attribute_names[int(a)] for a in chosen], list(output.levels),
                           path, attribute_values=[float(strength[i, a]) for a in chosen],
                           title=f"{_short(result['image'])}: {top['name']} ({top['score']:.1f})")
            result["explanation"] = str(path)


def load(checkpoint: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """A :class:`Predictor` from a checkpoint written by ``mgmrn train``.

    Args:
        checkpoint: the .pt file.
        device: ``cpu`` (default), ``cuda``, ``cuda:1``, or ``auto`` (a GPU when there is one).
    """
    saved = load_checkpoint(checkpoint)
    meta = saved.get("data")
    needed = ("class_names", "attribute_names", "class_attributes", "attribute_vectors",
              "seen_classes", "unseen_classes")
    if not isinstance(meta, dict) or any(key not in meta for key in needed):
        raise CheckpointError(f"checkpoint '{checkpoint}' lacks the dataset description ('data' "
                              f"with {', '.join(needed)}) that prediction needs")
    values = dict(saved["config"])
    values["model"] = {**values.get("model", {}), "pretrained": False}  # weights are in the file
    config = from_dict(values)
    model = build_model(config.model, meta["attribute_vectors"].float())
    load_weights(model, saved["model"], checkpoint)
    predictor = Predictor(model, config, meta["class_names"], meta["attribute_names"],
                          meta["class_attributes"], meta["seen_classes"], meta["unseen_classes"],
                          _device(device))
    log.info("loaded %s (%s, epoch %s): %d classes (%d unseen), %d attributes, %d px, %s",
             checkpoint, config.model.name, saved.get("epoch", "?"), len(predictor.class_names),
             len(predictor.unseen_classes), len(predictor.attribute_names),
             predictor.image_size, predictor.device)
    return predictor


def _device(name: str | torch.device) -> torch.device:
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' was asked for but CUDA is not available here; "
                         f"use --device cpu")
    return device


def _batches(images, transform, batch_size: int) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """(B, 3, H, W) network inputs and image names, ``batch_size`` at a time.

    Files are read batch by batch, so a long list of images never sits in memory at once.
    """
    if isinstance(images, torch.Tensor):
        tensor = images.unsqueeze(0) if images.dim() == 3 else images
        if tensor.dim() != 4 or tensor.shape[1] != 3:
            raise ValueError(f"an image tensor must be (B, 3, H, W) or (3, H, W), got "
                             f"{tuple(images.shape)}")
        for start in range(0, len(tensor), batch_size):
            chunk = tensor[start:start + batch_size]
            if chunk.dtype == torch.uint8:  # raw pixels: resize, crop and normalise first
                chunk = torch.stack([transform(image) for image in chunk])
            yield chunk.float(), [f"image_{start + i}" for i in range(len(chunk))]
        return
    items = [images] if isinstance(images, (str, Path, Image.Image)) else list(images)
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        pictures, names = zip(*(_read(item, start + i) for i, item in enumerate(chunk)),
                                strict=True)
        yield torch.stack([transform(p) for p in pictures]), list(names)


def _read(item: ImageInput, position: int) -> tuple[Image.Image, str]:
    """An RGB image and its name (the path, the PIL file name, or ``image_<position>``)."""
    if isinstance(item, Image.Image):
        return item.convert("RGB"), getattr(item, "filename", "") or f"image_{position}"
    path = Path(item)
    if not path.is_file():
        raise FileNotFoundError(f"image '{path}' does not exist")
    try:
        with Image.open(path) as image:
            return image.convert("RGB"), str(path)
    except Exception as err:  # noqa: BLE001 - PIL raises many types for broken files
        raise ValueError(f"cannot read image '{path}' ({type(err).__name__}: {err})") from err


def _short(name: str) -> str:
    """The last two parts of a path (folder and file), enough to tell images apart in a title."""
    return str(Path(*Path(name).parts[-2:])) if name else name


def _unique_stem(name: str, used: set[str]) -> str:
    """A figure file name for an image: its file stem, numbered when two images share it."""
    stem = Path(name).stem
    candidate, n = stem, 1
    while candidate in used:
        candidate, n = f"{stem}-{n}", n + 1
    used.add(candidate)
    return candidate


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files from files and folders; a folder gives its image files, sorted by name.

    Raises:
        FileNotFoundError: an input does not exist, or a folder holds no image file.
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"folder '{path}' holds no image files "
                                        f"({', '.join(s[1:] for s in IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"image or folder '{path}' does not exist")
    return paths


def format_prediction(result: dict[str, Any]) -> str:
    """A readable block for one image's prediction."""
    lines = [result["image"]]
    width = max(len(c["name"]) for c in result["classes"])
    for c in result["classes"]:
        split = "seen" if c["seen"] else "unseen"
        lines.append(f"  {c['rank']:>2}. {c['name'].ljust(width)}  {c['score']:8.2f}  "
                     f"p {c['probability']:.3f}  {split}")
    if result["attributes"]:
        lines.append("  attributes: " + ", ".join(f"{a['name']} {a['value']:.2f}"
                                                  for a in result["attributes"]))
    if "explanation" in result:
        lines.append(f"  attention: {result['explanation']}")
    return "\n".join(lines)


def run_predict(checkpoint: str | Path, inputs: Sequence[str | Path], top_k: int = 5,
                classes: str = "all", as_json: bool = False, explain_dir: str | Path | None = None,
                device: str = "cpu", out: TextIO | None = None) -> int:
    """``mgmrn predict``: print the predictions for image files and folders.

    Args:
        checkpoint: a .pt file written by ``mgmrn train``.
        inputs: image files and folders (a folder's jpg, jpeg, png, bmp, webp files, sorted).
        top_k: classes per image.
        classes: ``all``, ``unseen`` or ``seen``.
        as_json: print one JSON list instead of readable text.
        explain_dir: also write an attention figure per image there.
        device: where the network runs.
        out: where to print (default: standard output).

    Returns:
        0; problems raise (FileNotFoundError, ValueError, CheckpointError) with a message that
        names the file.
    """
    out = out or sys.stdout
    if classes not in CLASS_SETS:
        raise ValueError(f"--classes must be one of {', '.join(CLASS_SETS)}, got {classes!r}")
    if top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {top_k}")
    paths = expand_inputs(inputs)
    predictor = load(checkpoint, device)
    results = predictor.predict(paths, top_k=top_k, classes=classes, explain_dir=explain_dir)
    if as_json:
        print(json.dumps(results, indent=2), file=out)
    else:
        print("\n\n".join(format_prediction(r) for r in results), file=out)
    if explain_dir is not None and any("explanation" in r for r in results):
        log.info("attention figures written to %s", explain_dir)
    return 0


def predict_command(args) -> int:
    """Run ``mgmrn predict`` from parsed arguments (see ``cli.py``)."""
    return run_predict(args.checkpoint, args.inputs, top_k=args.top_k, classes=args.classes,
                       as_json=args.as_json, explain_dir=args.explain, device=args.device)
