"""``mgmrn export --format hub``: a checkpoint as a model folder (``model.safetensors``,
``config.json``, ``README.md``), and its upload to the Hugging Face Hub."""

from __future__ import annotations

import logging
from pathlib import Path

from mgmrn import checkpoint as ckpt_io
from mgmrn import hub
from mgmrn.export import ExportError
from mgmrn.export.card import find_results, model_card, read_results
from mgmrn.io.atomic import write_atomic

log = logging.getLogger(__name__)


def export_hub(checkpoint: str | Path, out: str | Path, results: str | Path | None = None,
               push: str | None = None, private: bool = False) -> Path:
    """Write the model folder of ``checkpoint`` to ``out``; upload it to ``push`` (org/name).

    Args:
        checkpoint: a ``.pt`` checkpoint or a model folder reference.
        out: the folder to write.
        results: the ``results.json`` for the card; default: the run's, found next to the
            checkpoint or in its run folder.
        push: a Hub repository to create (if needed) and upload the folder to.
        private: create that repository private.
    """
    saved, source = ckpt_io.load_run_state(checkpoint)
    ckpt_io.checkpoint_description(saved, source)  # refuse a checkpoint without its classes
    out = Path(out)
    if out.is_file():
        raise ExportError(f"--out '{out}' is a file; give a folder for the model")
    state = ckpt_io.inference_state(saved)
    state.setdefault("input", ckpt_io.checkpoint_inputs(saved))
    content = hub.write_hub_files(state, out)
    results_path = Path(results) if results else (
        None if hub.is_hub_reference(checkpoint) else find_results(source))
    write_atomic(out / hub.CARD, model_card(content, read_results(results_path), out.name, push))
    log.info("model folder written to %s (results: %s)", out, results_path or "none found")
    if push:
        upload(out, push, private)
    return out


def upload(folder: Path, repo_id: str, private: bool = False) -> str:
    """Create the Hub repository ``repo_id`` if needed and upload ``folder`` to it; returns the
    commit's URL. Needs a token: ``hf auth login`` (or ``HF_TOKEN``)."""
    try:
        from huggingface_hub import HfApi
    except ImportError as err:
        raise ExportError("--push needs huggingface_hub (pip install huggingface_hub)") from err
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message="Upload mgmrn model")
    except Exception as err:  # not logged in, no rights, no network: one line
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ExportError(f"cannot upload to the Hub repository '{repo_id}' ({first}); log in "
                          f"with `hf auth login` or set HF_TOKEN") from err
    log.info("uploaded %s to https://huggingface.co/%s", folder, repo_id)
    return str(getattr(info, "commit_url", info))
