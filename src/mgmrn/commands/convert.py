"""``mgmrn convert-release``: a checkpoint of the published code -> an mgmrn checkpoint.

The published ``train.py`` saves ``{"model": state_dict}`` with the ResNet's torchvision names
under ``backbone.``. The weights are renamed for a network built from a ``*-release`` recipe (see
:mod:`mgmrn.models.release`), checked entry by entry, and saved with the recipe's config and the
dataset description, so that ``mgmrn eval``, ``mgmrn predict`` and ``--explain`` accept the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from mgmrn.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

HELP = "turn a checkpoint of the published code into an mgmrn checkpoint"
DESCRIPTION = ("Rename the weights of a checkpoint saved by the published train.py ({'model': "
               "state_dict}) for the network of a *-release recipe; eval, predict and --explain "
               "accept the result. The recipe's data section names the dataset (its class list, "
               "attributes and word vectors are read; the images are not needed).")


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="the published checkpoint (.pth)")
    parser.add_argument("--config", required=True,
                        help="cub-release, sun-release, awa2-release, demo-release or a YAML file")
    parser.add_argument("--out", required=True,
                        help="the mgmrn checkpoint to write (never overwritten)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. data.root=/data/zsl")


def run(args) -> int:
    out = convert_release(args.checkpoint, load_config(args.config, args.overrides), args.out)
    print(f"wrote {out}; evaluate it with: mgmrn eval --checkpoint {out}")
    return 0


def read_release_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint saved by the published ``train.py``.

    Accepts ``{"model": state_dict}`` (as published) or a bare state dict; a ``module.`` prefix
    left by ``DataParallel`` is removed. Loaded with ``weights_only``: no code in it runs.
    """
    import torch

    from mgmrn.checkpoint import CheckpointError, load_checkpoint

    saved = load_checkpoint(path, keys=())  # any dict: the published layout is checked below
    state = saved.get("model", saved)
    if not isinstance(state, dict) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"release checkpoint '{path}' holds no state dict: expected "
                              f"{{'model': state_dict}} as the published train.py saves it")
    return strip_data_parallel(state)


def strip_data_parallel(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``module.QueryW1.weight`` (as ``DataParallel`` saves it) -> ``QueryW1.weight``."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def convert_release(checkpoint: str | Path, cfg: Config, out: str | Path) -> Path:
    """Convert a published checkpoint for ``cfg`` (a ``*-release`` recipe) and save it to ``out``.

    Args:
        checkpoint: the published checkpoint.
        cfg: the run config; its data section names the dataset the model was trained on
            (read for class names, attributes and word vectors, without the images).
        out: the mgmrn checkpoint to write; an existing file is never overwritten.

    Returns:
        ``out``. Problems raise with one-line messages: missing, unexpected or mis-shaped
        entries are named.
    """
    from mgmrn.checkpoint import CheckpointError, data_meta, save_atomic
    from mgmrn.data import assemble as assemble_data
    from mgmrn.data import read_records
    from mgmrn.inference.loaded import LoadedRun
    from mgmrn.models import build_model
    from mgmrn.models.release import (
        ReleaseWeightsError,
        convert_release_state_dict,
        differing_switches,
    )

    out = Path(out)
    if out.exists():
        raise ConfigError(f"--out '{out}' already exists; choose another file name")
    differing = differing_switches(cfg)
    if cfg.model.name != "mgmrn" or differing:
        what = "model.name must be mgmrn" if cfg.model.name != "mgmrn" else (
            f"switches not at the published value: {', '.join(differing)}")
        raise ConfigError(f"convert with a *-release recipe (e.g. --config cub-release), whose "
                          f"switches are all the published code's; {what}")
    release = read_release_checkpoint(checkpoint)
    data = assemble_data(read_records(cfg.data, seed=cfg.seed), cfg.data)
    # every weight comes from the checkpoint: no pretrained ones, nor a file they would come from
    cfg.model.pretrained, cfg.model.pretrained_file = False, None
    model = build_model(cfg.model, data.attribute_vectors, image_size=cfg.data.image_size)
    try:
        state = convert_release_state_dict(release, model)
    except ReleaseWeightsError as err:
        raise CheckpointError(f"release checkpoint '{checkpoint}' does not fit the network of "
                              f"this config: {err}") from err
    model.load_state_dict(state)
    saved = {"model": model.state_dict(), "config": cfg.to_dict(), "data": data_meta(data),
             "epoch": None, "converted_from": str(checkpoint)}
    save_atomic(saved, out)
    LoadedRun.from_checkpoint(out, "cpu")  # it loads the way eval and predict load it
    log.info("converted %s (%d entries) to %s", checkpoint, len(release), out)
    return out
