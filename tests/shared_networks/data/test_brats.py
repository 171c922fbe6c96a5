"""Tests of the brain tumour datalists (:mod:`shared_networks.data.brats`): layouts, folds, header checks."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from shared_networks.data.brats import (
    BRATS2021_SUFFIXES,
    brats_datalist,
    brats_inference_inputs,
    case_name_formatter,
    check_case,
    find_brats_cases,
    fold_split,
    write_brats_datalist,
)

AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


def _nifti(path: Path, shape: tuple[int, ...] = (6, 6, 5), affine: np.ndarray = AFFINE, dtype=np.float32) -> Path:
    """Write a small NIfTI file of ``shape`` (values 0, 1, 2: not constant, valid labels in both conventions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (np.arange(int(np.prod(shape))) % 3).reshape(shape).astype(dtype)
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _msd_tree(root: Path, labelled: Iterable[int], unlabelled: Iterable[int] = ()) -> Path:
    for n in labelled:
        _nifti(root / "imagesTr" / f"BRATS_{n:03d}.nii.gz", (6, 6, 5, 4))
        _nifti(root / "labelsTr" / f"BRATS_{n:03d}.nii.gz", dtype=np.uint8)
    for n in unlabelled:
        _nifti(root / "imagesTs" / f"BRATS_{n:03d}.nii.gz", (6, 6, 5, 4))
    return root


def _brats_case(root: Path, n: int, labelled: bool = True, skip: str | None = None) -> Path:
    case = f"BraTS2021_{n:05d}"
    for suffix in (*BRATS2021_SUFFIXES, "seg") if labelled else BRATS2021_SUFFIXES:
        if suffix != skip:
            _nifti(root / case / f"{case}_{suffix}.nii.gz", dtype=np.uint8 if suffix == "seg" else np.int16)
    return root / case


def _cases(items: list[dict]) -> list[str]:
    return [item["case"] for item in items]


# ---- fold split ----


def test_every_case_is_tested_once_over_the_folds():
    cases = [f"c{i}" for i in range(12)]
    tests, validations = [], []
    for fold in range(5):
        training, validation, test = fold_split(cases, fold, 5, seed=3)
        assert sorted(training + validation + test) == sorted(cases)
        assert not set(training) & set(validation) and not set(validation) & set(test)
        assert len(test) in (2, 3) and len(validation) in (2, 3)
        tests.append(test)
        validations.append(validation)
    assert sorted(sum(tests, [])) == sorted(cases)
    assert all(validations[k] == tests[(k + 1) % 5] for k in range(5))  # validation = the next fold
    assert fold_split(cases, 2, 5, seed=3) == fold_split(cases, 2, 5, seed=3)
    assert fold_split(cases, 2, 5, seed=3) != fold_split(cases, 2, 5, seed=4)


@pytest.mark.parametrize(
    "n, sizes",
    [(0, (0, 0, 0)), (1, (1, 0, 0)), (2, (1, 1, 0)), (3, (1, 1, 1)), (4, (2, 1, 1)), (5, (3, 1, 1))],
)
def test_small_sets_degrade_gracefully(n, sizes):
    for fold in range(5):
        training, validation, test = fold_split(list(range(n)), fold, 5, seed=0)
        assert (len(training), len(validation), len(test)) == sizes
        assert sorted(training + validation + test) == list(range(n))


@pytest.mark.parametrize("kwargs", [dict(fold=5), dict(fold=-1), dict(num_folds=2, fold=0), dict(fold=1.0)])
def test_bad_fold_arguments(kwargs):
    with pytest.raises(ValueError, match="fold"):
        fold_split(list(range(10)), **kwargs)


# ---- MSD layout ----


def test_msd_layout(tmp_path):
    _msd_tree(tmp_path, range(1, 8), unlabelled=[485, 486])
    (tmp_path / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"macOS resource fork in the MSD tar")
    labelled, unlabelled, layout = find_brats_cases(tmp_path)
    assert layout == "msd" and _cases(labelled) == [f"BRATS_{n:03d}" for n in range(1, 8)]
    assert labelled[0] == {
        "image": str(tmp_path / "imagesTr" / "BRATS_001.nii.gz"),
        "label": str(tmp_path / "labelsTr" / "BRATS_001.nii.gz"),
        "case": "BRATS_001",
        "layout": "msd",
    }
    assert _cases(unlabelled) == ["BRATS_485", "BRATS_486"] and "label" not in unlabelled[0]
    datalist = brats_datalist(tmp_path, fold=1, seed=0)
    evaluation = set(_cases(datalist["validation"] + datalist["test"]))
    assert _cases(datalist["pretrain"]) == _cases(datalist["training"])  # default: the training split alone
    assert datalist == brats_datalist(tmp_path, fold=1, seed=0)
    extra = brats_datalist(tmp_path, fold=1, seed=0, pretrain_extra_images=True)
    assert _cases(extra["pretrain"]) == _cases(datalist["training"]) + ["BRATS_485", "BRATS_486"]
    assert not evaluation & set(_cases(extra["pretrain"]))
    assert {k: v for k, v in extra.items() if k != "pretrain"} == {k: v for k, v in datalist.items() if k != "pretrain"}


def test_real_msd_sample(shared_data):
    """The real Task01 sample: one labelled case, one unlabelled imagesTs image that is in pretrain only when asked."""
    root = shared_data("Task01_BrainTumour")
    datalist = brats_datalist(root)
    assert _cases(datalist["training"]) == ["BRATS_001"] and not datalist["validation"] and not datalist["test"]
    assert _cases(datalist["pretrain"]) == ["BRATS_001"]
    datalist = brats_datalist(root, pretrain_extra_images=True)
    assert _cases(datalist["pretrain"]) == ["BRATS_001", "BRATS_002"]
    unlabelled = [i for i in datalist["pretrain"] if i["case"] == "BRATS_002"][0]
    assert unlabelled["image"].endswith("imagesTs/BRATS_002.nii.gz") and unlabelled["layout"] == "msd"
    assert all(i["image"] != unlabelled["image"] for k in ("training", "validation", "test") for i in datalist[k])


def test_msd_image_without_label(tmp_path):
    _msd_tree(tmp_path, [1, 2])
    (tmp_path / "labelsTr" / "BRATS_002.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"imagesTr/BRATS_002\.nii\.gz' has no label"):
        find_brats_cases(tmp_path)


@pytest.mark.parametrize("shape", [(6, 6, 5, 3), (6, 6, 5)])
def test_msd_image_with_wrong_channels_names_the_file(tmp_path, shape):
    _msd_tree(tmp_path, [1, 2])
    _nifti(tmp_path / "imagesTr" / "BRATS_002.nii.gz", shape)
    with pytest.raises(ValueError, match=r"BRATS_002\.nii\.gz' has shape .*4-D with 4 channels"):
        brats_datalist(tmp_path)


def test_msd_label_on_another_grid_names_the_file(tmp_path):
    _msd_tree(tmp_path, [1])
    _nifti(tmp_path / "labelsTr" / "BRATS_001.nii.gz", (6, 6, 4))
    with pytest.raises(ValueError, match=r"labelsTr/BRATS_001\.nii\.gz' has spatial shape \(6, 6, 4\)"):
        find_brats_cases(tmp_path)


# ---- BraTS 2021 layout ----


@pytest.mark.parametrize("release_folder", ["", "RSNA_ASNR_MICCAI_BraTS2021_TrainingData_16July2021"])
def test_brats2021_layout(tmp_path, release_folder):
    base = tmp_path / release_folder
    for n in range(4):
        _brats_case(base, n)
    _brats_case(base, 1001, labelled=False)
    labelled, unlabelled, layout = find_brats_cases(tmp_path)
    assert layout == "brats2021" and _cases(labelled) == [f"BraTS2021_{n:05d}" for n in range(4)]
    case = base / "BraTS2021_00000"
    assert labelled[0] == {
        "image": [str(case / f"BraTS2021_00000_{s}.nii.gz") for s in ("flair", "t1", "t1ce", "t2")],  # MSD order
        "label": str(case / "BraTS2021_00000_seg.nii.gz"),
        "case": "BraTS2021_00000",
        "layout": "brats2021",
    }
    assert _cases(unlabelled) == ["BraTS2021_01001"]
    datalist = brats_datalist(tmp_path)
    assert [len(datalist[k]) for k in ("training", "validation", "test")] == [2, 1, 1]
    assert _cases(datalist["pretrain"]) == _cases(datalist["training"])
    datalist = brats_datalist(tmp_path, pretrain_extra_images="true")
    assert _cases(datalist["pretrain"]) == _cases(datalist["training"]) + ["BraTS2021_01001"]
    assert not set(_cases(datalist["pretrain"])) & set(_cases(datalist["validation"] + datalist["test"]))


def test_brats2021_missing_modality_names_the_file(tmp_path):
    _brats_case(tmp_path, 0)
    _brats_case(tmp_path, 1, skip="t2")
    with pytest.raises(ValueError, match=r"BraTS2021_00001' lacks BraTS2021_00001_t2\.nii\.gz"):
        brats_datalist(tmp_path)


@pytest.mark.parametrize(
    "shape, affine, message",
    [
        ((6, 6, 4), AFFINE, r"BraTS2021_00000_t1ce\.nii\.gz' has spatial shape \(6, 6, 4\) but .*_flair\.nii\.gz"),
        ((6, 6, 5), np.diag([1.0, 1.0, 1.0, 1.0]), r"BraTS2021_00000_t1ce\.nii\.gz' has affine"),
        ((6, 6, 5, 2), AFFINE, r"BraTS2021_00000_t1ce\.nii\.gz' has shape \(6, 6, 5, 2\).*must be 3-D"),
    ],
)
def test_brats2021_modalities_on_different_grids_name_the_file(tmp_path, shape, affine, message):
    case = _brats_case(tmp_path, 0)
    _nifti(case / "BraTS2021_00000_t1ce.nii.gz", shape, affine)
    with pytest.raises(ValueError, match=message):
        find_brats_cases(tmp_path)


def test_check_case_needs_four_files(tmp_path):
    case = _brats_case(tmp_path, 0)
    with pytest.raises(ValueError, match="3 files"):
        check_case({"image": [str(p) for p in sorted(case.glob("*_t*.nii.gz"))]})
    with pytest.raises(FileNotFoundError, match="nothing.nii.gz"):
        check_case({"image": str(tmp_path / "nothing.nii.gz")})


def test_no_case(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no brain tumour case"):
        find_brats_cases(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_brats_cases(tmp_path / "absent")


# ---- datalist files ----


def test_datalist_file_round_trip(tmp_path):
    for n in range(6):
        _brats_case(tmp_path / "data", n)
    _brats_case(tmp_path / "data", 1001, labelled=False)
    written = write_brats_datalist(tmp_path / "data", tmp_path / "split.json", fold=2)
    content = json.loads(written.read_text())
    first = content["training"][0]
    assert isinstance(first["image"], list) and not Path(first["image"][0]).is_absolute()
    assert first["image"][0].endswith("_flair.nii.gz") and not Path(first["label"]).is_absolute()
    again = brats_datalist(tmp_path / "data", datalist_file=written)
    assert again == brats_datalist(tmp_path / "data", fold=2)


def test_datalist_file_layout_is_inferred_and_checked(tmp_path):
    _msd_tree(tmp_path, [1, 2, 3])
    _brats_case(tmp_path, 7)
    brats = [f"BraTS2021_00007/BraTS2021_00007_{s}.nii.gz" for s in BRATS2021_SUFFIXES]
    split = {
        "training": [
            {"image": "imagesTr/BRATS_001.nii.gz", "label": "labelsTr/BRATS_001.nii.gz"},
            {"image": brats, "label": "BraTS2021_00007/BraTS2021_00007_seg.nii.gz"},
        ],
        "validation": [{"image": "imagesTr/BRATS_002.nii.gz", "label": "labelsTr/BRATS_002.nii.gz"}],
        "test": [{"image": "imagesTr/BRATS_003.nii.gz", "label": "labelsTr/BRATS_003.nii.gz", "case": "third"}],
    }
    (tmp_path / "split.json").write_text(json.dumps(split))
    datalist = brats_datalist(tmp_path, datalist_file=tmp_path / "split.json")
    assert [i["layout"] for i in datalist["training"]] == ["msd", "brats2021"]
    assert _cases(datalist["training"]) == ["BRATS_001", "BraTS2021_00007"] and _cases(datalist["test"]) == ["third"]
    assert _cases(datalist["pretrain"]) == _cases(datalist["training"])  # default: the training images

    split["pretrain"] = ["imagesTr/BRATS_003.nii.gz"]
    (tmp_path / "leak.json").write_text(json.dumps(split))
    with pytest.raises(ValueError, match=r"BRATS_003\.nii\.gz' is in both 'pretrain' and 'test'"):
        brats_datalist(tmp_path, datalist_file=tmp_path / "leak.json")

    split["pretrain"] = [{"image": brats[:3]}]
    (tmp_path / "three.json").write_text(json.dumps(split))
    with pytest.raises(ValueError, match="3 files"):
        brats_datalist(tmp_path, datalist_file=tmp_path / "three.json")

    split["pretrain"] = [{"image": "imagesTr/BRATS_001.nii.gz", "layout": "brats2023"}]
    (tmp_path / "bad.json").write_text(json.dumps(split))
    with pytest.raises(ValueError, match=r"bad\.json': entry 0 of 'pretrain'"):
        brats_datalist(tmp_path, datalist_file=tmp_path / "bad.json")


# ---- inference inputs ----


def test_inference_inputs(tmp_path):
    _msd_tree(tmp_path / "msd", [1], unlabelled=[485])
    case = _brats_case(tmp_path / "brats", 3)
    single = brats_inference_inputs(tmp_path / "msd" / "imagesTs" / "BRATS_485.nii.gz")
    assert single == [{"image": str(tmp_path / "msd/imagesTs/BRATS_485.nii.gz"), "case": "BRATS_485", "layout": "msd"}]
    folder = brats_inference_inputs(case)
    assert folder[0]["layout"] == "brats2021" and len(folder[0]["image"]) == 4 and "label" not in folder[0]
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "BRATS_485.nii.gz").symlink_to(tmp_path / "msd" / "imagesTs" / "BRATS_485.nii.gz")
    (mixed / "BraTS2021_00003").symlink_to(case)
    assert [i["layout"] for i in brats_inference_inputs(mixed)] == ["msd", "brats2021"]


def test_inference_inputs_are_checked(tmp_path):
    three = _nifti(tmp_path / "three.nii.gz", (6, 6, 5, 3))
    with pytest.raises(ValueError, match=r"three\.nii\.gz' has shape \(6, 6, 5, 3\)"):
        brats_inference_inputs(three)
    with pytest.raises(ValueError, match=r"BraTS2021_00004' lacks BraTS2021_00004_t2\.nii\.gz"):
        brats_inference_inputs(_brats_case(tmp_path / "b", 4, skip="t2"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a NIfTI"):
        brats_inference_inputs(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no case found"):
        brats_inference_inputs(tmp_path / "empty")


def test_case_name_formatter():
    def name(path: str) -> str:
        return case_name_formatter({"filename_or_obj": path}, None)["subject"]

    assert name("/d/BraTS2021_00001/BraTS2021_00001_flair.nii.gz") == "BraTS2021_00001"
    assert name("/d/imagesTs/BRATS_485.nii.gz") == "BRATS_485"
