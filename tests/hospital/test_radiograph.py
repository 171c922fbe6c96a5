"""Grey radiograph -> DICOM DX/CR (:func:`shared_networks.dicom.write_radiograph`): stored values, window and VOI LUT
tags (read back with pydicom), bad input refused by name; and what the project's chest X-ray loading (the readers of
``bundles/cxr14_mae_classification/configs/inference.yaml``, then ``ToGrey``) makes of the written files.

The loading reads DICOM with ``DicomRadiographReader`` as a viewer displays it (``shared_networks.data.dicom_display``):

* MONOCHROME2 and MONOCHROME1, with the writer's default full-range window: exactly the PNG path's image
  (``v / (2**b - 1)``), whatever the picture's range.
* A narrower window or a VOI LUT Sequence is applied (for MONOCHROME1 to the stored values, then inverted), so the
  image is the windowed or looked-up picture, for both photometrics alike.
* A CR without window or VOI LUT: the picture's min..max maps to [0, 1].

(Before, with ITK's reader: MONOCHROME1 came inverted by GDCM and was stretched by min..max with its window ignored,
and the VOI LUT Sequence was ignored.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import LoadImage
from PIL import Image

from shared_networks.data.dicom_display import DicomRadiographReader
from shared_networks.data.radiographs import CheckedPILReader, ToGrey
from shared_networks.dicom import write_radiograph

READERS = [DicomRadiographReader, CheckedPILReader]  # the chest X-ray bundle's image_reader


def to_grey(path: Path) -> torch.Tensor:
    """The bundle's loading of one image: (1, W, H) float in [0, 1]."""
    loaded = LoadImage(reader=READERS, image_only=True, ensure_channel_first=True, dtype=None)(str(path))
    return ToGrey()(loaded)


def loaded_values(path: Path) -> np.ndarray:
    """A PNG's values as PIL returns them, (W, H)."""
    image = LoadImage(reader=READERS, image_only=True, ensure_channel_first=True, dtype=None)(str(path))
    return np.asarray(image).reshape(image.shape[1], image.shape[2]).astype(np.int64)


def picture(bits: int = 8, shape: tuple[int, int] = (40, 30), lo: int = 10, hi: int = 200) -> np.ndarray:
    values = np.random.default_rng(bits).integers(lo, hi + 1, size=shape)
    return values.astype(np.uint8 if bits == 8 else np.uint16)


@pytest.mark.parametrize("bits", [8, 12, 16])
@pytest.mark.parametrize("modality", ["DX", "CR"])
def test_stored_values_and_monochrome1_inversion(tmp_path: Path, bits: int, modality: str) -> None:
    values = picture(bits)
    full = 2**bits - 1
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        path = write_radiograph(
            values,
            tmp_path / f"{photometric}.dcm",
            patient_id="P",
            photometric=photometric,
            bits_stored=bits,
            modality=modality,
        )
        ds = pydicom.dcmread(path)
        expected = full - values.astype(np.int64) if photometric == "MONOCHROME1" else values
        np.testing.assert_array_equal(ds.pixel_array, expected)
        assert ds.PhotometricInterpretation == photometric and ds.Modality == modality
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (
            8 if bits == 8 else 16,
            bits,
            bits - 1,
            0,
        )
        assert ds.PresentationLUTShape == ("INVERSE" if photometric == "MONOCHROME1" else "IDENTITY")
        sop = {
            "DX": pydicom.uid.DigitalXRayImageStorageForPresentation,
            "CR": pydicom.uid.ComputedRadiographyImageStorage,
        }
        assert ds.SOPClassUID == sop[modality] and ds.file_meta.MediaStorageSOPClassUID == sop[modality]


def test_window_tags(tmp_path: Path) -> None:
    values = picture()
    plain = pydicom.dcmread(write_radiograph(values, tmp_path / "a.dcm", patient_id="P", window=(100, 150)))
    assert (float(plain.WindowCenter), float(plain.WindowWidth)) == (100.0, 150.0)
    assert plain.PresentationIntentType == "FOR PRESENTATION"
    mono1 = pydicom.dcmread(
        write_radiograph(values, tmp_path / "b.dcm", patient_id="P", window=(100, 150), photometric="MONOCHROME1")
    )
    assert (float(mono1.WindowCenter), float(mono1.WindowWidth)) == (256 - 100.0, 150.0)  # mirrored: same picture
    default_dx = pydicom.dcmread(write_radiograph(values, tmp_path / "c.dcm", patient_id="P", bits_stored=12))
    assert (float(default_dx.WindowCenter), float(default_dx.WindowWidth)) == (2048.0, 4096.0)  # DX needs a VOI
    cr = pydicom.dcmread(write_radiograph(values, tmp_path / "d.dcm", patient_id="P", modality="CR"))
    assert "WindowCenter" not in cr and "VOILUTSequence" not in cr


def test_voi_lut_sequence(tmp_path: Path) -> None:
    values = picture()
    lut = np.arange(256) * 257  # 0..65535
    ds = pydicom.dcmread(write_radiograph(values, tmp_path / "a.dcm", patient_id="P", voi_lut=lut))
    item = ds.VOILUTSequence[0]
    assert list(item.LUTDescriptor) == [256, 0, 16] and list(item.LUTData) == lut.tolist()
    assert "WindowCenter" not in ds  # the LUT is the DX object's VOI
    short = np.arange(100) * 600
    ds1 = pydicom.dcmread(
        write_radiograph(values, tmp_path / "b.dcm", patient_id="P", voi_lut=short, photometric="MONOCHROME1")
    )
    item1 = ds1.VOILUTSequence[0]
    assert list(item1.LUTDescriptor) == [100, 156, 16]  # stored 255 - v for v in 0..99
    assert list(item1.LUTData) == (65535 - short[::-1]).tolist()


def test_png_file_and_patient_modules(real_pngs, tmp_path: Path) -> None:
    png = real_pngs(256)[0]
    ds = pydicom.dcmread(
        write_radiograph(png, tmp_path / "x.dcm", patient_id="00000001", study_date="20240102", pixel_spacing=0.57)
    )
    with Image.open(png) as img:
        np.testing.assert_array_equal(ds.pixel_array, np.asarray(img))
    assert (ds.PatientID, ds.PatientName, ds.StudyDate, ds.BodyPartExamined) == (
        "00000001",
        "00000001",
        "20240102",
        "CHEST",
    )
    assert [float(v) for v in ds.ImagerPixelSpacing] == [0.57, 0.57]
    assert ds.StudyInstanceUID != ds.SeriesInstanceUID != ds.SOPInstanceUID


# the project's chest X-ray loading (ToGrey) on the written files


def test_to_grey_of_a_monochrome2_dicom_equals_the_png_path(real_pngs, tmp_path: Path) -> None:
    pngs = real_pngs(1024)[:1] + real_pngs(256)[:2]
    assert len(pngs) == 3
    for png in pngs:
        dicom = write_radiograph(png, tmp_path / f"{png.stem}.dcm", patient_id=png.stem)  # DX, full-range window
        from_png, from_dicom = to_grey(png), to_grey(dicom)
        assert from_dicom.meta["source"] == "DICOM MONOCHROME2 window" and from_png.meta["source"] == "PIL L"
        assert from_dicom.shape == from_png.shape
        np.testing.assert_allclose(from_dicom.numpy(), from_png.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_to_grey_of_a_16_bit_dicom_equals_the_png_path(tmp_path: Path, photometric: str) -> None:
    values = picture(16, lo=0, hi=60000)
    png = tmp_path / "x16.png"
    Image.fromarray(values).save(png)
    dicom = write_radiograph(png, tmp_path / "x16.dcm", patient_id="P", photometric=photometric)
    assert pydicom.dcmread(dicom).BitsStored == 16
    np.testing.assert_allclose(to_grey(dicom).numpy(), to_grey(png).numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_to_grey_of_a_dicom_equals_the_png_path_whatever_the_pictures_range(real_pngs, tmp_path, photometric):
    pngs = real_pngs(256)[:3]  # the first spans 0..255, the next two stop below 255
    assert len(pngs) == 3 and len({(loaded_values(p).min(), loaded_values(p).max()) for p in pngs}) > 1
    for png in pngs:
        dicom = write_radiograph(png, tmp_path / "x.dcm", patient_id="P", photometric=photometric)
        grey = to_grey(dicom)
        assert grey.meta["source"] == f"DICOM {photometric} window"
        np.testing.assert_allclose(grey.numpy(), to_grey(png).numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_to_grey_applies_the_window(real_pngs, tmp_path, photometric):
    png = real_pngs(256)[0]
    dicom = write_radiograph(png, tmp_path / "w.dcm", patient_id="P", window=(100, 150), photometric=photometric)
    raw = loaded_values(png).astype(np.float64)
    expected = np.clip((raw - 99.5) / 149 + 0.5, 0, 1)  # PS3.3 C.11.2.1.2.1 linear window of the picture
    np.testing.assert_allclose(to_grey(dicom).numpy()[0], expected, rtol=0, atol=1e-6)
    assert not np.allclose(to_grey(dicom).numpy(), to_grey(png).numpy(), atol=1e-3)


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_to_grey_applies_the_voi_lut_sequence(tmp_path, photometric):
    values = picture(lo=20, hi=180)
    lut = (np.arange(256) ** 2 * 65535) // 255**2  # a curve: output v**2 / 255**2 of the full 16 bits
    dicom = write_radiograph(values, tmp_path / "x.dcm", patient_id="P", voi_lut=lut, photometric=photometric)
    grey = to_grey(dicom)
    assert grey.meta["source"] == f"DICOM {photometric} VOI LUT"
    np.testing.assert_allclose(grey.numpy()[0], lut[values.T] / 65535, rtol=0, atol=1e-6)


def test_to_grey_of_a_cr_without_window_stretches_min_max(tmp_path):
    values = picture(lo=20, hi=180)
    dicom = write_radiograph(values, tmp_path / "x.dcm", patient_id="P", modality="CR")
    raw = values.T.astype(np.float64)  # (W, H) as loaded
    assert to_grey(dicom).meta["source"] == "DICOM MONOCHROME2 min..max"
    np.testing.assert_allclose(to_grey(dicom).numpy()[0], (raw - 20) / 160, rtol=0, atol=1e-6)


# bad input: refused by name, nothing written


def rgba_png(tmp_path: Path) -> Path:
    path = tmp_path / "colour.png"
    Image.fromarray(np.zeros((8, 8, 4), np.uint8), mode="RGBA").save(path)
    return path


@pytest.mark.parametrize(
    ("make_input", "kwargs", "message"),
    [
        (rgba_png, {}, r"colour\.png: PIL mode 'RGBA' is not a grey image"),
        (lambda p: p / "missing.png", {}, r"missing\.png cannot be read as an image"),
        (lambda p: np.zeros((4, 4, 3), np.uint8), {}, r"<array>: not a 2D grey image"),
        (lambda p: np.zeros((4, 4), np.float32), {}, r"<array>: values of type float32"),
        (lambda p: np.full((4, 4), -1, np.int16), {}, r"values -1\.\.-1 outside 0\.\.65535"),
        (
            lambda p: np.full((4, 4), 300, np.uint16),
            {"bits_stored": 8},
            r"values up to 300 do not fit in bits_stored=8",
        ),
        (lambda p: picture(), {"bits_stored": 7}, r"bits_stored 7 is not an integer in 8\.\.16"),
        (lambda p: picture(), {"bits_stored": 17}, r"bits_stored 17 is not an integer in 8\.\.16"),
        (lambda p: picture(), {"photometric": "RGB"}, r"photometric 'RGB'"),
        (lambda p: picture(), {"modality": "CT"}, r"modality 'CT'"),
        (lambda p: picture(), {"window": (100, 0)}, r"the width must be at least 1"),
        (lambda p: picture(), {"window": "wide"}, r"window 'wide' is not a pair"),
        (lambda p: picture(), {"voi_lut": np.arange(300)}, r"voi_lut must be a 1D table of 1\.\.256 integers"),
        (lambda p: picture(), {"pixel_spacing": (0.1, -1)}, r"pixel_spacing"),
        (lambda p: picture(), {"patient_id": ""}, r"patient_id is required"),
    ],
)
def test_bad_input_is_refused_by_name(tmp_path: Path, make_input, kwargs: dict, message: str) -> None:
    source = make_input(tmp_path)
    kwargs = {"patient_id": "P", **kwargs}
    with pytest.raises(ValueError, match=message):
        write_radiograph(source, tmp_path / "out" / "x.dcm", **kwargs)
    assert not (tmp_path / "out").exists()
