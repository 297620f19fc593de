"""Tests of mgmrn.evaluation.protocols: CZSL, GZSL and the assembled report, by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mgmrn.evaluation import czsl_accuracy, gzsl_accuracy, zsl_figures

# The hand example of test_evaluation_calibration.py: classes 0, 1 seen; 2, 3 unseen.
SEEN_CLASSES, UNSEEN_CLASSES = [0, 1], [2, 3]
SCORES_SEEN = np.array([
    [2.0, 0.0, 1.0, 0.0],   # label 0
    [0.0, 1.0, 0.25, 0.0],  # label 1
    [1.0, 0.5, 0.0, 0.0],   # label 1
])
LABELS_SEEN = [0, 1, 1]
SCORES_UNSEEN = np.array([
    [0.0, 1.0, 0.5, 0.0],   # label 2
    [1.0, 0.0, 0.0, 0.5],   # label 3
    [0.0, 0.0, 0.0, -0.5],  # label 3
    [0.0, -1.0, 1.0, 0.0],  # label 2
])
LABELS_UNSEEN = [2, 3, 3, 2]
GZSL_DATA = (SCORES_SEEN, LABELS_SEEN, SCORES_UNSEEN, LABELS_UNSEEN, SEEN_CLASSES)


def test_czsl_accuracy_by_hand():
    # unseen columns (2, 3) only: [.5, 0] -> 2 right; [0, .5] -> 3 right; [0, -.5] -> 2 wrong;
    # [1, 0] -> 2 right.  class 2: 2/2 = 1, class 3: 1/2 -> (1 + .5) / 2 = .75
    assert czsl_accuracy(SCORES_UNSEEN, LABELS_UNSEEN, UNSEEN_CLASSES) == pytest.approx(0.75)


def test_czsl_accuracy_ignores_seen_class_scores():
    # Huge seen-class scores would win a search over all classes, but CZSL never looks at them.
    boosted = SCORES_UNSEEN.copy()
    boosted[:, SEEN_CLASSES] = 100.0
    assert czsl_accuracy(torch.from_numpy(boosted), torch.tensor(LABELS_UNSEEN),
                         UNSEEN_CLASSES) == pytest.approx(0.75)


def test_czsl_accuracy_ties_go_to_the_lower_class_index():
    # Both images tie between classes 1 and 2: argmax takes class 1, right for the first
    # image (label 1) and wrong for the second (label 2): (1 + 0) / 2 = .5
    scores = np.array([[9.0, 0.3, 0.3], [9.0, 0.3, 0.3]])
    assert czsl_accuracy(scores, [1, 2], [1, 2]) == pytest.approx(0.5)


def test_czsl_accuracy_rejects_seen_labels():
    with pytest.raises(ValueError, match="unseen_classes"):
        czsl_accuracy(SCORES_UNSEEN, [0, 3, 3, 2], UNSEEN_CLASSES)


def test_gzsl_accuracy_uncalibrated_by_hand():
    # gamma 0, argmax over all 4 classes:
    # seen images -> 0 (right), 1 (right), 0 (wrong): S = (1/1 + 1/2) / 2 = .75
    # unseen images -> 1 (wrong), 0 (wrong), 0 (tie of zeros: first max, wrong), 2 (right):
    # U = (class 2: 1/2 + class 3: 0/2) / 2 = .25;  H = 2*.75*.25 / 1 = .375
    s, u, h = gzsl_accuracy(*GZSL_DATA)
    assert (s, u, h) == pytest.approx((0.75, 0.25, 0.375))


def test_gzsl_accuracy_gamma_moves_predictions_to_the_unseen_side():
    # gamma 1 takes 1 off classes 0, 1:
    # seen images: [1, -1, 1, 0] -> 0 (tie 0 vs 2: first max, right); [-1, 0, .25, 0] -> 2
    #   (wrong); [0, -.5, 0, 0] -> 0 (wrong): S = (1 + 0) / 2 = .5
    # unseen images: [-1, 0, .5, 0] -> 2 (right); [0, -1, 0, .5] -> 3 (right);
    #   [-1, -1, 0, -.5] -> 2 (wrong); [-1, -2, 1, 0] -> 2 (right): U = (1 + .5) / 2 = .75
    # H = 2*.5*.75 / 1.25 = .6
    s, u, h = gzsl_accuracy(*GZSL_DATA, gamma=1.0)
    assert (s, u, h) == pytest.approx((0.5, 0.75, 0.6))
    # a negative gamma pushes the other way: at -2 every image goes to the seen side
    s, u, h = gzsl_accuracy(*GZSL_DATA, gamma=-2.0)
    assert (s, u, h) == pytest.approx((0.75, 0.0, 0.0))


def test_zsl_figures_report_percent_at_the_oracle_gamma():
    result = zsl_figures(*GZSL_DATA, UNSEEN_CLASSES, step=0.5).to_json()
    assert set(result) == {"czsl_acc", "gzsl_seen", "gzsl_unseen", "gzsl_h", "gamma", "ausuc",
                           "gzsl_uncalibrated", "curve"}
    assert result["czsl_acc"] == pytest.approx(75.0)
    # sweep (see test_evaluation_calibration.py): best H = .6 at gamma 1, S = .5, U = .75
    assert result["gamma"] == pytest.approx(1.0)
    assert result["gzsl_seen"] == pytest.approx(50.0)
    assert result["gzsl_unseen"] == pytest.approx(75.0)
    assert result["gzsl_h"] == pytest.approx(60.0)
    assert result["ausuc"] == pytest.approx(50.0)  # area .5, x 100
    assert result["gzsl_uncalibrated"] == pytest.approx({"seen": 75.0, "unseen": 25.0,
                                                         "h": 37.5})
    curve = result["curve"]
    assert curve["gamma"] == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
    assert curve["seen"] == pytest.approx([75.0, 75.0, 75.0, 75.0, 50.0, 0.0])
    assert curve["unseen"] == pytest.approx([0.0, 25.0, 25.0, 25.0, 75.0, 75.0])
    assert curve["h"] == pytest.approx([0.0, 37.5, 37.5, 37.5, 60.0, 0.0])
    json.dumps(result)  # plain Python numbers, ready for the results file


def test_zsl_figures_report_a_fixed_gamma():
    # gamma .75 (off the sweep's grid): seen images stay right while gamma <= their margins
    # 1 and .75 -> S = (1 + 1/2) / 2 = .75; unseen images with margins .5, .5, -1 move over
    # -> U = (2/2 + 1/2) / 2 = .75; H = .75: better than the oracle grid's .6
    result = zsl_figures(*GZSL_DATA, UNSEEN_CLASSES, fixed_gamma=0.75, step=0.5).to_json()
    assert result["fixed_gamma"] == pytest.approx({"gamma": 0.75, "seen": 75.0,
                                                   "unseen": 75.0, "h": 75.0})
    assert result["gzsl_h"] == pytest.approx(60.0)
