"""Segmentation metrics with fixed conventions for empty structures (:mod:`shared_networks.engine.metrics`).

Small 3D masks whose Dice and HD95 are computed by hand: a perfect prediction, a missed structure, a false positive,
a structure empty in both, and shifted cubes under anisotropic spacing; the per-case CSV and summary JSON of
``MetricsReport`` behind a real ``SupervisedEvaluator``; and the old gaming (missing an organ lowered mean HD95).
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.engines import SupervisedEvaluator
from monai.handlers import HausdorffDistance, IgniteMetricHandler, from_engine
from monai.metrics import DiceMetric, HausdorffDistanceMetric

from shared_networks.engine.metrics import (
    BRATS_HD95_PENALTY_MM,
    HausdorffDistanceMM,
    MetricsReport,
    PenalizedHausdorffDistanceMetric,
    image_diagonal_mm,
    structure_status,
)

SHAPE = (12, 10, 8)
SPACING = (0.8, 1.0, 2.5)  # mm along the three axes
DIAGONAL = math.sqrt((12 * 0.8) ** 2 + (10 * 1.0) ** 2 + (8 * 2.5) ** 2)  # sqrt(9.6² + 10² + 20²) = 24.33 mm


def cube(start: tuple[int, int, int] = (3, 3, 2), size: int = 4) -> torch.Tensor:
    """A (H, W, Z) mask of SHAPE holding one cube of ``size`` voxels per side from ``start``."""
    m = torch.zeros(SHAPE)
    x, y, z = start
    m[x : x + size, y : y + size, z : z + size] = 1
    return m


def one_hot(*masks: torch.Tensor) -> torch.Tensor:
    """(C + 1, H, W, Z): background, then one channel per mask (masks may overlap only where a test says so)."""
    fg = torch.stack(masks)
    return torch.cat([(fg.sum(0, keepdim=True) == 0).float(), fg])


def with_spacing(x: torch.Tensor, name: str = "case.nii.gz") -> MetaTensor:
    affine = torch.diag(torch.tensor([*SPACING, 1.0], dtype=torch.float64))
    return MetaTensor(x, affine=affine, meta={"filename_or_obj": f"/data/{name}"})


def hd95(pred: torch.Tensor, label: torch.Tensor, penalty_mm: float | str = "diagonal") -> list[float]:
    """Per-class HD95 in mm of one (C + 1, H, W, Z) pair (background left out), through the engine handler."""
    handler = HausdorffDistanceMM(include_background=False, percentile=95, penalty_mm=penalty_mm, save_details=False)
    handler.reset()
    handler.update(([pred], [with_spacing(label)]))
    return handler.metric_fn.get_buffer()[0].tolist()


def dice(pred: torch.Tensor, label: torch.Tensor) -> list[float]:
    return DiceMetric(include_background=False, ignore_empty=False)(pred[None], label[None])[0].tolist()


def test_image_diagonal_mm():
    assert image_diagonal_mm(SHAPE, SPACING) == pytest.approx(24.3343, abs=1e-4)
    assert image_diagonal_mm((3, 4), None) == 5.0 and image_diagonal_mm((3, 4), 2.0) == 10.0


def test_perfect_prediction():
    label = one_hot(cube(), cube((0, 0, 0), 2))
    assert dice(label, label) == [1.0, 1.0]
    assert hd95(label, label) == [0.0, 0.0]


def test_missed_structure_scores_dice_0_and_the_penalty():
    label, pred = one_hot(cube(), cube((8, 6, 5), 2)), one_hot(cube(), torch.zeros(SHAPE))
    assert dice(pred, label) == [1.0, 0.0]
    assert hd95(pred, label) == pytest.approx([0.0, DIAGONAL])  # BTCV: the case's image diagonal
    assert hd95(pred, label, BRATS_HD95_PENALTY_MM) == pytest.approx([0.0, 373.13])  # BraTS: fixed


def test_false_positive_scores_dice_0_and_the_penalty():
    label, pred = one_hot(cube(), torch.zeros(SHAPE)), one_hot(cube(), cube((8, 6, 5), 2))
    assert dice(pred, label) == [1.0, 0.0]
    assert hd95(pred, label) == pytest.approx([0.0, DIAGONAL])
    assert hd95(pred, label, 100) == pytest.approx([0.0, 100.0])


def test_structure_empty_in_both_scores_dice_1_and_is_left_out_of_hd95():
    label = one_hot(cube(), torch.zeros(SHAPE))
    assert dice(label, label) == [1.0, 1.0]
    values = hd95(label, label)
    assert values[0] == 0.0 and math.isnan(values[1])


@pytest.mark.parametrize(("axis", "expected_mm"), [(0, 2 * 0.8), (1, 2 * 1.0), (2, 2 * 2.5)])
def test_shifted_cube_hd95_in_mm_under_anisotropic_spacing(axis, expected_mm):
    """A 4-voxel cube shifted by 2 voxels: the moved face of 16 voxels (of 56 surface voxels, each way) lies 2 voxels
    from the other cube's nearest surface voxel, every other surface voxel closer: HD95 = HD = 2 * spacing[axis]."""
    start = [3, 3, 1]
    shifted = list(start)
    shifted[axis] += 2
    label, pred = one_hot(cube(tuple(start))), one_hot(cube(tuple(shifted)))
    assert hd95(pred, label) == pytest.approx([expected_mm])
    assert dice(pred, label) == pytest.approx([2 * 32 / 128])  # half of each cube overlaps


def test_structure_status_with_and_without_background():
    label = one_hot(cube(), cube((8, 6, 5), 2), torch.zeros(SHAPE), torch.zeros(SHAPE))[None]
    pred = one_hot(cube(), torch.zeros(SHAPE), cube((0, 0, 0), 2), torch.zeros(SHAPE))[None]
    assert structure_status(pred, label) == [["detected", "missed", "false_positive", "both_empty"]]
    assert structure_status(pred, label, include_background=True)[0][0] == "detected"  # background: non-empty
    with pytest.raises(ValueError, match="one shape"):
        structure_status(pred, label[:, :3])


@pytest.mark.parametrize("penalty", [0, -1.0, float("nan"), "inf", "image"])
def test_bad_penalty_is_refused(penalty):
    with pytest.raises(ValueError, match="hd95_penalty_mm"):
        PenalizedHausdorffDistanceMetric(penalty_mm=penalty)


def evaluate(cases: list[tuple[str, torch.Tensor, torch.Tensor]], tmp_path, hd95_handler=None):
    """Runs a SupervisedEvaluator whose network returns the given predictions (the image is the prediction), with
    the evaluate.yaml handlers: Dice (ignore_empty=False), HD95 in mm with the diagonal penalty, MetricsReport."""
    data = [{"image": with_spacing(pred, name), "label": with_spacing(label, name)} for name, pred, label in cases]
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(data, batch_size=1),
        network=torch.nn.Identity(),
        key_val_metric={
            "dice": IgniteMetricHandler(
                metric_fn=DiceMetric(include_background=False, ignore_empty=False),
                output_transform=from_engine(["pred", "label"]),
                save_details=True,
            )
        },
        additional_metrics={
            "hd95": hd95_handler
            or HausdorffDistanceMM(
                include_background=False,
                percentile=95,
                penalty_mm="diagonal",
                save_details=True,
                output_transform=from_engine(["pred", "label"]),
            )
        },
        val_handlers=[MetricsReport(tmp_path, ["liver", "left kidney"], ["dice", "hd95"])],
    )
    evaluator.run()
    return evaluator


def test_metrics_report_counts_and_penalties(tmp_path):
    empty = torch.zeros(SHAPE)
    kidney = cube((8, 6, 5), 2)
    cases = [
        ("perfect.nii.gz", one_hot(cube(), empty), one_hot(cube(), empty)),  # kidney empty in both
        ("missed.nii.gz", one_hot(empty, cube((0, 0, 0), 2)), one_hot(cube(), empty)),  # liver missed, kidney FP
        ("shifted.nii.gz", one_hot(cube((3, 3, 1)), kidney), one_hot(cube((3, 3, 3)), kidney)),  # 2 x 2.5 mm
    ]
    evaluator = evaluate(cases, tmp_path)
    assert evaluator.state.metrics["dice"] == pytest.approx((1 + 1 + 0 + 0 + 0.5 + 1) / 6)

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["cases"] == ["perfect.nii.gz", "missed.nii.gz", "shifted.nii.gz"] and summary["n_cases"] == 3
    assert summary["dice"]["per_class"] == {
        "liver": {"mean": 0.5, "n": 3, "n_excluded": 0},
        "left kidney": {"mean": pytest.approx(2 / 3), "n": 3, "n_excluded": 0},
    }
    liver_hd, kidney_hd = (0 + DIAGONAL + 5.0) / 3, (DIAGONAL + 0) / 2  # kidney of case 1: both empty, left out
    assert summary["hd95"]["per_class"]["liver"] == {"mean": pytest.approx(liver_hd), "n": 3, "n_excluded": 0}
    assert summary["hd95"]["per_class"]["left kidney"] == {"mean": pytest.approx(kidney_hd), "n": 2, "n_excluded": 1}
    assert summary["hd95"]["mean"] == pytest.approx((liver_hd + kidney_hd) / 2)
    assert summary["structures"] == {
        "per_class": {
            "liver": {"detected": 2, "missed": 1, "false_positives": 0, "both_empty": 0},
            "left kidney": {"detected": 1, "missed": 0, "false_positives": 1, "both_empty": 1},
        },
        "detected": 3,
        "missed": 1,
        "false_positives": 1,
        "both_empty": 1,
    }
    assert "NaN" not in (tmp_path / "summary.json").read_text()

    rows = list(csv.reader((tmp_path / "per_case.csv").open()))
    assert rows[0] == [
        "case",
        "dice_liver",
        "dice_left_kidney",
        "hd95_liver",
        "hd95_left_kidney",
        "status_liver",
        "status_left_kidney",
        "missed",
        "false_positives",
        "both_empty",
    ]
    assert rows[1] == ["perfect.nii.gz", "1", "1", "0", "nan", "detected", "both_empty", "0", "0", "1"]
    assert rows[2] == [
        "missed.nii.gz",
        "0",
        "0",
        f"{DIAGONAL:.6g}",
        f"{DIAGONAL:.6g}",
        "missed",
        "false_positive",
        "1",
        "1",
        "0",
    ]
    assert rows[3] == ["shifted.nii.gz", "0.5", "1", "5", "0", "detected", "detected", "0", "0", "0"]


@pytest.mark.filterwarnings("ignore:the prediction of class 2 is all 0")
def test_metrics_report_counts_and_logs_any_other_nan(tmp_path, caplog):
    """MONAI's HD95 handler (no penalty): the missed kidney's NaN is left out of the mean, but counted and logged."""
    label, pred = one_hot(cube(), cube((8, 6, 5), 2)), one_hot(cube(), torch.zeros(SHAPE))
    plain = HausdorffDistance(
        include_background=False, percentile=95, save_details=True, output_transform=from_engine(["pred", "label"])
    )
    with caplog.at_level("WARNING", logger="shared_networks.engine.metrics"):
        evaluate([("a.nii.gz", pred, label)], tmp_path, hd95_handler=plain)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["hd95"]["per_class"]["left kidney"] == {"mean": None, "n": 0, "n_excluded": 1}
    assert summary["structures"]["missed"] == 1 and summary["structures"]["both_empty"] == 0
    assert "hd95 of 'left kidney' is not finite in case(s) ['a.nii.gz']" in caplog.text


def test_metrics_report_refuses_a_class_count_mismatch(tmp_path):
    label = one_hot(cube())  # one class, the report names two
    with pytest.raises(ValueError, match="expected 2"):
        evaluate([("a.nii.gz", label, label)], tmp_path)


def test_missing_an_organ_no_longer_lowers_mean_hd95(tmp_path):
    """Two organs: one model finds both, the kidney 2 voxels (5 mm) off; the other leaves the kidney out."""
    liver, kidney = cube((1, 1, 1), 3), cube((6, 5, 1), 3)
    label = one_hot(liver, kidney)
    honest = one_hot(liver, cube((6, 5, 3), 3))  # kidney 2 voxels of 2.5 mm off
    skips = one_hot(liver, torch.zeros(SHAPE))

    # MONAI's metric and a NaN-skipping mean (the old report): skipping the kidney "wins", 0 mm against 2.5 mm
    # (the mean of liver 0 mm and kidney 5 mm)
    old = HausdorffDistanceMetric(include_background=False, percentile=95)
    with pytest.warns(UserWarning, match="prediction of class 2 is all 0"):
        old_skips = old(skips[None], label[None], spacing=list(SPACING))
    old_honest = old(honest[None], label[None], spacing=list(SPACING))
    assert torch.nanmean(old_honest).item() == pytest.approx(2.5) and torch.nanmean(old_skips).item() == 0.0

    means = {}
    for name, pred in (("honest", honest), ("skips", skips)):
        evaluate([("a.nii.gz", pred, label)], tmp_path / name)
        means[name] = json.loads((tmp_path / name / "summary.json").read_text())["hd95"]["mean"]
    assert means == {"honest": pytest.approx(2.5), "skips": pytest.approx(DIAGONAL / 2)}
    assert means["skips"] > means["honest"]
