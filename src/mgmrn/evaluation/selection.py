"""Figures chosen over epochs: the paper's protocol (best of each figure) and validation choices.

The published code evaluates after every epoch and reports, each on its own, the best CZSL
accuracy, the best H (with the S and U of that epoch) and the best AUSUC over all epochs: three
figures that may come from three different epochs, all chosen on the test set. The first epoch
that reaches a best value keeps it.
"""

from __future__ import annotations

from typing import Any

from mgmrn.evaluation.results import ReleaseProtocol


def update_selection(selection: dict[str, Any] | None, results: dict[str, Any],
                     epoch: int) -> dict[str, Any]:
    """Fold one evaluated epoch into the best-over-epochs figures.

    Args:
        selection: the figures so far (None before the first evaluation); not modified.
        results: one evaluation's headline figures (``ZSLFigures.headline()``, percent).
        epoch: the evaluated epoch, from 0.

    Returns:
        ``czsl_acc`` and ``czsl_epoch``; ``gzsl_h`` with that epoch's ``gzsl_seen``,
        ``gzsl_unseen`` and ``gamma``, and ``gzsl_epoch``; ``ausuc`` and ``ausuc_epoch``.
    """
    best = dict(selection) if selection else {}
    if results["czsl_acc"] > best.get("czsl_acc", -1.0):
        best.update(czsl_acc=results["czsl_acc"], czsl_epoch=epoch)
    if results["gzsl_h"] > best.get("gzsl_h", -1.0):
        best.update(gzsl_h=results["gzsl_h"], gzsl_seen=results["gzsl_seen"],
                    gzsl_unseen=results["gzsl_unseen"], gamma=results["gamma"], gzsl_epoch=epoch)
    if results["ausuc"] > best.get("ausuc", -1.0):
        best.update(ausuc=results["ausuc"], ausuc_epoch=epoch)
    return best


def protocol_report(selection: dict[str, Any], split: str) -> ReleaseProtocol:
    """The ``release_protocol`` part of the results, labelled with where it was chosen."""
    where = "validation split" if split == "val" else "test set (as the paper reports)"
    return ReleaseProtocol(**selection, chosen_on=where)
