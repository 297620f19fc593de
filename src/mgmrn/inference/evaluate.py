"""Every zero-shot figure of a network on a dataset's test splits, as ``mgmrn train`` reports
them after each evaluated epoch and ``mgmrn eval`` for a checkpoint."""

from __future__ import annotations

import torch
from torch import nn

from mgmrn.config import Config
from mgmrn.data import build_test_loader
from mgmrn.distributed import DistEnv
from mgmrn.evaluation import class_accuracies, named_confused_pairs, zsl_figures
from mgmrn.evaluation.results import ConfusedPair, DataSummary, ZSLResults
from mgmrn.inference.scoring import predict_logits
from mgmrn.precision import Precision, resolve_eval_cuda_graphs


def evaluate_model(model: nn.Module, data, cfg: Config, device: torch.device,
                   precision: Precision, env: DistEnv) -> ZSLResults:
    """Every ZSL figure of ``model`` on the data's test splits, accuracies in percent."""
    outputs = {}
    graphs = resolve_eval_cuda_graphs(cfg, device)
    for split in ("test_seen", "test_unseen"):
        loader = build_test_loader(getattr(data, split), cfg.data, env.rank, env.world_size)
        outputs[split] = predict_logits(model, loader, data.class_attributes, device, precision,
                                        show_progress=env.is_main, desc=split, cuda_graphs=graphs)
    (seen_logits, seen_labels, _), (unseen_logits, unseen_labels, _) = outputs.values()
    figures = zsl_figures(seen_logits, seen_labels, unseen_logits, unseen_labels,
                          data.seen_classes, data.unseen_classes, fixed_gamma=cfg.eval.gamma,
                          step=cfg.eval.gamma_step, ausuc_order=cfg.eval.ausuc_order)
    unseen = data.unseen_classes
    czsl_predictions = unseen[unseen_logits[:, unseen].argmax(dim=1)]
    accuracies = class_accuracies(czsl_predictions, unseen_labels, unseen)
    confusions = named_confused_pairs(czsl_predictions, unseen_labels, data.class_names,
                                      getattr(data.test_unseen, "paths", None))
    return ZSLResults.from_figures(
        figures,
        czsl_per_class={data.class_names[c]: 100.0 * float(a)
                        for c, a in zip(unseen.tolist(), accuracies, strict=True)},
        calibration=("gamma chosen on the validation split" if cfg.data.split == "val"
                     else "gamma chosen on the test set (oracle)"),
        unseen_confusions=[ConfusedPair(**pair) for pair in confusions],
        split=cfg.data.split, model=cfg.model.name, data=DataSummary(**data.summary()))
