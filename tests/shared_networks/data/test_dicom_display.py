"""Tests of DICOM radiographs read as displayed (:mod:`shared_networks.data.dicom_display`): stored values of 8 to 16
bits, signed and unsigned, the modality LUT, the VOI LUT functions and sequence, MONOCHROME1, min..max without a VOI,
ITK's decoding where pydicom has no decoder, and the files refused by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import LoadImage
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

from shared_networks.data import dicom_display
from shared_networks.data.dicom_display import DISPLAY_KEY, DicomRadiographReader, display_values
from shared_networks.data.radiographs import CheckedPILReader, ToGrey

READERS = [DicomRadiographReader, CheckedPILReader]  # the chest X-ray bundle's inference readers


def write_dicom(
    path: Path,
    stored: np.ndarray,
    bits: int = 16,
    signed: bool = False,
    photometric: str = "MONOCHROME2",
    raw: np.ndarray | None = None,
    **attributes,
) -> Path:
    """A single-frame grey DICOM of ``stored`` (rows, columns); ``raw`` (default ``stored``) is what the pixel data
    hold, e.g. with bits above Bits Stored set."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.SamplesPerPixel, ds.PhotometricInterpretation = "DX", 1, photometric
    ds.Rows, ds.Columns = stored.shape
    allocated = 8 if bits == 8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = allocated, bits, bits - 1, int(signed)
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    values = stored if raw is None else raw
    ds.PixelData = values.astype(f"<{'i' if signed else 'u'}{allocated // 8}").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def display(path: Path) -> tuple[np.ndarray, str]:
    return display_values(pydicom.dcmread(path))


def stored_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def random_stored(bits: int, signed: bool, shape: tuple[int, int] = (9, 7), seed: int = 0) -> np.ndarray:
    lo, hi = stored_range(bits, signed)
    values = np.random.default_rng(seed).integers(lo, hi + 1, size=shape)
    values[0, 0], values[-1, -1] = lo, hi  # the whole range
    return values


@pytest.mark.parametrize("bits", [8, 10, 12, 16])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_stored_values_of_every_depth_and_sign_through_a_full_range_window(tmp_path, bits, signed, photometric):
    """The window over the whole stored range displays ``(s - lo) / (2**bits - 1)``; the bits above Bits Stored hold
    junk (unsigned) or no sign extension (signed), which the decoding must ignore."""
    s = random_stored(bits, signed)
    lo, _ = stored_range(bits, signed)
    raw = None
    if bits < (8 if bits == 8 else 16):
        raw = (s & (2**bits - 1)) if signed else (s | (0xA000 & ~(2**bits - 1) & 0xFFFF))
        raw = raw.astype(np.uint16).view(np.int16) if signed else raw
    path = write_dicom(
        tmp_path / "a.dcm",
        s,
        bits,
        signed,
        photometric,
        raw=raw,
        WindowCenter=lo + 2 ** (bits - 1),
        WindowWidth=2**bits,
    )
    picture, description = display(path)
    expected = (s - lo) / (2**bits - 1)
    np.testing.assert_allclose(picture, 1 - expected if photometric == "MONOCHROME1" else expected, rtol=0, atol=1e-12)
    assert description == f"{photometric} window" and picture.dtype == np.float64


@pytest.mark.parametrize("signed", [False, True])
def test_without_a_voi_the_modality_values_min_max_map_to_0_1(tmp_path, signed):
    s = random_stored(12, signed)[2:-2, 2:-2]  # not the whole stored range: min..max, not the bit range
    x = s * 0.5 - 7.0
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        path = write_dicom(tmp_path / "a.dcm", s, 12, signed, photometric, RescaleSlope=0.5, RescaleIntercept=-7)
        picture, description = display(path)
        expected = (x - x.min()) / (x.max() - x.min())
        np.testing.assert_allclose(picture, 1 - expected if photometric == "MONOCHROME1" else expected, atol=1e-12)
        assert description == f"{photometric} min..max" and picture.min() == 0 and picture.max() == 1
    flat = write_dicom(tmp_path / "flat.dcm", np.full((4, 4), 300), 12)  # a uniform image: 0 (black)
    assert display(flat)[0].max() == 0


def test_rescale_and_modality_lut_sequence_come_before_the_window(tmp_path):
    s = np.arange(0, 4096, 64).reshape(8, 8)
    # Rescale: x = 2 s - 1000; the window 0..2000 of x (center 1000.5, width 2001: (x - 1000) / 2000 + 0.5)
    rescale = {"RescaleSlope": 2, "RescaleIntercept": -1000}
    path = write_dicom(tmp_path / "r.dcm", s, 12, **rescale, WindowCenter=1000.5, WindowWidth=2001)
    x = 2.0 * s - 1000
    np.testing.assert_allclose(display(path)[0], np.clip((x - 1000) / 2000 + 0.5, 0, 1), atol=1e-12)
    # Modality LUT Sequence: stored 0..4095 -> 4095 - s (16-bit entries), then the full 12-bit window
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "US"
    item.add_new(0x00283006, "US", [4095 - i for i in range(4096)])  # LUT Data (US or OW: US here)
    path = write_dicom(
        tmp_path / "m.dcm", s, 12, ModalityLUTSequence=Sequence([item]), WindowCenter=2048, WindowWidth=4096
    )
    np.testing.assert_allclose(display(path)[0], (4095 - s) / 4095, atol=1e-12)


def test_window_functions_and_the_first_of_several_windows(tmp_path):
    s = np.arange(0, 4096, 16).reshape(16, 16)
    x = s.astype(np.float64)
    c, w = 1500.0, 800.0
    expected = {
        "LINEAR": np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1),  # PS3.3 C.11.2.1.2.1
        "LINEAR_EXACT": np.clip((x - c) / w + 0.5, 0, 1),  # C.11.2.1.3.2
        "SIGMOID": 1 / (1 + np.exp(-4 * (x - c) / w)),  # C.11.2.1.3.1
    }
    for function, values in expected.items():
        path = write_dicom(
            tmp_path / "w.dcm", s, 12, WindowCenter=[c, 100], WindowWidth=[w, 50], VOILUTFunction=function
        )
        np.testing.assert_allclose(display(path)[0], values, rtol=0, atol=1e-12, err_msg=function)
    threshold = write_dicom(tmp_path / "t.dcm", s, 12, WindowCenter=1000.5, WindowWidth=1)  # LINEAR, width 1
    np.testing.assert_array_equal(display(threshold)[0], (x > 1000).astype(np.float64))


def test_voi_lut_sequence_first_mapped_value_range_and_depth(tmp_path):
    s = np.arange(0, 4096, 16).reshape(16, 16)
    item = Dataset()
    item.LUTDescriptor = [1000, 1000, 12]  # stored 1000..1999 -> 12-bit outputs
    item.add_new(0x00283006, "US", [(i * 4) % 4096 for i in range(1000)])  # LUT Data, not monotonic on purpose
    lut = np.array(item.LUTData)
    # both a VOI LUT and a window: the LUT is used (as pydicom prefers it)
    path = write_dicom(tmp_path / "l.dcm", s, 12, VOILUTSequence=Sequence([item]), WindowCenter=10, WindowWidth=2)
    picture, description = display(path)
    expected = lut[np.clip(s - 1000, 0, 999)] / 4095  # below 1000: the first entry, above 1999: the last
    np.testing.assert_allclose(picture, expected, rtol=0, atol=1e-12)
    assert description == "MONOCHROME2 VOI LUT"
    mono1 = write_dicom(tmp_path / "l1.dcm", s, 12, photometric="MONOCHROME1", VOILUTSequence=Sequence([item]))
    np.testing.assert_allclose(display(mono1)[0], 1 - expected, rtol=0, atol=1e-12)


def test_the_reader_lays_a_dicom_out_as_pil_does_a_png(tmp_path):
    grey = (np.arange(120).reshape(10, 12) * 2).astype(np.uint8)  # (H=10, W=12)
    Image.fromarray(grey).save(tmp_path / "a.png")
    write_dicom(tmp_path / "a.dcm", grey, 8, WindowCenter=128, WindowWidth=256)  # displays grey / 255
    load = LoadImage(reader=READERS, image_only=True, ensure_channel_first=True, dtype=None)
    dicom, png = load(str(tmp_path / "a.dcm")), load(str(tmp_path / "a.png"))
    assert dicom.shape == png.shape == (1, 12, 10) and dicom.dtype == torch.float32
    assert dicom.meta[DISPLAY_KEY] == "MONOCHROME2 window"
    out = ToGrey()(dicom)
    torch.testing.assert_close(out.as_tensor(), ToGrey()(png).as_tensor(), rtol=0, atol=1e-7)
    assert out.meta["source"] == "DICOM MONOCHROME2 window" and set(out.meta) == set(ToGrey()(png).meta)
    # a file without the DICOM preamble (a bare dataset) is read when it ends in .dcm
    ds = pydicom.dcmread(tmp_path / "a.dcm")
    del ds.file_meta
    ds.preamble = None
    bare = tmp_path / "bare.dcm"
    ds.save_as(bare, implicit_vr=True, little_endian=True)
    assert bare.read_bytes()[128:132] != b"DICM" and DicomRadiographReader().verify_suffix(bare)
    torch.testing.assert_close(load(str(bare)).as_tensor(), dicom.as_tensor())


def _itk_jpeg_lossless(path: Path, pixels: np.ndarray, tags: dict[str, str]) -> Path:
    """A JPEG Lossless (process 14) DICOM written by ITK's GDCM: uint16 pixels, Bits Stored 16."""
    import itk

    img = itk.image_from_array(np.ascontiguousarray(pixels.astype(np.uint16)))
    meta = itk.MetaDataDictionary()
    for key, value in {"0008|0060": "DX", "0028|0004": "MONOCHROME2", **tags}.items():
        meta[key] = value
    img.SetMetaDataDictionary(meta)
    io = itk.GDCMImageIO.New()
    io.SetCompressionType(itk.GDCMImageIOEnums.Compression_JPEG)
    writer = itk.ImageFileWriter[type(img)].New(Input=img, FileName=str(path), ImageIO=io, UseCompression=True)
    writer.Update()
    return path


def test_itk_decodes_jpeg_lossless_when_pydicom_cannot(tmp_path):
    pixels = (np.arange(120).reshape(10, 12) * 30 + 7).astype(np.uint16)
    path = _itk_jpeg_lossless(tmp_path / "j.dcm", pixels, {"0028|1050": "2000", "0028|1051": "3000"})
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.JPEGLosslessSV1
    expected = np.clip((pixels - 1999.5) / 2999 + 0.5, 0, 1)
    np.testing.assert_allclose(display(path)[0], expected, rtol=0, atol=1e-12)
    # MONOCHROME1 (the tag patched, as ITK writes MONOCHROME2 only): ITK inverts it, the reader undoes that
    mono1 = tmp_path / "j1.dcm"
    mono1.write_bytes(path.read_bytes().replace(b"MONOCHROME2", b"MONOCHROME1"))
    np.testing.assert_allclose(display(mono1)[0], 1 - expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("bits", "signed", "photometric", "rescale"),
    [
        (8, False, "MONOCHROME1", None),
        (12, False, "MONOCHROME1", (2, -100)),
        (16, False, "MONOCHROME1", None),
        (12, True, "MONOCHROME2", (0.5, 3)),
        (16, True, "MONOCHROME1", (1, 0)),
    ],
)
def test_the_itk_path_gives_what_pydicom_gives(tmp_path, monkeypatch, bits, signed, photometric, rescale):
    """ITK's changes (rescale, MONOCHROME1 inverted within the stored range) are undone exactly."""
    s = random_stored(bits, signed)
    extra = {} if rescale is None else {"RescaleSlope": rescale[0], "RescaleIntercept": rescale[1]}
    path = write_dicom(tmp_path / "a.dcm", s, bits, signed, photometric, **extra)
    with_pydicom = display(path)
    monkeypatch.setattr(dicom_display, "_decodable", lambda ds: False)
    with_itk = display(path)
    np.testing.assert_allclose(with_itk[0], with_pydicom[0], rtol=0, atol=1e-12)
    assert with_itk[1] == with_pydicom[1]


def test_what_neither_pydicom_nor_itk_decodes_is_refused_by_name(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "signed_m1.dcm", random_stored(12, True), 12, True, "MONOCHROME1")
    monkeypatch.setattr(dicom_display, "_decodable", lambda ds: False)
    with pytest.raises(ValueError, match=r"signed_m1\.dcm: pixel data in .* that pydicom cannot decode here"):
        display(path)


def _refused(tmp_path: Path) -> list[tuple[Path, str]]:
    s = np.zeros((4, 4), np.int64)
    no_pixels = pydicom.dcmread(write_dicom(tmp_path / "no_pixels.dcm", s))
    del no_pixels.PixelData
    no_pixels.save_as(tmp_path / "no_pixels.dcm")
    colour = pydicom.dcmread(write_dicom(tmp_path / "rgb.dcm", s, 8))
    colour.PhotometricInterpretation, colour.SamplesPerPixel, colour.PlanarConfiguration = "RGB", 3, 0
    colour.PixelData = np.zeros((4, 4, 3), np.uint8).tobytes()
    colour.save_as(tmp_path / "rgb.dcm")
    frames = pydicom.dcmread(write_dicom(tmp_path / "frames.dcm", s, 8))
    frames.NumberOfFrames = 3
    frames.PixelData = np.zeros((3, 4, 4), np.uint8).tobytes()
    frames.save_as(tmp_path / "frames.dcm")
    truncated = pydicom.dcmread(write_dicom(tmp_path / "truncated.dcm", s))
    truncated.PixelData = truncated.PixelData[:10]
    truncated.save_as(tmp_path / "truncated.dcm")
    bad_lut = Dataset()
    bad_lut.LUTDescriptor = [4, 0, 9]  # 9 bits per entry: neither 8 nor 10..16
    bad_lut.add_new(0x00283006, "US", [0, 1, 2, 3])
    return [
        (tmp_path / "no_pixels.dcm", "a DICOM object without pixel data"),
        (tmp_path / "rgb.dcm", r"a colour DICOM image \(photometric interpretation 'RGB', 3 samples per pixel\)"),
        (write_dicom(tmp_path / "palette.dcm", s, 8, photometric="PALETTE COLOR"), "a colour DICOM image"),
        (tmp_path / "frames.dcm", r"a multi-frame DICOM image \(3 frames\)"),
        (tmp_path / "truncated.dcm", "the pixel data cannot be decoded"),
        (
            write_dicom(tmp_path / "w0.dcm", s, WindowCenter=5, WindowWidth=0),
            r"window center 5\.0, width 0\.0 is not a valid LINEAR window",
        ),
        (
            write_dicom(tmp_path / "sig.dcm", s, WindowCenter=5, WindowWidth=0, VOILUTFunction="SIGMOID"),
            r"window center 5\.0, width 0\.0 is not a valid SIGMOID window",
        ),
        (
            write_dicom(tmp_path / "f.dcm", s, WindowCenter=5, WindowWidth=9, VOILUTFunction="LOG"),
            "VOI LUT Function 'LOG' is not one of",
        ),
        (write_dicom(tmp_path / "lut9.dcm", s, VOILUTSequence=Sequence([bad_lut])), "the VOI LUT .* cannot be used"),
    ]


def test_refused_files_are_named(tmp_path):
    for path, message in _refused(tmp_path):
        with pytest.raises(ValueError, match=f"{path.name}: {message}"):
            display(path)
    load = LoadImage(reader=READERS, image_only=True, ensure_channel_first=True, dtype=None)
    with pytest.raises(ValueError, match=r"frames\.dcm: a multi-frame DICOM image"):  # through LoadImage as well
        load(str(tmp_path / "frames.dcm"))
