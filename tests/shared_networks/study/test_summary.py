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
