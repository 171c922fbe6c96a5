"""Loader errors in a workflow name their file: :class:`shared_networks.CheckedLoadImaged`."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import pytest
from monai.transforms import Compose, LoadImaged

import shared_networks
from shared_networks import CheckedLoadImaged, CheckedPILReader, ImageReadError, btcv_datalist


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())
    return dst


def test_exported_for_configs() -> None:
    assert {"CheckedLoadImaged", "ImageReadError"} <= set(shared_networks.__all__)


def test_same_output_as_load_imaged(shared_data) -> None:
    src = shared_data("btcv")
    item = {"image": str(src / "imagesTr" / "img0001.nii.gz"), "label": str(src / "labelsTr" / "label0001.nii.gz")}
    ours = CheckedLoadImaged(["image", "label"], ensure_channel_first=True, image_only=True)(item)
    theirs = LoadImaged(["image", "label"], ensure_channel_first=True, image_only=True)(item)
    for key in ("image", "label"):
        assert ours[key].shape == theirs[key].shape and bool((ours[key] == theirs[key]).all())
    with_meta = CheckedLoadImaged("image", image_only=False)(item)
    assert "image_meta_dict" in with_meta


def test_truncated_nifti_in_a_pipeline_names_the_file(shared_data, tmp_path: Path) -> None:
    src = shared_data("btcv")
    image = _copy(src / "imagesTr" / "img0001.nii.gz", tmp_path / "img0001.nii.gz")
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    label = str(src / "labelsTr" / "label0001.nii.gz")
    pipeline = Compose([CheckedLoadImaged(["image", "label"], ensure_channel_first=True)])
    with pytest.raises(RuntimeError) as info:
        pipeline({"image": str(image), "label": label})
    err = info.value
    while not isinstance(err, ImageReadError) and err.__cause__ is not None:  # MONAI's Compose wraps it
        err = err.__cause__
    assert isinstance(err, ImageReadError) and err.path == str(image) and err.key == "image"
    assert str(image) in str(err) and "(key 'image')" in str(err)


def test_huge_header_memory_error_names_the_file(shared_data, tmp_path: Path) -> None:
    image = _copy(shared_data("btcv") / "imagesTr" / "img0001.nii.gz", tmp_path / "huge.nii.gz")
    raw = bytearray(gzip.decompress(image.read_bytes()))
    struct.pack_into("<3h", raw, 42, 32767, 32767, 32767)
    image.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ImageReadError, match="huge.nii.gz"):
        CheckedLoadImaged("image")({"image": str(image)})


def test_png_bomb_through_the_pil_reader_names_the_file(shared_data, tmp_path: Path) -> None:
    folder = shared_data("chestxray14") / "images"
    png = _copy(sorted(folder.iterdir())[0], tmp_path / "bomb.png")
    raw = bytearray(png.read_bytes())
    struct.pack_into(">II", raw, 16, 30000, 30000)
    struct.pack_into(">I", raw, 29, zlib.crc32(bytes(raw[12:29])))
    png.write_bytes(bytes(raw))
    loader = CheckedLoadImaged("image", reader=CheckedPILReader, ensure_channel_first=True, dtype=None)
    with pytest.raises(ImageReadError, match="bomb.png"):
        loader({"image": str(png)})


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="absent.nii.gz"):
        CheckedLoadImaged("image")({"image": str(tmp_path / "absent.nii.gz")})


@pytest.mark.parametrize("content", [b"{not json", '{"training": "é"}'.encode("latin-1"), b"\xff\xfe{\x00}\x00"])
def test_bad_datalist_json_names_the_file(shared_data, tmp_path: Path, content: bytes) -> None:
    datalist = tmp_path / "my_datalist.json"
    datalist.write_bytes(content)
    with pytest.raises(ValueError, match="my_datalist.json"):
        btcv_datalist(shared_data("btcv"), datalist_file=datalist)
