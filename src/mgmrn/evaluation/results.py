"""The results of an evaluation as one typed structure, its one writer and its one reader.

:func:`~mgmrn.evaluation.protocols.zsl_figures` computes the figures; ``mgmrn train`` and
``mgmrn eval`` add what they know (per-class accuracies, confused pairs, the run's data, the
best-over-epochs figures, the checkpoint) and write ``results.json`` with :meth:`ZSLResults.write`;
``mgmrn compare`` and the explorer read it back with :func:`read_results`. Accuracies are in
percent; ``to_json`` gives the fields in the file's order, leaving out the parts not set.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from mgmrn.errors import MgmrnError
from mgmrn.io.atomic import write_atomic

HEADLINE = ("czsl_acc", "gzsl_seen", "gzsl_unseen", "gzsl_h", "ausuc", "gamma")


class ResultsError(MgmrnError, ValueError):
    """A results.json that cannot be read; the message names the file and the field."""


@dataclass
class GZSLPoint:
    """GZSL accuracies at one calibration, percent."""

    seen: float
    unseen: float
    h: float


@dataclass
class FixedGamma:
    """GZSL accuracies at a gamma chosen elsewhere (``eval.gamma``), percent."""

    gamma: float
    seen: float
    unseen: float
    h: float


@dataclass
class Curve:
    """The seen-unseen curve: one entry per swept gamma, sorted by gamma, percent."""

    gamma: list[float]
    seen: list[float]
    unseen: list[float]
    h: list[float]


@dataclass
class ConfusedPair:
    """An unseen class often taken for another (CZSL): ``count`` of its images, ``share`` of
    them, and some of those images."""

    true: str
    predicted: str
    count: int
    share: float
    examples: list[str]


@dataclass
class DataSummary:
    """Class and image counts of the evaluated data."""

    n_seen_classes: int
    n_unseen_classes: int
    n_train: int
    n_test_seen: int
    n_test_unseen: int


@dataclass
class ReleaseProtocol:
    """The best of each figure over the evaluated epochs (epochs from 0), as the paper reports."""

    czsl_acc: float
    czsl_epoch: int
    gzsl_h: float
    gzsl_seen: float
    gzsl_unseen: float
    gamma: float
    gzsl_epoch: int
    ausuc: float
    ausuc_epoch: int
    chosen_on: str


@dataclass
class ChosenOnValidation:
    """The epoch (from 0) and gamma chosen on the validation split."""

    epoch: int
    gamma: float


@dataclass
class ZSLFigures:
    """Every ZSL figure of one evaluation, percent (gammas as they are).

    Attributes:
        czsl_acc: CZSL mean per-class accuracy over the unseen classes.
        gzsl_seen, gzsl_unseen, gzsl_h: GZSL S, U and H at the oracle gamma.
        gamma: the oracle gamma (best H on these images).
        ausuc: area under the seen-unseen curve, x 100.
        gzsl_uncalibrated: S, U, H at gamma 0.
        curve: the gamma sweep.
        fixed_gamma: S, U, H at a given gamma, when one was given.
    """

    czsl_acc: float
    gzsl_seen: float
    gzsl_unseen: float
    gzsl_h: float
    gamma: float
    ausuc: float
    gzsl_uncalibrated: GZSLPoint | None = None
    curve: Curve | None = None
    fixed_gamma: FixedGamma | None = None

    def headline(self) -> dict[str, float]:
        """The figures a metrics line records: CZSL, S, U, H, AUSUC and gamma."""
        return {name: getattr(self, name) for name in HEADLINE}

    def to_json(self) -> dict[str, Any]:
        """Plain data in the order of results.json; parts not set are left out."""
        return {name: value for name, value in asdict(self).items() if value is not None}


@dataclass
class ZSLResults(ZSLFigures):
    """What ``mgmrn train`` and ``mgmrn eval`` write to results.json.

    Attributes:
        czsl_per_class: unseen class name -> CZSL accuracy.
        calibration: where the reported gamma was chosen.
        unseen_confusions: the most confused pairs of unseen classes.
        split: the data split (``trainval`` or ``val``).
        model: the model name.
        data: class and image counts.
        epochs: epochs trained (training only).
        release_protocol: best-over-epochs figures (training only).
        chosen_on_validation: the epoch and gamma chosen on the validation split.
        checkpoint: the evaluated checkpoint (``mgmrn eval`` only).
        epoch: that checkpoint's epoch.
    """

    czsl_per_class: dict[str, float] | None = None
    calibration: str | None = None
    unseen_confusions: list[ConfusedPair] | None = None
    split: str | None = None
    model: str | None = None
    data: DataSummary | None = None
    epochs: int | None = None
    release_protocol: ReleaseProtocol | None = None
    chosen_on_validation: ChosenOnValidation | None = None
    checkpoint: str | None = None
    epoch: int | None = None

    @classmethod
    def from_figures(cls, figures: ZSLFigures, **extra: Any) -> ZSLResults:
        """The figures with the fields of ``extra`` added."""
        return cls(**{f.name: getattr(figures, f.name) for f in fields(ZSLFigures)}, **extra)

    def overview(self) -> dict[str, Any]:
        """The figures and labels a page shows of a run: the headline, calibration, split,
        model and epochs, those that are set."""
        names = ("czsl_acc", "gzsl_seen", "gzsl_unseen", "gzsl_h", "gamma", "ausuc",
                 "calibration", "split", "model", "epochs")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def to_json(self) -> dict[str, Any]:
        """Plain data in the order of results.json; parts not set are left out."""
        out = super().to_json()
        if self.checkpoint is not None and self.epoch is None:
            out["epoch"] = None  # an evaluated checkpoint records its epoch, even an unknown one
        return out

    def comparison_entry(self) -> dict[str, Any]:
        """The figures ``mgmrn compare`` records of a run: the headline and, None when absent,
        the fixed-gamma and gamma-0 accuracies."""
        names = ("czsl_acc", "gzsl_seen", "gzsl_unseen", "gzsl_h", "gamma", "ausuc",
                 "fixed_gamma", "gzsl_uncalibrated")
        plain = asdict(self)
        return {n: plain[n] for n in names}

    def write(self, path: str | Path) -> None:
        """Write results.json atomically (temporary file, then rename)."""
        write_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")


# nested parts of results.json and the types that read them
_PARTS = {"gzsl_uncalibrated": GZSLPoint, "curve": Curve, "fixed_gamma": FixedGamma,
          "data": DataSummary, "release_protocol": ReleaseProtocol,
          "chosen_on_validation": ChosenOnValidation}


def results_from_json(obj: Any, source: str = "results") -> ZSLResults:
    """A :class:`ZSLResults` from the plain data of a results.json.

    Args:
        obj: the parsed JSON; the headline figures are required, every other part optional.
        source: what messages name (the file).

    Raises:
        ResultsError: not an object, a headline figure missing, or a part of the wrong shape.
    """
    if not isinstance(obj, dict):
        raise ResultsError(f"{source}: expected a JSON object of results, got "
                           f"{type(obj).__name__}")
    missing = [n for n in HEADLINE if n not in obj]
    if missing:
        raise ResultsError(f"{source}: no {', '.join(repr(m) for m in missing)}; expected the "
                           f"results.json that mgmrn train or mgmrn eval writes")
    values = {}
    for f in fields(ZSLResults):
        if f.name not in obj:
            continue
        value = obj[f.name]
        if f.name in _PARTS and value is not None:
            value = _part(_PARTS[f.name], value, f"{source}, field '{f.name}'")
        elif f.name == "unseen_confusions" and value is not None:
            if not isinstance(value, list):
                raise ResultsError(f"{source}, field 'unseen_confusions': expected a list of "
                                   f"pairs, got {type(value).__name__}")
            value = [_part(ConfusedPair, p, f"{source}, field 'unseen_confusions'")
                     for p in value]
        values[f.name] = value
    return ZSLResults(**values)


def read_results(path: str | Path) -> ZSLResults:
    """Read a results.json written by ``mgmrn train`` or ``mgmrn eval``.

    Raises:
        FileNotFoundError: no such file.
        ResultsError: not JSON, or not results (the message names the file and the field).
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path} line {err.lineno}: not JSON ({err.msg})") from None
    return results_from_json(obj, str(path))


def _part(kind: type, value: Any, where: str) -> Any:
    names = [f.name for f in fields(kind)]
    if not isinstance(value, dict) or set(value) != set(names):
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise ResultsError(f"{where}: expected the fields {', '.join(names)}, got {got}")
    return kind(**{n: value[n] for n in names})

