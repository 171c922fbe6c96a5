"""A grey radiograph (PNG/JPEG file or 2D integer array) as a DICOM DX (Digital X-Ray Image Storage - For
Presentation) or CR (Computed Radiography Image Storage) object.

The picture's values ``v`` (0 = black) are stored unchanged for MONOCHROME2, and as ``2**bits_stored - 1 - v`` for
MONOCHROME1 (0 = white), so a viewer shows the same picture either way. The window and the VOI LUT are given for the
picture's values; for MONOCHROME1 they are mirrored onto the stored values (centre ``2**bits_stored - c``, the LUT
read backwards), so the displayed picture is again the same. A DX object For Presentation needs a window or a VOI LUT
(PS3.3 C.8.11.3): without either, the window spans the full range of ``bits_stored`` (centre ``2**(b-1)``, width
``2**b``), which displays ``v / (2**b - 1)``.

Example::

    write_radiograph("00000001_000.png", "dicom/00000001_000.dcm", patient_id="00000001", window=(128, 256))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation
from pydicom.valuerep import DSfloat

from shared_networks.dicom.modules import StudyFields, new_instance, write_file_atomic

__all__ = ["GREY_MODES", "read_grey_image", "write_radiograph"]

GREY_MODES: dict[str, np.dtype] = {
    "L": np.dtype(np.uint8),
    "I;16": np.dtype(np.uint16),
    "I;16B": np.dtype(np.uint16),
    "I;16L": np.dtype(np.uint16),
    "I;16N": np.dtype(np.uint16),
    "I": np.dtype(np.uint16),  # 16-bit grey PNGs open as "I" (32-bit) in older Pillow; checked to hold 0..65535
}
"""PIL modes taken as grey, and the type their values are stored as."""

SOP_CLASSES = {"DX": DigitalXRayImageStorageForPresentation, "CR": ComputedRadiographyImageStorage}
PHOTOMETRICS = ("MONOCHROME2", "MONOCHROME1")


def read_grey_image(image: str | os.PathLike | np.ndarray) -> tuple[np.ndarray, str]:
    """A grey image file (PIL modes :data:`GREY_MODES`) or a 2D integer array -> ``(values (rows, columns) uint8 or
    uint16, name)``.

    Raises ``ValueError`` naming the file (or ``<array>``) for colour, palette, alpha or bilevel images, arrays that
    are not 2D or not integers, and values outside 0..65535.
    """
    if isinstance(image, np.ndarray):
        name, values, eight_bit = "<array>", image, image.dtype in (np.uint8, np.bool_)
        if values.dtype.kind not in "iub":
            raise ValueError(f"{name}: values of type {values.dtype}; give integers (a grey image's stored values).")
    else:
        name = str(image)
        try:
            with Image.open(image) as img:
                img.load()
                mode, values = img.mode, np.asarray(img)
            eight_bit = mode == "L"
        except (OSError, SyntaxError, ValueError) as e:
            raise ValueError(f"{name} cannot be read as an image: {e}") from e
        if mode not in GREY_MODES:
            raise ValueError(
                f"{name}: PIL mode {mode!r} is not a grey image (supported: {sorted(GREY_MODES)}); convert colour, "
                "palette or alpha images to grey first (PIL: image.convert('L'))."
            )
    if values.ndim != 2 or min(values.shape) < 1:
        raise ValueError(f"{name}: not a 2D grey image (array shape {values.shape}).")
    values = values.astype(np.int64)
    lo, hi = int(values.min()), int(values.max())
    if lo < 0 or hi > 65535:
        raise ValueError(f"{name}: values {lo}..{hi} outside 0..65535 of a grey radiograph.")
    return values.astype(np.uint8 if eight_bit else np.uint16), name


def _check_bits(values: np.ndarray, bits_stored: int | None, name: str) -> int:
    bits = (8 if values.dtype == np.uint8 else 16) if bits_stored is None else bits_stored
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 8 <= bits <= 16:
        raise ValueError(f"{name}: bits_stored {bits_stored!r} is not an integer in 8..16.")
    if int(values.max()) >= 2**bits:
        raise ValueError(
            f"{name}: values up to {int(values.max())} do not fit in bits_stored={bits} (0..{2**bits - 1})."
        )
    return int(bits)


def _window(window: Sequence[float] | None, bits: int, mono1: bool, name: str) -> tuple[float, float] | None:
    """The stored window (centre, width) of a picture window, mirrored for MONOCHROME1."""
    if window is None:
        return None
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: window {window!r} is not a pair (center, width).") from e
    if not (np.isfinite(center) and np.isfinite(width)) or width < 1:
        raise ValueError(f"{name}: window {window!r}: the width must be at least 1 and both values finite.")
    return (2.0**bits - center if mono1 else center), width


def _voi_lut(voi_lut: Sequence[int] | np.ndarray | None, bits: int, mono1: bool, name: str) -> Dataset | None:
    """The VOI LUT Sequence item of a picture LUT (output of picture values 0..n-1), mirrored for MONOCHROME1."""
    if voi_lut is None:
        return None
    table = np.asarray(voi_lut)
    n = table.shape[0] if table.ndim == 1 else 0
    if n < 1 or n > 2**bits or table.dtype.kind not in "iu" or table.min() < 0 or table.max() > 65535:
        raise ValueError(
            f"{name}: voi_lut must be a 1D table of 1..{2**bits} integers in 0..65535 (the output of picture values "
            f"0, 1, ...); got shape {table.shape}, type {table.dtype}."
        )
    first = 0
    if mono1:  # stored s = max - v: the entry of s is the inverse of the picture's entry of v
        first, table = 2**bits - n, 65535 - table[::-1]
    item = Dataset()
    item.LUTDescriptor = [n % 65536, first, 16]  # 65536 entries are written as 0
    item.LUTExplanation = "picture VOI LUT"
    item.add_new(0x00283006, "US", [int(v) for v in table])  # LUT Data: US or OW; US says 16-bit entries
    return item


def _pixel_attributes(values: np.ndarray, bits: int, photometric: str) -> dict:
    """Image pixel, modality LUT and presentation attributes (PS3.3 C.7.6.3, C.8.11.3)."""
    mono1 = photometric == "MONOCHROME1"
    stored = (2**bits - 1) - values.astype(np.int64) if mono1 else values.astype(np.int64)
    allocated = 8 if bits == 8 else 16
    return {
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": photometric,
        "Rows": values.shape[0],
        "Columns": values.shape[1],
        "BitsAllocated": allocated,
        "BitsStored": bits,
        "HighBit": bits - 1,
        "PixelRepresentation": 0,
        "RescaleIntercept": DSfloat(0.0, auto_format=True),
        "RescaleSlope": DSfloat(1.0, auto_format=True),
        "RescaleType": "US",
        "PresentationLUTShape": "INVERSE" if mono1 else "IDENTITY",
        "BurnedInAnnotation": "NO",
        "LossyImageCompression": "00",
        "PixelData": stored.astype(np.uint8 if allocated == 8 else "<u2").tobytes(),
    }


def write_radiograph(
    png_or_array: str | os.PathLike | np.ndarray,
    out_path: str | os.PathLike,
    *,
    patient_id: str,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    window: Sequence[float] | None = None,
    voi_lut: Sequence[int] | np.ndarray | None = None,
    modality: str = "DX",
    pixel_spacing: float | Sequence[float] | None = None,
    view_position: str = "PA",
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_name: str = "",
    study_date: str | None = None,
    study_description: str = "",
    series_description: str = "",
    series_number: int = 1,
    accession_number: str = "",
) -> Path:
    """Write a grey chest radiograph as one DICOM DX or CR file (atomically).

    Args:
        png_or_array: a grey image file (8- or 16-bit) or a 2D array of integers 0..65535 (rows, columns).
        out_path: the file to write.
        patient_id: Patient ID.
        photometric: ``"MONOCHROME2"`` (0 = black) or ``"MONOCHROME1"`` (0 = white: values stored inverted).
        bits_stored: 8..16; the input's bit depth (8 for 8-bit, 16 for 16-bit images) when ``None``. The values are
            stored unchanged (never rescaled), so they must fit.
        window: (center, width) for the picture's values; for DX the full range of ``bits_stored`` when ``None``
            and no ``voi_lut`` is given.
        voi_lut: a VOI LUT (output 0..65535 of picture values 0, 1, ...) written as the VOI LUT Sequence.
        modality: ``"DX"`` (Digital X-Ray Image Storage - For Presentation) or ``"CR"``.
        pixel_spacing: Imager Pixel Spacing in mm (one value or row, column); not written when ``None`` (ChestX-ray14
            PNGs carry none), which a DX object needs (DX Detector module) for measurements.
        view_position: View Position (``PA``, ``AP``, ``LL`` ...).
        study_uid: Study Instance UID; a new one when ``None``.
        series_uid: Series Instance UID; a new one when ``None``.
        patient_name: Patient's Name; the patient ID when empty.
        study_date: ``YYYYMMDD``; today when ``None``.
        study_description: Study Description.
        series_description: Series Description.
        series_number: Series Number.
        accession_number: Accession Number.

    Returns:
        The absolute path written.
    """
    values, name = read_grey_image(png_or_array)
    if photometric not in PHOTOMETRICS:
        raise ValueError(f"{name}: photometric {photometric!r} is not one of {PHOTOMETRICS}.")
    if modality not in SOP_CLASSES:
        raise ValueError(f"{name}: modality {modality!r} is not one of {tuple(SOP_CLASSES)}.")
    bits = _check_bits(values, bits_stored, name)
    mono1 = photometric == "MONOCHROME1"
    stored_window = _window(window, bits, mono1, name)
    lut_item = _voi_lut(voi_lut, bits, mono1, name)
    if modality == "DX" and stored_window is None and lut_item is None:
        stored_window = (2.0 ** (bits - 1), 2.0**bits)  # symmetric: the same for MONOCHROME1
    spacing = _spacing(pixel_spacing, name)
    study = StudyFields(
        patient_id=patient_id,
        patient_name=patient_name,
        study_uid=study_uid,
        series_uid=series_uid,
        study_date=study_date,
        study_description=study_description,
        series_description=series_description,
        series_number=series_number,
        accession_number=accession_number,
    )
    ds = new_instance(SOP_CLASSES[modality], study, modality, instance_number=1)
    for keyword, value in _pixel_attributes(values, bits, photometric).items():
        setattr(ds, keyword, value)
    _radiograph_modules(ds, modality, view_position, spacing)
    if stored_window is not None:
        ds.WindowCenter = DSfloat(stored_window[0], auto_format=True)
        ds.WindowWidth = DSfloat(stored_window[1], auto_format=True)
    if lut_item is not None:
        ds.VOILUTSequence = DicomSequence([lut_item])
    return write_file_atomic(ds, out_path)


def _spacing(pixel_spacing: float | Sequence[float] | None, name: str) -> list[float] | None:
    if pixel_spacing is None:
        return None
    values = [float(pixel_spacing)] * 2 if np.isscalar(pixel_spacing) else [float(v) for v in pixel_spacing]
    if len(values) != 2 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"{name}: pixel_spacing {pixel_spacing!r} is not one or two positive numbers (mm).")
    return values


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _radiograph_modules(ds: Dataset, modality: str, view_position: str, spacing: list[float] | None) -> None:
    """Series, anatomy and positioning attributes of a chest radiograph (PS3.3 C.8.1, C.8.11)."""
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view_position
    ds.PatientOrientation = ["L", "F"]  # the usual display: the patient's left to the right, feet down
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.AnatomicRegionSequence = DicomSequence([_code("51185008", "SCT", "Chest")])
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PixelIntensityRelationship = "LOG"
        # -1: higher picture values, less X-ray intensity (bone bright); MONOCHROME1 stores them inverted
        ds.PixelIntensityRelationshipSign = 1 if ds.PhotometricInterpretation == "MONOCHROME1" else -1
        ds.ImageLaterality = "U"  # unpaired: the chest
        ds.DetectorType = ""
        ds.PositionerType = ""
        ds.AcquisitionContextSequence = DicomSequence()
    if spacing is not None:
        ds.ImagerPixelSpacing = [DSfloat(v, auto_format=True) for v in spacing]
