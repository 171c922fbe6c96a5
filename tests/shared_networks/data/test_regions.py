"""Tests of the tumour regions (TC, WT, ET) in both label conventions and of the channel-count check."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from shared_networks.data.regions import (
    LABEL_CONVENTIONS,
    REGION_NAMES,
    CheckChannelCountd,
    LabelToRegionsd,
    RegionsToLabeld,
    get_convention,
    labels_to_regions,
    regions_to_labels,
)


def _label(values: list[int]) -> torch.Tensor:
    """(1, len(values), 1, 1) label map holding ``values`` once each."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1, 1)


def test_region_label_sets_of_both_conventions():
    assert REGION_NAMES == ("TC", "WT", "ET")
    assert LABEL_CONVENTIONS["msd"].regions == {"TC": (2, 3), "WT": (1, 2, 3), "ET": (3,)}
    assert LABEL_CONVENTIONS["brats2021"].regions == {"TC": (1, 4), "WT": (1, 2, 4), "ET": (4,)}
    assert LABEL_CONVENTIONS["msd"].names[2] == "non-enhancing tumour"
    assert LABEL_CONVENTIONS["brats2021"].names[4] == "GD-enhancing tumour"


@pytest.mark.parametrize(
    "convention, values, expected",
    [
        # columns: background, edema, core, enhancing; rows TC, WT, ET
        ("msd", [0, 1, 2, 3], [[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]]),
        ("brats2021", [0, 2, 1, 4], [[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]]),
    ],
)
def test_labels_to_regions(convention, values, expected):
    regions = labels_to_regions(_label(values), convention)
    assert regions.shape == (3, 4, 1, 1) and regions.dtype == torch.float32
    assert regions[:, :, 0, 0].tolist() == expected


def test_msd_label_2_is_not_enhancing():
    """The reference code's mistake: MSD label 2 (non-enhancing tumour) is core, never ET."""
    regions = labels_to_regions(_label([2, 2]), "msd")
    assert regions[REGION_NAMES.index("ET")].sum() == 0 and regions[REGION_NAMES.index("TC")].sum() == 2


@pytest.mark.parametrize("convention, foreign", [("msd", 4), ("brats2021", 3)])
def test_a_value_of_the_other_convention_is_refused_naming_the_file(convention, foreign):
    label = MetaTensor(_label([0, 1, foreign]), meta={"filename_or_obj": "/data/case_007_seg.nii.gz"})
    with pytest.raises(ValueError, match=rf"case_007_seg\.nii\.gz.*\[{foreign}\].*other layout"):
        labels_to_regions(label, convention)


def test_regions_keep_the_metadata_of_the_label():
    affine = torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0]))
    label = MetaTensor(_label([0, 3]), affine=affine, meta={"filename_or_obj": "x.nii.gz"})
    regions = labels_to_regions(label, "msd")
    assert isinstance(regions, MetaTensor) and torch.equal(regions.affine, affine)
    assert regions.meta["filename_or_obj"] == "x.nii.gz"


@pytest.mark.parametrize("convention", ["msd", "brats2021"])
def test_regions_to_labels_inverts_labels_to_regions(convention):
    values = list(LABEL_CONVENTIONS[convention].values)
    label = _label(values * 3)
    back = regions_to_labels(labels_to_regions(label, convention), convention)
    assert back.dtype == torch.uint8 and back.shape == label.shape
    assert back.flatten().tolist() == label.flatten().int().tolist()


def test_regions_to_labels_nests_the_regions():
    """ET alone is still enhancing tumour; TC without WT is still core: WT ⊇ TC ⊇ ET is enforced."""
    regions = torch.zeros(3, 4, 1, 1)
    regions[2, 0] = 1.0  # ET only
    regions[0, 1] = 0.9  # TC only, as a probability
    regions[1, 2] = 0.7  # WT only
    regions[:, 3] = 0.2  # below the threshold everywhere
    assert regions_to_labels(regions, "msd").flatten().tolist() == [3, 2, 1, 0]
    assert regions_to_labels(regions, "brats2021").flatten().tolist() == [4, 1, 2, 0]


def test_regions_to_labels_needs_three_channels():
    with pytest.raises(ValueError, match="3 channels"):
        regions_to_labels(torch.zeros(2, 4, 4, 4), "msd")


def test_unknown_convention():
    with pytest.raises(ValueError, match="brats2023"):
        get_convention("brats2023")


def test_dictionary_transforms_follow_each_items_layout():
    to_regions = LabelToRegionsd("label", allow_missing_keys=True)
    msd = to_regions({"label": _label([0, 3, 1]), "layout": "msd"})
    brats = to_regions({"label": _label([0, 4, 2]), "layout": "brats2021"})
    assert torch.equal(msd["label"], brats["label"])
    assert "label" not in to_regions({"image": torch.zeros(1), "layout": "msd"})
    to_labels = RegionsToLabeld("pred")
    out = to_labels({"pred": brats["label"], "layout": "brats2021"})
    assert out["pred"].flatten().tolist() == [0, 4, 2]
    assert to_labels({"pred": msd["label"], "layout": ["msd"]})["pred"].flatten().tolist() == [0, 3, 1]  # collated


def test_dictionary_transform_without_a_layout():
    with pytest.raises(ValueError, match="'layout'"):
        LabelToRegionsd("label")({"label": _label([0, 1])})
    fixed = LabelToRegionsd("label", convention="brats2021")({"label": _label([0, 4])})
    assert fixed["label"][2].flatten().tolist() == [0.0, 1.0]


def test_channel_count_check_names_the_file():
    check = CheckChannelCountd("image", 4, ["FLAIR", "T1w", "T1gd", "T2w"])
    good = {"image": MetaTensor(torch.zeros(4, 5, 5, 5))}
    assert check(good)["image"] is good["image"]
    bad = MetaTensor(torch.zeros(3, 5, 5, 5), meta={"filename_or_obj": "/data/BRATS_009.nii.gz"})
    with pytest.raises(ValueError, match=r"BRATS_009\.nii\.gz' has 3 channel.*expected 4 \(FLAIR, T1w, T1gd, T2w\)"):
        check({"image": bad})
    with pytest.raises(ValueError, match="channel_names"):
        CheckChannelCountd("image", 4, ["FLAIR"])
