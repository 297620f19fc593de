"""Classify images with a trained checkpoint: top-k classes, strongest attributes, attention.

``load(checkpoint)`` rebuilds the network from the checkpoint alone (its config and the dataset
description saved with it), so no dataset is needed; ``mgmrn predict`` is :func:`run_predict`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import torch

from mgmrn.checkpoint import CheckpointError, checkpoint_inputs, load_checkpoint, model_from_checkpoint
from mgmrn.config import Config
from mgmrn.data.transforms import test_transform
from mgmrn.distributed import resolve_device
from mgmrn.errors import UsageError
from mgmrn.evaluation import calibrated_stacking, default_gamma
from mgmrn.inference.classes import CLASS_GROUPS, check_new_classes, parse_class_sets, read_class_table
from mgmrn.inference.inputs import ImageInput, expand_inputs, image_batches
from mgmrn.inference.scoring import checkpoint_inference

log = logging.getLogger(__name__)

CLASS_SETS = ("all", *CLASS_GROUPS)

GIVEN_GAMMA = "given (--gamma)"  # the source of a gamma passed to predict()

# a calibration constant is of the order of the scores (a few units; the drawn sets' are under
# 5): far beyond this, float32 scores minus gamma lose their differences, then overflow to
# infinity (-1e39 is a finite float64)
MAX_GAMMA = 1e4


def check_gamma(gamma: float | None, name: str = "--gamma") -> None:
    """Refuse a calibration that is not a finite number within +-:data:`MAX_GAMMA`."""
    if gamma is not None and not -MAX_GAMMA <= gamma <= MAX_GAMMA:  # NaN is never inside
        raise UsageError(f"{name} must be a finite number from {-MAX_GAMMA:g} to {MAX_GAMMA:g}, "
                         f"got {gamma}")

class Predictor:
    """A trained network with what it needs to name its predictions: the class registry (the
    checkpoint's classes and those added), the calibration and the shape of the results.

    The network runs through :attr:`inference` (:class:`~mgmrn.inference.scoring.Inference`), as in
    evaluation: images are read as uint8, normalised on the device and, on a GPU, scored at the
    precision and in the memory layout evaluation uses (``train.amp``, ``train.channels_last``).

    Args:
        model: the network (Mg-MRN or the baseline), already holding its trained weights.
        config: the run's config; ``data.image_size`` and ``data.test_resize`` set the test
            transform, ``train.amp`` and ``train.channels_last`` the precision on a GPU.
        class_names: C names.
        attribute_names: A names.
        class_attributes: (C, A) class attribute vectors, the classifier's targets.
        seen_classes: (S,) indices of the classes seen in training.
        unseen_classes: (U,) indices of the unseen classes.
        device: where the network runs.
        gamma: the default calibration (see :meth:`predict`).
        gamma_source: where ``gamma`` comes from, for messages.
        inputs: the input normalisation (``mean``, ``std``) and resize ``interpolation`` the
            network was trained with (saved in its checkpoint); None: ImageNet's, bilinear.

    Classes added with :meth:`add_classes` follow the C classes of the checkpoint, as the group
    ``added``. :func:`load` sets :attr:`epochs_trained`, the checkpoint's epochs as training
    counts them (1 after the first; None where the file does not say).
    """

    def __init__(self, model: torch.nn.Module, config: Config, class_names: Sequence[str],
                 attribute_names: Sequence[str], class_attributes: torch.Tensor,
                 seen_classes: torch.Tensor, unseen_classes: torch.Tensor,
                 device: str | torch.device = "cpu", gamma: float = 0.0,
                 gamma_source: str = "not given: 0, uncalibrated", inputs: dict | None = None):
        self.device = torch.device(device)
        self.inference = checkpoint_inference(model, class_attributes, config, self.device, inputs)
        self.model = self.inference.model
        self.config = config
        self.class_names = list(class_names)
        self.attribute_names = list(attribute_names)
        self.seen_classes = seen_classes.long().cpu()
        self.unseen_classes = unseen_classes.long().cpu()
        self.added_classes = torch.zeros(0, dtype=torch.long)
        self._seen = set(self.seen_classes.tolist())
        self.gamma, self.gamma_source = float(gamma), gamma_source
        self.image_size = config.data.image_size
        self.inputs = inputs
        self.epochs_trained: int | None = None  # set by load(): 1 after the first epoch
        # an image -> its normalised network input, (3, S, S) float32: what :meth:`predict` takes
        # as a tensor already transformed
        self.transform = test_transform(self.image_size, config.data.test_resize, inputs=inputs)

    @property
    def class_attributes(self) -> torch.Tensor:
        """(C, A) attribute vectors of every class, added ones included, on :attr:`device`."""
        return self.inference.class_attributes

    @class_attributes.setter
    def class_attributes(self, value: torch.Tensor) -> None:
        self.inference.class_attributes = value

    def denormalize(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) network inputs (uint8 or normalised) -> the pictures in [0, 1], on the
        CPU, for display."""
        return self.inference.pictures(batch)

    def add_classes(self, names: Sequence[str], attributes: Any) -> list[int]:
        """Make new classes searchable, given only their attributes; no retraining.

        The trained network scores them with the same cosine classifier as every other class,
        so the scores of the other classes do not change.

        Args:
            names: N new class names, distinct from every class already known.
            attributes: (N, A) rows in the order of ``attribute_names`` (array, tensor or
                lists), or N mappings attribute name -> value naming every attribute.

        Returns:
            The N indices of the new classes (group ``added``).

        Raises:
            ValueError: a repeated or known name, a missing or unknown attribute, a row of the
                wrong length, a value that is not a finite number, or a row of zeros.
        """
        rows = check_new_classes(names, attributes, self.attribute_names, self.class_names)
        return self._append(list(names), rows)

    def add_classes_from_csv(self, path: str | Path) -> list[int]:
        """:meth:`add_classes` from a CSV file: a ``class`` column and one per attribute, by
        name in any order; errors name the file."""
        names, rows = read_class_table(path, self.attribute_names)
        check_new_classes(names, rows, self.attribute_names, self.class_names, source=str(path))
        return self._append(names, rows)

    def _append(self, names: list[str], rows) -> list[int]:
        start = len(self.class_names)
        self.class_names.extend(names)
        self.class_attributes = torch.cat([self.class_attributes,
                                           torch.as_tensor(rows).to(self.class_attributes)])
        new = torch.arange(start, start + len(rows))
        self.added_classes = torch.cat([self.added_classes, new])
        return new.tolist()

    def remove_added_classes(self, names: Sequence[str]) -> None:
        """Forget classes made with :meth:`add_classes`; the others keep their indices.

        Raises:
            ValueError: a name that is not an added class.
        """
        added = {self.class_names[int(i)] for i in self.added_classes}
        unknown = [n for n in names if n not in added]
        if unknown:
            raise UsageError(f"not added classes: {', '.join(unknown)}")
        drop = set(names)
        keep = [i for i, name in enumerate(self.class_names) if name not in drop]
        first_added = len(self.class_names) - len(self.added_classes)
        self.class_names = [self.class_names[i] for i in keep]
        self.class_attributes = self.class_attributes[torch.tensor(keep, device=self.device)]
        self.added_classes = torch.arange(first_added, len(self.class_names))

    def group(self, index: int) -> str:
        """``seen``, ``unseen`` or ``added``: the group of class ``index``."""
        if index in self._seen:
            return "seen"
        return "added" if index >= len(self.class_names) - len(self.added_classes) else "unseen"

    def candidates(self, classes: str | Sequence[str] = "all") -> torch.Tensor:
        """Sorted indices of the classes to search.

        Args:
            classes: ``all`` or a combination of ``seen``, ``unseen``, ``added``, comma-separated
                (``added,unseen``) or as a list.

        Raises:
            ValueError: an unknown group, or groups that hold no class (e.g. ``added`` before
                any class was added).
        """
        groups = parse_class_sets(classes)
        members = {"seen": self.seen_classes, "unseen": self.unseen_classes,
                   "added": self.added_classes}
        chosen = torch.cat([members[g] for g in groups])
        if not len(chosen):
            raise UsageError(f"no class to search in {','.join(groups)}"
                             + ("; add classes first (--add-classes)" if "added" in groups else ""))
        return torch.sort(chosen).values

    def calibration(self, candidates: torch.Tensor, gamma: float | None = None,
                    given: str = GIVEN_GAMMA) -> dict[str, Any]:
        """The gamma to apply over ``candidates`` and where it comes from.

        Calibration applies only when seen and other classes are searched together; gamma None
        takes the predictor's default (:attr:`gamma`, :attr:`gamma_source`); a gamma given is
        labelled ``given``.

        Returns:
            {``gamma``, ``source``}.
        """
        seen = torch.isin(candidates, self.seen_classes)
        if bool(seen.all()) or not bool(seen.any()):
            return {"gamma": 0.0, "source": "not applied: the seen classes are not searched "
                                            "together with others"}
        if gamma is None:
            return {"gamma": self.gamma, "source": self.gamma_source}
        check_gamma(gamma, "gamma")
        return {"gamma": float(gamma), "source": given}

    def calibrate(self, scores: torch.Tensor, candidates: torch.Tensor,
                  gamma: float) -> torch.Tensor:
        """(B, C') scores over ``candidates`` with ``gamma`` taken off the seen-class columns."""
        seen = torch.isin(candidates, self.seen_classes)
        if not gamma or not bool(seen.any()):
            return scores
        return calibrated_stacking(scores, seen.nonzero().flatten(), gamma)

    @torch.no_grad()
    def predict(self, images: ImageInput | Sequence[ImageInput] | torch.Tensor, top_k: int = 5,
                classes: str | Sequence[str] = "all", top_attributes: int = 5,
                gamma: float | None = None,
                explain_dir: str | Path | None = None, explain_attributes: int = 3,
                batch_size: int | None = None, gamma_given: str = GIVEN_GAMMA
                ) -> list[dict[str, Any]]:
        """Top-k classes and strongest attributes of each image.

        Args:
            images: image files, PIL images, or a tensor batch (B, 3, H, W) / one image
                (3, H, W). A float tensor is taken as already transformed (normalised, as by
                :attr:`transform`); a uint8 tensor is resized and cropped first. Files, PIL
                images and uint8 tensors are normalised on the device.
            top_k: classes per image (fewer if the class set is smaller).
            classes: the classes to search: ``all`` (generalized ZSL) or a combination of
                ``seen``, ``unseen`` and ``added`` (see :meth:`candidates`).
            top_attributes: attributes per image, by predicted strength (mean over levels).
            gamma: calibrated stacking, subtracted from seen-class scores when seen and other
                classes are searched together; None (default) takes :attr:`gamma` (from the
                checkpoint), 0 leaves the scores as the network gives them.
            gamma_given: where a ``gamma`` given comes from, as results name it
                (``calibration.source``).
            explain_dir: when given, one attention figure per image is written there (models
                with attention only) and its path is returned under ``explanation``.
            explain_attributes: attributes shown in each figure.
            batch_size: images per forward pass; default: the config's test batch size.

        Returns:
            One dict per image: ``image`` (its name), ``classes`` (list of {rank, name, index,
            score, probability, seen, group}; score = summed tau-scaled cosine over levels,
            calibrated; probability = softmax of the scores over the searched classes),
            ``attributes`` (list of {name, index, value}), ``calibration`` ({gamma, source}: the
            gamma applied, 0 when one side alone is searched) and, with ``explain_dir``,
            ``explanation``.

        Raises:
            UsageError: ``top_k`` below 1 or ``top_attributes`` below 0.
            ValueError: an unknown class group, or groups that hold no class.
        """
        if top_k < 1:
            raise UsageError(f"top_k (--top-k) must be at least 1, got {top_k}")
        if top_attributes < 0:
            raise UsageError(f"top_attributes must be at least 0, got {top_attributes}")
        candidates = self.candidates(classes)
        calibration = self.calibration(candidates, gamma, gamma_given)
        explain = explain_dir is not None
        used_stems: set[str] = set()
        results = []
        for batch, names in image_batches(images, self.inference.transform, batch_size
                                          or self.config.data.test_batch_size):
            scores = self.inference(batch, candidates, attention=explain)
            if explain and scores.output.attention is None:
                log.warning("this %s model has no attention maps: no explanation figures are "
                            "drawn", self.config.model.name)
                explain = False
            logits = self.calibrate(scores.logits.cpu(), candidates, calibration["gamma"])
            strength = scores.attributes.cpu()  # (B, A)
            found = [self._describe(name, s, a, candidates, top_k, top_attributes)
                     | {"calibration": calibration}
                     for name, s, a in zip(names, logits, strength, strict=True)]
            if explain:
                self._explain(batch, scores, found, Path(explain_dir), explain_attributes,
                              used_stems)
            results.extend(found)
        return results

    def _describe(self, name: str, scores: torch.Tensor, strength: torch.Tensor,
                  candidates: torch.Tensor, top_k: int, top_attributes: int) -> dict[str, Any]:
        """scores: (C',) over ``candidates``; strength: (A,) attribute scores."""
        probabilities = scores.softmax(0)
        best = scores.topk(min(top_k, len(candidates))).indices
        ranked = [{"rank": r + 1, "name": self.class_names[int(candidates[i])],
                   "index": int(candidates[i]), "score": float(scores[i]),
                   "probability": float(probabilities[i]), "seen": int(candidates[i]) in self._seen,
                   "group": self.group(int(candidates[i]))}
                  for r, i in enumerate(best)]
        strongest = strength.topk(min(top_attributes, len(strength))).indices
        attributes = [{"name": self.attribute_names[int(a)], "index": int(a),
                       "value": float(strength[a])} for a in strongest]
        return {"image": name, "classes": ranked, "attributes": attributes}

    def _explain(self, batch: torch.Tensor, scores, found: list[dict[str, Any]], folder: Path,
                 n_attributes: int, used_stems: set[str]) -> None:
        """Write one attention figure per image of ``batch`` (B, 3, H, W) and name it in
        ``found``; ``scores``: the batch's :class:`~mgmrn.inference.scoring.Scores` with attention."""
        from mgmrn.viz import plot_explanations

        captions = [f"{r['classes'][0]['name']} ({r['classes'][0]['score']:.1f})" for r in found]
        paths = plot_explanations(self.denormalize(batch), scores.output, scores.attributes,
                                  [r["image"] for r in found], captions, self.attribute_names,
                                  folder, n_attributes, used_stems)
        for result, path in zip(found, paths, strict=True):
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
    model, config = model_from_checkpoint(saved, checkpoint)
    gamma, source = default_gamma(saved.get("calibration"), config.eval.gamma)
    predictor = Predictor(model, config, meta["class_names"], meta["attribute_names"],
                          meta["class_attributes"], meta["seen_classes"], meta["unseen_classes"],
                          resolve_device(device), gamma, source, checkpoint_inputs(saved))
    epoch = saved.get("epoch")  # stored from 0: the epochs trained count from 1, as training's
    predictor.epochs_trained = int(epoch) + 1 if isinstance(epoch, int) else None
    log.info("loaded %s (%s, epoch %s): %d classes (%d unseen), %d attributes, %d px, %s",
             checkpoint, config.model.name, predictor.epochs_trained or "?",
             len(predictor.class_names),
             len(predictor.unseen_classes), len(predictor.attribute_names),
             predictor.image_size, predictor.device)
    return predictor


def format_prediction(result: dict[str, Any]) -> str:
    """A readable block for one image's prediction."""
    lines = [result["image"]]
    width = max(len(c["name"]) for c in result["classes"])
    for c in result["classes"]:
        split = c.get("group", "seen" if c["seen"] else "unseen")
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
                device: str = "cpu", out: TextIO | None = None,
                add_classes: Sequence[str | Path] = (), gamma: float | None = None) -> int:
    """``mgmrn predict``: print the predictions for image files and folders.

    Args:
        checkpoint: a .pt file written by ``mgmrn train``.
        inputs: image files and folders (a folder's jpg, jpeg, png, bmp, webp files, sorted).
        top_k: classes per image.
        classes: ``all`` or a comma-separated combination of ``seen``, ``unseen``, ``added``.
        as_json: print one JSON list instead of readable text.
        explain_dir: also write an attention figure per image there.
        device: where the network runs.
        out: where to print (default: standard output).
        add_classes: CSV files of new classes (``class`` and attribute columns) to search too.
        gamma: calibration; None takes the checkpoint's (its source is logged).

    Returns:
        0; problems raise (FileNotFoundError, ValueError, CheckpointError) with a message that
        names the file.
    """
    out = out or sys.stdout
    check_gamma(gamma)  # before the checkpoint loads: also where no calibration applies
    paths = expand_inputs(inputs)
    predictor = load(checkpoint, device)
    for table in add_classes:
        added = predictor.add_classes_from_csv(table)
        log.info("added %d classes from %s", len(added), table)
    results = predictor.predict(paths, top_k=top_k, classes=classes, explain_dir=explain_dir,
                                gamma=gamma)
    if results:
        calibration = results[0]["calibration"]
        log.info("calibration: gamma = %.3g (%s)", calibration["gamma"], calibration["source"])
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
                       as_json=args.as_json, explain_dir=args.explain, device=args.device,
                       add_classes=getattr(args, "add_classes", None) or (),
                       gamma=getattr(args, "gamma", None))
