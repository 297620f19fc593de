"""Tests of mgmrn.evaluation.calibration: stacking, the gamma sweep and AUSUC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgmrn.evaluation import (
    ausuc,
    calibrated_stacking,
    gamma_sweep,
    harmonic_mean,
    per_class_accuracy,
)

# Hand example: classes 0, 1 seen; 2, 3 unseen. Margin d = best seen - best unseen score;
# seen classes have the lower indices, so on a tie the seen side wins: an image goes to the
# unseen side exactly when gamma > d.
SEEN_CLASSES = [0, 1]
SCORES_SEEN = np.array([
    [2.0, 0.0, 1.0, 0.0],   # label 0: seen pick 0 (right), d = 2 - 1 = 1
    [0.0, 1.0, 0.25, 0.0],  # label 1: seen pick 1 (right), d = 1 - 0.25 = 0.75
    [1.0, 0.5, 0.0, 0.0],   # label 1: seen pick 0 (wrong), d = 1
])
LABELS_SEEN = [0, 1, 1]
SCORES_UNSEEN = np.array([
    [0.0, 1.0, 0.5, 0.0],   # label 2: unseen pick 2 (right), d = 0.5
    [1.0, 0.0, 0.0, 0.5],   # label 3: unseen pick 3 (right), d = 0.5
    [0.0, 0.0, 0.0, -0.5],  # label 3: unseen pick 2 (wrong), d = 0
    [0.0, -1.0, 1.0, 0.0],  # label 2: unseen pick 2 (right), d = -1
])
LABELS_UNSEEN = [2, 3, 3, 2]
# S(g) = mean(class 0: [g <= 1], class 1: [g <= 0.75] / 2)
# U(g) = mean(class 2: ([g > 0.5] + [g > -1]) / 2, class 3: [g > 0.5] / 2)
# step 0.5:
#   g = -1.0: S = (1 + .5)/2 = .75, U = (0 + 0)/2 = 0        H = 0       (U hit 0: stop)
#   g = -0.5: S = .75,              U = (.5 + 0)/2 = .25     H = 2*.75*.25/1 = .375
#   g =  0.0: S = .75,              U = .25                  H = .375
#   g =  0.5: S = .75,              U = .25                  H = .375
#   g =  1.0: S = (1 + 0)/2 = .5,   U = (1 + .5)/2 = .75     H = 2*.5*.75/1.25 = .6
#   g =  1.5: S = 0,                U = .75                  H = 0       (S hit 0: stop)
EXPECTED_POINTS = [
    (-1.0, 0.75, 0.0, 0.0),
    (-0.5, 0.75, 0.25, 0.375),
    (0.0, 0.75, 0.25, 0.375),
    (0.5, 0.75, 0.25, 0.375),
    (1.0, 0.5, 0.75, 0.6),
    (1.5, 0.0, 0.75, 0.0),
]


def sweep_hand_example(**kwargs):
    return gamma_sweep(SCORES_SEEN, LABELS_SEEN, SCORES_UNSEEN, LABELS_UNSEEN, SEEN_CLASSES,
                       **kwargs)


def test_calibrated_stacking_subtracts_gamma_from_seen_columns_only():
    scores = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]])
    out = calibrated_stacking(scores, [0, 2], 0.25)
    # columns 0 and 2 lose 0.25; column 1 is unseen and unchanged
    np.testing.assert_allclose(out, [[0.75, 2.0, 2.75], [0.25, 0.5, 0.25]])
    np.testing.assert_allclose(scores, [[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]])  # input untouched


def test_calibrated_stacking_keeps_tensors_as_tensors():
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    out = calibrated_stacking(scores, torch.tensor([1]), -1.0)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([[1.0, 3.0, 3.0]]))  # 2 - (-1) = 3
    torch.testing.assert_close(scores, torch.tensor([[1.0, 2.0, 3.0]]))


def test_ausuc_by_hand():
    # (U, S): (0, .9) -> (.5, .6) -> (1, 0)
    # area = .5 * (.9 + .6)/2 + .5 * (.6 + 0)/2 = .375 + .15 = .525
    assert ausuc([0.9, 0.6, 0.0], [0.0, 0.5, 1.0]) == pytest.approx(0.525)
    # the order of the input points does not matter
    assert ausuc([0.0, 0.9, 0.6], [1.0, 0.0, 0.5]) == pytest.approx(0.525)


def test_ausuc_ties_in_unseen_accuracy_take_the_higher_seen_accuracy_first():
    # (U, S): (0, .9), (.25, .6), (.25, .4), (1, 0); the tie at U = .25 is ordered S = .6
    # then .4, the order of increasing gamma:
    # area = .25 * (.9 + .6)/2 + 0 + .75 * (.4 + 0)/2 = .1875 + .15 = .3375
    # (the opposite tie order would give .25 * 1.3/2 + .75 * .6/2 = .3875)
    assert ausuc([0.9, 0.4, 0.6, 0.0], [0.0, 0.25, 0.25, 1.0]) == pytest.approx(0.3375)


def test_ausuc_of_a_single_point_is_zero():
    assert ausuc([0.7], [0.2]) == 0.0


def test_gamma_sweep_hand_example():
    sweep = sweep_hand_example(step=0.5)
    assert len(sweep["points"]) == len(EXPECTED_POINTS)
    for got, want in zip(sweep["points"], EXPECTED_POINTS, strict=True):
        assert got == pytest.approx(want)
    assert sweep["best"] == pytest.approx((1.0, 0.5, 0.75, 0.6))
    # sorted by U (ties: S high first): (0,.75) (.25,.75)x3 (.75,.5) (.75,0)
    # area = .25 * (.75 + .75)/2 + 0 + 0 + .5 * (.75 + .5)/2 + 0 = .1875 + .3125 = .5
    assert sweep["ausuc"] == pytest.approx(0.5)


def test_gamma_sweep_stops_where_each_side_reaches_zero():
    points = sweep_hand_example(step=0.1)["points"]
    gammas = [p[0] for p in points]
    assert gammas == sorted(gammas) and 0.0 in gammas
    # last negative point: U = 0, the one before it still U > 0
    assert points[0][2] == 0.0 and points[1][2] > 0.0
    # last positive point: S = 0, the one before it still S > 0
    assert points[-1][1] == 0.0 and points[-2][1] > 0.0
    # U reaches 0 once gamma <= -1 (image 4's margin), S once gamma > 1 (images 1 and 3)
    assert points[0][0] == pytest.approx(-1.0) and points[-1][0] == pytest.approx(1.1)
    # gammas are exact multiples of the step: k * 0.1, not a drifting running sum
    np.testing.assert_array_equal(gammas, 0.1 * np.arange(-10, 12))


def test_gamma_sweep_skips_a_direction_already_at_zero():
    # Every unseen image is wrong at gamma 0 whatever gamma does on the negative side:
    # no negative gammas are visited.
    scores_unseen = np.array([[0.0, 0.0, 0.0, 1.0]])  # label 2, unseen pick 3: never right
    sweep = gamma_sweep(SCORES_SEEN, LABELS_SEEN, scores_unseen, [2], SEEN_CLASSES, step=0.5)
    gammas = [p[0] for p in sweep["points"]]
    assert min(gammas) == 0.0
    assert all(p[2] == 0.0 for p in sweep["points"])
    assert sweep["best"][3] == 0.0 and sweep["ausuc"] == 0.0


def _naive_sweep(scores_s, labels_s, scores_u, labels_u, seen_classes, step):
    """The release's loop, literally: one full argmax over calibrated scores per gamma."""
    scores_s, scores_u = np.asarray(scores_s, np.float64), np.asarray(scores_u, np.float64)

    def evaluate(gamma):
        s = per_class_accuracy(
            np.argmax(calibrated_stacking(scores_s, seen_classes, gamma), axis=1), labels_s)
        u = per_class_accuracy(
            np.argmax(calibrated_stacking(scores_u, seen_classes, gamma), axis=1), labels_u)
        return gamma, s, u, harmonic_mean(s, u)

    visited = [evaluate(0.0)]
    for sign, side in ((-1, 2), (+1, 1)):
        k = 0
        while visited[0][side] > 0:
            k += 1
            visited.append(evaluate(sign * k * step))
            if visited[-1][side] == 0:
                break
    best = visited[int(np.argmax([p[3] for p in visited]))]
    return sorted(visited), best


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_sweep_equals_naive_loop(seed):
    rng = np.random.default_rng(seed)
    num_classes = 9
    seen_classes = np.sort(rng.choice(num_classes, size=5, replace=False))
    unseen_classes = np.setdiff1d(np.arange(num_classes), seen_classes)
    # odd seeds: whole-number scores and step, so many exact ties settled by the first maximum
    step = 0.5 if seed % 2 else 0.01

    def make(n):
        if seed % 2:
            return rng.integers(-3, 4, size=(n, num_classes)).astype(float)
        return rng.normal(size=(n, num_classes))

    scores_s, scores_u = make(40), make(30)
    # unseen images lean to their class a little so that U > 0 somewhere
    labels_s = rng.choice(seen_classes, size=40)
    labels_u = rng.choice(unseen_classes, size=30)
    scores_u[np.arange(30), labels_u] += 0.5
    sweep = gamma_sweep(torch.from_numpy(scores_s), torch.from_numpy(labels_s), scores_u,
                        labels_u, seen_classes, step=step)
    points, best = _naive_sweep(scores_s, labels_s, scores_u, labels_u, seen_classes, step)
    assert len(sweep["points"]) == len(points) > 3
    np.testing.assert_allclose(sweep["points"], points, rtol=0, atol=1e-12)
    assert sweep["best"] == pytest.approx(best, abs=1e-12)
    assert sweep["ausuc"] == pytest.approx(ausuc([p[1] for p in points], [p[2] for p in points]))
    assert 0.0 < sweep["ausuc"] <= 1.0


def test_gamma_sweep_is_fast_and_bounded_on_a_large_problem():
    rng = np.random.default_rng(0)
    num_classes, n = 200, 3000
    seen_classes = np.arange(150)
    scores_s = 10.0 * rng.normal(size=(n, num_classes))
    scores_u = 10.0 * rng.normal(size=(n, num_classes))
    labels_s = rng.integers(0, 150, size=n)
    labels_u = rng.integers(150, 200, size=n)
    scores_s[np.arange(n), labels_s] += 25.0
    scores_u[np.arange(n), labels_u] += 15.0
    sweep = gamma_sweep(scores_s, labels_s, scores_u, labels_u, seen_classes, step=0.01)
    points = np.array(sweep["points"])
    # thousands of gammas, none beyond one step past the extreme margins
    margins = [s[:, :150].max(1) - s[:, 150:].max(1) for s in (scores_s, scores_u)]
    low, high = min(m.min() for m in margins), max(m.max() for m in margins)
    assert len(points) > 2000
    assert points[0, 0] >= low - 0.01 - 1e-9 and points[-1, 0] <= high + 0.01 + 1e-9
    assert points[0, 2] == 0.0 and points[-1, 1] == 0.0
    # S never rises and U never falls as gamma grows
    assert np.all(np.diff(points[:, 1]) <= 0) and np.all(np.diff(points[:, 2]) >= 0)


def test_gamma_sweep_rejects_bad_inputs():
    with pytest.raises(ValueError, match="step"):
        sweep_hand_example(step=0.0)
    with pytest.raises(ValueError, match="labels_unseen"):
        gamma_sweep(SCORES_SEEN, LABELS_SEEN, SCORES_UNSEEN, [2, 3, 3, 1], SEEN_CLASSES)
    with pytest.raises(ValueError, match="NaN"):
        gamma_sweep(SCORES_SEEN * np.nan, LABELS_SEEN, SCORES_UNSEEN, LABELS_UNSEEN,
                    SEEN_CLASSES)
