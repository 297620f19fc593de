"""Model folders in the Hugging Face Hub's format: ``model.safetensors`` and ``config.json``.

A folder holds what evaluation and prediction read from a checkpoint (see
:mod:`mgmrn.checkpoint`), without pickle: the weights as safetensors, everything else as JSON
(the resolved config, the dataset description with class and attribute names, class attributes
and word vectors, the input statistics, the calibration, the epochs trained, the mgmrn version).
:func:`read_hub_state` turns a folder back into the dict a ``.pt`` checkpoint loads as, so that
:meth:`mgmrn.inference.loaded.LoadedRun.from_checkpoint` builds the same network from either.

References name a folder: ``local-dir:DIR`` or ``hf-hub:org/name`` (``@revision`` optional),
downloaded through ``huggingface_hub`` into its cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from mgmrn.errors import MgmrnError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
LOCAL_PREFIX, HUB_PREFIX = "local-dir:", "hf-hub:"
FORMAT = "mgmrn-hub"
FORMAT_VERSION = 1
# the dataset description's tensors and their dtypes, as a checkpoint holds them
TENSORS = {"class_attributes": torch.float32, "attribute_vectors": torch.float32,
           "seen_classes": torch.long, "unseen_classes": torch.long}


class HubError(MgmrnError, ValueError):
    """A model folder or Hub reference that cannot be used; the message names it."""


def is_hub_reference(reference: str | Path) -> bool:
    """Whether ``reference`` names a model folder (``local-dir:``, ``hf-hub:``), not a file."""
    return isinstance(reference, str) and reference.startswith((LOCAL_PREFIX, HUB_PREFIX))


def resolve_folder(reference: str) -> Path:
    """The local folder a reference names; ``hf-hub:`` ones are downloaded into the Hub's cache
    (``HF_HUB_OFFLINE=1`` reads the cache alone)."""
    if reference.startswith(LOCAL_PREFIX):
        folder = Path(reference[len(LOCAL_PREFIX):]).expanduser()
        if not folder.is_dir():
            raise HubError(f"model folder '{folder}' does not exist")
        return folder
    repo = reference[len(HUB_PREFIX):]
    repo, _, revision = repo.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise HubError(f"'{reference}' is not a Hub model: write hf-hub:org/name[@revision]")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as err:
        raise HubError("loading hf-hub: models needs huggingface_hub (pip install "
                       "huggingface_hub)") from err
    paths = []
    for name in (CONFIG, WEIGHTS):
        try:
            paths.append(Path(hf_hub_download(repo, name, revision=revision or None)))
        except Exception as err:  # offline, unknown repository, missing file: one line
            raise HubError(f"cannot download {name} of '{repo}' from the Hub "
                           f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
                           ) from err
    if paths[0].parent != paths[1].parent:
        raise HubError(f"the Hub's cache holds {CONFIG} and {WEIGHTS} of '{repo}' apart")
    return paths[0].parent


def state_to_hub(saved: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """A checkpoint's dict -> (the weights, the JSON-ready ``config.json`` content)."""
    from mgmrn import __version__
    from mgmrn.evaluation import default_gamma

    data = dict(saved["data"])
    for key in TENSORS:
        data[key] = data[key].tolist()  # float32 values survive the round trip through JSON
    weights = {key: value.detach().cpu().contiguous() for key, value in saved["model"].items()}
    content = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "mgmrn_version": __version__,
        "architecture": saved["config"]["model"]["name"], "config": saved["config"],
        "data": data, "input": saved.get("input"), "calibration": saved.get("calibration"),
        "epoch": saved.get("epoch"), "backbone_weights": saved.get("backbone_weights"),
        # informative: loading derives it again from "calibration" and the config, as for a .pt
        "prediction_gamma": dict(zip(("gamma", "source"), default_gamma(
            saved.get("calibration"), saved["config"].get("eval", {}).get("gamma")),
            strict=True)),
    }
    return weights, content


def write_hub_files(saved: dict, out: Path) -> dict:
    """``model.safetensors`` and ``config.json`` of a checkpoint's dict, into ``out``; returns
    the ``config.json`` content."""
    from safetensors.torch import save_file

    from mgmrn.io.atomic import write_atomic

    weights, content = state_to_hub(saved)
    out.mkdir(parents=True, exist_ok=True)
    # tensors that share memory (tied weights) are stored as copies: safetensors refuses views
    weights = {key: value.clone() for key, value in weights.items()}
    # beside the final name, then renamed: a stopped export never leaves half a weights file
    partial = out / f".{WEIGHTS}.partial"
    save_file(weights, str(partial), metadata={"format": "pt"})
    os.replace(partial, out / WEIGHTS)
    write_atomic(out / CONFIG, json.dumps(content, indent=1) + "\n")
    return content


def read_hub_state(reference: str) -> tuple[dict, Path]:
    """A model folder as the dict its checkpoint loads as (see :mod:`mgmrn.checkpoint`), and
    the folder. Reads JSON and safetensors only: nothing is unpickled."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = resolve_folder(reference)
    config_path, weights_path = folder / CONFIG, folder / WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise HubError(f"model folder '{folder}' has no {path.name}; write one with "
                           f"mgmrn export --format hub")
    try:
        content = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HubError(f"'{config_path}' is not valid JSON ({err})") from err
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise HubError(f"'{config_path}' is not an mgmrn model's config (no \"format\": "
                       f"\"{FORMAT}\")")
    if content.get("format_version", 0) > FORMAT_VERSION:
        raise HubError(f"'{config_path}' has format version {content['format_version']}; this "
                       f"mgmrn reads up to {FORMAT_VERSION}: upgrade mgmrn")
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise HubError(f"'{weights_path}' cannot be read ({err})") from err
    data = dict(content["data"])
    for key, dtype in TENSORS.items():
        data[key] = torch.tensor(data[key], dtype=dtype)
    saved = {"model": weights, "config": content["config"], "data": data,
             "calibration": content.get("calibration"), "epoch": content.get("epoch"),
             "backbone_weights": content.get("backbone_weights")}
    if content.get("input") is not None:
        saved["input"] = content["input"]
    return saved, folder
