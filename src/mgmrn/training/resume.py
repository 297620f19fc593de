"""``--resume``: a run continued with its own config, refusing overrides that change what it trains.

Light (no torch): the command line calls it before the training code is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mgmrn.config import Config, ConfigError, load_config

# what a resumed run may change: where and how fast it runs, never what it trains on or how
RESUMABLE_CHANGES = ("output_dir", "device", "eval.", "data.root", "data.num_workers",
                     "data.test_batch_size", "data.verify_images", "data.skip_bad_images",
                     "train.amp", "train.channels_last", "train.compile", "train.cuda_graphs",
                     "train.auto_resume", "train.eval_every")


def _flat(values: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict) and value and key != "backbone_args":
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def load_resumed(saved: str | Path, overrides: list[str] | None = None,
                 allow_changes: bool = False) -> Config:
    """The config of a run continued with ``--resume``: its own ``config.yaml`` plus overrides.

    An override changing the schedule, the data or the model (any key outside
    :data:`RESUMABLE_CHANGES`) is refused unless ``allow_changes`` (``--resume-changes``): a
    resumed run that silently trained to another schedule would rewrite its results as if it
    had been planned so.
    """
    cfg = load_config(saved, overrides)
    if allow_changes:
        return cfg
    before, after = _flat(load_config(saved, check=False).to_dict()), _flat(cfg.to_dict())
    for key, value in after.items():
        if before.get(key) != value and not key.startswith(RESUMABLE_CHANGES):
            raise ConfigError(
                f"--resume: {saved}: {key} is {before.get(key)}, not {value}; a resumed run "
                f"keeps its schedule, data and model: drop the override, pass --resume-changes "
                f"to continue the run with it, or start a new run in another output_dir")
    return cfg
