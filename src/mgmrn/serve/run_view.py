"""What the page shows of a run folder: its figures, results and most confused unseen classes.

Figures are drawn from ``metrics.jsonl`` and ``results.json`` by the ``viz`` functions, into a
private folder, never into the run folder. The confused pairs come from ``results.json`` (written
there by ``mgmrn train`` and ``mgmrn eval``); for a run without them (one stopped before its
final evaluation) they are computed once from the checkpoint on the run's unseen test images, in
the background, when those images are at hand.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mgmrn.evaluation import named_confused_pairs
from mgmrn.evaluation.results import ZSLResults, read_results
from mgmrn.viz import plot_per_class_accuracy, plot_seen_unseen_curve, plot_training_curves, read_metrics

log = logging.getLogger(__name__)

FIGURES = ("training_curves.png", "seen_unseen_curve.png", "per_class_accuracy.png")


class RunView:
    """A run folder as the page sees it.

    Args:
        folder: the run folder (``metrics.jsonl``, ``results.json``).
        figures: a private folder for the figures drawn.
        predictor: the served model, for confusions the results do not hold.
        model_lock: held while the predictor runs.
    """

    def __init__(self, folder: str | Path, figures: Path, predictor, model_lock: threading.Lock):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"run folder '{self.folder}' does not exist")
        if not any((self.folder / f).is_file() for f in ("metrics.jsonl", "results.json")):
            raise FileNotFoundError(f"run folder '{self.folder}' holds neither metrics.jsonl nor "
                                    f"results.json")
        self.figures = figures
        self.predictor = predictor
        self.model_lock = model_lock
        self.confusions: dict[str, Any] = {"status": "not computed", "pairs": []}
        self.examples: list[str] = []  # the only files the server hands out
        self._started = False
        self._state_lock = threading.Lock()

    def results(self) -> ZSLResults | None:
        path = self.folder / "results.json"
        return read_results(path) if path.is_file() else None

    def summary(self) -> dict[str, Any]:
        """Results, epochs and figure names for the page; starts computing confusions if needed."""
        results = self.results()
        metrics = self.folder / "metrics.jsonl"
        records = read_metrics(metrics) if metrics.is_file() else []
        figures = [f for f, ok in zip(FIGURES, (bool(records), results and results.curve,
                                                results and results.czsl_per_class),
                                      strict=True) if ok]
        self._confusions(results)
        with self._state_lock:
            confusions = json.loads(json.dumps(self.confusions))
        return {"folder": str(self.folder), "epochs": len(records),
                "results": results.overview() if results else None,
                "figures": figures, "confusions": confusions}

    def figure(self, name: str) -> bytes:
        """The PNG bytes of one of :data:`FIGURES`, drawn afresh from the run's files."""
        if name not in FIGURES:
            raise FileNotFoundError(f"no figure '{name}'")
        path = self.figures / name
        results = self.results()
        if name == "training_curves.png":
            plot_training_curves(read_metrics(self.folder / "metrics.jsonl"), path,
                                 title=f"Training of {self.folder.name}")
        elif name == "seen_unseen_curve.png":
            plot_seen_unseen_curve(results.to_json(), path)
        else:
            plot_per_class_accuracy(results.czsl_per_class, path)
        return path.read_bytes()

    def example(self, number: int) -> Path:
        with self._state_lock:
            if not 0 <= number < len(self.examples):
                raise FileNotFoundError(f"no example image {number}")
            return Path(self.examples[number])

    def _confusions(self, results: ZSLResults | None) -> None:
        with self._state_lock:
            if self._started:
                return
            self._started = True
        if results and results.unseen_confusions is not None:
            self._publish([asdict(p) for p in results.unseen_confusions], "from results.json")
            return
        threading.Thread(target=self._compute, daemon=True, name="confusions").start()

    def _publish(self, pairs: list[dict[str, Any]], status: str) -> None:
        with self._state_lock:
            shown = []
            for pair in pairs:
                urls = []
                for path in pair.get("examples", []):
                    if Path(path).is_file():
                        self.examples.append(str(path))
                        urls.append(f"/api/run/example/{len(self.examples) - 1}")
                shown.append({**pair, "examples": urls})
            self.confusions = {"status": status, "pairs": shown}

    def _set_status(self, status: str) -> None:
        with self._state_lock:
            self.confusions = {"status": status, "pairs": []}

    def _compute(self) -> None:
        """CZSL predictions of the checkpoint on the run's unseen test images, then the pairs."""
        from mgmrn.data import read_records
        from mgmrn.data.datasets import ImageDataset

        try:
            p, config = self.predictor, self.predictor.run.config
            records = read_records(config.data, seed=config.seed)
            paths, labels = records.paths["test_unseen"], records.labels["test_unseen"]
            if list(records.class_names) != p.class_names[:len(records.class_names)]:
                raise ValueError("the run's data has other classes than the checkpoint")
            batches = DataLoader(ImageDataset(paths, labels, p.inference.transform),
                                 batch_size=config.data.test_batch_size)
            unseen, predictions, done = p.classes.unseen, [], 0
            for images, _ in batches:
                self._set_status(f"computing from the checkpoint: {done}/{len(paths)} unseen "
                                 f"test images")
                with self.model_lock:  # between batches the page's requests get their turn
                    logits = p.inference(images, unseen).logits.cpu()
                predictions.append(unseen[logits.argmax(dim=1)])
                done += len(images)
            pairs = named_confused_pairs(torch.cat(predictions), labels, p.class_names, paths)
            self._publish(pairs, f"computed from the checkpoint on {len(paths)} unseen test "
                                 f"images")
        except Exception as err:  # noqa: BLE001 - the page says why; the server keeps serving
            log.warning("most confused pairs not available: %s", err)
            self._set_status(f"not available: the run's results.json does not hold them and "
                             f"the test images cannot be read ({err})")
