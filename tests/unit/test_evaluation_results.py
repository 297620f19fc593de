"""Results as one typed structure: results.json written as before, and read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mgmrn.evaluation.protocols import zsl_figures
from mgmrn.evaluation.report import format_results
from mgmrn.evaluation.results import (
    ChosenOnValidation,
    ConfusedPair,
    DataSummary,
    ReleaseProtocol,
    ResultsError,
    ZSLResults,
    read_results,
    results_from_json,
)
from mgmrn.evaluation.selection import protocol_report, update_selection

# results.json files as mgmrn train (trainval, and val with eval.gamma) and mgmrn eval wrote
# them before the results became a dataclass (tiny shapes runs; folders renamed /runs/shapes)
TODAY = Path(__file__).parents[1] / "data" / "results"
FILES = ("train.json", "train-val.json", "eval.json")

# 4 seen classes (0-3), 3 unseen (4-6)
SEEN, UNSEEN = [0, 1, 2, 3], [4, 5, 6]


def fixed_scores():
    g = torch.Generator().manual_seed(3)
    seen_labels, unseen_labels = torch.arange(12) % 4, 4 + torch.arange(9) % 3
    seen_scores, unseen_scores = torch.randn(12, 7, generator=g), torch.randn(9, 7, generator=g)
    seen_scores[torch.arange(12), seen_labels] += 1.0
    unseen_scores[torch.arange(9), unseen_labels] += 0.5
    return seen_scores, seen_labels, unseen_scores, unseen_labels


def key_structure(obj):
    """The keys of a JSON value, in order, nested; lists by their first element; the class
    names that key ``czsl_per_class`` are data, not structure."""
    if isinstance(obj, dict):
        return [(k, "class -> float" if k == "czsl_per_class" else key_structure(v))
                for k, v in obj.items()]
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        return [key_structure(obj[0])]
    return type(obj).__name__ if obj is not None else None


@pytest.mark.parametrize("name", FILES)
def test_results_written_before_read_back_and_write_byte_for_byte(tmp_path, name):
    results = read_results(TODAY / name)
    results.write(tmp_path / "results.json")
    assert (tmp_path / "results.json").read_bytes() == (TODAY / name).read_bytes()


def test_the_typed_results_hold_the_files_values():
    train, val, evaluated = (read_results(TODAY / n) for n in FILES)
    raw = json.loads((TODAY / "train-val.json").read_text())
    assert val.czsl_acc == raw["czsl_acc"] and val.fixed_gamma.gamma == 0.2
    assert val.chosen_on_validation == ChosenOnValidation(**raw["chosen_on_validation"])
    assert val.release_protocol.gzsl_epoch == raw["release_protocol"]["gzsl_epoch"]
    assert val.data == DataSummary(**raw["data"]) and val.curve.h == raw["curve"]["h"]
    assert isinstance(val.unseen_confusions[0], ConfusedPair)
    assert val.unseen_confusions[0].true == raw["unseen_confusions"][0]["true"]
    assert train.fixed_gamma is None and train.chosen_on_validation is None
    assert evaluated.checkpoint == "/runs/shapes/run/checkpoints/last.pt" and evaluated.epoch == 1
    assert evaluated.release_protocol is None and evaluated.epochs is None
    # what mgmrn compare records of a run: the file's values, None where the file has none
    names = ("czsl_acc", "gzsl_seen", "gzsl_unseen", "gzsl_h", "gamma", "ausuc", "fixed_gamma",
             "gzsl_uncalibrated")
    for results, name in ((train, "train.json"), (val, "train-val.json")):
        raw = json.loads((TODAY / name).read_text())
        assert list(results.comparison_entry().items()) == [(k, raw.get(k)) for k in names]


def test_results_from_fixed_scores_are_written_as_before(tmp_path):
    """The dict the runner assembled before, against the dataclass and its writer."""
    scores = fixed_scores()
    figures = zsl_figures(*scores, SEEN, UNSEEN, step=0.25).to_json()
    per_class = {"d": 50.0, "e": 100.0, "f": 0.0}
    pairs = [{"true": "f", "predicted": "d", "count": 2, "share": 2 / 3, "examples": ["a.png"]}]
    counts = {"n_seen_classes": 4, "n_unseen_classes": 3, "n_train": 30, "n_test_seen": 12,
              "n_test_unseen": 9}
    best = update_selection(None, figures, 0)
    before = {**figures, "czsl_per_class": per_class,
              "calibration": "gamma chosen on the test set (oracle)",
              "unseen_confusions": pairs, "split": "trainval", "model": "mgmrn", "data": counts,
              "epochs": 1, "release_protocol": {**best, "chosen_on": "test set (as the paper "
                                                                     "reports)"}}
    results = ZSLResults.from_figures(
        zsl_figures(*scores, SEEN, UNSEEN, step=0.25), czsl_per_class=per_class,
        calibration="gamma chosen on the test set (oracle)",
        unseen_confusions=[ConfusedPair(**p) for p in pairs], split="trainval", model="mgmrn",
        data=DataSummary(**counts), epochs=1, release_protocol=protocol_report(best, "trainval"))
    results.write(tmp_path / "results.json")
    assert (tmp_path / "results.json").read_text() == json.dumps(before, indent=2) + "\n"
    # and the structure of a file that mgmrn train wrote
    assert key_structure(json.loads((tmp_path / "results.json").read_text())) == key_structure(
        json.loads((TODAY / "train.json").read_text()))


def test_an_evaluated_checkpoint_without_an_epoch_still_records_it():
    results = results_from_json({**json.loads((TODAY / "eval.json").read_text()), "epoch": None})
    assert results.to_json()["epoch"] is None
    assert "epoch" not in read_results(TODAY / "train.json").to_json()


def test_older_partial_results_read_and_show_what_they_hold():
    older = {"czsl_acc": 50.0, "gzsl_seen": 30.0, "gzsl_unseen": 20.0, "gzsl_h": 24.0,
             "gamma": 0.5, "ausuc": 10.0, "calibration": "gamma chosen on the test set (oracle)",
             "czsl_per_class": {"a": 100.0}}
    results = results_from_json(older)
    assert results.to_json() == older
    assert results.overview() == {k: v for k, v in older.items() if k != "czsl_per_class"}
    assert results.curve is None and results.unseen_confusions is None


def test_bad_results_files_are_named_with_the_field(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"czsl_acc": 1.0,\n "gzsl_seen": }')
    with pytest.raises(ResultsError, match=r"results.json line 2: not JSON"):
        read_results(path)
    path.write_text('{"czsl_acc": 1.0, "gamma": 0.0}')
    with pytest.raises(ResultsError, match=r"results.json: no 'gzsl_seen', 'gzsl_unseen', "
                                           r"'gzsl_h', 'ausuc'; expected the results.json"):
        read_results(path)
    good = json.loads((TODAY / "train.json").read_text())
    path.write_text(json.dumps({**good, "curve": {"gamma": [0.0]}}))
    with pytest.raises(ResultsError, match=r"results.json, field 'curve': expected the fields "
                                           r"gamma, seen, unseen, h, got \['gamma'\]"):
        read_results(path)
    path.write_text("[1, 2]")
    with pytest.raises(ResultsError, match=r"expected a JSON object of results, got list"):
        read_results(path)


def test_the_results_table_reads_the_typed_results():
    text = format_results(read_results(TODAY / "train-val.json"), title="t")
    raw = json.loads((TODAY / "train-val.json").read_text())
    protocol = raw["release_protocol"]
    assert "CZSL accuracy (unseen classes)" in text and f"{raw['czsl_acc']:.2f}" in text
    assert f"last epoch (epoch {raw['epochs']})" in text
    assert (f"{protocol['czsl_acc']:.2f}  (epoch {protocol['czsl_epoch'] + 1})") in text
    assert "chosen on validation: epoch / gamma" in text
    assert f"GZSL at fixed gamma {raw['fixed_gamma']['gamma']:.2f}" in text


def test_release_protocol_keeps_the_selection_order():
    best = update_selection(None, {"czsl_acc": 1.0, "gzsl_h": 2.0, "gzsl_seen": 3.0,
                                   "gzsl_unseen": 4.0, "gamma": 0.5, "ausuc": 6.0}, 2)
    protocol = protocol_report(best, "val")
    assert protocol == ReleaseProtocol(1.0, 2, 2.0, 3.0, 4.0, 0.5, 2, 6.0, 2, "validation split")
