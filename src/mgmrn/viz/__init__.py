"""Pictures: attention maps over an image and the figures of an evaluation.

Figures are drawn with matplotlib's object-oriented API on an Agg canvas: no pyplot state and no
display are involved, so plotting is safe in headless runs, worker processes and tests.
"""

from mgmrn.viz.attention import (
    level_attention_maps,
    plot_attention,
    plot_explanations,
    write_explanations,
)
from mgmrn.viz.curves import (
    plot_per_class_accuracy,
    plot_seen_unseen_curve,
    write_eval_figures,
)
from mgmrn.viz.training import plot_training_curves, read_metrics

__all__ = [
    "level_attention_maps",
    "plot_attention",
    "plot_explanations",
    "plot_per_class_accuracy",
    "plot_seen_unseen_curve",
    "plot_training_curves",
    "read_metrics",
    "write_eval_figures",
    "write_explanations",
]
