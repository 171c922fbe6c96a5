"""Tests of the ChestX-ray14 datalists (:mod:`shared_networks.data.cxr14`), on hand-made trees and the real sample."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Compose, LoadImaged
from PIL import Image

from shared_networks.data.cxr14 import (
    CXR14_FINDINGS,
    cxr14_datalist,
    find_cxr14_images,
    list_xray_inputs,
    read_cxr14_labels,
    write_cxr14_datalist,
)
from shared_networks.data.radiographs import CheckedPILReader, ToGreyd

HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)


def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(path)  # not constant: passes validation
    return path


def _nih_tree(
    root: Path,
    rows: list[tuple[str, str, int]],
    train_val: list[str],
    test: list[str],
    on_disk: list[str] | None = None,
    folder: str = "images",
    csv_name: str = "Data_Entry_2017.csv",
) -> Path:
    """NIH layout: ``rows`` are (image, finding labels, patient); ``on_disk`` defaults to every listed image."""
    lines = [HEADER] + [f"{name},{labels},0,{patient},50,M,PA,2500,2048,0.143,0.143" for name, labels, patient in rows]
    root.mkdir(parents=True, exist_ok=True)
    (root / csv_name).write_text("\n".join(lines) + "\n")
    (root / "train_val_list.txt").write_text("".join(f"{n}\n" for n in train_val))
    (root / "test_list.txt").write_text("".join(f"{n}\n" for n in test))
    for name in train_val + test if on_disk is None else on_disk:
        _png(root / folder / name)
    return root


def _patients(n: int, per_patient: int = 2) -> list[tuple[str, str, int]]:
    """Rows of ``n`` patients with ``per_patient`` images each, findings cycling through the 14 and No Finding."""
    names = [*CXR14_FINDINGS, "No Finding"]
    return [(f"{p:08d}_{k:03d}.png", names[(p + k) % 15], p) for p in range(1, n + 1) for k in range(per_patient)]


@pytest.fixture
def tree(tmp_path) -> Path:
    rows = _patients(20)
    names = [r[0] for r in rows]
    return _nih_tree(tmp_path / "nih", rows, train_val=names[:32], test=names[32:])


def test_labels_follow_the_standard_order(tmp_path):
    rows = [("a.png", "No Finding", 1), ("b.png", "Hernia|Atelectasis", 2), ("c.png", "Pleural_Thickening", 2)]
    root = _nih_tree(tmp_path, rows, ["a.png", "b.png"], ["c.png"])
    labels = read_cxr14_labels(root / "Data_Entry_2017.csv")
    assert labels["a.png"] == ([0.0] * 14, "1")
    assert labels["b.png"][0] == [1.0] + [0.0] * 12 + [1.0] and labels["b.png"][1] == "2"
    assert labels["c.png"][0][CXR14_FINDINGS.index("Pleural_Thickening")] == 1.0
    assert CXR14_FINDINGS[:3] == ("Atelectasis", "Cardiomegaly", "Effusion") and CXR14_FINDINGS[-1] == "Hernia"


@pytest.mark.parametrize(
    "labels, message",
    [
        ("Pneumonia|Covid", r"row 2 \(a\.png\): unknown finding 'Covid'"),
        ("No Finding|Mass", "together with"),
        ("", "empty image name or finding labels"),
    ],
)
def test_bad_label_rows_name_the_file_and_row(tmp_path, labels, message):
    root = _nih_tree(tmp_path, [("a.png", labels, 1)], ["a.png"], [])
    with pytest.raises(ValueError, match=message) as err:
        read_cxr14_labels(root / "Data_Entry_2017.csv")
    assert "Data_Entry_2017.csv" in str(err.value)


def test_bad_label_files(tmp_path):
    (tmp_path / "x.csv").write_text("Image,Labels\na.png,Mass\n")
    with pytest.raises(ValueError, match=r"x\.csv' lacks the column\(s\) \['Image Index', 'Finding Labels', 'Patient"):
        read_cxr14_labels(tmp_path / "x.csv")
    (tmp_path / "y.csv").write_text(HEADER + "\na.png,Mass,0,1\na.png,Edema,1,1\n")
    with pytest.raises(ValueError, match=r"row 3 \(a\.png\): image listed twice"):
        read_cxr14_labels(tmp_path / "y.csv")
    with pytest.raises(FileNotFoundError, match="z.csv"):
        read_cxr14_labels(tmp_path / "z.csv")


def test_patient_wise_seeded_split(tree):
    datalist = cxr14_datalist(tree, val_fraction=0.25, seed=0)
    assert {k: len(v) for k, v in datalist.items()} == {"training": 24, "validation": 8, "test": 8, "pretrain": 24}
    patients = {k: {i["patient"] for i in datalist[k]} for k in ("training", "validation", "test")}
    assert len(patients["validation"]) == 4 and not patients["training"] & patients["validation"]
    assert [i["image"] for i in datalist["pretrain"]] == [i["image"] for i in datalist["training"]]
    assert all(Path(i["image"]).is_absolute() and Path(i["image"]).is_file() for v in datalist.values() for i in v)
    assert datalist["test"][0]["image"].endswith("00000017_000.png")  # test_list.txt, in its order
    item = datalist["training"][0]
    assert item["label"] == [1.0 if f == CXR14_FINDINGS[1] else 0.0 for f in CXR14_FINDINGS]  # patient 1, image 0
    assert cxr14_datalist(tree, val_fraction=0.25, seed=0) == datalist  # same seed, same split
    other = cxr14_datalist(tree, val_fraction=0.25, seed=1)
    assert {i["patient"] for i in other["validation"]} != patients["validation"]
    assert len(cxr14_datalist(tree, num_val=1)["validation"]) == 2


def test_missing_images_error_or_skip(tmp_path, caplog):
    rows = _patients(6)
    names = [r[0] for r in rows]
    absent = [names[1], names[10]]
    root = _nih_tree(tmp_path, rows, names[:8], names[8:], on_disk=[n for n in names if n not in absent])
    with pytest.raises(FileNotFoundError) as err:
        cxr14_datalist(root)
    assert (
        all(n in str(err.value) for n in absent)
        and "2 image(s)" in str(err.value)
        and "missing='skip'" in str(err.value)
    )
    with caplog.at_level(logging.WARNING, logger="shared_networks.data.cxr14"):
        datalist = cxr14_datalist(root, missing="skip")
    assert "2 of 12 listed images are not on disk" in caplog.text
    kept = {Path(i["image"]).name for k in ("training", "validation", "test") for i in datalist[k]}
    assert kept == set(names) - set(absent)


def test_nih_download_folders_and_v2020_csv(tmp_path):
    rows = _patients(4)
    names = [r[0] for r in rows]
    root = _nih_tree(
        tmp_path,
        rows,
        names[:6],
        names[6:],
        on_disk=names[:4],
        folder="images_001/images",
        csv_name="Data_Entry_2017_v2020.csv",
    )
    for n in names[4:]:
        _png(root / "images_002" / "images" / n)
    found = find_cxr14_images(root)
    assert sorted(found) == sorted(names) and found[names[5]].parent.parent.name == "images_002"
    assert len(cxr14_datalist(root)["test"]) == 2
    _png(root / "images" / names[0])  # the same image in two folders
    with pytest.raises(ValueError, match=f"image {names[0]} is in two folders"):
        find_cxr14_images(root)


def test_inconsistent_split_files(tmp_path):
    rows = _patients(3)
    names = [r[0] for r in rows]
    with pytest.raises(ValueError, match="share images"):
        cxr14_datalist(_nih_tree(tmp_path / "a", rows, names[:4], names[3:]))
    with pytest.raises(ValueError, match=r"1 listed image\(s\) have no row in .*: extra\.png"):
        cxr14_datalist(_nih_tree(tmp_path / "b", rows, names[:4] + ["extra.png"], names[4:]))
    with pytest.raises(ValueError, match="need at least 2"):
        cxr14_datalist(_nih_tree(tmp_path / "c", rows, names[:2], names[2:]))
    (tmp_path / "a" / "test_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="test_list.txt"):
        cxr14_datalist(tmp_path / "a")
    with pytest.raises(ValueError, match="missing must be one of"):
        cxr14_datalist(tmp_path / "b", missing="ignore")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        cxr14_datalist(tmp_path / "nowhere")


def test_split_files_must_be_patient_wise_and_not_empty(tmp_path):
    rows = _patients(4)
    names = [r[0] for r in rows]
    with pytest.raises(ValueError, match=r"1 patient\(s\) have images in both .*train_val_list.txt' and .*: 3;"):
        cxr14_datalist(_nih_tree(tmp_path / "a", rows, names[:5], names[5:]))  # patient 3: image 4 and image 5
    with pytest.raises(ValueError, match=r"test_list\.txt' holds no image"):
        cxr14_datalist(_nih_tree(tmp_path / "b", rows, names, []))


def test_written_datalist_reads_back(tree, tmp_path):
    path = write_cxr14_datalist(tree, tmp_path / "datalist.json", val_fraction=0.25, seed=3)
    content = json.loads(path.read_text())
    assert content["validation"][0]["image"].startswith("images/")  # relative to the dataset folder
    assert cxr14_datalist(tree, datalist_file=path) == cxr14_datalist(tree, val_fraction=0.25, seed=3)
    content["validation"].append(content["training"][0])
    (tmp_path / "leak.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match="in both 'training' and 'validation'"):
        cxr14_datalist(tree, datalist_file=tmp_path / "leak.json")
    content["validation"].pop()
    content["test"].append({"image": "images/gone.png", "label": [0.0] * 14})
    (tmp_path / "gone.json").write_text(json.dumps(content))
    with pytest.raises(FileNotFoundError, match="gone.png"):
        cxr14_datalist(tree, datalist_file=tmp_path / "gone.json")


def test_list_xray_inputs(tmp_path):
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "scan").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)  # DICOM without a suffix
    assert [Path(p).name for p in list_xray_inputs(tmp_path)] == ["a.JPG", "b.png", "scan"]
    assert list_xray_inputs(tmp_path / "b.png") == [str(tmp_path / "b.png")]
    with pytest.raises(ValueError, match="notes.txt is not a supported image"):
        list_xray_inputs(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_xray_inputs(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image in"):
        list_xray_inputs(tmp_path / "empty")


# ---- the real sample (../shared/data/chestxray14): 470 NIH images with their original label rows ----


def test_real_datalist(shared_data):
    root = shared_data("chestxray14")
    datalist = cxr14_datalist(root)
    assert {k: len(v) for k, v in datalist.items()} == {"training": 323, "validation": 36, "test": 111, "pretrain": 323}
    patients = {k: {i["patient"] for i in datalist[k]} for k in ("training", "validation", "test")}
    assert (
        not patients["training"] & patients["validation"]
        and not (patients["training"] | patients["validation"]) & patients["test"]
    )
    with open(root / "Data_Entry_2017.csv", newline="") as f:
        rows = {r["Image Index"]: r for r in csv.DictReader(f)}
    for item in datalist["training"] + datalist["validation"] + datalist["test"]:
        row = rows[Path(item["image"]).name]
        findings = {CXR14_FINDINGS[j] for j, v in enumerate(item["label"]) if v == 1.0}
        assert findings == set(row["Finding Labels"].split("|")) - {"No Finding"}
        assert item["patient"] == row["Patient ID"]
    assert (np.array([i["label"] for i in datalist["test"]]).sum(0) > 0).all()  # every finding occurs in the test set


def test_real_images_all_load_to_one_grey_channel(shared_data):
    """Every real image, 8-bit grey and the 5 RGBA ones, 256^2 and 1024^2, loads to (1, W, H) float32 in [0, 1]."""
    root = shared_data("chestxray14")
    load = Compose(
        [
            LoadImaged("image", reader=CheckedPILReader, image_only=True, ensure_channel_first=True, dtype=None),
            ToGreyd("image"),
        ]
    )
    modes, sizes = {}, set()
    for path in sorted((root / "images").glob("*.png")):
        img = load({"image": str(path)})["image"]
        modes[img.meta["source"]] = modes.get(img.meta["source"], 0) + 1
        sizes.add(tuple(img.shape))
        assert img.dtype == torch.float32 and img.shape[0] == 1, path.name
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0 and float(img.max()) > 0.5, path.name
    assert modes == {"PIL L": 465, "PIL RGBA": 5} and sizes == {(1, 256, 256), (1, 1024, 1024)}
    rgba = Image.open(root / "images" / "00005813_000.png")
    assert rgba.mode == "RGBA"
    np.testing.assert_allclose(
        load({"image": str(rgba.filename)})["image"][0].numpy().T,
        np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0,
        atol=1 / 255,
    )
