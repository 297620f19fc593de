"""Model folders in the Hub's format: written by ``mgmrn export --format hub``, loaded as
``local-dir:`` or ``hf-hub:`` by every command, with the same predictions as the ``.pt``."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest
import torch

import mgmrn
from mgmrn import hub
from mgmrn.cli import main
from mgmrn.commands.predict import run_predict
from mgmrn.serve import make_server

from ..helpers import ATTRIBUTE_NAMES, CLASS_NAMES, checkpoint_with_data, make_run, png_bytes

CALIBRATION = {"gamma": 0.25, "split": "trainval", "source": "test set (oracle)"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny checkpoint in a run folder with results.json, and its model folder."""
    root = tmp_path_factory.mktemp("hub")
    checkpoint, data = checkpoint_with_data(root, CALIBRATION)
    run = make_run(root / "run", False, data / "images" / "green_square" / "0.png")
    (run / "checkpoints").mkdir()
    checkpoint = Path(shutil.move(checkpoint, run / "checkpoints" / "best.pt"))
    folder = root / "model"
    assert main(["export", "--format", "hub", "--checkpoint", str(checkpoint),
                 "--out", str(folder)]) == 0
    images = sorted((data / "images").rglob("*.png"))
    return {"checkpoint": checkpoint, "folder": folder, "images": images, "data": data}


def test_the_folder_holds_weights_config_and_a_model_card(exported):
    folder = exported["folder"]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json",
                                                        "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["mgmrn_version"] == mgmrn.__version__ and config["format"] == "mgmrn-hub"
    assert config["config"]["model"]["backbone"] == "test_resnet"
    assert config["data"]["class_names"] == CLASS_NAMES
    assert config["data"]["attribute_names"] == ATTRIBUTE_NAMES
    assert len(config["data"]["class_attributes"]) == 6 and config["input"]["mean"]
    assert config["calibration"] == CALIBRATION
    assert config["prediction_gamma"] == {"gamma": 0.25,
                                          "source": "chosen on the run's test set, an oracle"}
    card = (folder / "README.md").read_text()
    # the results of the run's results.json, with their protocol named
    assert "| last epoch, gamma chosen on the test set (oracle) | 50.00 | 30.00 | 20.00 | 24.00 |" \
        in card
    assert card.startswith("---\nlibrary_name: mgmrn\n") and "# model: Mg-MRN" in card
    assert "eprint        = {2511.08163}" in card and "## Licence" in card
    assert 'mgmrn.load("local-dir:DIR")' in card and "mgmrn predict --checkpoint local-dir:DIR" in card


def test_weights_are_safetensors_equal_to_the_checkpoints(exported):
    from safetensors.torch import load_file

    saved = torch.load(exported["checkpoint"], weights_only=True)["model"]
    weights = load_file(exported["folder"] / "model.safetensors")
    assert weights.keys() == saved.keys()
    assert all(torch.equal(weights[k], saved[k]) for k in saved)


def _same_predictions(a: list[dict], b: list[dict]) -> None:
    for x, y in zip(a, b, strict=True):
        assert [c["name"] for c in x["classes"]] == [c["name"] for c in y["classes"]]
        assert [c["score"] for c in x["classes"]] == pytest.approx(
            [c["score"] for c in y["classes"]], abs=1e-6)
        assert [a["value"] for a in x["attributes"]] == pytest.approx(
            [a["value"] for a in y["attributes"]], abs=1e-6)
        assert x["calibration"] == y["calibration"]


def test_load_from_a_folder_predicts_as_the_checkpoint(exported):
    expected = mgmrn.load(exported["checkpoint"]).predict(exported["images"], top_k=5)
    got = mgmrn.load(f"local-dir:{exported['folder']}").predict(exported["images"], top_k=5)
    assert got[0]["calibration"]["gamma"] == 0.25
    _same_predictions(got, expected)


def test_loading_a_folder_unpickles_nothing(exported, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model folder was unpickled")
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert mgmrn.load(f"local-dir:{exported['folder']}").class_names == CLASS_NAMES


def test_predict_command_on_a_folder_prints_what_it_prints_for_the_checkpoint(exported):
    outputs = []
    for checkpoint in (str(exported["checkpoint"]), f"local-dir:{exported['folder']}"):
        out = io.StringIO()
        assert run_predict(checkpoint, exported["images"][:3], as_json=True, out=out) == 0
        outputs.append(json.loads(out.getvalue()))
    _same_predictions(*outputs)


def test_serve_on_a_folder_ranks_as_the_checkpoint(exported, tmp_path):
    server = make_server(f"local-dir:{exported['folder']}", port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        request = urllib.request.Request(server.url.rstrip("/") + "/api/predict?name=a.png&top_k=5",
                                         data=png_bytes(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            served = json.loads(response.read())
    finally:
        server.shutdown()
        server.server_close()
        server.explorer.close()
    (tmp_path / "a.png").write_bytes(png_bytes())
    expected = mgmrn.load(exported["checkpoint"]).predict(tmp_path / "a.png", top_k=5)[0]
    assert [c["name"] for c in served["classes"]] == [c["name"] for c in expected["classes"]]
    assert [c["score"] for c in served["classes"]] == pytest.approx(
        [c["score"] for c in expected["classes"]], abs=1e-6)


def test_hf_hub_references_download_through_huggingface_hub(exported, tmp_path, monkeypatch):
    import huggingface_hub

    cache = tmp_path / "cache" / "snapshots" / "abc"
    calls = []

    def download(repo_id, filename, revision=None, **kwargs):  # the Hub, served from a folder
        calls.append((repo_id, filename, revision))
        cache.mkdir(parents=True, exist_ok=True)
        shutil.copy(exported["folder"] / filename, cache / filename)
        return str(cache / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    got = mgmrn.load("hf-hub:someone/tiny-mgmrn@v1").predict(exported["images"][:2])
    assert calls == [("someone/tiny-mgmrn", "config.json", "v1"),
                     ("someone/tiny-mgmrn", "model.safetensors", "v1")]
    _same_predictions(got, mgmrn.load(exported["checkpoint"]).predict(exported["images"][:2]))


def test_hf_hub_offline_with_an_empty_cache_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    (tmp_path / "a.png").write_bytes(png_bytes())
    assert main(["predict", "--checkpoint", "hf-hub:nobody/nothing", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgmrn predict: error: cannot download config.json of 'nobody/nothing'")
    assert err.count("\n") == 1


@pytest.mark.parametrize("reference, message", [
    ("hf-hub:no-slash", "is not a Hub model: write hf-hub:org/name[@revision]"),
    ("local-dir:/nonexistent/model", "model folder '/nonexistent/model' does not exist"),
])
def test_bad_references_are_one_line_errors(reference, message, tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(png_bytes())
    assert main(["predict", "--checkpoint", reference, str(tmp_path / "a.png")]) == 2
    assert message in capsys.readouterr().err


def test_a_folder_of_something_else_is_refused(exported, tmp_path, capsys):
    folder = tmp_path / "other"
    shutil.copytree(exported["folder"], folder)
    (folder / "config.json").write_text('{"architectures": ["BertModel"]}')
    assert main(["predict", "--checkpoint", f"local-dir:{folder}",
                 str(exported["images"][0])]) == 2
    assert "is not an mgmrn model's config" in capsys.readouterr().err
    (folder / "config.json").unlink()
    with pytest.raises(hub.HubError, match="has no config.json"):
        mgmrn.load(f"local-dir:{folder}")


def test_push_creates_the_repository_and_uploads_the_folder(exported, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls.append(("create", repo_id, kwargs["private"]))

        def upload_folder(self, repo_id, folder_path, **kwargs):
            calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
            return "https://huggingface.co/someone/tiny/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = tmp_path / "pushed"
    assert main(["export", "--format", "hub", "--checkpoint", str(exported["checkpoint"]),
                 "--out", str(out), "--push", "someone/tiny", "--private"]) == 0
    assert calls == [("create", "someone/tiny", True),
                     ("upload", "someone/tiny", ["README.md", "config.json", "model.safetensors"])]
    assert 'mgmrn.load("hf-hub:someone/tiny")' in (out / "README.md").read_text()


def test_a_failed_upload_says_how_to_log_in(exported, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    class NoToken:
        def create_repo(self, repo_id, **kwargs):
            raise RuntimeError("401 Unauthorized\nmore")

    monkeypatch.setattr(huggingface_hub, "HfApi", NoToken)
    assert main(["export", "--format", "hub", "--checkpoint", str(exported["checkpoint"]),
                 "--out", str(tmp_path / "m"), "--push", "someone/tiny"]) == 2
    assert capsys.readouterr().err == (
        "mgmrn export: error: cannot upload to the Hub repository 'someone/tiny' (401 "
        "Unauthorized); log in with `hf auth login` or set HF_TOKEN\n")


def test_the_card_takes_the_results_given_or_says_there_are_none(exported, tmp_path):
    results = json.loads((Path(__file__).parents[1] / "data" / "results" / "train.json").read_text())
    given = tmp_path / "results.json"
    given.write_text(json.dumps(results))
    assert main(["export", "--format", "hub", "--checkpoint", f"local-dir:{exported['folder']}",
                 "--out", str(tmp_path / "again"), "--results", str(given)]) == 0
    card = (tmp_path / "again" / "README.md").read_text()
    assert "| last epoch, gamma chosen on the test set (oracle) | 62.50 | 14.29 | 50.00 | 22.22 |" \
        in card
    assert "| best epoch of each figure, chosen on the test set (as the paper reports) | 62.50 |" \
        in card
    # a folder exported again has no run folder to look in
    assert main(["export", "--format", "hub", "--checkpoint", f"local-dir:{exported['folder']}",
                 "--out", str(tmp_path / "bare")]) == 0
    assert "No `results.json` was found" in (tmp_path / "bare" / "README.md").read_text()
