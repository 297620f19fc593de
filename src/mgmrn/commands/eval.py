"""``mgmrn eval``: evaluate a checkpoint on its dataset's test splits."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mgmrn.commands import add_checkpoint_argument

HELP = "evaluate a checkpoint on its dataset's test splits"
DESCRIPTION = ("Evaluate a checkpoint (CZSL, GZSL with calibrated stacking, AUSUC); writes "
               "results.json next to the checkpoint.")

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument("--out", default=None, help="where to write the results JSON")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. data.root=/data/cub eval.gamma=0.7")


def run(args: argparse.Namespace) -> int:
    from mgmrn.config import parse_overrides

    evaluate_checkpoint(args.checkpoint, parse_overrides(args.overrides), args.out)
    return 0


def evaluate_checkpoint(path: str | Path, overrides: dict | None = None,
                        out: str | Path | None = None):
    """Evaluate a saved checkpoint on its dataset's test splits; writes results.json (next to
    the checkpoint, or to ``out``) and its figures; returns the
    :class:`~mgmrn.evaluation.results.ZSLResults`."""
    from mgmrn.data import build_data_once
    from mgmrn.distributed import cleanup, init_distributed
    from mgmrn.evaluation.report import format_results
    from mgmrn.inference.evaluate import evaluate_model
    from mgmrn.inference.loaded import LoadedRun
    from mgmrn.viz import write_eval_figures

    if out:
        check_eval_out(Path(out))  # before anything loads
    env = init_distributed()
    try:
        run = LoadedRun.from_checkpoint(path, purpose="evaluate", overrides=overrides, env=env)
        # next to the checkpoint; a model folder (local-dir:, hf-hub:) keeps its results inside it
        out_path = Path(out) if out else (
            run.path if run.path.is_dir() else run.path.parent) / "results.json"
        if not out:  # an --out given was checked before anything loaded
            check_eval_out(out_path)
        cfg = run.config
        data = build_data_once(cfg, env, run.inputs)
        run.check_data(data)
        results = evaluate_model(run.model, data, cfg, run.device, run.precision, env)
        results.checkpoint = str(path)
        # results.json counts the checkpoint's epoch from 0, as metrics.jsonl does
        results.epoch = None if run.epochs_trained is None else run.epochs_trained - 1
        if env.is_main:
            results.write(out_path)
            write_eval_figures(results.to_json(), out_path.parent, per_class=results.czsl_per_class)
            print(format_results(results, title=f"{cfg.model.name} checkpoint {path}"))
            log.info("results written to %s", out_path)
        return results
    finally:
        cleanup()


def check_eval_out(out_path: Path) -> None:
    """Refuse to write an evaluation into a training run's folder: its figures have the names
    of the run's own (and ``--out <run>/results.json`` would replace the run's results)."""
    from mgmrn.training.runner import RunFolderError

    folder = out_path.parent
    if (folder / "metrics.jsonl").exists() or (folder / "checkpoints").is_dir():
        raise RunFolderError(
            f"--out '{out_path}': '{folder}' is the folder of a training run, whose results.json "
            f"and figures the evaluation's would overwrite; write into another folder, e.g. "
            f"--out {folder / 'eval' / out_path.name}")
