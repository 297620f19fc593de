"""Classify images with a trained checkpoint: top-k classes, strongest attributes, attention.

``load(checkpoint)`` rebuilds the network from the checkpoint alone (its config and the dataset
description saved with it), so no dataset is needed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mgmrn.errors import UsageError
from mgmrn.inference.calibration import GIVEN_GAMMA, Calibration, calibrate
from mgmrn.inference.classes import ClassRegistry, read_class_table
from mgmrn.inference.inputs import ImageInput, image_batches
from mgmrn.inference.loaded import LoadedRun

log = logging.getLogger(__name__)


class Predictor:
    """A loaded run that names its predictions.

    Attributes:
        run: the network and what running it needs (:class:`~mgmrn.inference.loaded.LoadedRun`).
        inference: its forward pass, at evaluation's precision on a GPU, fp32 elsewhere.
        classes: the classes searched, the checkpoint's and those added
            (:class:`~mgmrn.inference.classes.ClassRegistry`).
        calibration: the default gamma and its source
            (:class:`~mgmrn.inference.calibration.Calibration`).
    """

    def __init__(self, run: LoadedRun):
        meta = run.description
        self.run = run
        self.classes = ClassRegistry(meta["class_names"], meta["attribute_names"],
                                     meta["class_attributes"], meta["seen_classes"],
                                     meta["unseen_classes"], run.device)
        self.inference = run.inference(self.classes.attributes)
        self.calibration = Calibration(run.gamma, run.gamma_source)

    @property
    def model(self) -> torch.nn.Module:
        """The network, on the run's device, in eval mode."""
        return self.run.model

    @property
    def config(self):
        """The run's :class:`~mgmrn.config.Config`."""
        return self.run.config

    @property
    def class_names(self) -> list[str]:
        return self.classes.names

    @property
    def attribute_names(self) -> list[str]:
        return self.classes.attribute_names

    def add_classes(self, names: Sequence[str], attributes: Any) -> list[int]:
        """Make new classes searchable, given only their attributes; no retraining. The cosine
        classifier scores them as every other class, so no other class's score changes.

        Args:
            names: N new class names, distinct from every class already known.
            attributes: (N, A) rows in the order of :attr:`attribute_names` (array, tensor or
                lists), or N mappings attribute name -> value naming every attribute.

        Returns:
            The N indices of the new classes (group ``added``).
        """
        return self._changed(self.classes.add(names, attributes))

    def add_classes_from_csv(self, path: str | Path) -> list[int]:
        """:meth:`add_classes` from a CSV file: a ``class`` column and one per attribute, by
        name in any order; errors name the file."""
        names, rows = read_class_table(path, self.attribute_names)
        return self._changed(self.classes.add(names, rows, source=str(path)))

    def remove_added_classes(self, names: Sequence[str]) -> None:
        """Forget classes made with :meth:`add_classes`; the others keep their indices."""
        self._changed(self.classes.remove_added(names))

    def _changed(self, result):
        self.inference.class_attributes = self.classes.attributes
        return result

    @torch.no_grad()
    def predict(self, images: ImageInput | Sequence[ImageInput] | torch.Tensor, top_k: int = 5,
                classes: str | Sequence[str] = "all", top_attributes: int = 5,
                gamma: float | None = None, explain_dir: str | Path | None = None,
                explain_attributes: int = 3, batch_size: int | None = None,
                gamma_given: str = GIVEN_GAMMA) -> list[dict[str, Any]]:
        """Top-k classes and strongest attributes of each image.

        Args:
            images: image files, PIL images, or a tensor batch (B, 3, H, W) / one image
                (3, H, W). A float tensor is taken as already normalised; a uint8 tensor is
                resized and cropped first.
            top_k: classes per image (fewer if the class set is smaller).
            classes: ``all`` (generalized ZSL) or a combination of ``seen``, ``unseen`` and
                ``added``.
            top_attributes: attributes per image, by predicted strength (mean over levels).
            gamma: calibrated stacking, subtracted from seen-class scores when seen and other
                classes are searched together; None takes the checkpoint's, 0 none.
            explain_dir: write one attention figure per image there (attention models only)
                and return its path under ``explanation``.
            explain_attributes: attributes shown in each figure.
            batch_size: images per forward pass; default: the config's test batch size.
            gamma_given: where a ``gamma`` given comes from, as results name it.

        Returns:
            One dict per image: ``image``, ``classes`` (list of {rank, name, index, score,
            probability, seen, group}; score = summed tau-scaled cosine over levels, calibrated;
            probability = softmax over the searched classes), ``attributes`` (list of {name,
            index, value}), ``calibration`` ({gamma, source}) and, with ``explain_dir``,
            ``explanation``.
        """
        if top_k < 1:
            raise UsageError(f"top_k (--top-k) must be at least 1, got {top_k}")
        if top_attributes < 0:
            raise UsageError(f"top_attributes must be at least 0, got {top_attributes}")
        candidates = self.classes.candidates(classes)
        calibration = self.calibration.over(candidates, self.classes.seen, gamma, gamma_given)
        explain, used_stems, results = explain_dir is not None, set(), []
        for batch, names in image_batches(images, self.inference.transform, batch_size
                                          or self.run.config.data.test_batch_size):
            scores = self.inference(batch, candidates, attention=explain)
            if explain and scores.output.attention is None:
                log.warning("this %s model has no attention maps: no explanation figures are "
                            "drawn", self.run.config.model.name)
                explain = False
            logits = calibrate(scores.logits.cpu(), candidates, self.classes.seen,
                               calibration["gamma"])
            found = [describe(self.classes, name, s, a, candidates, top_k, top_attributes)
                     | {"calibration": calibration}
                     for name, s, a in zip(names, logits, scores.attributes.cpu(), strict=True)]
            if explain:
                from mgmrn.viz import write_explanations

                write_explanations(self.inference.pictures(batch), scores, found,
                                   self.attribute_names, Path(explain_dir), explain_attributes,
                                   used_stems)
            results.extend(found)
        return results


def describe(classes: ClassRegistry, name: str, scores: torch.Tensor, strength: torch.Tensor,
             candidates: torch.Tensor, top_k: int, top_attributes: int) -> dict[str, Any]:
    """One image's result: its top classes from ``scores`` (C',) over ``candidates`` and its
    strongest attributes from ``strength`` (A,)."""
    probabilities = scores.softmax(0)
    ranked = []
    for rank, i in enumerate(scores.topk(min(top_k, len(candidates))).indices):
        index = int(candidates[i])
        group = classes.group(index)
        ranked.append({"rank": rank + 1, "name": classes.names[index], "index": index,
                       "score": float(scores[i]), "probability": float(probabilities[i]),
                       "seen": group == "seen", "group": group})
    strongest = strength.topk(min(top_attributes, len(strength))).indices
    attributes = [{"name": classes.attribute_names[int(a)], "index": int(a),
                   "value": float(strength[a])} for a in strongest]
    return {"image": name, "classes": ranked, "attributes": attributes}


def load(checkpoint: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """A :class:`Predictor` from a checkpoint written by ``mgmrn train``.

    Args:
        checkpoint: the .pt file, or a model folder written by ``mgmrn export --format hub``:
            ``local-dir:DIR``, or ``hf-hub:org/name`` (downloaded through ``huggingface_hub``).
        device: ``cpu`` (default), ``cuda``, ``cuda:1``, or ``auto`` (a GPU when there is one).
    """
    return Predictor(LoadedRun.from_checkpoint(checkpoint, device, purpose="predict"))
