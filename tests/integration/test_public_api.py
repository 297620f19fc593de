"""The public API a user's code relies on: ``mgmrn.load``, ``Predictor.predict``,
``add_classes`` and the JSON of ``mgmrn predict --json``, pinned name by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import mgmrn
from mgmrn.cli import main

from ..helpers import ATTRIBUTE_NAMES, CLASS_NAMES, SEEN, UNSEEN, write_checkpoint

CLASS_KEYS = ["rank", "name", "index", "score", "probability", "seen", "group"]
ATTRIBUTE_KEYS = ["name", "index", "value"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("api") / "tiny.pt")


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "bird.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(path)
    return path


def check_result(result: dict, image: str, top_k: int, top_attributes: int = 5) -> None:
    assert list(result) == ["image", "classes", "attributes", "calibration"]
    assert result["image"] == image
    assert [list(c) for c in result["classes"]] == [CLASS_KEYS] * top_k
    assert [c["rank"] for c in result["classes"]] == list(range(1, top_k + 1))
    assert [list(a) for a in result["attributes"]] == [ATTRIBUTE_KEYS] * top_attributes
    assert list(result["calibration"]) == ["gamma", "source"]


def test_load_predict_and_add_classes_keep_their_names(checkpoint, image):
    predictor = mgmrn.load(checkpoint)
    assert predictor.class_names == CLASS_NAMES and predictor.attribute_names == ATTRIBUTE_NAMES
    results = predictor.predict([str(image)], top_k=5, classes="unseen")  # fewer classes there
    check_result(results[0], str(image), len(UNSEEN))
    assert {c["index"] for c in results[0]["classes"]} == set(UNSEEN)
    row = {name: 0.0 for name in predictor.attribute_names}
    row.update({ATTRIBUTE_NAMES[0]: 1.0, ATTRIBUTE_NAMES[2]: 1.0})
    assert predictor.add_classes(["my_class"], [row]) == [len(CLASS_NAMES)]
    added = predictor.predict([str(image)], top_k=1, classes="added")[0]["classes"][0]
    assert (added["name"], added["group"], added["seen"]) == ("my_class", "added", False)
    everything = predictor.predict([str(image)], top_k=len(CLASS_NAMES) + 1)[0]
    groups = {c["name"]: c["group"] for c in everything["classes"]}
    assert [groups[CLASS_NAMES[i]] for i in SEEN] == ["seen"] * len(SEEN)
    predictor.remove_added_classes(["my_class"])
    assert predictor.class_names == CLASS_NAMES


def test_predict_json_keeps_its_fields(checkpoint, image, capsys):
    assert main(["predict", "--checkpoint", str(checkpoint), "--json", "--top-k", "2",
                 str(image)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 1
    check_result(results[0], str(image), 2)
    assert results[0]["calibration"]["source"]  # where the gamma comes from, in words
