"""Zero-shot evaluation: metrics, calibrated stacking and the CZSL/GZSL protocols.

Pure functions of scores and labels (torch tensors or numpy arrays, computed on CPU in
numpy); they know nothing of models.
"""

from mgmrn.evaluation.calibration import (
    ausuc,
    calibrated_stacking,
    calibration_record,
    default_gamma,
    gamma_sweep,
)
from mgmrn.evaluation.metrics import (
    class_accuracies,
    confused_pairs,
    harmonic_mean,
    named_confused_pairs,
    per_class_accuracy,
)
from mgmrn.evaluation.protocols import czsl_accuracy, gzsl_accuracy, zsl_figures

__all__ = [
    "ausuc",
    "calibrated_stacking",
    "calibration_record",
    "class_accuracies",
    "confused_pairs",
    "czsl_accuracy",
    "default_gamma",
    "gamma_sweep",
    "gzsl_accuracy",
    "harmonic_mean",
    "named_confused_pairs",
    "per_class_accuracy",
    "zsl_figures",
]
