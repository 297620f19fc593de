"""The main job: build everything from a config, train with evaluation, write results."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mgmrn import checkpoint as ckpt_io
from mgmrn.config import Config, save_config
from mgmrn.data import build_data_once, build_train_loader, check_sampler_fits
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
from mgmrn.evaluation import calibration_record
from mgmrn.evaluation.report import format_results
from mgmrn.evaluation.results import ChosenOnValidation, ZSLResults
from mgmrn.evaluation.selection import protocol_report, update_selection
from mgmrn.inference.evaluate import evaluate_model
from mgmrn.io.atomic import DiskWriteError, check_writable, remove_stale_temporaries
from mgmrn.io.locks import run_folder_lock
from mgmrn.models import build_model, compile_heads, model_input_config
from mgmrn.models.pretraining import overlap_warning
from mgmrn.precision import resolve_cuda_graphs, resolve_eval_cuda_graphs, resolve_precision
from mgmrn.training.engine import EpochProgress, GraphedStep, train_one_epoch
from mgmrn.training.losses import ZSLCriterion
from mgmrn.training.metrics_log import MetricsLog
from mgmrn.training.optim import (
    build_optimizer,
    describe_groups,
    scheduler_batch_end,
    scheduler_epoch_end,
    scheduler_epoch_start,
)
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


def log_backbone(model: nn.Module, cfg: Config, optimizer) -> None:
    """Say what the run starts from: the backbone's levels and weights, the parameter groups,
    and a warning where the weights' pretraining may have seen the benchmark's unseen classes."""
    backbone = model.backbone
    spec, weights = getattr(backbone, "spec", None), getattr(backbone, "weights", None)
    if spec is None or weights is None:
        return
    unit = "blocks" if spec.kind == "plain" else "feature stages"
    log.info("backbone %s (%s): levels from its %s %s (from 0) at strides %s", spec.name, spec.kind,
             unit, ", ".join(map(str, spec.indices)), ", ".join(map(str, spec.strides)))
    if weights["source"] == "random":
        log.info("backbone weights: random (model.pretrained=false)")
    else:
        log.info("backbone weights: %s %s%s", weights["source"], weights.get("location", ""),
                 f" (sha256 {weights['sha256']})" if weights.get("sha256") else "")
    log.info("optimizer: %s", describe_groups(optimizer))
    warning = overlap_warning(spec.name, cfg.data.name, weights["source"] != "random")
    if warning:
        log.warning(warning)


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
    data = build_data_once(cfg, env, inputs)
    check_sampler_fits(data, cfg.data)
    model = build_model(cfg.model, data.attribute_vectors, image_size=cfg.data.image_size).to(device)
    precision = resolve_precision(cfg, device, inputs)
    use_graphs = resolve_cuda_graphs(cfg, device, env, precision)
    resolve_eval_cuda_graphs(cfg, device)  # refuses an impossible eval.cuda_graphs=true now
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer(model, cfg, device)
    weights = getattr(model.backbone, "weights", None)
    point = _resume_point(resume_from, model, optimizer, scheduler, precision, env)
    _check_batches_done(point, cfg.train.batches_per_epoch, resume_from)
    if env.is_main:
        (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
        check_writable(folder / "checkpoints" / "last.pt")  # before an epoch's work, not after
        save_config(cfg, folder / "config.yaml")
        log.info("model: %s, %.2fM parameters, device %s", cfg.model.name,
                 sum(p.numel() for p in model.parameters()) / 1e6, device)
        log_backbone(model, cfg, optimizer)
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
                                   calibration, inputs, weights)

    with StopOnSignal(env.enabled) as stopper:
        for epoch in range(point.epoch, cfg.train.epochs):
            if stopper.should_stop():  # the signal came while evaluating or saving
                raise _preempted(stopper, last, epoch, None, cfg)
            progress = _start_epoch(epoch, point, cfg, env, loader.batch_sampler)
            scheduler_epoch_start(scheduler, cfg, resumed=bool(progress.batches))
            lr = max(group["lr"] for group in optimizer.param_groups)  # the heads'
            start = time.perf_counter()
            stats = train_one_epoch(wrapped, loader, optimizer, criterion, device, epoch,
                                    cfg.train.schedule, precision, show_progress=env.is_main,
                                    graphed=graphed, stop=stopper.should_stop, progress=progress,
                                    after_batch=lambda: scheduler_batch_end(scheduler, cfg))
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
                    _save_checkpoint(ckpt_io.inference_state(state(epoch)),
                                     folder / "checkpoints" / "best.pt")
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




def _summary_line(record: dict, epochs: int) -> str:
    line = (f"epoch {record['epoch'] + 1}/{epochs}  loss {record['loss']:.4f}  "
            f"lr {record['lr']:.2e}  {record['train_images_per_s']:.1f} img/s  "
            f"{record['epoch_seconds']:.0f}s")
    if "gzsl_h" in record:
        line += (f"  | CZSL {record['czsl_acc']:.1f}  S {record['gzsl_seen']:.1f}  "
                 f"U {record['gzsl_unseen']:.1f}  H {record['gzsl_h']:.1f}")
    return line
