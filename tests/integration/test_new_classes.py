"""Classes added at prediction time, class sets, and calibrated ranking with the checkpoint's gamma."""

from __future__ import annotations

import io
import json
import logging

import numpy as np
import pytest
import torch

from mgmrn.commands.predict import run_predict
from mgmrn.evaluation import calibrated_stacking
from mgmrn.inference.classes import check_new_classes, parse_class_sets, read_class_table
from mgmrn.inference.predictor import load

from ..helpers import ATTRIBUTE_NAMES, CLASS_NAMES, SEEN, UNSEEN, write_checkpoint

NEW = {"purple_circle": [1, 0, 0, 0, 0.5], "blue_square_2": [0, 1, 0, 1, 0]}


@pytest.fixture()
def predictor(tmp_path):
    return load(write_checkpoint(tmp_path / "tiny.pt"))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(3, 3, 64, 64) * 2 - 1  # already "normalised" network inputs


def write_table(path, header, rows):
    path.write_text("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")
    return path


def all_scores(predictor, images, classes="all", gamma=0.0):
    """{class name: score} per image, every searched class."""
    results = predictor.predict(images, top_k=1000, classes=classes, gamma=gamma)
    return [{c["name"]: c["score"] for c in r["classes"]} for r in results]


def test_adding_classes_leaves_the_other_scores_unchanged(predictor, images):
    before = all_scores(predictor, images)
    indices = predictor.add_classes(list(NEW), np.array(list(NEW.values())))
    assert indices == [6, 7] and predictor.class_names[6:] == list(NEW)
    after = all_scores(predictor, images)
    for old, new in zip(before, after, strict=True):
        assert set(new) == set(CLASS_NAMES) | set(NEW)
        for name, score in old.items():
            assert new[name] == pytest.approx(score, abs=1e-5)


def test_added_classes_are_scored_by_the_same_cosine_classifier(predictor, images):
    # a new class with an existing class's attributes (scaled: cosine ignores length) ties it
    predictor.add_classes(["red_circle_again"], [[2.0, 0, 2.0, 0, 0]])
    scores = all_scores(predictor, images)
    assert all(s["red_circle_again"] == pytest.approx(s["red_circle"], abs=1e-5) for s in scores)
    # and a new row is scored as the network scores any class vector
    predictor.add_classes(["odd"], [[0.3, -0.2, 0.9, 0.1, 0.4]])
    with torch.no_grad():
        direct = predictor.run.model(images, torch.tensor([[0.3, -0.2, 0.9, 0.1, 0.4]])).logits[:, 0]
    assert [s["odd"] for s in all_scores(predictor, images)] == pytest.approx(direct.tolist(),
                                                                              abs=1e-5)


def test_class_sets_combine(predictor):
    predictor.add_classes(list(NEW), list(NEW.values()))
    assert predictor.classes.candidates("added").tolist() == [6, 7]
    assert predictor.classes.candidates("added,unseen").tolist() == UNSEEN + [6, 7]
    assert predictor.classes.candidates(["seen", "added"]).tolist() == SEEN + [6, 7]
    assert predictor.classes.candidates("all").tolist() == list(range(8))
    assert [predictor.classes.group(i) for i in (0, 4, 7)] == ["seen", "unseen", "added"]
    with pytest.raises(ValueError, match="novel"):
        predictor.classes.candidates("unseen,novel")


def test_added_before_any_class_is_added_is_a_clear_error(predictor, images):
    with pytest.raises(ValueError, match="add classes first"):
        predictor.predict(images, classes="added")


def test_removing_added_classes_keeps_the_others(predictor, images):
    before = all_scores(predictor, images)
    predictor.add_classes(list(NEW), list(NEW.values()))
    predictor.remove_added_classes(["purple_circle"])
    assert predictor.class_names == CLASS_NAMES + ["blue_square_2"]
    assert predictor.classes.added.tolist() == [6]
    after = all_scores(predictor, images)
    assert all(a[n] == pytest.approx(b[n], abs=1e-5) for a, b in zip(after, before, strict=True)
               for n in CLASS_NAMES)
    with pytest.raises(ValueError, match="red_circle"):
        predictor.remove_added_classes(["red_circle"])


@pytest.mark.parametrize("names, rows, message", [
    (["red_circle"], [[1, 0, 0, 0, 0]], "'red_circle' already exists"),
    (["a", "a"], [[1, 0, 0, 0, 0]] * 2, "'a' already exists"),
    ([""], [[1, 0, 0, 0, 0]], "non-empty"),
    (["a"], [[1, 0, 0, 0]], r"shape \(1, 4\)"),
    (["a"], [[0, 0, 0, 0, 0]], "every attribute 0"),
    (["a"], [[1, 0, float("nan"), 0, 0]], "not a finite number"),
    (["a"], [{"shape_circle": 1}], "missing attribute.*'shape_square'"),
    (["a"], [dict(zip(ATTRIBUTE_NAMES, [1] * 5), wings=1)], "unknown attribute.*'wings'"),
])
def test_bad_new_classes_are_refused(predictor, names, rows, message):
    with pytest.raises(ValueError, match=message):
        predictor.add_classes(names, rows)
    assert predictor.class_names == CLASS_NAMES  # nothing half-added


def test_rows_by_name_in_any_order(predictor):
    row = dict(reversed(list(zip(ATTRIBUTE_NAMES, [1, 0, 0, 1, 0.5], strict=True))))
    rows = check_new_classes(["x"], [row], ATTRIBUTE_NAMES, CLASS_NAMES)
    np.testing.assert_array_equal(rows, [[1, 0, 0, 1, 0.5]])


def test_class_table_columns_by_name_any_order(tmp_path):
    header = ["color_green", "class", *reversed(ATTRIBUTE_NAMES[:4])]
    path = write_table(tmp_path / "new.csv", header, [[0.5, "x", 1, 0, 0, 1], [1, "y", 0, 0, 1, 0]])
    names, rows = read_class_table(path, ATTRIBUTE_NAMES)
    assert names == ["x", "y"]
    np.testing.assert_array_equal(rows, [[1, 0, 0, 1, 0.5], [0, 1, 0, 0, 1]])


@pytest.mark.parametrize("header, row, message", [
    (["class", *ATTRIBUTE_NAMES[:4]], ["x", 1, 0, 0, 1],
     r"new.csv line 1: missing attribute column\(s\) 'color_green'"),
    (["class", *ATTRIBUTE_NAMES, "wings"], ["x", 1, 0, 0, 1, 0, 1],
     r"new.csv line 1: unknown column\(s\) 'wings'"),
    ([*ATTRIBUTE_NAMES], [1, 0, 0, 1, 0], "new.csv line 1: no 'class' column"),
    (["class", *ATTRIBUTE_NAMES, "color_red"], ["x", 1, 0, 0, 1, 0, 1],
     r"given twice: color_red"),
    (["class", *ATTRIBUTE_NAMES], ["x", 1, 0, "lots", 1, 0],
     "new.csv line 2, field 'color_red': expected a number, got 'lots'"),
    (["class", *ATTRIBUTE_NAMES], ["x", 1, 0, 1], "new.csv line 2: 4 fields, expected 6"),
])
def test_bad_class_tables_are_errors_naming_file_and_columns(tmp_path, header, row, message):
    path = write_table(tmp_path / "new.csv", header, [row])
    with pytest.raises(ValueError, match=message):
        read_class_table(path, ATTRIBUTE_NAMES)


def test_parse_class_sets():
    assert parse_class_sets("all") == ("seen", "unseen", "added")
    assert parse_class_sets("unseen, added") == ("unseen", "added")
    for bad in ("", "new", "all,seen"):
        with pytest.raises(ValueError, match="--classes"):
            parse_class_sets(bad)


def test_calibration_is_the_evaluation_function_and_only_when_sides_mix(predictor, images):
    raw = predictor.predict(images, top_k=6, classes="all", gamma=0.0)
    calibrated = predictor.predict(images, top_k=6, classes="all", gamma=1.5)
    for r, c in zip(raw, calibrated, strict=True):
        scores = torch.tensor([[next(x["score"] for x in r["classes"] if x["index"] == i)
                                for i in range(6)]])
        expected = calibrated_stacking(scores, SEEN, 1.5)[0]
        assert {x["index"]: x["score"] for x in c["classes"]} == pytest.approx(
            dict(enumerate(expected.tolist())), abs=1e-5)
        assert c["calibration"] == {"gamma": 1.5, "source": "given (--gamma)"}
    seen_only = predictor.predict(images, top_k=4, classes="seen", gamma=1.5)
    assert seen_only[0]["calibration"]["gamma"] == 0.0  # one side alone: nothing to balance
    assert [x["score"] for x in seen_only[0]["classes"]] == pytest.approx(
        sorted((x["score"] for x in raw[0]["classes"] if x["seen"]), reverse=True), abs=1e-5)


@pytest.mark.parametrize("record, eval_gamma, gamma, source", [
    ({"gamma": 0.7, "split": "val", "source": "validation split"}, 0.2, 0.7, "validation split"),
    ({"gamma": 0.9, "split": "trainval", "source": "test set (oracle)"}, 0.2, 0.2, "eval.gamma"),
    ({"gamma": 0.9, "split": "trainval", "source": "test set (oracle)"}, None, 0.9, "oracle"),
    (None, None, 0.0, "none stored"),
])
def test_default_gamma_comes_from_the_checkpoint(tmp_path, images, record, eval_gamma, gamma,
                                                 source):
    path = write_checkpoint(tmp_path / "tiny.pt")
    saved = torch.load(path, weights_only=True)
    saved["config"]["eval"]["gamma"] = eval_gamma
    if record is not None:
        saved["calibration"] = record
    torch.save(saved, path)
    predictor = load(path)
    assert predictor.calibration.gamma == gamma and source in predictor.calibration.source
    result = predictor.predict(images[:1], classes="unseen,seen")[0]
    assert result["calibration"] == {"gamma": gamma, "source": predictor.calibration.source}


def test_run_predict_adds_classes_and_logs_the_gamma_source(tmp_path, caplog):
    from PIL import Image

    checkpoint = write_checkpoint(tmp_path / "tiny.pt")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "a.png")
    table = write_table(tmp_path / "new.csv", ["class", *ATTRIBUTE_NAMES],
                        [[n, *r] for n, r in NEW.items()])
    out = io.StringIO()
    with caplog.at_level(logging.INFO):
        run_predict(checkpoint, [tmp_path / "a.png"], top_k=5, classes="added,unseen",
                    as_json=True, out=out, add_classes=[table], gamma=0.4)
    result = json.loads(out.getvalue())[0]
    assert {c["name"] for c in result["classes"]} == {"green_circle", "green_square", *NEW}
    assert "calibration: gamma = 0 (not applied" in caplog.text  # no seen class searched
    assert "added 2 classes from" in caplog.text


def test_cli_names_the_bad_table(tmp_path, capsys):
    from PIL import Image

    from mgmrn import cli

    checkpoint = write_checkpoint(tmp_path / "tiny.pt")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "a.png")
    table = write_table(tmp_path / "bad.csv", ["class", "wings"], [["x", 1]])
    assert cli.main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "a.png"),
                     "--add-classes", str(table), "--classes", "added"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mgmrn predict: error: ") and "bad.csv" in err and "'wings'" in err
    assert "missing attribute column(s) 'shape_circle'" in err and len(err.splitlines()) == 1
