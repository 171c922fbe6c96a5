"""What stands at a data set path (:mod:`shared_networks.validation.filetypes`): FIFOs, folders and devices are named
without being opened, and content that is not the format of the file's name is named by what it is."""

from __future__ import annotations

import gzip
import io
import os
import re
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from shared_networks.validation.datasets import validate_btcv, validate_cxr14
from shared_networks.validation.filetypes import content_problem, describe_content, file_problem
from shared_networks.validation.problems import ValidationReport
from shared_networks.validation.workflow import check_split

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="os.mkfifo is POSIX only")
needs_dev_zero = pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero on this system")


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()``, failing the test (instead of hanging it) when it has not returned in time: opening a FIFO blocks."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = fn()
        except Exception as err:  # re-raised in the test's thread
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: a FIFO was opened for reading"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _messages(report: ValidationReport, path: Path) -> list[str]:
    return [p.message for p in report.errors if Path(p.path) == path]


def _png(path: Path, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(path, format=fmt)
    return path


def _nifti(path: Path, value: int = 0) -> Path:
    """A 6x6x4 map of BTCV label values, not constant: a valid BTCV image and label."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = ((np.arange(144) + value) % 14).reshape(6, 6, 4).astype(np.uint8)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _btcv(root: Path, cases: tuple[int, ...] = (1, 2)) -> Path:
    for n in cases:
        _nifti(root / "imagesTr" / f"img{n:04d}.nii.gz")
        _nifti(root / "labelsTr" / f"label{n:04d}.nii.gz", n)
    return root


def _cxr14(root: Path) -> tuple[Path, list[str]]:
    """NIH layout: 4 images of 2 patients in train_val_list.txt, 2 images of a third in test_list.txt."""
    names = [f"0000000{p}_00{k}.png" for p in (1, 2, 3) for k in (0, 1)]
    rows = [f"{n},No Finding,0,{n[7]},50,M,PA,8,8,0.1,0.1" for n in names]
    root.mkdir(parents=True)
    (root / "Data_Entry_2017.csv").write_text(
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n" + "\n".join(rows) + "\n"
    )
    (root / "train_val_list.txt").write_text("\n".join(names[:4]) + "\n")
    (root / "test_list.txt").write_text("\n".join(names[4:]) + "\n")
    for name in names:
        _png(root / "images" / name)
    return root, names


# ---- file_problem: what stands at a path, never opened ----


@needs_fifo
def test_fifo_folder_and_broken_link_are_named(tmp_path: Path) -> None:
    fifo = tmp_path / "a.nii.gz"
    os.mkfifo(fifo)
    (tmp_path / "b.nii.gz").mkdir()
    (tmp_path / "c.nii.gz").symlink_to(tmp_path / "nowhere.nii.gz")
    (tmp_path / "d.png").symlink_to(fifo)
    assert _within(10, lambda: file_problem(fifo)) == "is a FIFO, not a regular file"
    assert file_problem(tmp_path / "b.nii.gz") == "is a folder, not a regular file"
    assert (
        file_problem(tmp_path / "c.nii.gz") == f"missing file: a symbolic link to '{tmp_path / 'nowhere.nii.gz'}'"
        ", which does not exist"
    )
    assert file_problem(tmp_path / "d.png") == f"is a FIFO, not a regular file (a symbolic link to '{fifo}')"
    assert file_problem(tmp_path / "absent.png") == "missing file"
    assert file_problem(_png(tmp_path / "e.png")) is None


@needs_dev_zero
def test_link_to_a_device_is_named(tmp_path: Path) -> None:
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    message = file_problem(tmp_path / "zero.png")
    assert message == "is a character device, not a regular file (a symbolic link to '/dev/zero')"


# ---- content_problem: magic bytes against the name ----


def test_jpeg_named_png_and_png_named_jpeg(tmp_path: Path) -> None:
    assert content_problem(_png(tmp_path / "a.png", "JPEG")) == "is JPEG data, not PNG"
    assert content_problem(_png(tmp_path / "b.jpg", "PNG")) == "is PNG data, not JPEG"
    assert content_problem(_png(tmp_path / "c.PNG")) is None
    assert content_problem(_png(tmp_path / "d.jpeg", "JPEG")) is None
    (tmp_path / "e.png").write_bytes(b"")
    assert content_problem(tmp_path / "e.png") == "is an empty file, not PNG"
    (tmp_path / "f.png").write_bytes(b"BMP-like text: BM stands for bitmap\n")
    assert content_problem(tmp_path / "f.png") == "is text, not PNG"


def test_nifti_files_that_are_not_what_their_name_says(tmp_path: Path) -> None:
    assert content_problem(_nifti(tmp_path / "good.nii.gz")) is None
    assert content_problem(_nifti(tmp_path / "g.nii")) is None
    (tmp_path / "text.nii.gz").write_text("this is not a NIfTI file\n")
    assert content_problem(tmp_path / "text.nii.gz") == "is text, not a gzip-compressed NIfTI file (.nii.gz)"
    (tmp_path / "plain.nii.gz").write_bytes((tmp_path / "g.nii").read_bytes())
    assert content_problem(tmp_path / "plain.nii.gz") == (
        "is NIfTI-1 data, not a gzip-compressed NIfTI file (.nii.gz): compress it with gzip or rename it to .nii"
    )
    (tmp_path / "zipped.nii").write_bytes((tmp_path / "good.nii.gz").read_bytes())
    assert content_problem(tmp_path / "zipped.nii") == (
        "is gzip-compressed data, not an uncompressed NIfTI file (.nii): rename it to .nii.gz"
    )
    (tmp_path / "csv.nii.gz").write_bytes(gzip.compress(b"a,b,c\n1,2,3\n"))
    assert content_problem(tmp_path / "csv.nii.gz") == (
        "is gzip-compressed text, not a gzip-compressed NIfTI file (.nii.gz): its first bytes are not a NIfTI header"
    )
    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, format="PNG")
    (tmp_path / "png.nii").write_bytes(buffer.getvalue())
    assert content_problem(tmp_path / "png.nii") == "is PNG data, not an uncompressed NIfTI file (.nii)"
    assert content_problem(_png(tmp_path / "other.txt")) is None  # no expectation for other names


def test_nifti2_and_big_endian_headers_are_nifti(tmp_path: Path) -> None:
    nib.save(nib.Nifti2Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.eye(4)), tmp_path / "two.nii")
    assert describe_content((tmp_path / "two.nii").read_bytes()) == "NIfTI-2 data"
    assert content_problem(tmp_path / "two.nii") is None
    (tmp_path / "big.nii").write_bytes(struct.pack(">i", 348) + bytes(344) + b"n+1\0")  # sizeof_hdr, big-endian
    assert content_problem(tmp_path / "big.nii") is None


# ---- the data set checks name them ----


@needs_fifo
def test_btcv_fifo_folder_and_text_in_place_of_images(tmp_path: Path) -> None:
    root = _btcv(tmp_path / "btcv", (1, 2, 3, 4))
    (root / "imagesTr" / "img0002.nii.gz").unlink()
    os.mkfifo(root / "imagesTr" / "img0002.nii.gz")
    (root / "imagesTr" / "img0003.nii.gz").unlink()
    (root / "imagesTr" / "img0003.nii.gz").mkdir()
    (root / "labelsTr" / "label0004.nii.gz").write_text("label map lost\n")
    report = _within(60, lambda: validate_btcv(root, num_workers=1))
    assert "is a FIFO, not a regular file" in _messages(report, root / "imagesTr" / "img0002.nii.gz"), report.format()
    assert "is a folder, not a regular file" in _messages(report, root / "imagesTr" / "img0003.nii.gz")
    assert _messages(report, root / "labelsTr" / "label0004.nii.gz") == [
        "is text, not a gzip-compressed NIfTI file (.nii.gz)"
    ]


@needs_fifo
def test_fifo_split_files_and_datalist_items_are_named(tmp_path: Path) -> None:
    root = _btcv(tmp_path / "btcv")
    os.mkfifo(root / "dataset_0.json")
    report = _within(60, lambda: validate_btcv(root))
    assert _messages(report, root / "dataset_0.json") == ["is a FIFO, not a regular file"], report.format()
    cxr, _ = _cxr14(tmp_path / "cxr")
    (cxr / "test_list.txt").unlink()
    os.mkfifo(cxr / "test_list.txt")
    report = _within(60, lambda: validate_cxr14(cxr))
    assert _messages(report, cxr / "test_list.txt") == ["is a FIFO, not a regular file"], report.format()
    fifo = tmp_path / "in.nii.gz"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=re.escape(f"{fifo}: is a FIFO, not a regular file")):
        _within(
            60,
            lambda: check_split([{"image": str(fifo), "label": str(root / "labelsTr" / "label0001.nii.gz")}], "btcv"),
        )


@needs_dev_zero
def test_cxr14_link_to_dev_zero_and_jpeg_named_png(tmp_path: Path) -> None:
    root, names = _cxr14(tmp_path / "cxr")
    (root / "images" / names[1]).unlink()
    (root / "images" / names[1]).symlink_to("/dev/zero")
    _png(root / "images" / names[4], "JPEG")
    report = _within(60, lambda: validate_cxr14(root))
    assert _messages(report, root / "images" / names[1]) == [
        "is a character device, not a regular file (a symbolic link to '/dev/zero')"
    ], report.format()
    assert _messages(report, root / "images" / names[4]) == ["is JPEG data, not PNG"]
    assert len(report.errors) == 2
    skipped = validate_cxr14(root, missing="skip")  # not absent: still an error, not a left-out image
    assert _messages(skipped, root / "images" / names[1]) and not skipped.warnings
