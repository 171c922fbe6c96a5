"""Data set validation, and the datalist commands that refuse bad data, on the real samples of ../shared/data and on
copies of them made bad in tmp_path."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from shared_networks.cli import prepare
from shared_networks.cli.validate import main
from shared_networks.data.brats import BRATS2021_SUFFIXES
from shared_networks.validation.datasets import validate_brats, validate_btcv, validate_cxr14
from shared_networks.validation.problems import ERROR, WARNING, DatasetError, ValidationReport


def _problems(report: ValidationReport, name: str, severity: str = ERROR) -> list[str]:
    """Messages of the problems of the file called ``name`` (any folder)."""
    return [p.message for p in report.problems if Path(p.path).name == name and p.severity == severity]


def _truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _save(data: np.ndarray, like: nib.Nifti1Image, path: Path, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, like.affine if affine is None else affine)
    img.set_data_dtype(data.dtype)
    nib.save(img, path)
    return path


# ---- BTCV ----


@pytest.fixture
def bad_btcv(shared_data, tmp_path) -> Path:
    """A tutorial-layout tree built from the real case 1, one problem per case."""
    real = shared_data("btcv")
    image, label = nib.load(real / "imagesTr" / "img0001.nii.gz"), nib.load(real / "labelsTr" / "label0001.nii.gz")
    ct, seg = np.asanyarray(image.dataobj), np.asanyarray(label.dataobj)
    root = tmp_path / "btcv"
    images, labels = root / "imagesTr", root / "labelsTr"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)

    def pair(n: int, img: Path | None = None, lab: Path | None = None) -> None:
        shutil.copy(img or real / "imagesTr" / "img0001.nii.gz", images / f"img{n:04d}.nii.gz")
        shutil.copy(lab or real / "labelsTr" / "label0001.nii.gz", labels / f"label{n:04d}.nii.gz")

    pair(1)  # good
    _truncate(real / "imagesTr" / "img0001.nii.gz", images / "img0002.nii.gz")  # header fine, data cut
    shutil.copy(real / "labelsTr" / "label0001.nii.gz", labels / "label0002.nii.gz")
    nan = ct.astype(np.float32)
    nan[10:12, 10:12, 5] = np.nan
    pair(3, img=_save(nan, image, tmp_path / "nan.nii.gz"))
    shifted = image.affine.copy()
    shifted[:3, 3] += 30.0
    pair(4, lab=_save(seg, label, tmp_path / "shifted.nii.gz", affine=shifted))
    pair(5, lab=_save(seg[:-10], label, tmp_path / "cropped.nii.gz"))
    wrong = seg.copy()
    wrong[0, 0, 0] = 20
    pair(6, lab=_save(wrong, label, tmp_path / "wrong_values.nii.gz"))
    shutil.copy(real / "imagesTr" / "img0001.nii.gz", images / "img0007.nii.gz")  # no label
    shutil.copy(real / "labelsTr" / "label0001.nii.gz", labels / "label0008.nii.gz")  # no image
    pair(9, img=_save(np.zeros_like(ct), image, tmp_path / "constant.nii.gz"))
    pair(10, img=_save(np.stack([ct, ct], axis=-1), image, tmp_path / "four_d.nii.gz"))
    pair(11, lab=_save(np.zeros_like(seg), label, tmp_path / "background.nii.gz"))
    coarse = image.affine.copy()
    coarse[:3, :3] *= 2.0
    pair(12, lab=_save(seg, label, tmp_path / "coarse.nii.gz", affine=coarse))
    (tmp_path / "junk.nii.gz").write_bytes(b"not a NIfTI file at all" * 20)
    pair(13, img=tmp_path / "junk.nii.gz")
    pair(14, img=_save(ct[:, :, 15], image, tmp_path / "slice.nii.gz"))
    return root


def test_real_btcv_is_valid(shared_data):
    report = validate_btcv(shared_data("btcv"))
    assert report.ok and not report.problems and report.num_files == 4, report.format()


def test_btcv_every_problem_is_reported(bad_btcv):
    report = validate_btcv(bad_btcv)
    text = report.format()
    assert not _problems(report, "img0001.nii.gz") and not _problems(report, "label0001.nii.gz")
    assert any("truncated or corrupt voxel data" in m for m in _problems(report, "img0002.nii.gz")), text
    assert any("not finite (4 NaN, 0 inf)" in m for m in _problems(report, "img0003.nii.gz")), text
    assert any("another origin or direction" in m for m in _problems(report, "label0004.nii.gz")), text
    assert any("spatial shape (112, 101, 30)" in m for m in _problems(report, "label0005.nii.gz")), text
    assert any("label values 20 are outside" in m for m in _problems(report, "label0006.nii.gz")), text
    assert any("has no label" in m for m in _problems(report, "img0007.nii.gz")), text
    assert any("has no image" in m for m in _problems(report, "label0008.nii.gz")), text
    assert any("constant image (every voxel 0)" in m for m in _problems(report, "img0009.nii.gz")), text
    assert any("is 4-D (shape (122, 101, 30, 2))" in m for m in _problems(report, "img0010.nii.gz")), text
    assert not _problems(report, "label0011.nii.gz")  # all background: a warning only
    assert any("no foreground" in m for m in _problems(report, "label0011.nii.gz", WARNING)), text
    assert any("voxel spacing (6.0, 6.0, 6.0)" in m for m in _problems(report, "label0012.nii.gz")), text
    assert any("is text, not a gzip-compressed NIfTI file" in m for m in _problems(report, "img0013.nii.gz")), text
    assert any("is 2-D" in m for m in _problems(report, "img0014.nii.gz")), text
    assert len(report.errors) == 12 and len(report.warnings) == 1, text
    assert all(Path(p.path).is_relative_to(bad_btcv) for p in report.problems)


def test_btcv_headers_only_miss_data_problems(bad_btcv):
    report = validate_btcv(bad_btcv, read_data=False)
    assert not _problems(report, "img0002.nii.gz") and not _problems(report, "img0003.nii.gz")
    assert _problems(report, "label0004.nii.gz") and _problems(report, "img0010.nii.gz")


def test_btcv_datalist_refused_and_nothing_written(bad_btcv, tmp_path, capsys):
    out = tmp_path / "datalist.json"
    with pytest.raises(DatasetError, match="img0002.nii.gz: truncated"):
        prepare.prepare_btcv(bad_btcv, out)
    assert not out.exists() and not list(tmp_path.glob(".datalist.json*"))
    out.write_text("previous\n")
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["btcv", "--dataset_dir", str(bad_btcv), "--output_json", str(out)])
    assert exit_info.value.code == 1 and out.read_text() == "previous\n"
    assert "12 error(s)" in capsys.readouterr().err


def test_btcv_datalist_written_with_warnings_only(shared_data, tmp_path, caplog):
    real = shared_data("btcv")
    root = tmp_path / "btcv"
    shutil.copytree(real, root)
    (root / "labelsTr" / "label0002.nii.gz").chmod(0o644)
    label = nib.load(real / "labelsTr" / "label0002.nii.gz")
    _save(np.zeros(label.shape, np.uint8), label, root / "labelsTr" / "label0002.nii.gz")
    out = prepare.prepare_btcv(root, tmp_path / "d.json", num_val=1)
    assert len(json.loads(out.read_text())["training"]) == 1
    assert "label0002.nii.gz: label map has no foreground" in caplog.text


def test_command_line_exit_status(shared_data, bad_btcv, tmp_path, capsys):
    main(["btcv", "--dataset_dir", str(shared_data("btcv"))])
    assert "0 error(s)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["btcv", "--dataset_dir", str(bad_btcv), "--report_json", str(tmp_path / "r.json"), "--max_shown", "2"])
    printed = capsys.readouterr().out
    assert exit_info.value.code == 1 and "... and 10 more error(s)" in printed
    saved = json.loads((tmp_path / "r.json").read_text())
    assert len(saved["errors"]) == 12 and saved["warnings"][0]["path"].endswith("label0011.nii.gz")


# ---- brain tumour MRI ----


def _crop(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """A 40x40x32 block of the real case around its tumour (small and fast), affine kept right by nibabel."""
    return img.slicer[28:68, 28:68, 88:120]


@pytest.fixture
def msd_parts(shared_data):
    real = shared_data("Task01_BrainTumour")
    image = _crop(nib.load(real / "imagesTr" / "BRATS_001.nii.gz"))
    label = _crop(nib.load(real / "labelsTr" / "BRATS_001.nii.gz"))
    return image, np.asanyarray(image.dataobj), label, np.asanyarray(label.dataobj)


def test_real_msd_is_valid(shared_data):
    report = validate_brats(shared_data("Task01_BrainTumour"))
    assert report.ok and not report.problems and report.num_files == 3 and report.dataset == "MSD Task01"


def test_msd_every_problem_is_reported(shared_data, msd_parts, tmp_path):
    image, mri, label, seg = msd_parts
    assert set(np.unique(seg)) == {0, 1, 2}  # real tumour labels in the block
    root = tmp_path / "msd"

    def case(n: int, img: np.ndarray = mri, lab: np.ndarray = seg, folder: str = "imagesTr") -> None:
        _save(img, image, root / folder / f"BRATS_{n:03d}.nii.gz")
        if folder == "imagesTr":
            _save(lab, label, root / "labelsTr" / f"BRATS_{n:03d}.nii.gz")

    case(1)
    case(2, img=mri[..., :3])  # a modality missing
    case(3, img=mri[..., 0])  # FLAIR only: 3-D
    et = seg.copy()
    et[seg == 2] = 4  # BraTS 2021 numbering in an MSD file
    case(4, lab=et)
    flat = mri.copy()
    flat[..., 2] = 0.0
    case(5, img=flat)
    inf = mri.copy()
    inf[0, 0, 0, 1] = np.inf
    case(6, img=inf)
    unlabelled = shared_data("Task01_BrainTumour") / "imagesTs" / "BRATS_002.nii.gz"
    _truncate(unlabelled, root / "imagesTs" / "BRATS_007.nii.gz")
    report = validate_brats(root)
    text = report.format()
    assert not _problems(report, "BRATS_001.nii.gz"), text
    assert any(
        "has 3 channels on its last axis" in m and "4 are needed" in m for m in _problems(report, "BRATS_002.nii.gz")
    ), text
    assert any(
        "is 3-D" in m and "must be 4-D with 4 channels (FLAIR, T1w, T1gd, T2w)" in m
        for m in _problems(report, "BRATS_003.nii.gz")
    ), text
    assert any(
        "label values 4 are outside the msd brain tumour set [0, 1, 2, 3]" in m
        for m in _problems(report, "BRATS_004.nii.gz")
    ), text
    assert any("channel 2 (T1gd) is constant" in m for m in _problems(report, "BRATS_005.nii.gz")), text
    assert any("(0 NaN, 1 inf)" in m for m in _problems(report, "BRATS_006.nii.gz")), text
    assert any("truncated or corrupt" in m for m in _problems(report, "BRATS_007.nii.gz")), text
    assert len(report.errors) == 6, text
    with pytest.raises(DatasetError, match="BRATS_002.nii.gz: has 3 channels"):
        prepare.prepare_brats(root, tmp_path / "d.json")
    assert not (tmp_path / "d.json").exists()


def test_brats2021_every_problem_is_reported(msd_parts, tmp_path):
    image, mri, label, seg = msd_parts
    brats_seg = np.select([seg == 1, seg == 2], [2, 1], 0).astype(np.uint8)  # MSD -> BraTS 2021 numbering
    root = tmp_path / "brats"
    for n in range(4):
        folder = root / f"BraTS2021_0000{n}"
        for c, suffix in enumerate(BRATS2021_SUFFIXES):
            if n == 1 and suffix == "t1ce":
                continue  # missing modality
            shifted = image.affine.copy()
            shifted[0, 3] += 5.0 if n == 2 and suffix == "t2" else 0.0
            _save(np.ascontiguousarray(mri[..., c]), image, folder / f"{folder.name}_{suffix}.nii.gz", affine=shifted)
        bad = brats_seg.copy()
        bad[0, 0, 0] = 3 if n == 3 else bad[0, 0, 0]  # 3 is not a BraTS 2021 label
        _save(bad, label, folder / f"{folder.name}_seg.nii.gz")
    report = validate_brats(root)
    text = report.format()
    assert report.dataset == "BraTS 2021"
    assert not [p for p in report.problems if "BraTS2021_00000" in p.path], text
    assert any("lacks BraTS2021_00001_t1ce.nii.gz" in p.message for p in report.errors), text
    assert any("has affine" in m for m in _problems(report, "BraTS2021_00002_t2.nii.gz")), text
    assert any(
        "label values 3 are outside the brats2021 brain tumour set [0, 1, 2, 4]" in m
        for m in _problems(report, "BraTS2021_00003_seg.nii.gz")
    ), text
    assert len(report.errors) == 3, text


def test_brats_datalist_file_is_checked(msd_parts, tmp_path):
    image, mri, label, seg = msd_parts
    _save(mri, image, tmp_path / "imagesTr" / "BRATS_001.nii.gz")
    _save(seg, label, tmp_path / "labelsTr" / "BRATS_001.nii.gz")
    _save(mri[..., :2], image, tmp_path / "other" / "two.nii.gz")
    _save(seg[:-1], label, tmp_path / "other" / "short.nii.gz")
    datalist = {
        "training": [
            {"image": "imagesTr/BRATS_001.nii.gz", "label": "labelsTr/BRATS_001.nii.gz"},
            {"image": "other/two.nii.gz", "label": "other/short.nii.gz"},
        ]
    }
    (tmp_path / "mine.json").write_text(json.dumps(datalist))
    report = validate_brats(tmp_path, datalist_file=tmp_path / "mine.json")
    assert len(report.errors) == 1 and "has 2 channels" in report.errors[0].message, report.format()


# ---- ChestX-ray14 ----


@pytest.fixture
def bad_cxr14(shared_data, tmp_path) -> Path:
    real = shared_data("chestxray14")
    rows = list(csv.DictReader((real / "Data_Entry_2017.csv").open(newline="")))
    grey = [r for r in rows if Image.open(real / "images" / r["Image Index"]).mode == "L"][:6]
    rgba = [r for r in rows if Image.open(real / "images" / r["Image Index"]).mode == "RGBA"][:1]
    keep = grey + rgba
    root = tmp_path / "cxr14"
    (root / "images").mkdir(parents=True)
    for r in keep:
        shutil.copy(real / "images" / r["Image Index"], root / "images" / r["Image Index"])
    names = [r["Image Index"] for r in keep]
    _truncate(real / "images" / names[0], root / "images" / names[0], 0.3)
    size = Image.open(root / "images" / names[1]).size
    Image.new("L", size, 7).save(root / "images" / names[1])
    (root / "images" / names[2]).unlink()  # listed, not on disk
    frames = [Image.open(real / "images" / names[3]).convert("L"), Image.new("L", size, 0)]
    frames[0].save(root / "images" / names[3], save_all=True, append_images=frames[1:])  # animated PNG
    with (root / "Data_Entry_2017.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in keep:
            if r["Image Index"] == names[4]:
                continue  # listed, no label row
            if r["Image Index"] == names[5]:
                r = {**r, "Finding Labels": "Cardiomegaly|Broken Heart"}
            writer.writerow(r)
    (root / "train_val_list.txt").write_text("\n".join(names[:5]) + "\n")
    (root / "test_list.txt").write_text("\n".join(names[5:]) + "\n")
    return root


def test_real_cxr14_is_valid(shared_data):
    report = validate_cxr14(shared_data("chestxray14"))
    assert report.ok and not report.problems and report.num_files == 470, report.format()


def test_cxr14_every_problem_is_reported(bad_cxr14, tmp_path):
    names = (bad_cxr14 / "train_val_list.txt").read_text().split() + (bad_cxr14 / "test_list.txt").read_text().split()
    report = validate_cxr14(bad_cxr14)
    text = report.format()
    assert any("truncated or corrupt image" in m for m in _problems(report, names[0])), text
    assert any("constant image (every pixel 7)" in m for m in _problems(report, names[1])), text
    assert any("not on disk" in m for m in _problems(report, names[2])), text
    assert any("holds 2 frames" in m for m in _problems(report, names[3])), text
    assert any("has no row in 'Data_Entry_2017.csv'" in m for m in _problems(report, names[4])), text
    assert any("unknown finding 'Broken Heart'" in m for m in _problems(report, "Data_Entry_2017.csv")), text
    assert not _problems(report, names[6])  # a real RGBA radiograph: a quirk the pipeline handles
    assert len(report.errors) == 7, text  # names[5] also has no row left (its row is the bad one)
    with pytest.raises(DatasetError, match="truncated or corrupt image"):
        prepare.prepare_cxr14(bad_cxr14, tmp_path / "d.json")
    assert not (tmp_path / "d.json").exists()
    skipped = validate_cxr14(bad_cxr14, missing="skip")
    assert any("not on disk (left out)" in m for m in _problems(skipped, names[2], WARNING))
    assert len(skipped.errors) == 6


@pytest.mark.parametrize("validate", [validate_btcv, validate_brats, validate_cxr14])
def test_a_file_given_as_the_data_set_is_one_reported_error(validate, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    report = validate(tmp_path / "file.txt")
    assert len(report.errors) == 1 and "file.txt'" in report.errors[0].message  # one error naming it, no exception
