"""The main job: build everything from a config, train with evaluation, write results."""

from __future__ import annotations

import logging
import random
import re
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mgmrn import checkpoint as ckpt_io
from mgmrn.config import Config, save_config
from mgmrn.data import build_data, build_test_loader, build_train_loader, check_sampler_fits
from mgmrn.distributed import (
    DistEnv,
    barrier,
    cleanup,
    gather_objects,
    init_distributed,
    resolve_device,
    under_torchrun,
)
from mgmrn.errors import MgmrnError
from mgmrn.evaluation import calibration_record, class_accuracies, named_confused_pairs, zsl_figures
from mgmrn.evaluation.report import format_results
from mgmrn.evaluation.results import ChosenOnValidation, ConfusedPair, DataSummary, ZSLResults
from mgmrn.evaluation.selection import protocol_report, update_selection
from mgmrn.inference.scoring import place_model
from mgmrn.io.atomic import DiskWriteError, check_writable, remove_stale_temporaries
from mgmrn.io.locks import run_folder_lock
from mgmrn.models import build_model, compile_heads, model_input_config
from mgmrn.precision import Precision, resolve_cuda_graphs, resolve_eval_cuda_graphs, resolve_precision
from mgmrn.training.engine import EpochProgress, GraphedStep, predict_logits, train_one_epoch
from mgmrn.training.losses import ZSLCriterion
from mgmrn.training.metrics_log import MetricsLog
from mgmrn.training.preemption import REQUEUE_EXIT, Preempted, StopOnSignal, stopped_while_starting
from mgmrn.viz import write_eval_figures

log = logging.getLogger(__name__)


class RunFolderError(MgmrnError, ValueError):
    """The run folder already holds a run that would be overwritten."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_run_folder(folder: Path, resume: bool, auto_resume: bool = False) -> Path | None:
    """Check the run folder; return the checkpoint to resume from, if any.

    A run stopped before its first checkpoint was complete (killed, or a full disk) has nothing
    to resume from: ``--resume`` (like ``train.auto_resume``) begins it again, and its metrics log
    drops the first attempt's records (see _train). A finished run is never replaced.

    Args:
        resume: ``--resume``: continue from ``last.pt``, or begin the run (again) without one.
        auto_resume: continue from ``last.pt`` when it exists (a restarted job), else start anew.
    """
    last = folder / "checkpoints" / "last.pt"
    used = [p.name for p in (folder / "metrics.jsonl", folder / "results.json") if p.exists()]
    if (folder / "checkpoints").is_dir():
        used += sorted(p.name for p in (folder / "checkpoints").glob("*.pt"))
    stranded = bool(used) and not last.is_file() and not (folder / "results.json").exists()
    if (resume or auto_resume) and last.is_file():
        log.info("%s: continuing the run in %s from %s",
                 "--resume" if resume else "train.auto_resume", folder, last)
        return last
    if (resume or auto_resume) and not (folder / "results.json").exists():
        # a requeue script passes --resume every time: to the first try too, and to a run
        # killed before its first checkpoint
        log.info("no checkpoint in %s yet (a new run, or one stopped before its first "
                 "checkpoint); beginning the run", folder)
        return None
    if resume:
        raise RunFolderError(f"--resume: '{folder}' holds a finished run (results.json) but no "
                             f"checkpoint at '{last}' to continue from; choose a new folder with "
                             f"output_dir=<new folder>")
    if stranded:
        raise RunFolderError(
            f"run folder '{folder}' holds a run stopped before its first checkpoint was complete "
            f"({', '.join(used)}); begin it again with --resume, or choose a new folder with "
            f"output_dir=<new folder>")
    if used:
        raise RunFolderError(
            f"run folder '{folder}' already holds a run ({', '.join(used)}); resume it with "
            f"--resume, or choose a new folder with output_dir=<new folder>")
    return None


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


def build_optimizer(model: nn.Module, cfg: Config, device: torch.device):
    """The optimizer and learning-rate scheduler ``mgmrn train`` uses for ``model``.

    SGD (``train.optimizer=sgd``, as published: momentum, weight decay, no dampening, no
    Nesterov) or AdamW over every parameter that requires a gradient, and a StepLR of
    ``train.lr_step`` epochs and factor ``train.lr_gamma``; see :func:`scheduler_epoch_start`
    and :func:`scheduler_epoch_end` for when it steps.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    # on CUDA one fused kernel updates every parameter, instead of a pass per term of the update;
    # not for the alternating schedule, whose steps leave some gradients unset, which the fused
    # kernels of some torch releases refuse
    fused = True if device.type == "cuda" and cfg.train.schedule == "fused" else None
    if cfg.train.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
                                      fused=fused)
    else:
        optimizer = torch.optim.SGD(params, lr=cfg.train.lr, momentum=cfg.train.momentum,
                                    weight_decay=cfg.train.weight_decay, fused=fused)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.train.lr_step,
                                                gamma=cfg.train.lr_gamma)
    return optimizer, scheduler


def _wrap(model: nn.Module, cfg: Config, env: DistEnv, device: torch.device) -> nn.Module:
    wrapped = model
    if cfg.train.compile == "regions":
        log.info("compiled %d head modules", compile_heads(model))
    if env.enabled:
        # the alternating schedule backpropagates one level at a time: other heads get no grad
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.train.schedule == "alternating")
    if cfg.train.compile is True:
        wrapped = torch.compile(wrapped)
    return wrapped


def train(cfg: Config, resume: bool = False) -> ZSLResults:
    """Train ``cfg`` end to end; returns the final results (also written as results.json)."""
    env = init_distributed(cfg.device)
    try:
        with run_folder_lock(cfg.output_dir):  # one process per run folder
            return _train(cfg, resume, env)
    finally:
        cleanup()


def _train(cfg: Config, resume: bool, env: DistEnv) -> ZSLResults:
    folder = Path(cfg.output_dir)
    auto_resume = cfg.train.auto_resume if cfg.train.auto_resume is not None else under_torchrun()
    resume_from = prepare_run_folder(folder, resume, auto_resume)
    if env.is_main:  # under the folder's lock: no other process writes here
        for stale in (*remove_stale_temporaries(folder),
                      *remove_stale_temporaries(folder / "checkpoints")):
            log.info("removed %s, left by a write that was killed part way", stale)
    device = resolve_device(cfg.device, env)
    seed_everything(cfg.seed)
    inputs = model_input_config(cfg.model)  # the pretrained weights' statistics and resizing
    data = _build_data_once(cfg, env, inputs)
    check_sampler_fits(data, cfg.data)
    model = build_model(cfg.model, data.attribute_vectors, image_size=cfg.data.image_size).to(device)
    precision = resolve_precision(cfg, device, inputs)
    use_graphs = resolve_cuda_graphs(cfg, device, env, precision)
    resolve_eval_cuda_graphs(cfg, device)  # refuses an impossible eval.cuda_graphs=true now
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(model, cfg, device)
    point = _resume_point(resume_from, model, optimizer, scheduler, precision, env)
    _check_batches_done(point, cfg.train.batches_per_epoch, resume_from)
    if env.is_main:
        (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
        check_writable(folder / "checkpoints" / "last.pt")  # before an epoch's work, not after
        save_config(cfg, folder / "config.yaml")
        log.info("model: %s, %.2fM parameters, device %s", cfg.model.name,
                 sum(p.numel() for p in model.parameters()) / 1e6, device)
    wrapped = _wrap(model, cfg, env, device)
    loader = build_train_loader(data, cfg.data, cfg.train.batches_per_epoch, cfg.seed,
                                env.rank, env.world_size)
    criterion = ZSLCriterion(data.class_attributes[data.seen_classes], cfg.train.lam).to(device)
    graphed = GraphedStep(wrapped, criterion, precision, device) if use_graphs else None
    metrics = MetricsLog(folder, env.is_main,
                         point.epoch if resume_from is not None else
                         (0 if auto_resume or resume else None))
    results, best, last = None, point.best, folder / "checkpoints" / "last.pt"

    def state(completed: int, mid_epoch: dict | None = None) -> dict:
        calibration = None if results is None else calibration_record(results.gamma,
                                                                      cfg.data.split)
        return ckpt_io.build_state(model, optimizer, scheduler, precision.scaler, cfg.to_dict(),
                                   ckpt_io.data_meta(data), completed, best, mid_epoch,
                                   calibration, inputs)

    with StopOnSignal(env.enabled) as stopper:
        for epoch in range(point.epoch, cfg.train.epochs):
            if stopper.should_stop():  # the signal came while evaluating or saving
                raise _preempted(stopper, last, epoch, None, cfg)
            progress = _start_epoch(epoch, point, cfg, env, loader.batch_sampler)
            scheduler_epoch_start(scheduler, cfg, resumed=bool(progress.batches))
            lr = optimizer.param_groups[0]["lr"]
            start = time.perf_counter()
            stats = train_one_epoch(wrapped, loader, optimizer, criterion, device, epoch,
                                    cfg.train.schedule, precision, show_progress=env.is_main,
                                    graphed=graphed, stop=stopper.should_stop, progress=progress)
            if progress.stopped:
                raise _save_stopped_epoch(epoch, progress, stopper, state, last, env, cfg)
            scheduler_epoch_end(scheduler, cfg)
            record = {"epoch": epoch, "lr": lr, **stats,
                      "epoch_seconds": time.perf_counter() - start}
            last_epoch = epoch == cfg.train.epochs - 1
            every = cfg.train.eval_every
            if last_epoch or (every and (epoch + 1) % every == 0):
                results = evaluate_model(wrapped, data, cfg, device, precision, env)
                record.update(results.headline())
                best = update_selection(best, results.headline(), epoch)
            if env.is_main:
                metrics.write(record)  # before the checkpoint: a resume redoes and replaces it
                if best.get("gzsl_epoch") == epoch:
                    _save_checkpoint(state(epoch), folder / "checkpoints" / "best.pt")
                _save_checkpoint(state(epoch), last)
                log.info(_summary_line(record, cfg.train.epochs))
            barrier()
        # a signal from here on is noted, not fatal: the run finishes, as its last checkpoint
        # is written, and a requeue would have nothing left to do
        if results is None:  # resumed after the last epoch: evaluate what was trained
            results = evaluate_model(wrapped, data, cfg, device, precision, env)
            best = update_selection(best, results.headline(), cfg.train.epochs - 1)
        results.epochs = cfg.train.epochs
        results.release_protocol = protocol_report(best, cfg.data.split)
        if cfg.data.split == "val":
            results.chosen_on_validation = ChosenOnValidation(best["gzsl_epoch"], best["gamma"])
        if env.is_main:
            results.write(folder / "results.json")
            write_eval_figures(results.to_json(), folder, per_class=results.czsl_per_class)
            print(format_results(results, title=f"{cfg.model.name} on {cfg.data.name}"))
            log.info("results written to %s", folder / "results.json")
        if stopper.received:
            log.warning("%s arrived while the run was finishing; it finished, nothing is left to "
                        "resume", stopper.describe())
    return results


def _start_epoch(epoch: int, point: ckpt_io.ResumePoint, cfg: Config, env: DistEnv,
                 sampler) -> EpochProgress:
    """Set the random states and the sampler for ``epoch``; where a resumed epoch starts."""
    # every epoch starts from random states fixed by (seed, epoch, rank): resuming is exact
    seed_everything(cfg.seed + 7919 * (epoch + 1) + 104729 * env.rank)
    progress = EpochProgress()
    if epoch == point.epoch and point.batches:  # resumed part way: continue where it stopped
        progress = EpochProgress(point.batches, point.loss_sums)
        ckpt_io.set_random_states(point.random)
    sampler.set_epoch(epoch, start_batch=progress.batches)
    return progress


def _resume_point(resume_from: Path | None, model, optimizer, scheduler, precision,
                  env: DistEnv) -> ckpt_io.ResumePoint:
    """Restore a checkpoint's states, if resuming; where training starts."""
    if resume_from is None:
        return ckpt_io.ResumePoint(0, {})
    saved = ckpt_io.load_checkpoint(resume_from)
    point = ckpt_io.restore_state(saved, model, optimizer, scheduler, precision.scaler,
                                  resume_from, env.rank)
    log.info("resuming from %s at epoch %d, batch %d", resume_from, point.epoch + 1,
             point.batches + 1)
    return point


def _check_batches_done(point: ckpt_io.ResumePoint, batches_per_epoch: int,
                        resume_from: Path | None) -> None:
    """Refuse to resume an epoch stopped after more batches than an epoch now has."""
    if point.batches > batches_per_epoch:
        raise RunFolderError(
            f"checkpoint '{resume_from}' stopped in epoch {point.epoch + 1} after batch "
            f"{point.batches}, more than train.batches_per_epoch={batches_per_epoch}; resume "
            f"with the run's own train.batches_per_epoch (at least {point.batches})")


def _save_stopped_epoch(epoch: int, progress: EpochProgress, stopper: StopOnSignal, state,
                        last: Path, env: DistEnv, cfg: Config) -> Preempted:
    """Write the checkpoint of an epoch stopped part way (collective under torchrun: every
    rank's random states are gathered into it); the exception to raise."""
    mid_epoch = {"epoch": epoch, "batches": progress.batches,
                 "loss_sums": torch.tensor(progress.loss_sums, dtype=torch.float64),
                 "random": gather_objects(ckpt_io.random_states(), group=stopper.group)}
    if env.is_main:
        _save_checkpoint(state(epoch - 1, mid_epoch), last)
    barrier()
    return _preempted(stopper, last, epoch, progress.batches, cfg)


def _save_checkpoint(state: dict, path: Path) -> None:
    had = path.is_file()
    try:
        ckpt_io.save_atomic(state, path)
    except DiskWriteError as err:
        kept = (f"the previous {path.name} is intact: continue with --resume" if had else
                f"no {path.name} was written yet: begin the run again with --resume")
        raise DiskWriteError(f"{err}; training stopped, {kept}") from err


def _preempted(stopper: StopOnSignal, last: Path, epoch: int, batches: int | None,
               cfg: Config) -> Preempted:
    if not last.is_file():  # stopped before the first checkpoint: nothing to continue from
        return stopped_while_starting(stopper.describe())
    where = (f"before epoch {epoch + 1}/{cfg.train.epochs}" if batches is None else
             f"in epoch {epoch + 1}/{cfg.train.epochs} after batch "
             f"{batches}/{cfg.train.batches_per_epoch}")
    return Preempted(f"stopped by {stopper.describe()} {where}; the checkpoint to continue from "
                     f"is '{last}': continue with --resume (exit status {REQUEUE_EXIT} asks the "
                     f"scheduler to requeue)", last)


def _build_data_once(cfg: Config, env: DistEnv, inputs: dict | None = None):
    """Build the data on the main process first (it may draw the demo set or check every image),
    then on the others, which find the work done. ``inputs``: the backbone's input config."""
    if not env.is_main:
        barrier()
    data = build_data(cfg.data, seed=cfg.seed, inputs=inputs)
    if env.is_main:
        barrier()
    return data


def scheduler_epoch_start(scheduler, cfg: Config, resumed: bool = False) -> None:
    """Before an epoch's first batch: with ``train.lr_step_at=start``, the published order, the
    scheduler steps here, so the learning rate decays one epoch early (epoch e, from 0, runs at
    lr * gamma^floor((e + 1) / step)). An epoch resumed part way has taken its step already."""
    if cfg.train.lr_step_at != "start" or resumed:
        return
    with warnings.catch_warnings():
        # PyTorch warns when a scheduler steps before the optimizer: that is the point here
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
        scheduler.step()


def scheduler_epoch_end(scheduler, cfg: Config) -> None:
    """After an epoch's last batch: with ``train.lr_step_at=end`` the scheduler steps here, so
    epoch e, from 0, runs at lr * gamma^floor(e / step)."""
    if cfg.train.lr_step_at == "end":
        scheduler.step()


def _summary_line(record: dict, epochs: int) -> str:
    line = (f"epoch {record['epoch'] + 1}/{epochs}  loss {record['loss']:.4f}  "
            f"lr {record['lr']:.2e}  {record['train_images_per_s']:.1f} img/s  "
            f"{record['epoch_seconds']:.0f}s")
    if "gzsl_h" in record:
        line += (f"  | CZSL {record['czsl_acc']:.1f}  S {record['gzsl_seen']:.1f}  "
                 f"U {record['gzsl_unseen']:.1f}  H {record['gzsl_h']:.1f}")
    return line


def evaluate_checkpoint(path: str | Path, overrides: dict | None = None,
                        out: str | Path | None = None) -> ZSLResults:
    """Evaluate a saved checkpoint on its dataset's test splits; writes results.json."""
    out_path = Path(out) if out else Path(path).parent / "results.json"
    _check_eval_out(out_path)
    env = init_distributed()
    try:
        saved = ckpt_io.load_checkpoint(path)
        cfg = ckpt_io.checkpoint_config(saved, overrides)
        device = resolve_device(cfg.device, env)
        inputs = ckpt_io.checkpoint_inputs(saved)
        data = _build_data_once(cfg, env, inputs)
        model, _ = ckpt_io.model_from_checkpoint(saved, path, data.attribute_vectors, overrides)
        ckpt_io.check_attribute_names(saved, path, data.attribute_names,
                                      f"{cfg.data.name} data at {cfg.data.root}")
        precision = resolve_precision(cfg, device, inputs)
        model = place_model(model, device, precision)  # the layout training evaluates in
        results = evaluate_model(model, data, cfg, device, precision, env)
        results.checkpoint = str(path)
        results.epoch = saved.get("epoch")
        if env.is_main:
            results.write(out_path)
            write_eval_figures(results.to_json(), out_path.parent, per_class=results.czsl_per_class)
            print(format_results(results, title=f"{cfg.model.name} checkpoint {path}"))
            log.info("results written to %s", out_path)
        return results
    finally:
        cleanup()


def _check_eval_out(out_path: Path) -> None:
    """Refuse to write an evaluation into a training run's folder: its figures have the names
    of the run's own (and ``--out <run>/results.json`` would replace the run's results)."""
    folder = out_path.parent
    if (folder / "metrics.jsonl").exists() or (folder / "checkpoints").is_dir():
        raise RunFolderError(
            f"--out '{out_path}': '{folder}' is the folder of a training run, whose results.json "
            f"and figures the evaluation's would overwrite; write into another folder, e.g. "
            f"--out {folder / 'eval' / out_path.name}")
