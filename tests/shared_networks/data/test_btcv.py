"""Tests of the BTCV datalists (:mod:`shared_networks.data.btcv`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from shared_networks.data.btcv import (
    BTCV_LABELS,
    TRANSUNET_TEST_CASES,
    btcv_datalist,
    find_btcv_cases,
    write_btcv_datalist,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
REAL_BTCV = REPO_ROOT.parent / "shared" / "data" / "btcv"
LABELLED_BTCV_CASES = (*range(1, 11), *range(21, 41))  # the 30 labelled cases of the Synapse download


def _nifti(path: Path, value: int = 0) -> Path:
    """Write a tiny 4x4x4 NIfTI file (not constant, values in the BTCV label set: it passes validation)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ((np.arange(64) + value) % 14).reshape(4, 4, 4).astype(np.uint8)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _tutorial_tree(
    root: Path, cases: Iterable[int], unlabelled: Iterable[int] = (), width: int = 4
) -> dict[int, tuple[Path, Path]]:
    """Tutorial layout: imagesTr/imgNNNN, labelsTr/labelNNNN, imagesTs/imgNNNN."""
    files = {}
    for n in cases:
        files[n] = (
            _nifti(root / "imagesTr" / f"img{n:0{width}d}.nii.gz"),
            _nifti(root / "labelsTr" / f"label{n:04d}.nii.gz", n),
        )
    for n in unlabelled:
        _nifti(root / "imagesTs" / f"img{n:04d}.nii.gz")
    return files


def _synapse_tree(root: Path, cases: Iterable[int], unlabelled: Iterable[int] = (), raw_data: bool = True) -> Path:
    """Synapse layout: [RawData/]Training/img, Training/label, Testing/img."""
    base = root / "RawData" if raw_data else root
    for n in cases:
        _nifti(base / "Training" / "img" / f"img{n:04d}.nii.gz")
        _nifti(base / "Training" / "label" / f"label{n:04d}.nii.gz", n)
    for n in unlabelled:
        _nifti(base / "Testing" / "img" / f"img{n:04d}.nii.gz")
    return base


def _numbers(items: list[dict[str, str]]) -> list[int]:
    """Case numbers of datalist items."""
    return [int(item["case"][3:]) for item in items]


def test_constants() -> None:
    assert len(BTCV_LABELS) == 14 and BTCV_LABELS[0] == "background" and BTCV_LABELS[6] == "liver"
    assert BTCV_LABELS[13] == "left adrenal gland"
    assert len(TRANSUNET_TEST_CASES) == 12
    assert set(TRANSUNET_TEST_CASES) <= set(LABELLED_BTCV_CASES)


def test_tutorial_layout_pairs_by_case_number(tmp_path: Path) -> None:
    # Images without zero padding sort as img10, img2, img3, labels as label0002, label0003, label0010: pairing by
    # sorted order would mismatch them.
    files = _tutorial_tree(tmp_path, [2, 3, 10], unlabelled=[61, 62], width=1)
    (tmp_path / "imagesTr" / "notes.txt").write_text("not an image")
    labelled, unlabelled = find_btcv_cases(tmp_path)
    assert [item["case"] for item in labelled] == ["img2", "img3", "img10"]
    for item, n in zip(labelled, [2, 3, 10], strict=True):
        assert item["image"] == str(files[n][0].resolve())
        assert item["label"] == str(files[n][1].resolve())
        assert Path(item["image"]).is_absolute()
    assert [item["case"] for item in unlabelled] == ["img0061", "img0062"]
    assert all(set(item) == {"image", "case"} for item in unlabelled)


@pytest.mark.parametrize("raw_data", [True, False])
def test_synapse_layout(tmp_path: Path, raw_data: bool) -> None:
    base = _synapse_tree(tmp_path, [5, 1, 3], unlabelled=[70, 61], raw_data=raw_data)
    labelled, unlabelled = find_btcv_cases(tmp_path)
    assert [item["case"] for item in labelled] == ["img0001", "img0003", "img0005"]
    assert labelled[0]["label"] == str((base / "Training" / "label" / "label0001.nii.gz").resolve())
    assert [item["case"] for item in unlabelled] == ["img0061", "img0070"]


def test_image_without_label_names_the_image(tmp_path: Path) -> None:
    _tutorial_tree(tmp_path, [1, 2])
    orphan = _nifti(tmp_path / "imagesTr" / "img0007.nii.gz")
    with pytest.raises(ValueError, match="img0007.nii.gz") as err:
        find_btcv_cases(tmp_path)
    assert "no label" in str(err.value) and str(orphan.parent) in str(err.value)


def test_label_without_image_names_the_label(tmp_path: Path) -> None:
    _synapse_tree(tmp_path, [1, 2])
    _nifti(tmp_path / "RawData" / "Training" / "label" / "label0009.nii.gz")
    with pytest.raises(ValueError, match="label0009.nii.gz.*no image"):
        find_btcv_cases(tmp_path)


def test_missing_label_folder(tmp_path: Path) -> None:
    _nifti(tmp_path / "imagesTr" / "img0001.nii.gz")
    with pytest.raises(FileNotFoundError, match="labelsTr"):
        find_btcv_cases(tmp_path)


def test_no_case_found_describes_layouts(tmp_path: Path) -> None:
    (tmp_path / "something").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        find_btcv_cases(tmp_path)
    message = str(err.value)
    assert str(tmp_path.resolve()) in message and "imagesTr" in message and "RawData/Training/img" in message
    (tmp_path / "imagesTr").mkdir()
    with pytest.raises(FileNotFoundError, match="No BTCV case"):
        find_btcv_cases(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        btcv_datalist(tmp_path / "absent")


def test_seeded_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    _tutorial_tree(tmp_path, range(1, 21), unlabelled=[61, 62, 63])
    first = btcv_datalist(tmp_path, seed=3)
    assert first == btcv_datalist(tmp_path, seed=3)
    assert set(first) == {"training", "validation", "test", "pretrain"}
    assert (len(first["training"]), len(first["validation"]), len(first["test"])) == (12, 4, 4)
    train, val, test = (set(_numbers(first[k])) for k in ("training", "validation", "test"))
    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(1, 21))
    assert first["pretrain"] == [{"image": i["image"], "case": i["case"]} for i in first["training"]]  # default
    extra = btcv_datalist(tmp_path, seed=3, pretrain_extra_images=True)
    pretrain = {item["image"] for item in extra["pretrain"]}
    assert not pretrain & {item["image"] for item in first["validation"] + first["test"]}
    assert pretrain == {item["image"] for item in first["training"]} | {
        str((tmp_path / "imagesTs" / f"img{n:04d}.nii.gz").resolve()) for n in (61, 62, 63)
    }
    assert all(set(item) == {"image", "label", "case"} for item in first["training"] + first["validation"])
    assert all(Path(item["image"]).is_absolute() and Path(item["label"]).is_absolute() for item in first["test"])
    assert _numbers(first["training"]) == sorted(_numbers(first["training"]))
    other = btcv_datalist(tmp_path, seed=4)
    assert _numbers(other["test"]) != _numbers(first["test"]) or _numbers(other["validation"]) != _numbers(
        first["validation"]
    )


def test_seeded_split_options(tmp_path: Path) -> None:
    _tutorial_tree(tmp_path, range(1, 11))
    datalist = btcv_datalist(tmp_path, num_val=3, test_fraction=0.1)
    assert (len(datalist["training"]), len(datalist["validation"]), len(datalist["test"])) == (6, 3, 1)
    datalist = btcv_datalist(tmp_path, val_fraction=0.0, test_fraction=0.0)
    assert (len(datalist["training"]), len(datalist["validation"]), len(datalist["test"])) == (10, 0, 0)
    with pytest.raises(ValueError, match="num_val=9 leaves no training case"):
        btcv_datalist(tmp_path, num_val=9)
    with pytest.raises(ValueError, match="val_fraction"):
        btcv_datalist(tmp_path, val_fraction=1.5)
    with pytest.raises(ValueError, match="below 1"):
        btcv_datalist(tmp_path, val_fraction=0.5, test_fraction=0.5)


@pytest.mark.parametrize(("n_cases", "expected"), [(1, (1, 0, 0)), (2, (1, 1, 0)), (3, (1, 1, 1)), (4, (2, 1, 1))])
def test_seeded_split_with_few_cases(tmp_path: Path, n_cases: int, expected: tuple[int, int, int]) -> None:
    _tutorial_tree(tmp_path, range(1, n_cases + 1))
    datalist = btcv_datalist(tmp_path, seed=1)
    assert (len(datalist["training"]), len(datalist["validation"]), len(datalist["test"])) == expected


def test_transunet_split(tmp_path: Path) -> None:
    _synapse_tree(tmp_path, LABELLED_BTCV_CASES, unlabelled=range(61, 64))
    datalist = btcv_datalist(tmp_path, split="transunet", seed=0)
    assert _numbers(datalist["test"]) == list(TRANSUNET_TEST_CASES)
    rest = _numbers(datalist["training"]) + _numbers(datalist["validation"])
    assert len(rest) == 18 and sorted(rest) == sorted(set(LABELLED_BTCV_CASES) - set(TRANSUNET_TEST_CASES))
    assert len(datalist["validation"]) == 4  # round(0.2 * 18)
    assert len(datalist["pretrain"]) == 14  # the training cases; Testing/img only with pretrain_extra_images
    assert len(btcv_datalist(tmp_path, split="transunet", seed=0, pretrain_extra_images=True)["pretrain"]) == 14 + 3
    assert datalist == btcv_datalist(tmp_path, split="transunet", seed=0)
    no_val = btcv_datalist(tmp_path, split="transunet", num_val=0)
    assert len(no_val["training"]) == 18 and no_val["validation"] == []
    assert _numbers(btcv_datalist(tmp_path, split="transunet", num_val=2)["validation"]) != []


def test_dataset_json_split(tmp_path: Path) -> None:
    _tutorial_tree(tmp_path, range(1, 5), unlabelled=[61])
    with pytest.raises(ValueError, match="dataset_0.json"):
        btcv_datalist(tmp_path, split="dataset_json")
    content = {
        "training": [
            {"image": f"imagesTr/img000{n}.nii.gz", "label": f"labelsTr/label000{n}.nii.gz"} for n in (1, 2, 4)
        ],
        "validation": [{"image": "imagesTr/img0003.nii.gz", "label": "labelsTr/label0003.nii.gz"}],
        "test": ["imagesTs/img0061.nii.gz", "imagesTs/img0099.nii.gz"],
    }
    (tmp_path / "dataset_0.json").write_text(json.dumps(content))
    datalist = btcv_datalist(tmp_path, split="dataset_json")
    assert _numbers(datalist["training"]) == [1, 2, 4]
    assert _numbers(datalist["validation"]) == [3]
    assert datalist["test"] == []
    assert _numbers(datalist["pretrain"]) == [1, 2, 4]
    datalist = btcv_datalist(tmp_path, split="dataset_json", pretrain_extra_images=True)
    assert _numbers(datalist["pretrain"]) == [1, 2, 4, 61]  # the missing img0099 is left out


def test_dataset_json_split_refuses_outside_paths_and_empty_lists(tmp_path: Path) -> None:
    _tutorial_tree(tmp_path / "btcv", range(1, 4))
    _nifti(tmp_path / "elsewhere" / "img0009.nii.gz")
    root = tmp_path / "btcv"
    training = [{"image": f"imagesTr/img000{n}.nii.gz", "label": f"labelsTr/label000{n}.nii.gz"} for n in (1, 2)]
    validation = [{"image": "imagesTr/img0003.nii.gz", "label": "labelsTr/label0003.nii.gz"}]
    for image in ("../elsewhere/img0009.nii.gz", str(tmp_path / "elsewhere" / "img0009.nii.gz")):
        outside = [*training, {"image": image, "label": "labelsTr/label0001.nii.gz"}]
        (root / "dataset_0.json").write_text(json.dumps({"training": outside, "validation": validation}))
        with pytest.raises(ValueError, match=r"dataset_0\.json': entry 2 of 'training' names the image .*outside the"):
            btcv_datalist(root, split="dataset_json")
    (root / "dataset_0.json").write_text(json.dumps({"training": training, "validation": []}))
    with pytest.raises(ValueError, match=r"the 'validation' list of '.*dataset_0\.json' holds no image"):
        btcv_datalist(root, split="dataset_json")
    assert len(btcv_datalist(root, split="seeded")["training"]) == 1  # the other splits do not read the file


def test_unknown_split(tmp_path: Path) -> None:
    _tutorial_tree(tmp_path, [1, 2, 3])
    with pytest.raises(ValueError, match="'random'.*'seeded', 'transunet', 'dataset_json'"):
        btcv_datalist(tmp_path, split="random")


def test_datalist_file_with_missing_files(tmp_path: Path) -> None:
    _tutorial_tree(tmp_path, [1, 2])
    datalist_file = tmp_path / "my_datalist.json"
    content = {
        "training": [{"image": "imagesTr/img0001.nii.gz", "label": "labelsTr/label0001.nii.gz"}],
        "validation": [{"image": "imagesTr/img0005.nii.gz", "label": "labelsTr/label0005.nii.gz"}],
    }
    datalist_file.write_text(json.dumps(content))
    with pytest.raises(FileNotFoundError) as err:
        btcv_datalist(tmp_path, datalist_file=datalist_file)
    message = str(err.value)
    assert "my_datalist.json" in message and "img0005.nii.gz" in message and "label0005.nii.gz" in message


def test_datalist_file_defaults_and_checks(tmp_path: Path) -> None:
    _tutorial_tree(tmp_path, [1, 2, 3])
    datalist_file = tmp_path / "lists.json"
    datalist_file.write_text(
        json.dumps({"training": [{"image": "imagesTr/img0001.nii.gz", "label": "labelsTr/label0001.nii.gz"}]})
    )
    datalist = btcv_datalist(tmp_path, datalist_file=datalist_file)
    assert datalist["validation"] == [] and datalist["test"] == []
    assert datalist["pretrain"] == [
        {"image": str((tmp_path / "imagesTr" / "img0001.nii.gz").resolve()), "case": "img0001"}
    ]

    item = {"image": "imagesTr/img0002.nii.gz", "label": "labelsTr/label0002.nii.gz"}
    datalist_file.write_text(json.dumps({"training": [item], "validation": [item]}))
    with pytest.raises(ValueError, match="lists.json.*both 'training' and 'validation'"):
        btcv_datalist(tmp_path, datalist_file=datalist_file)
    datalist_file.write_text(json.dumps({"validation": [item], "pretrain": ["imagesTr/img0002.nii.gz"]}))
    with pytest.raises(ValueError, match="both 'pretrain' and 'validation'"):
        btcv_datalist(tmp_path, datalist_file=datalist_file)
    datalist_file.write_text(json.dumps({"training": [{"image": "imagesTr/img0001.nii.gz"}]}))
    with pytest.raises(ValueError, match="lists.json.*entry 0 of 'training'"):
        btcv_datalist(tmp_path, datalist_file=datalist_file)
    datalist_file.write_text("{not json")
    with pytest.raises(ValueError, match="lists.json.*not valid JSON"):
        btcv_datalist(tmp_path, datalist_file=datalist_file)
    with pytest.raises(FileNotFoundError, match="absent.json"):
        btcv_datalist(tmp_path, datalist_file=tmp_path / "absent.json")


def test_write_btcv_datalist_round_trips(tmp_path: Path) -> None:
    dataset = tmp_path / "btcv"
    _synapse_tree(dataset, range(1, 8), unlabelled=[61, 62])
    output = tmp_path / "out" / "datalist.json"
    written = write_btcv_datalist(dataset, output, split="seeded", seed=2, pretrain_extra_images=True)
    assert written == output.resolve() and output.is_file()
    assert [p.name for p in output.parent.iterdir()] == ["datalist.json"]  # no temporary file left
    content = json.loads(output.read_text())
    assert content["training"][0]["image"].startswith("RawData/Training/img/")
    assert content["pretrain"][-1] == {"image": "RawData/Testing/img/img0062.nii.gz", "case": "img0062"}
    expected = btcv_datalist(dataset, split="seeded", seed=2, pretrain_extra_images=True)
    assert btcv_datalist(dataset, datalist_file=output, pretrain_extra_images=True) == expected
    # the file's extra images are read only with pretrain_extra_images
    assert btcv_datalist(dataset, datalist_file=output) == btcv_datalist(dataset, split="seeded", seed=2)
    write_btcv_datalist(dataset, output, split="seeded", seed=2, pretrain_extra_images=True)  # overwrite in place
    assert json.loads(output.read_text()) == content
    with pytest.raises(ValueError, match="is a folder"):
        write_btcv_datalist(dataset, tmp_path / "out")


def test_real_btcv_folder() -> None:
    if not (REAL_BTCV / "imagesTr").is_dir():
        pytest.skip(f"real BTCV sample folder {REAL_BTCV} is absent")
    labelled, unlabelled = find_btcv_cases(REAL_BTCV)
    assert [item["case"] for item in labelled] == ["img0001", "img0002"]
    assert unlabelled == []
    for item in labelled:
        assert Path(item["label"]).name == item["case"].replace("img", "label") + ".nii.gz"
        assert nib.load(item["image"]).shape == nib.load(item["label"]).shape
    datalist = btcv_datalist(REAL_BTCV, split="dataset_json")
    assert _numbers(datalist["training"]) == [1] and _numbers(datalist["validation"]) == [2]
    assert [item["image"] for item in datalist["pretrain"]] == [labelled[0]["image"]]
    seeded = btcv_datalist(REAL_BTCV)
    assert (len(seeded["training"]), len(seeded["validation"]), len(seeded["test"])) == (1, 1, 0)
