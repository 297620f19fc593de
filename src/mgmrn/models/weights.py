"""Pretrained backbone weights, loaded strictly, and a record of where they came from.

timm loads a ``features_only`` model's weights leniently: names the file lacks keep their random
values and names the model lacks are dropped, each with one log line, so a wrong file (a
ResNet's weights given to a ViT, an mgmrn checkpoint) would start a run on a random backbone.
:func:`create_pretrained` lets timm resolve, convert and load the weights as usual (its
per-model filters resize position embeddings, convert the original repositories' formats), but
reads the outcome of its ``load_state_dict`` and refuses, in one line, weights that leave any
tensor the backbone uses unloaded or bring names it does not have, beyond a classifier head
(:data:`IGNORED_EXTRA`) and the blocks and norms ``features_only`` drops.

``model.pretrained_file`` is a path, or ``package:<name>`` for a weights file shipped inside the
package (:data:`PACKAGE_PREFIX`, :func:`resolve_weights_file`): the demo recipes' backbone,
pretrained by ``scripts/pretrain_backbone.py``, is ``package:demo_backbone.safetensors``. Both
go through the same strict loading.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import logging
import os
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from unittest import mock

import timm
import timm.models._builder as timm_builder
import torch
from torch import nn

from mgmrn.errors import MgmrnError

log = logging.getLogger(__name__)

# weights a file may hold that no backbone uses: the pretrained model's classifier
IGNORED_EXTRA = ("fc.*", "head.*", "head_dist.*", "classifier.*", "last_linear.*", "fc_norm.*")
SHOWN = 3  # names quoted per side in a message
PACKAGE_PREFIX = "package:"  # model.pretrained_file naming a file of PACKAGED_WEIGHTS
PACKAGED_WEIGHTS = ("mgmrn", "weights")  # the package folder holding the shipped weights


class PretrainedWeightsError(MgmrnError, RuntimeError):
    """Pretrained weights were asked for but cannot be found, read, or do not fit the backbone."""


def create_pretrained(name: str, pretrained_file: str | None, kwargs: dict,
                      used: Callable[[nn.Module], set]) -> tuple[nn.Module, dict]:
    """``timm.create_model(name, pretrained=True, **kwargs)``, checked; and where the weights came from.

    Args:
        name: the tagged timm name.
        pretrained_file: a local weights file (timm or torchvision state dict), or None for
            timm's source (hub cache or network).
        kwargs: further ``timm.create_model`` arguments (``features_only`` ...).
        used: ``used(body) -> set`` of the names (as the whole timm model spells them) of every
            tensor the built ``features_only`` model keeps: the ones that must be loaded.

    Returns:
        (the model, ``{"source": "file" | "hub" | "url", "name", "location", "sha256"}``).

    Raises:
        PretrainedWeightsError: the file is missing or unreadable, the weights cannot be fetched,
            or they do not fit the backbone (one line, with counts and the first names).
    """
    if pretrained_file is not None:
        path = resolve_weights_file(pretrained_file)
        if not path.is_file():
            raise PretrainedWeightsError(
                f"model.pretrained_file '{path}' does not exist; give the path of a weights file "
                f"for '{name}', or leave model.pretrained_file unset and set "
                f"model.pretrained=false to train from scratch")
        _check_readable(path)
        where = f"model.pretrained_file '{path}'"
        record = {"source": "file", "name": name, "location": str(path)}
        kwargs = {**kwargs, "pretrained_cfg_overlay": dict(file=str(path), url="", hf_hub_id="")}
    else:
        record = _hub_record(name)
        where = f"the pretrained weights of '{name}' ({record['location']})"
    results: list = []
    original = timm_builder.load_pretrained

    def load_pretrained(model, *args, **kw):  # timm's, not strict: the outcome is checked below
        handle = model.register_load_state_dict_post_hook(lambda _, keys: results.append(keys))
        try:
            return original(model, *args, **{**kw, "strict": False})
        finally:
            handle.remove()

    try:
        # timm's build_model_with_cfg calls its module's load_pretrained, where the converted state
        # dict meets the whole model before features_only cuts it: the one place to read the outcome
        with mock.patch.object(timm_builder, "load_pretrained", load_pretrained), _quiet_keys():
            body = timm.create_model(name, pretrained=True, **kwargs)
    except PretrainedWeightsError:
        raise
    except Exception as err:
        raise _load_error(err, where, name, pretrained_file is not None) from err
    if results:
        _check_fit(where, name, results[-1], used(body), _ignored_extra(body))
    else:  # a model with its own loader (timm's custom_load) reports nothing to check
        log.warning("%s: loaded by the model's own loader; which tensors it filled is not known",
                    where)
    if record["source"] != "file":
        record.update(_hub_file(record))
    if "location" in record and Path(record["location"]).is_file():
        record["sha256"] = sha256(record["location"])
    return body, record


def _packaged_folder():
    """The package folder holding the shipped weights (``src/mgmrn/weights``)."""
    return resources.files(PACKAGED_WEIGHTS[0]).joinpath(*PACKAGED_WEIGHTS[1:])


def packaged_weights() -> list[str]:
    """The names of the weights files shipped in the package, for ``package:<name>``."""
    folder = _packaged_folder()
    if not folder.is_dir():
        return []
    return sorted(f.name for f in folder.iterdir() if f.name.endswith((".safetensors", ".pth", ".pt")))


def resolve_weights_file(pretrained_file: str | Path) -> Path:
    """The file ``model.pretrained_file`` names: ``package:<name>`` is a file shipped in the
    package (``src/mgmrn/weights/<name>``), anything else a path (``~`` expanded).

    Raises:
        PretrainedWeightsError: ``package:<name>`` names no shipped file (the message lists them).
    """
    text = str(pretrained_file)
    if not text.startswith(PACKAGE_PREFIX):
        return Path(text).expanduser()
    name = text[len(PACKAGE_PREFIX):]
    shipped = packaged_weights()
    if name not in shipped:
        raise PretrainedWeightsError(
            f"model.pretrained_file '{text}': the package ships no weights file '{name}' "
            f"(it ships: {', '.join(shipped) or 'none'}); scripts/pretrain_backbone.py makes "
            f"demo_backbone.safetensors")
    return Path(str(_packaged_folder().joinpath(name)))


def _load_error(err: Exception, where: str, name: str, from_file: bool) -> PretrainedWeightsError:
    """One line for what went wrong while timm resolved and loaded the weights: tensors of other
    shapes, a file it cannot convert, or weights it could not fetch."""
    mismatched = re.findall(r"size mismatch for (\S+): copying a param with shape "
                            r"torch.Size\(\[([^\]]*)\]\) from checkpoint, the shape in current "
                            r"model is torch.Size\(\[([^\]]*)\]\)", str(err))
    if mismatched:
        shown = "; ".join(f"'{n}' is ({a}) in the file, ({b}) in the backbone"
                          for n, a, b in mismatched[:SHOWN])
        return PretrainedWeightsError(
            f"{where} does not fit backbone '{name}': {len(mismatched)} tensor(s) of another "
            f"shape ({shown}); give the weights of this very model")
    if from_file:
        return PretrainedWeightsError(f"{where} cannot be loaded into backbone '{name}' "
                                      f"({type(err).__name__}: {_first_line(err)})")
    return PretrainedWeightsError(_unreachable(name, err))


@contextlib.contextmanager
def _quiet_keys():
    """Leave out timm's lines listing every missing or unexpected name (hundreds for a wrong
    file): the check below says the same in one line, or refuses the weights."""
    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Missing keys", "Unexpected keys"))

    logger = logging.getLogger(timm_builder.__name__)
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _check_fit(where: str, name: str, keys, used: set, ignored: tuple) -> None:
    """Refuse weights that leave a used tensor unloaded or bring names the backbone lacks."""
    missing = [k for k in keys.missing_keys if k in used]
    extra = [k for k in keys.unexpected_keys
             if not any(fnmatch.fnmatch(k, pattern) for pattern in ignored)]
    if not missing and not extra:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} of the backbone's {len(used)} tensors are not in it "
                     f"({_names(missing)})")
    if extra:
        parts.append(f"{len(extra)} of its tensors are not in the backbone ({_names(extra)})")
    raise PretrainedWeightsError(
        f"{where} does not fit backbone '{name}': {'; '.join(parts)}; give the weights of this "
        f"very model (a timm or torchvision state dict; a classifier head is ignored), or set "
        f"model.pretrained=false to train from scratch")


def _names(keys: list[str]) -> str:
    more = f", ... {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
    return ", ".join(f"'{k}'" for k in keys[:SHOWN]) + more


def _ignored_extra(body: nn.Module) -> tuple:
    classifier = (getattr(body, "pretrained_cfg", None) or {}).get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return IGNORED_EXTRA + tuple(f"{c}.*" for c in classifier)


def _check_readable(path: Path) -> None:
    """Refuse a file that is not a state dict, naming it, before timm's loader sees it."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # torch's legacy format cannot be memory-mapped
                state = torch.load(path, map_location="cpu", weights_only=True)
            keys = _tensor_keys(state)
    except Exception as err:
        raise PretrainedWeightsError(
            f"model.pretrained_file '{path}' is not a weights file ({type(err).__name__}: "
            f"{_first_line(err)}); give a state dict saved with torch.save or safetensors") from err
    if not keys:
        raise PretrainedWeightsError(
            f"model.pretrained_file '{path}' is not a weights file: it holds no tensors under "
            f"names; give a state dict saved with torch.save or safetensors")


def _tensor_keys(state) -> list[str]:
    """The tensor names of a loaded file: a state dict, or one under ``state_dict``/``model``."""
    if not isinstance(state, dict):
        return []
    for key in ("state_dict", "model", "module"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    return [k for k, v in state.items() if isinstance(v, torch.Tensor)]


def _hub_record(name: str) -> dict:
    cfg = timm.models.get_pretrained_cfg(name)
    hub = getattr(cfg, "hf_hub_id", None)
    if hub:
        return {"source": "hub", "name": name, "location": f"hf-hub:{hub}"}
    return {"source": "url", "name": name, "location": getattr(cfg, "url", None) or "timm"}


def _hub_file(record: dict) -> dict:
    """The hub cache's copy of the weights just loaded, to hash."""
    if record["source"] != "hub":
        return {}
    from huggingface_hub import try_to_load_from_cache

    repo = record["location"].removeprefix("hf-hub:")
    for filename in ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return {"location": found}
    return {}


def sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in 16 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _unreachable(name: str, err: Exception) -> str:
    """What to do when the weights cannot be fetched, in one line."""
    from huggingface_hub import constants

    offline = bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE") in ("1", "true")
    cfg = timm.models.get_pretrained_cfg(name)
    hub = getattr(cfg, "hf_hub_id", None)
    if hub:
        file = getattr(cfg, "hf_hub_filename", None) or "model.safetensors"
        cache = Path(constants.HF_HUB_CACHE) / f"models--{hub.replace('/', '--')}"
        get = (f"download {file} from the Hugging Face hub repository '{hub}' "
               f"(https://huggingface.co/{hub}) on a machine with network, then set "
               f"model.pretrained_file=/path/to/{file}, or copy that repository's cache folder "
               f"to {cache}")
    else:
        get = (f"download the weights on a machine with network "
               f"({getattr(cfg, 'url', None) or 'see timm model card'}), then set "
               f"model.pretrained_file=/path/to/that/file")
    why = ("HF_HUB_OFFLINE is set and no copy is cached" if offline else
           f"{type(err).__name__}: {_first_line(err)}; HF_HUB_OFFLINE=1 fails at once instead "
           f"of retrying the network")
    return (f"could not load pretrained weights for '{name}' ({why}): {get}; or set "
            f"model.pretrained=false to train from scratch")
