"""Single-file grey DICOM radiographs read as a DICOM viewer displays them: one float picture in [0, 1], 0 black.

:class:`DicomRadiographReader` is a MONAI image reader (``LoadImage(reader=[DicomRadiographReader, CheckedPILReader])``)
that reads a file with pydicom and returns :func:`display_values` laid out as ``PILReader`` lays out a PNG, (W, H);
:class:`~shared_networks.data.radiographs.ToGrey` passes it on. The steps are the standard's grey-scale pipeline
(DICOM PS3.3 C.11, PS3.4 N.2.1.1), in this order:

1. **Stored values**: decoded by pydicom, which masks them to Bits Stored (8 to 16 bits) and reads them as signed or
   unsigned (Pixel Representation). Where pydicom has no decoder for the transfer syntax here (JPEG Lossless and
   JPEG-LS need plugins such as ``python-gdcm``, which the project does not install), ITK's GDCM decodes the
   file and its own changes are undone (Rescale Slope/Intercept, and the inversion of MONOCHROME1 within the stored
   range); ITK cannot read a signed MONOCHROME1 image, which then fails with an error naming the file.
2. **Modality LUT**: the Modality LUT Sequence, else Rescale Slope/Intercept (``pydicom.pixels.apply_modality_lut``).
3. **VOI LUT** (PS3.3 C.11.2): the first item of the VOI LUT Sequence when there is one (as pydicom prefers it to a
   window), its output divided by the full scale of its entries (``2**n - 1``, n the third value of LUT Descriptor);
   else the first Window Center/Width pair with the VOI LUT Function (LINEAR, LINEAR_EXACT or SIGMOID, C.11.2.1.2-3),
   mapped to [0, 1]; else the image's own min..max maps to [0, 1] (a uniform image gives 0, before step 4).
4. **MONOCHROME1** (minimum white) becomes ``1 - y``, so that 0 is black as in MONOCHROME2 and in a PNG. Presentation
   LUT Shape is not read: a DX object states INVERSE with MONOCHROME1, the same inversion, not a second one.

Without a VOI in the file, min..max is the normalisation, rather than the full range of Bits Stored: the classifier
learned from ChestX-ray14's 8-bit PNGs, which are pictures as displayed and span nearly their whole range (in the
470 sample PNGs the median darkest value is 0 and the median brightest 249). A file without a window or VOI LUT
(a CR object, a DX For Processing) says nothing about its display; min..max is what viewers show for it, and it gives
a picture of that same span. The bit range would not: a detector's values fill a part of it (12-bit data in 16 bits,
or 500..3500 of 0..4095), which would come out a dim, flat picture unlike any training image, and the same data
stored at 12 or 16 bits would differ. The cost: a few extreme pixels (a marker, a dead pixel) widen min..max and dim
the rest, as they do in a viewer.

Refused with a ``ValueError`` naming the file: no pixel data, colour (Samples per Pixel other than 1, a photometric
interpretation other than MONOCHROME1/2), several frames, pixel data that cannot be decoded, a window of invalid
width and an unknown VOI LUT Function.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import ImageReader
from monai.utils import ensure_tuple
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi, get_decoder
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from shared_networks.data.readers import is_dicom_file

__all__ = ["DISPLAY_KEY", "DicomRadiographReader", "display_values"]

DISPLAY_KEY = "dicom_display"
"""Metadata key of the reader's output: ``"<photometric> <VOI>"``, e.g. ``"MONOCHROME1 window"``."""

PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
PIXEL_DATA = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
_BARE_SYNTAXES = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}
"""Transfer syntax of a dataset without file meta information, by its encoding as read (implicit VR, little endian)."""


def _name(ds: Dataset) -> str:
    return str(getattr(ds, "filename", None) or "<DICOM dataset>")


def _check_grey_single_frame(ds: Dataset, name: str) -> str:
    """The photometric interpretation of a single-frame grey image with pixel data; else a ``ValueError``."""
    if not any(k in ds for k in PIXEL_DATA):
        raise ValueError(f"{name}: a DICOM object without pixel data (SOP class {ds.get('SOPClassUID', '?')}).")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric not in PHOTOMETRICS or samples != 1:
        raise ValueError(
            f"{name}: a colour DICOM image (photometric interpretation {photometric!r}, {samples} samples per "
            "pixel); expected a grey MONOCHROME1 or MONOCHROME2 radiograph."
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise ValueError(f"{name}: a multi-frame DICOM image ({frames} frames); expected one radiograph.")
    return photometric


def _decodable(ds: Dataset) -> bool:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or "PixelData" not in ds:
        return True  # no transfer syntax to check (pydicom then says what is missing), or float pixel data
    try:
        return get_decoder(syntax).is_available
    except NotImplementedError:
        return False


def _stored_values_with_itk(ds: Dataset, photometric: str, name: str) -> np.ndarray:
    """Stored values (rows, columns) of a file pydicom cannot decode here, decoded by ITK's GDCM.

    ITK returns ``slope * t + intercept`` with ``t`` the stored value, inverted within the stored range for
    MONOCHROME1 (``lo + hi - s``); this undoes both.
    """
    import itk  # only here: a slow import, and only compressed files pydicom has no decoder for need it

    syntax = ds.file_meta.TransferSyntaxUID
    try:
        values = np.asarray(itk.array_from_image(itk.imread(name)), dtype=np.float64)
    except Exception as e:  # RuntimeError from GDCM
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__  # GDCM's last line
        raise ValueError(
            f"{name}: pixel data in {syntax.name} that pydicom cannot decode here (the python-gdcm package would "
            f"give it a decoder) and ITK could not read either: {reason}"
        ) from e
    if values.ndim == 3 and values.shape[0] == 1:  # (1, rows, columns): ITK reads one file as a one-slice volume
        values = values[0]
    if values.shape != (ds.Rows, ds.Columns):
        raise ValueError(f"{name}: ITK decoded shape {values.shape}, expected ({ds.Rows}, {ds.Columns}).")
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    stored = np.rint((values - intercept) / slope).astype(np.int64)
    if photometric == "MONOCHROME1":
        bits, signed = int(ds.BitsStored), int(ds.get("PixelRepresentation", 0)) == 1
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        stored = lo + hi - stored
    return stored


def _stored_values(ds: Dataset, photometric: str, name: str) -> np.ndarray:
    """The stored values (rows, columns) as pydicom decodes them, or ITK where pydicom has no decoder here."""
    if not _decodable(ds):
        return _stored_values_with_itk(ds, photometric, name)
    try:
        values = ds.pixel_array
    except Exception as e:  # decoder errors: truncated pixel data, unsupported bit depths, missing attributes ...
        raise ValueError(f"{name}: the pixel data cannot be decoded: {type(e).__name__}: {e}") from e
    if values.ndim != 2:
        raise ValueError(f"{name}: pixel data of shape {values.shape}; expected one grey frame (rows, columns).")
    return values


def _first(value: Any) -> float:
    """The first value of a (possibly multi-valued) DS attribute."""
    return float(value[0]) if isinstance(value, Sequence) and not isinstance(value, str) else float(value)


def _window(x: np.ndarray, ds: Dataset, name: str) -> np.ndarray:
    """The first window of ``ds`` (PS3.3 C.11.2.1.2-3) applied to modality values ``x``: output in [0, 1]."""
    center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    function = str(ds.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    if function not in VOI_FUNCTIONS:
        raise ValueError(f"{name}: VOI LUT Function {function!r} is not one of {VOI_FUNCTIONS}.")
    if not (np.isfinite(center) and np.isfinite(width)) or width < (1 if function == "LINEAR" else 1e-12):
        raise ValueError(
            f"{name}: window center {center}, width {width} is not a valid {function} window (the width must be "
            f"{'at least 1' if function == 'LINEAR' else 'positive'})."
        )
    if function == "SIGMOID":  # C.11.2.1.3.1
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":  # C.11.2.1.3.2
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width == 1:  # C.11.2.1.2.1 with a width of 1: a threshold at center - 0.5
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)  # C.11.2.1.2.1


def _voi_lut(x: np.ndarray, ds: Dataset, name: str) -> np.ndarray:
    """The first VOI LUT of ``ds`` applied to modality values ``x``, divided by its entries' full scale: [0, 1]."""
    entries, first, depth = (int(v) for v in ds.VOILUTSequence[0].LUTDescriptor)
    entries = entries or 65536  # 0 stands for 2**16 entries
    # values beyond the table take its first or last entry (C.11.2.1.1); clipped here so that they index it exactly
    index = np.clip(np.rint(x), first, first + entries - 1).astype(np.int64)
    try:
        out = apply_voi(index, ds, 0)
    except (NotImplementedError, ValueError, OverflowError) as e:
        raise ValueError(f"{name}: the VOI LUT (LUT Descriptor {entries}, {first}, {depth}) cannot be used: {e}") from e
    return np.clip(out.astype(np.float64) / (2.0**depth - 1.0), 0.0, 1.0)


def _has_voi_lut(ds: Dataset) -> bool:
    items = ds.get("VOILUTSequence")
    return bool(items) and "LUTDescriptor" in items[0] and "LUTData" in items[0]


def display_values(ds: Dataset) -> tuple[np.ndarray, str]:
    """A grey DICOM image as displayed: ``(picture (rows, columns) float64 in [0, 1] with 0 black, description)``.

    The description is ``"<photometric> <VOI>"``, the VOI being ``"VOI LUT"``, ``"window"`` or ``"min..max"``. The
    steps and the reasons for min..max without a VOI: this module's docstring.

    Raises:
        ValueError: naming the file, for what the module's docstring lists as refused.
    """
    name = _name(ds)
    photometric = _check_grey_single_frame(ds, name)
    x = np.asarray(apply_modality_lut(_stored_values(ds, photometric, name), ds), dtype=np.float64)
    if _has_voi_lut(ds):
        y, voi = _voi_lut(x, ds, name), "VOI LUT"
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        y, voi = _window(x, ds, name), "window"
    else:
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        y, voi = ((x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)), "min..max"
    if not np.isfinite(y).all():
        raise ValueError(f"{name}: the displayed values are not finite (NaN or infinite pixel data).")
    return (1.0 - y if photometric == "MONOCHROME1" else y), f"{photometric} {voi}"


class DicomRadiographReader(ImageReader):
    """MONAI image reader of single-file grey DICOM radiographs: the picture as displayed, (W, H) float32 in [0, 1].

    ``read`` opens the file with pydicom (a file without the DICOM preamble only when it ends in ``.dcm``);
    ``get_data`` returns :func:`display_values` transposed to (W, H), the layout ``PILReader`` gives a PNG, with the
    metadata ``spatial_shape``, ``original_channel_dim`` (none) and :data:`DISPLAY_KEY` (photometric and VOI used).
    Its errors name the file (see the module docstring for what is refused).

    Example::

        LoadImaged("image", reader=[DicomRadiographReader, CheckedPILReader], ensure_channel_first=True, dtype=None)
        ToGreyd("image")  # (1, W, H) float32 in [0, 1], whether the file was a PNG or a DICOM
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.kwargs = kwargs  # passed to pydicom.dcmread

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """True when every file has a ``.dcm`` suffix or the DICOM preamble."""
        return all(is_dicom_file(f) for f in ensure_tuple(filename))

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> list[Dataset] | Dataset:
        datasets = []
        for path in ensure_tuple(data):
            force = Path(path).suffix.lower() == ".dcm"
            ds = pydicom.dcmread(path, **{"force": force, **self.kwargs, **kwargs})
            if "TransferSyntaxUID" not in ds.file_meta:  # a bare dataset: its encoding as read tells the syntax
                implicit, little = ds.original_encoding
                ds.file_meta.TransferSyntaxUID = _BARE_SYNTAXES.get((implicit, little), ImplicitVRLittleEndian)
            datasets.append(ds)
        return datasets if len(datasets) > 1 else datasets[0]

    def get_data(self, img: Sequence[Dataset] | Dataset) -> tuple[np.ndarray, dict]:
        datasets = list(img) if isinstance(img, (list, tuple)) else [img]  # not ensure_tuple: a Dataset iterates
        if len(datasets) != 1:
            names = ", ".join(_name(ds) for ds in datasets)
            raise ValueError(f"{names}: one DICOM radiograph at a time, got {len(datasets)} files.")
        picture, description = display_values(datasets[0])
        picture = np.ascontiguousarray(picture.T, dtype=np.float32)  # (rows, columns) -> (W, H), as PILReader's
        meta = {
            "spatial_shape": np.asarray(picture.shape),
            "original_channel_dim": float("nan"),  # no channel axis: EnsureChannelFirst adds one
            DISPLAY_KEY: description,
        }
        return picture, meta
