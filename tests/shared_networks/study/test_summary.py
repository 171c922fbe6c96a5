"""summary.json: the runs must share one test split."""

from __future__ import annotations

import pytest

from shared_networks.study.evaluations import read_per_case
from shared_networks.study.runs import Run
from shared_networks.study.summary import summarise_evaluations


def test_runs_on_other_test_cases_are_refused(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("case,dice_x\nc0,0.5\nc1,0.6\n")
    b.write_text("case,dice_x\nc0,0.7\nc2,0.1\n")
    evaluations = {Run("mae", 1.0, 0): read_per_case(a), Run("scratch", 1.0, 0): read_per_case(b)}
    walls = dict.fromkeys(evaluations, 1.0)
    with pytest.raises(ValueError, match="b.csv"):
        summarise_evaluations(evaluations, walls, {1.0: (2, 2)}, 10, 0)
    evaluations[Run("scratch", 1.0, 0)] = read_per_case(a)
    summary = summarise_evaluations(evaluations, walls, {1.0: (2, 2)}, 10, 0)
    assert summary["total_run_wall_s"] == 2.0 and list(summary["fractions"]) == ["1"]
    assert summary["fractions"]["1"]["comparisons"]["mae - scratch"]["dice"]["mean"]["difference"] == 0.0


def test_label_efficiency_pairs_mae_at_each_smaller_fraction_with_scratch_at_the_largest(tmp_path):
    """MAE at 0.5 (seeds averaged per case: 0.7, 0.9) against scratch at 1 (0.5, 0.5): +0.3; the other arms of each
    fraction do not enter, and a study of one fraction has no such comparison."""

    def csv(name, x0, x1):
        path = tmp_path / f"{name}.csv"
        path.write_text(f"case,dice_x\nc0,{x0}\nc1,{x1}\n")
        return read_per_case(path)

    evaluations = {
        Run("mae", 1.0, 0): csv("m1", 0.9, 0.9),
        Run("scratch", 1.0, 0): csv("s1", 0.5, 0.5),
        Run("mae", 0.5, 0): csv("m05s0", 0.6, 0.8),
        Run("mae", 0.5, 1): csv("m05s1", 0.8, 1.0),
        Run("scratch", 0.5, 0): csv("s05", 0.1, 0.1),
    }
    walls = dict.fromkeys(evaluations, 1.0)
    summary = summarise_evaluations(evaluations, walls, {1.0: (2, 2), 0.5: (1, 1)}, 50, 0)
    assert list(summary["label_efficiency"]) == ["0.5"]
    entry = summary["label_efficiency"]["0.5"]
    assert entry["comparison"] == "mae at 0.5 - scratch at 1"
    assert entry["dice"]["mean"]["difference"] == pytest.approx(0.3)
    assert entry["verdict"] == "MAE ahead"
    # the arms' own CIs of each fraction stay those of their own fraction's comparison
    assert summary["fractions"]["1"]["arms"]["scratch"]["dice"]["seed_averaged"]["value"] == pytest.approx(0.5)
    assert summary["fractions"]["0.5"]["arms"]["scratch"]["dice"]["seed_averaged"]["value"] == pytest.approx(0.1)
    one = {r: ev for r, ev in evaluations.items() if r.fraction == 1.0}
    assert summarise_evaluations(one, walls, {1.0: (2, 2)}, 50, 0)["label_efficiency"] == {}
