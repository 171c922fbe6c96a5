"""Crafted and careless data sets: the checker returns a report naming each bad file, and never raises."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from pathlib import Path

import pytest

from shared_networks.validation.datasets import validate_brats, validate_btcv, validate_cxr14
from shared_networks.validation.problems import ERROR, Problem, ValidationReport, check_items

NIFTI_DIM_OFFSET = 40  # int16 dim[8] of a NIfTI-1 header


def _messages(report: ValidationReport, name: str) -> list[str]:
    return [p.message for p in report.errors if Path(p.path).name == name or f"{name}'" in p.message]


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())  # a writable copy of a read-only sample
    return dst


@pytest.fixture
def btcv(shared_data, tmp_path: Path) -> Path:
    """The real BTCV case 1, twice (cases 1 and 2), in a writable folder."""
    src, root = shared_data("btcv"), tmp_path / "btcv"
    for n in (1, 2):
        _copy(src / "imagesTr" / "img0001.nii.gz", root / "imagesTr" / f"img000{n}.nii.gz")
        _copy(src / "labelsTr" / "label0001.nii.gz", root / "labelsTr" / f"label000{n}.nii.gz")
    return root


def _set_dims(path: Path, dims: tuple[int, ...]) -> None:
    """Rewrite the header's dim[1..] of a .nii.gz in place, leaving the voxel data as stored."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    ndim = struct.unpack_from("<h", raw, NIFTI_DIM_OFFSET)[0]
    assert ndim == len(dims)
    struct.pack_into(f"<{len(dims)}h", raw, NIFTI_DIM_OFFSET + 2, *dims)
    path.write_bytes(gzip.compress(bytes(raw)))


def test_huge_declared_shape_is_reported_not_read(btcv: Path) -> None:
    image = btcv / "imagesTr" / "img0002.nii.gz"
    _set_dims(image, (32767, 32767, 32767))  # 3.5e13 voxels declared in a 0.4 MB file
    report = validate_btcv(btcv)
    messages = _messages(report, "img0002.nii.gz")
    assert any("more than the limit" in m and "max_voxels" in m for m in messages), report.format()
    assert not _messages(report, "img0001.nii.gz")  # the other case is still checked, and fine
    # with no practical limit, the size check (before any voxel is read) still catches it: no MemoryError
    unlimited = validate_btcv(btcv, max_voxels=1 << 62)
    assert any("header and content disagree" in m for m in _messages(unlimited, "img0002.nii.gz")), unlimited.format()


@pytest.mark.parametrize(("dims", "expected"), [((122, 101, 29), "bytes more"), ((122, 101, 31), "truncated")])
def test_header_and_content_sizes_must_agree(btcv: Path, dims: tuple[int, ...], expected: str) -> None:
    label = btcv / "labelsTr" / "label0002.nii.gz"
    _set_dims(label, dims)
    report = validate_btcv(btcv)
    messages = _messages(report, "label0002.nii.gz")
    assert any(expected in m and "header and content disagree" in m for m in messages), report.format()


def test_truncated_gzip_is_named(btcv: Path) -> None:
    image = btcv / "imagesTr" / "img0002.nii.gz"
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    report = validate_btcv(btcv)
    assert any("truncated or corrupt" in m for m in _messages(report, "img0002.nii.gz")), report.format()
    assert len(report.errors) == 1


def test_symlink_out_of_the_data_set_is_reported_not_followed(btcv: Path, tmp_path: Path) -> None:
    outside = _copy(btcv / "imagesTr" / "img0002.nii.gz", tmp_path / "elsewhere" / "secret.nii.gz")
    link = btcv / "imagesTr" / "img0002.nii.gz"
    link.unlink()
    link.symlink_to(outside)
    report = validate_btcv(btcv)
    messages = _messages(report, "img0002.nii.gz")
    assert any("symbolic link" in m and "secret.nii.gz" in m and "outside the data set" in m for m in messages)
    inside = btcv / "imagesTr" / "img0003.nii.gz"  # a link within the data set is fine
    inside.symlink_to(btcv / "imagesTr" / "img0001.nii.gz")
    _copy(btcv / "labelsTr" / "label0001.nii.gz", btcv / "labelsTr" / "label0003.nii.gz")
    assert not _messages(validate_btcv(btcv), "img0003.nii.gz")


def test_bad_split_json_is_named(btcv: Path) -> None:
    (btcv / "dataset_0.json").write_bytes('{"name": "Bé"}'.encode("latin-1"))
    report = validate_btcv(btcv)
    assert any("not UTF-8" in m and "latin-1" in m for m in _messages(report, "dataset_0.json")), report.format()


@pytest.mark.parametrize("validate", [validate_btcv, validate_brats, validate_cxr14])
def test_missing_folder_is_one_clear_problem(validate, tmp_path: Path) -> None:
    report = validate(tmp_path / "nowhere")
    assert len(report.problems) == 1 and "does not exist" in report.problems[0].message
    assert report.problems[0].path.endswith("nowhere")


def test_missing_folder_with_a_datalist_names_the_folder(tmp_path: Path) -> None:
    report = validate_btcv(tmp_path / "nowhere", datalist_file=tmp_path / "d.json")
    assert len(report.errors) == 1 and report.errors[0].path.endswith("nowhere")


# ---- MSD Task01 ----


@pytest.fixture
def msd(shared_data, tmp_path: Path) -> Path:
    src, root = shared_data("Task01_BrainTumour"), tmp_path / "msd"
    _copy(src / "labelsTr" / "BRATS_001.nii.gz", root / "labelsTr" / "BRATS_001.nii.gz")
    _copy(src / "imagesTr" / "BRATS_001.nii.gz", root / "imagesTr" / "BRATS_001.nii.gz")
    _copy(src / "dataset.json", root / "dataset.json")
    return root


def test_reordered_msd_modalities_are_reported(msd: Path) -> None:
    assert validate_brats(msd, read_data=False).ok  # the real dataset.json: FLAIR, T1w, t1gd, T2w
    content = json.loads((msd / "dataset.json").read_text())
    content["modality"] = {"0": "T1w", "1": "t1gd", "2": "T2w", "3": "FLAIR"}
    (msd / "dataset.json").write_text(json.dumps(content))
    report = validate_brats(msd, read_data=False)
    messages = _messages(report, "dataset.json")
    assert any("'T1w', 't1gd', 'T2w', 'FLAIR'" in m and "FLAIR', 'T1w', 'T1gd', 'T2w'" in m for m in messages)


def test_msd_dataset_json_with_bom_and_bad_encoding(msd: Path) -> None:
    text = (msd / "dataset.json").read_text()
    (msd / "dataset.json").write_bytes(b"\xef\xbb\xbf" + text.encode())  # utf-8-sig is accepted
    assert validate_brats(msd, read_data=False).ok
    (msd / "dataset.json").write_bytes(text.encode("utf-16"))
    report = validate_brats(msd, read_data=False)
    assert any("UTF-16" in m for m in _messages(report, "dataset.json")), report.format()


def test_huge_4d_header_is_reported(msd: Path) -> None:
    image = msd / "imagesTr" / "BRATS_001.nii.gz"
    _set_dims(image, (32767, 32767, 32767, 4))
    report = validate_brats(msd)
    assert any("max_voxels" in m for m in _messages(report, "BRATS_001.nii.gz")), report.format()


# ---- ChestX-ray14 ----


@pytest.fixture
def cxr(shared_data, tmp_path: Path) -> Path:
    """Six real radiographs (4 train_val, 2 test) with their real CSV rows."""
    src, root = shared_data("chestxray14"), tmp_path / "cxr"
    train_val = src.joinpath("train_val_list.txt").read_text().split()[:4]
    test = src.joinpath("test_list.txt").read_text().split()[:2]
    for name in train_val + test:
        _copy(src / "images" / name, root / "images" / name)
    lines = src.joinpath("Data_Entry_2017.csv").read_text().splitlines()
    rows = [lines[0]] + [line for line in lines[1:] if line.split(",")[0] in train_val + test]
    (root / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    return root


def _names(root: Path) -> list[str]:
    return (root / "train_val_list.txt").read_text().split() + (root / "test_list.txt").read_text().split()


def _png_declaring(path: Path, width: int, height: int) -> None:
    """Rewrite a PNG's IHDR to declare another size (valid CRC): a tiny file that decodes to a huge image."""
    raw = bytearray(path.read_bytes())
    struct.pack_into(">II", raw, 16, width, height)
    struct.pack_into(">I", raw, 29, zlib.crc32(bytes(raw[12:29])))
    path.write_bytes(bytes(raw))


def test_real_subset_is_valid(cxr: Path) -> None:
    report = validate_cxr14(cxr)
    assert report.ok and report.num_files == 6, report.format()


def test_decompression_bomb_png_is_reported(cxr: Path) -> None:
    name = _names(cxr)[1]
    _png_declaring(cxr / "images" / name, 30000, 30000)
    assert (cxr / "images" / name).stat().st_size < 1 << 20
    report = validate_cxr14(cxr)
    assert any("30000 x 30000" in m and "max_pixels" in m for m in _messages(report, name)), report.format()
    assert len(report.errors) == 1  # the other images are checked and fine
    # above our limit but refused by PIL itself: still a reported problem, never an exception
    lenient = validate_cxr14(cxr, max_pixels=1 << 40)
    assert any("decompression bomb" in m for m in _messages(lenient, name)), lenient.format()


def test_text_files_with_bom_are_accepted_and_latin1_is_named(cxr: Path) -> None:
    csv_path, split = cxr / "Data_Entry_2017.csv", cxr / "train_val_list.txt"
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes())
    assert validate_cxr14(cxr).ok
    csv_path.write_bytes(
        csv_path.read_bytes().replace(b"\xef\xbb\xbf", b"") + "x.png,Mass,0,9,1,M,PA,1,1,1,1,é\n".encode("latin-1")
    )
    split.write_text("\n".join(_names(cxr)[:4]), encoding="utf-16")
    report = validate_cxr14(cxr)
    assert any("not UTF-8" in m and "line" in m for m in _messages(report, "Data_Entry_2017.csv")), report.format()
    assert any("UTF-16" in m for m in _messages(report, "train_val_list.txt")), report.format()


def test_blank_patient_id_is_reported(cxr: Path) -> None:
    csv_path = cxr / "Data_Entry_2017.csv"
    lines = csv_path.read_text().splitlines()
    fields = lines[2].split(",")
    fields[3] = " "
    lines[2] = ",".join(fields)
    csv_path.write_text("\n".join(lines) + "\n")
    report = validate_cxr14(cxr)
    assert any("row 3" in m and "empty Patient ID" in m for m in _messages(report, "Data_Entry_2017.csv"))


def test_bad_csv_header_hides_no_other_problem(cxr: Path) -> None:
    csv_path = cxr / "Data_Entry_2017.csv"
    csv_path.write_text(csv_path.read_text().replace("Patient ID", "PatientID", 1))
    truncated = cxr / "images" / _names(cxr)[0]
    truncated.write_bytes(truncated.read_bytes()[:300])
    report = validate_cxr14(cxr)
    assert any("lacks the column" in m for m in _messages(report, "Data_Entry_2017.csv")), report.format()
    assert any("truncated or corrupt" in m for m in _messages(report, truncated.name)), report.format()


def test_symlinked_png_outside_is_reported(cxr: Path, tmp_path: Path) -> None:
    name = _names(cxr)[0]
    outside = _copy(cxr / "images" / name, tmp_path / "outside.png")
    (cxr / "images" / name).unlink()
    (cxr / "images" / name).symlink_to(outside)
    report = validate_cxr14(cxr)
    assert any("symbolic link" in m and "outside.png" in m for m in _messages(report, name)), report.format()


def test_one_failing_check_never_stops_the_others() -> None:
    def check(item: str) -> tuple[list[Problem], int]:
        if item == "b":
            raise MemoryError("cannot allocate")
        return [], 1

    report = ValidationReport("test", "/")
    check_items(report, ["a", "b", "c"], check, num_workers=2)
    assert report.num_files == 3 and [p.path for p in report.problems] == ["b"]
    assert report.problems[0].severity == ERROR and "MemoryError" in report.problems[0].message
