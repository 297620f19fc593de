"""The calibration of a prediction: which gamma is taken off the seen classes, and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mgmrn.errors import UsageError
from mgmrn.evaluation import calibrated_stacking

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


@dataclass
class Calibration:
    """A predictor's default gamma (calibrated stacking) and where it comes from.

    Calibration applies only when seen and other classes are searched together.
    """

    gamma: float = 0.0
    source: str = "not given: 0, uncalibrated"

    def over(self, candidates: torch.Tensor, seen: torch.Tensor, gamma: float | None = None,
             given: str = GIVEN_GAMMA) -> dict[str, Any]:
        """{``gamma``, ``source``} to apply when searching ``candidates`` (C',) with ``seen``
        the seen classes' indices; a ``gamma`` given replaces the default, labelled ``given``."""
        is_seen = torch.isin(candidates, seen)
        if bool(is_seen.all()) or not bool(is_seen.any()):
            return {"gamma": 0.0, "source": "not applied: the seen classes are not searched "
                                            "together with others"}
        if gamma is None:
            return {"gamma": self.gamma, "source": self.source}
        check_gamma(gamma, "gamma")
        return {"gamma": float(gamma), "source": given}


def calibrate(scores: torch.Tensor, candidates: torch.Tensor, seen: torch.Tensor,
              gamma: float) -> torch.Tensor:
    """(B, C') scores over ``candidates`` with ``gamma`` taken off the seen-class columns."""
    is_seen = torch.isin(candidates, seen)
    if not gamma or not bool(is_seen.any()):
        return scores
    return calibrated_stacking(scores, is_seen.nonzero().flatten(), gamma)
