"""Tests of the grey-scale radiograph loading (:mod:`shared_networks.data.radiographs`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged
from PIL import Image

from shared_networks.data.dicom_display import DicomRadiographReader
from shared_networks.data.radiographs import CheckedPILReader, ToGrey, ToGreyd


def _load(path: Path, reader=CheckedPILReader) -> torch.Tensor:
    loader = LoadImaged("image", reader=reader, image_only=True, ensure_channel_first=True, dtype=None)
    return ToGreyd("image")(loader({"image": str(path)}))["image"]


@pytest.fixture
def grey() -> np.ndarray:
    """An 8-bit (H=10, W=12) picture of values 0 to 238 in steps of 2, and a bright corner at 255."""
    a = (np.arange(120).reshape(10, 12) * 2).astype(np.uint8)
    a[0, :2] = 255, 0  # full 8-bit range
    return a


def _write_all_modes(grey: np.ndarray, folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    alpha = rng.integers(0, 256, grey.shape, dtype=np.uint8)  # alpha must be ignored, whatever it holds
    images = {
        "L": Image.fromarray(grey, mode="L"),
        "I;16": Image.fromarray(grey.astype(np.uint16) * 257),  # the same picture at 16 bits
        "LA": Image.fromarray(np.stack([grey, alpha], -1), mode="LA"),
        "RGB": Image.fromarray(np.stack([grey] * 3, -1), mode="RGB"),
        "RGBA": Image.fromarray(np.stack([grey, grey, grey, alpha], -1), mode="RGBA"),
        "P": Image.fromarray(grey, mode="L").convert("P"),
    }
    paths = {}
    for mode, img in images.items():
        paths[mode] = folder / f"{mode.replace(';', '_')}.png"
        img.save(paths[mode])
        assert Image.open(paths[mode]).mode == mode
    return paths


def test_every_png_mode_loads_to_the_same_grey_channel(grey, tmp_path):
    paths = _write_all_modes(grey, tmp_path)
    expected = torch.from_numpy(grey.T.astype(np.float32) / 255.0)[None]  # PILReader: (1, W, H)
    for mode, path in paths.items():
        out = _load(path)
        assert isinstance(out, MetaTensor) and out.dtype == torch.float32, mode
        assert out.shape == (1, 12, 10), mode
        torch.testing.assert_close(out.as_tensor(), expected, atol=1e-6, rtol=0, msg=mode)
        assert (
            out.meta["filename_or_obj"] == str(path) and out.meta["source"] == f"PIL {'RGBA' if mode == 'P' else mode}"
        )


def test_plain_pil_reader_output_is_accepted(grey, tmp_path):
    """The transform works after ``LoadImaged(reader="PILReader")`` too; only palette images need CheckedPILReader."""
    paths = _write_all_modes(grey, tmp_path)
    reference = _load(paths["L"])
    for mode in ("L", "I;16", "LA", "RGB", "RGBA"):
        torch.testing.assert_close(_load(paths[mode], reader="PILReader"), reference, msg=mode)
    with pytest.raises(ValueError, match=r"P\.png: PIL mode .P. is not supported \(a palette image: CheckedPILReader"):
        _load(paths["P"], reader="PILReader")


def test_16_bit_uses_the_full_16_bit_range(tmp_path):
    a = np.array([[0, 1, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "a.png")
    out = _load(tmp_path / "a.png")
    np.testing.assert_allclose(out[0, :, 0].numpy(), a[0] / 65535.0, rtol=0, atol=1e-7)


def test_rgb_colour_becomes_luminance(tmp_path):
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (0, 0, 255)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "c.png")
    out = _load(tmp_path / "c.png")  # (1, W=3, H=2)
    np.testing.assert_allclose(out[0, :, 0].numpy(), [0.299, 0.587, 0.114], atol=1e-6)
    assert float(out[0, :, 1].abs().max()) == 0.0


def test_bilevel_and_32_bit_modes(tmp_path):
    Image.fromarray(np.array([[True, False]])).save(tmp_path / "b.png")
    assert _load(tmp_path / "b.png")[0, :, 0].tolist() == [1.0, 0.0]
    x = ToGrey()(MetaTensor(torch.tensor([[[0, 65535]]], dtype=torch.int32), meta={"mode": "I"}))
    assert x.tolist() == [[[0.0, 1.0]]]
    with pytest.raises(ValueError, match=r"outside 0\.\.65535"):
        ToGrey()(
            MetaTensor(torch.tensor([[[0, 70000]]], dtype=torch.int32), meta={"mode": "I", "filename_or_obj": "x"})
        )


def test_unsupported_inputs_name_the_file():
    with pytest.raises(ValueError, match=r"a\.tif: PIL mode 'CMYK'"):
        ToGrey()(MetaTensor(torch.zeros(4, 2, 2), meta={"mode": "CMYK", "filename_or_obj": "a.tif"}))
    with pytest.raises(ValueError, match=r"b\.nii: neither a PIL image"):
        ToGrey()(MetaTensor(torch.zeros(1, 2, 2), meta={"filename_or_obj": "b.nii"}))
    with pytest.raises(ValueError, match=r"c\.png: 5 channels"):
        ToGrey()(MetaTensor(torch.zeros(5, 2, 2, dtype=torch.uint8), meta={"mode": "L", "filename_or_obj": "c.png"}))
    with pytest.raises(ValueError, match=r"expected a 2D image"):
        ToGrey()(MetaTensor(torch.zeros(1, 2, 2, 2), meta={"mode": "L"}))


def test_corrupt_png_error_names_the_file(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(good)
    bad = tmp_path / "00000001_000.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # header intact, image data cut off
    pipeline = Compose(
        [
            LoadImaged("image", reader=CheckedPILReader, image_only=True, ensure_channel_first=True, dtype=None),
            ToGreyd("image"),
        ]
    )
    with pytest.raises(RuntimeError) as err:  # Compose wraps what a transform raises
        pipeline({"image": str(bad)})
    cause = err.value.__cause__
    assert isinstance(cause, ValueError) and str(bad) in str(cause) and "cannot be decoded" in str(cause)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(RuntimeError) as err:  # no reader can open it: LoadImage says so, naming the file
        pipeline({"image": str(junk)})
    message = str(err.value.__cause__)
    assert "cannot find a suitable reader for file" in message and str(junk) in message


def _write_dicom(path: Path, pixels: np.ndarray, tags: dict[str, str]) -> Path:
    """A single-file 2D DICOM (uint16) written with ITK."""
    import itk

    img = itk.image_from_array(np.ascontiguousarray(pixels.astype(np.uint16)))
    meta = itk.MetaDataDictionary()
    for key, value in {"0008|0060": "DX", **tags}.items():
        meta[key] = value
    img.SetMetaDataDictionary(meta)
    io = itk.GDCMImageIO.New()
    writer = itk.ImageFileWriter[type(img)].New(Input=img, FileName=str(path), ImageIO=io)
    writer.Update()
    return path


def test_dicom_matches_the_png_of_the_same_picture(grey, tmp_path):
    """DicomRadiographReader gives the displayed picture (W, H) as PIL lays out a PNG; ToGrey keeps it."""
    Image.fromarray(grey).save(tmp_path / "a.png")
    dcm = _write_dicom(tmp_path / "a.dcm", grey.astype(np.uint16) * 16, {"0028|0004": "MONOCHROME2"})
    out = _load(dcm, reader=DicomRadiographReader)
    assert out.shape == (1, 12, 10) and out.dtype == torch.float32
    assert out.meta["source"] == "DICOM MONOCHROME2 min..max"  # ITK wrote no window: min..max of 0..4080
    torch.testing.assert_close(out.as_tensor(), _load(tmp_path / "a.png").as_tensor(), atol=1e-6, rtol=0)


def test_dicom_window_and_monochrome1(grey, tmp_path):
    pixels = grey.astype(np.uint16) * 16  # 12-bit values 0..4080
    window = {"0028|1050": "2048\\1000", "0028|1051": "2048\\500"}  # multi-valued: the first window is used
    dcm = _write_dicom(tmp_path / "w.dcm", pixels, {"0028|0004": "MONOCHROME2", **window})
    out = _load(dcm, reader=DicomRadiographReader)[0].numpy().T  # back to (H, W)
    windowed = np.clip((pixels - 2047.5) / 2047.0 + 0.5, 0, 1)
    np.testing.assert_allclose(out, windowed, atol=1e-6)
    # ITK writes MONOCHROME2 only; the same tag value of the same length patched in gives a MONOCHROME1 file: the
    # window applies to its stored values and the result is inverted, as a viewer shows it (before, ITK's reader
    # inverted the pixels itself and ToGrey stretched them by min..max, ignoring the window)
    m1 = tmp_path / "m1.dcm"
    m1.write_bytes(dcm.read_bytes().replace(b"MONOCHROME2", b"MONOCHROME1"))
    out = _load(m1, reader=DicomRadiographReader)
    assert out.meta["source"] == "DICOM MONOCHROME1 window"
    np.testing.assert_allclose(out[0].numpy().T, 1.0 - windowed, atol=1e-6)


def test_dicom_read_by_itk_is_refused(grey, tmp_path):
    """ITK's GDCM inverts MONOCHROME1 itself and ignores the VOI LUT: ToGrey asks for DicomRadiographReader."""
    dcm = _write_dicom(tmp_path / "a.dcm", grey, {"0028|0004": "MONOCHROME2"})
    with pytest.raises(ValueError, match=r"a\.dcm: a DICOM read by ITKReader.*DicomRadiographReader"):
        _load(dcm, reader="ITKReader")
