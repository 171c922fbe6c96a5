"""The paired bootstrap: resample counts, resampled means and AUCs (by hand), percentile CIs and verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from shared_networks.study.bootstrap import (
    auc_by_group,
    auc_resampled,
    bootstrap_counts,
    counts_from_indices,
    mean_resampled,
    paired_bootstrap,
    verdict,
)


def test_counts_from_indices():
    counts = counts_from_indices(np.array([[0, 0, 2], [1, 2, 2]]), 3)
    assert counts.tolist() == [[2, 0, 1], [0, 1, 2]]


def test_constant_paired_difference_collapses_the_ci():
    rng = np.random.default_rng(0)
    b = rng.random((7, 2))
    result = paired_bootstrap(b + 0.1, b, ["x", "y"], "mean", n_resamples=200, seed=1)
    mean = result["mean"]
    assert mean["difference"] == pytest.approx(0.1)
    assert mean["ci95"] == pytest.approx([0.1, 0.1])
    assert mean["n_resamples"] == 200 and mean["verdict"] == "MAE ahead"
    assert result["per_class"]["y"]["ci95"] == pytest.approx([0.1, 0.1])


def test_fixed_resample_set_by_hand():
    a = np.array([[1.0], [0.0], [0.5]])
    b = np.zeros((3, 1))
    counts = counts_from_indices(np.array([[0, 0, 1], [1, 2, 2], [0, 1, 2]]), 3)
    result = paired_bootstrap(a, b, ["x"], "mean", counts=counts)
    # resample means 2/3, 1/3, 1/2; numpy's linear percentiles at 2.5 % and 97.5 % of 3 values
    assert result["mean"]["difference"] == pytest.approx(0.5)
    assert result["mean"]["ci95"] == pytest.approx([1 / 3 + 0.05 / 6, 1 / 2 + 0.95 / 6])
    assert result["arms"]["a"]["value"] == pytest.approx(0.5) and result["arms"]["b"]["value"] == 0.0


def test_undefined_values_are_left_out_pairwise_and_per_resample():
    # class y is defined only in case 2; case 1's x is missing in arm b (left out of both arms)
    a = np.array([[0.9, np.nan], [0.8, np.nan], [0.7, 0.6]])
    b = np.array([[0.5, np.nan], [np.nan, np.nan], [0.3, 0.2]])
    counts = counts_from_indices(np.array([[0, 0, 1], [2, 2, 2]]), 3)
    result = paired_bootstrap(a, b, ["x", "y"], "mean", counts=counts)
    # all cases: x = mean(0.9, 0.7) - mean(0.5, 0.3) = 0.4; y = 0.4; mean over classes 0.4
    assert result["per_class"]["x"]["difference"] == pytest.approx(0.4)
    assert result["mean"]["difference"] == pytest.approx(0.4)
    # resample 1 draws no case defining y: y skipped there (1 resample used), the mean is x alone
    assert result["per_class"]["y"]["n_resamples"] == 1
    assert result["per_class"]["y"]["ci95"] == pytest.approx([0.4, 0.4])
    assert result["mean"]["n_resamples"] == 2


def test_mean_resampled_weights_repeated_cases():
    values = np.array([[1.0], [3.0]])
    assert mean_resampled(values, np.array([[3, 1]]))[0, 0] == pytest.approx(1.5)


def test_auc_by_hand_with_weights_ties_and_undefined():
    scores = np.array([[0.1, 0.5, 0.2], [0.4, 0.5, 0.3], [0.35, 0.9, 0.4], [0.8, 0.1, 0.5]])
    labels = np.array([[0, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0]])
    auc = auc_resampled(scores, labels, np.array([[1, 1, 1, 1], [2, 1, 1, 1]]))
    # class 0: 3 of 4 positive-negative pairs ordered (0.35 < 0.4); with case 0 drawn twice: 5 of 6
    assert auc[0, 0] == pytest.approx(0.75) and auc[1, 0] == pytest.approx(5 / 6)
    # class 1: positives 0.5, 0.9 against negatives 0.5, 0.1: (0.5 + 1) + (1 + 1) of 4 pairs; the tie counts a half
    assert auc[0, 1] == pytest.approx(3.5 / 4)
    assert np.isnan(auc[:, 2]).all()  # no positive


def test_auc_bootstrap_skips_classes_undefined_on_a_resample():
    scores_a = np.array([[0.9], [0.1], [0.8]])
    scores_b = np.array([[0.2], [0.6], [0.8]])
    labels = np.array([[1], [0], [0]])
    counts = counts_from_indices(np.array([[0, 1, 2], [1, 1, 2], [0, 1, 1]]), 3)
    result = paired_bootstrap(scores_a, scores_b, ["x"], "auc", labels=labels, counts=counts)
    # all images: a's positive above both negatives (AUC 1), b's below both (AUC 0)
    assert result["mean"]["difference"] == pytest.approx(1.0)
    assert result["per_class"]["x"]["n_resamples"] == 2  # resample 2 has no positive
    assert result["mean"]["ci95"] == pytest.approx([1.0, 1.0])


def test_bad_arms_or_statistic_are_refused():
    with pytest.raises(ValueError, match="shapes"):
        paired_bootstrap(np.zeros((3, 2)), np.zeros((3, 1)), ["x", "y"], "mean")
    with pytest.raises(ValueError, match="labels"):
        paired_bootstrap(np.zeros((3, 1)), np.zeros((3, 1)), ["x"], "auc")
    with pytest.raises(ValueError, match="median"):
        paired_bootstrap(np.zeros((3, 1)), np.zeros((3, 1)), ["x"], "median")


@pytest.mark.parametrize(
    "ci, higher, expected",
    [
        ([0.01, 0.2], True, "MAE ahead"),
        ([-0.3, -0.05], True, "scratch ahead"),
        ([-0.1, 0.1], True, "difference within noise (CI contains 0)"),
        ([0.0, 0.1], True, "difference within noise (CI contains 0)"),
        ([-4.0, -1.0], False, "MAE ahead"),  # HD95: lower is better
        ([1.0, 4.0], False, "scratch ahead"),
        ([None, None], True, "difference within noise (CI contains 0)"),
    ],
)
def test_verdicts(ci, higher, expected):
    assert verdict(ci, higher) == expected


def test_fold_auc_is_the_mean_of_the_folds_aucs_by_hand():
    # two folds whose models are calibrated differently: each ranks its own images perfectly
    scores = np.array([[0.1, 0.3], [0.2, 0.4], [0.8, 0.5], [0.9, 0.6]])
    labels = np.array([[0, 0], [1, 1], [0, 0], [1, 0]])  # class 2 has no positive in fold 1
    groups = np.array([0, 0, 1, 1])
    ones = np.ones((1, 4), dtype=np.int64)
    pooled = auc_resampled(scores, labels, ones)[0]
    assert pooled[0] == pytest.approx(0.75)  # one ranking of both folds: 0.2 < 0.8 counts against
    assert pooled[1] == pytest.approx(1 / 3)
    by_fold = auc_by_group(scores, labels, ones, groups)[0]
    assert by_fold.tolist() == pytest.approx([1.0, 1.0])  # class 2: fold 0 alone (undefined in fold 1)
    assert np.isnan(auc_by_group(scores, np.zeros((4, 2)), ones, groups)).all()  # undefined in every fold
    # the stratified bootstrap draws each fold's own number of cases from that fold
    for counts in bootstrap_counts(4, 30, seed=1, groups=groups):
        assert (counts[:, :2].sum(1) == 2).all() and (counts[:, 2:].sum(1) == 2).all()
    other = scores.copy()
    other[2:, 0] = [0.9, 0.8]  # fold 1 now ranked wrong: its AUC 0, fold 0's 1, mean 0.5
    result = paired_bootstrap(scores, other, ["a", "b"], "auc", labels=labels, n_resamples=200, groups=groups)
    assert result["per_class"]["a"]["difference"] == pytest.approx(0.5)
    assert result["per_class"]["b"]["difference"] == pytest.approx(0.0)
    assert result["arms"]["a"]["value"] == pytest.approx(1.0)
