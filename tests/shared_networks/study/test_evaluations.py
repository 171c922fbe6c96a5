"""The evaluation files read back: per_case.csv (class names from summary.json), predictions.csv, pooled folds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared_networks.study.evaluations import pool_evaluations, read_per_case, read_predictions


def test_read_per_case_by_column_names_with_summary_classes(tmp_path):
    (tmp_path / "per_case.csv").write_text(
        "case,hd95_right_kidney,dice_spleen,dice_right_kidney,dice_n_missed,hd95_spleen\n"
        "a.nii.gz,3.5,0.9,nan,4,inf\n"
        "b.nii.gz,,0.5,0.25,0,2\n"
    )
    summary = {"dice": {"per_class": {"spleen": {}, "right kidney": {}}}}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    ev = read_per_case(tmp_path / "per_case.csv")
    assert ev.cases == ["a.nii.gz", "b.nii.gz"] and ev.class_names == ["spleen", "right_kidney"]
    np.testing.assert_array_equal(ev.values["dice"], [[0.9, np.nan], [0.5, 0.25]])
    np.testing.assert_array_equal(ev.values["hd95"], [[np.nan, 3.5], [2.0, np.nan]])


def test_read_per_case_without_hd95_and_without_dice(tmp_path):
    (tmp_path / "per_case.csv").write_text("case,dice_TC,dice_WT\nx,1,0.5\n")
    assert set(read_per_case(tmp_path / "per_case.csv").values) == {"dice"}
    (tmp_path / "per_case.csv").write_text("case,hd95_TC\nx,1\n")
    with pytest.raises(ValueError, match="per_case.csv"):
        read_per_case(tmp_path / "per_case.csv")


def test_read_predictions(tmp_path):
    (tmp_path / "predictions.csv").write_text("image,A,B,label_A,label_B\ni1.png,0.2,0.7,0,1\ni2.png,0.9,0.1,1,0\n")
    ev = read_predictions(tmp_path / "predictions.csv")
    assert ev.class_names == ["A", "B"] and ev.cases == ["i1.png", "i2.png"]
    np.testing.assert_array_equal(ev.labels, [[0, 1], [1, 0]])
    (tmp_path / "predictions.csv").write_text("image,A,label_A\ni1.png,x,0\n")
    with pytest.raises(ValueError, match="predictions.csv"):
        read_predictions(tmp_path / "predictions.csv")


def test_pooled_evaluations_refuse_shared_cases(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("case,dice_x\nc0,0.5\nc1,0.6\n")
    b.write_text("case,dice_x\nc2,0.7\n")
    pooled = pool_evaluations([read_per_case(a), read_per_case(b)])
    assert pooled.cases == ["c0", "c1", "c2"] and pooled.values["dice"][:, 0].tolist() == [0.5, 0.6, 0.7]
    with pytest.raises(ValueError, match="c1"):
        pool_evaluations([read_per_case(a), read_per_case(a)])
