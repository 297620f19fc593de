"""The model card (``README.md``) of a model folder: what the network is, the data and split it
was trained on, its recipe, its results with their protocol, how to load it, licence, citation."""

from __future__ import annotations

import json
from pathlib import Path

PAPER = "https://arxiv.org/abs/2511.08163"
# the authors and full title are those of the arXiv page; the entry names the paper by its number
CITATION = """\
@misc{mgmrn_arxiv_2511_08163,
  title         = {Mg-MRN: Multi-Granularity Mutual Refinement Network for Zero-Shot Learning},
  eprint        = {2511.08163},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2511.08163}
}"""
# results.json keys -> column names, accuracies in percent
FIGURES = (("czsl_acc", "CZSL (T1, unseen)"), ("gzsl_seen", "GZSL S"), ("gzsl_unseen", "GZSL U"),
           ("gzsl_h", "GZSL H"), ("ausuc", "AUSUC"), ("gamma", "gamma"))


def find_results(checkpoint: Path) -> Path | None:
    """The ``results.json`` of a checkpoint's run: next to it (``mgmrn eval``) or in the run
    folder above ``checkpoints/`` (``mgmrn train``)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "results.json").is_file():
            return folder / "results.json"
    return None


def results_table(results: dict) -> str:
    """The figures of a ``results.json`` as markdown, each row naming its protocol."""
    rows = [("last epoch, " + results.get("calibration", "gamma chosen on the test set (oracle)"),
             results)]
    if isinstance(results.get("fixed_gamma"), dict):
        fixed = results["fixed_gamma"]
        rows.append((f"last epoch, gamma fixed at {fixed.get('gamma')} (eval.gamma)",
                     {"czsl_acc": results.get("czsl_acc"), "gzsl_seen": fixed.get("seen"),
                      "gzsl_unseen": fixed.get("unseen"), "gzsl_h": fixed.get("h"),
                      "gamma": fixed.get("gamma")}))
    if isinstance(results.get("release_protocol"), dict):
        best = results["release_protocol"]
        rows.append((f"best epoch of each figure, chosen on the "
                     f"{best.get('chosen_on', 'test set')}", best))
    head = "| protocol | " + " | ".join(name for _, name in FIGURES) + " |"
    lines = [head, "|---" * (len(FIGURES) + 1) + "|"]
    for label, values in rows:
        cells = [f"{values[k]:.2f}" if isinstance(values.get(k), (int, float)) else "-"
                 for k, _ in FIGURES]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_card(content: dict, results: dict | None, name: str,
               repo_id: str | None = None) -> str:
    """The ``README.md`` of a model folder, from its ``config.json`` content and results;
    ``name``: the model's, ``repo_id``: its Hub repository when it is pushed."""
    config, data = content["config"], content["data"]
    model, dataset = config["model"], config["data"]
    seen, unseen = len(data["seen_classes"]), len(data["unseen_classes"])
    name = repo_id or name
    load = f"hf-hub:{repo_id}" if repo_id else "local-dir:DIR"
    recipe = {"backbone": model["backbone"], "network": model["name"],
              "image size": dataset["image_size"], "epochs": config["train"]["epochs"],
              "optimizer": config["train"].get("optimizer"), "lr": config["train"].get("lr"),
              "seed": config.get("seed")}
    calibration = content["prediction_gamma"]
    parts = [
        "---",
        "library_name: mgmrn",
        "license: mit",
        "tags: [zero-shot-image-classification, zero-shot-learning, mgmrn]",
        "---",
        f"# {name}: Mg-MRN zero-shot classifier on {data.get('name', dataset['name'])}",
        "",
        "A Multi-Granularity Mutual Refinement Network ([Mg-MRN](" + PAPER + ")): backbone "
        "feature maps at three granularities, region mining, mutual refinement between levels, "
        "attribute decoding with word-vector queries, and a cosine classifier against class "
        "attribute vectors. Any class given by an attribute vector can be searched, including "
        "classes added after training.",
        "",
        "## Data",
        "",
        f"- dataset: `{dataset['name']}`, split `{dataset['split']}` "
        f"({seen} seen, {unseen} unseen classes, {len(data['attribute_names'])} attributes)",
        f"- epochs trained: {content['epoch'] + 1 if isinstance(content.get('epoch'), int) else '?'}",
        f"- calibration used by prediction: gamma = {calibration['gamma']:.4g} "
        f"({calibration['source']})",
        "",
        "## Recipe",
        "",
        *[f"- {key}: `{value}`" for key, value in recipe.items() if value is not None],
        "",
        "The full resolved config is under `config` in `config.json`.",
        "",
        "## Results",
        "",
        results_table(results) if results else "No `results.json` was found next to the "
        "checkpoint when this folder was written.",
        "",
        "Accuracies in percent, mean per-class top-1; GZSL with calibrated stacking. A gamma "
        "chosen on the test set is an oracle, labelled so.",
        "",
        "## How to load",
        "",
        "```bash",
        "pip install mgmrn",
        f"mgmrn predict --checkpoint {load} photo.jpg",
        f"mgmrn serve --checkpoint {load}",
        "```",
        "",
        "```python",
        "import mgmrn",
        "",
        f'model = mgmrn.load("{load}")',
        'model.predict(["photo.jpg"], top_k=5)',
        "```",
        "",
        f"Written by mgmrn {content['mgmrn_version']}; `model.safetensors` holds the weights, "
        "`config.json` everything else (loading unpickles nothing).",
        "",
        "## Licence",
        "",
        "MIT, as mgmrn; the dataset's own terms apply to what was learned from it.",
        "",
        "## Citation",
        "",
        f"The paper, arXiv 2511.08163 (authors and full title on [its page]({PAPER})):",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(parts)


def read_results(path: Path | None) -> dict | None:
    return json.loads(path.read_text()) if path is not None else None
