"""A NIfTI CT volume (Hounsfield units) as a DICOM CT image series, one file per slice (CT Image Storage).

The geometry comes from the NIfTI affine (``nibabel``'s best affine: the sform when set, else the qform), which maps
voxel indices (i, j, k) to RAS millimetres; DICOM patient coordinates are LPS, so the first two rows change sign.
Slice k of the series is the array's ``[:, :, k]``: its columns run along i, its rows along j. Then

* Image Orientation (Patient) = the unit vectors of the affine's columns i and j (in LPS),
* Pixel Spacing = (|column j|, |column i|): the distance between rows, then between columns (PS3.3 C.7.6.2.1.1),
* Image Position (Patient) of slice k = the LPS position of voxel (0, 0, k),
* Slice Thickness = Spacing Between Slices = |column k|.

A reader that sorts the slices along the normal (row x column direction), as ITK/GDCM do, gets the voxels and the
affine of the NIfTI file back when the affine is right-handed in LPS (``det > 0``, the usual case: RAS and LPS flips
cancel). A left-handed volume is written as it is, and such a reader returns the same physical image with its slices
in reverse order (and the affine to match). Sheared affines (pixel axes not perpendicular, or a slice axis off the
normal: gantry tilt) have no plain DICOM series form and are refused.

Example::

    files = write_ct_series("img0001.nii.gz", "dicom/img0001", patient_id="BTCV-0001")
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from pydicom.uid import CTImageStorage
from pydicom.valuerep import DSfloat

from shared_networks.dicom.modules import StudyFields, new_instance, write_folder_atomic

__all__ = ["SliceGeometry", "hu_to_stored", "read_ct_volume", "slice_geometry", "write_ct_series"]

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
ORTHOGONAL_TOLERANCE = 1e-4  # of the cosine between axes: float32 affines are that far from exact


def _ds(value: float) -> DSfloat:
    return DSfloat(float(value), auto_format=True)  # at most 16 characters, as the DS value representation allows


@dataclass(frozen=True)
class SliceGeometry:
    """The plane and positions of a series' slices, in DICOM LPS millimetres.

    Attributes:
        orientation: (6,) row direction (along a row: columns increase) then column direction.
        pixel_spacing: (2,) between rows, between columns.
        positions: (Z, 3) position of the first voxel of each slice.
        slice_spacing: distance between consecutive slices.
    """

    orientation: np.ndarray
    pixel_spacing: np.ndarray
    positions: np.ndarray
    slice_spacing: float


def slice_geometry(affine_ras: np.ndarray, num_slices: int, name: str = "<volume>") -> SliceGeometry:
    """The DICOM geometry of the slices ``[:, :, k]`` of a volume whose (4, 4) RAS ``affine_ras`` is given.

    Raises ``ValueError`` naming ``name`` for a degenerate or sheared affine.
    """
    affine = LPS_FROM_RAS @ np.asarray(affine_ras, dtype=np.float64)
    axes = affine[:3, :3]  # columns: the steps along i, j, k in LPS
    sizes = np.linalg.norm(axes, axis=0)
    if not np.all(np.isfinite(affine)) or np.any(sizes <= 0):
        raise ValueError(f"{name}: the affine is degenerate (an axis of length 0 or not finite):\n{affine_ras}")
    unit = axes / sizes
    if abs(float(unit[:, 0] @ unit[:, 1])) > ORTHOGONAL_TOLERANCE:
        raise ValueError(f"{name}: the in-plane axes are not perpendicular (a sheared affine); DICOM needs them so.")
    normal = np.cross(unit[:, 0], unit[:, 1])
    if abs(abs(float(normal @ unit[:, 2])) - 1.0) > ORTHOGONAL_TOLERANCE:
        raise ValueError(
            f"{name}: the slice axis is not perpendicular to the slices (gantry tilt or shear): resample it first."
        )
    positions = affine[:3, 3] + np.arange(num_slices)[:, None] * axes[:, 2]  # (Z, 3)
    return SliceGeometry(
        orientation=np.concatenate([unit[:, 0], unit[:, 1]]),
        pixel_spacing=np.array([sizes[1], sizes[0]]),
        positions=positions,
        slice_spacing=float(sizes[2]),
    )


def read_ct_volume(nifti_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI file -> ``(volume (I, J, K), affine (4, 4) RAS)``, the values scaled by the header's slope/intercept.

    Raises ``ValueError`` naming the file when it cannot be read or is not a 3D volume (a 4D file with one volume is
    taken as 3D).
    """
    path = Path(nifti_path)
    try:
        img = nib.load(path)
        volume = np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, zlib.error, ImageFileError) as e:
        raise ValueError(f"{path} cannot be read as a NIfTI volume: {e}") from e
    if volume.ndim == 4 and volume.shape[3] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ValueError(f"{path}: not a 3D volume (array shape {volume.shape}); a CT series needs (I, J, K).")
    if volume.dtype.kind not in "iuf" or np.iscomplexobj(volume):
        raise ValueError(f"{path}: voxel type {volume.dtype} is not a number type of Hounsfield units.")
    return volume, np.asarray(img.affine, dtype=np.float64)


def hu_to_stored(volume: np.ndarray, name: str = "<volume>", rounding: bool = False) -> tuple[np.ndarray, float]:
    """Hounsfield units -> ``(stored values, rescale intercept)`` with a rescale slope of 1, so HU = stored + intercept
    exactly: int16 with intercept 0 when the values fit, else uint16 with the minimum as intercept.

    Args:
        volume: the HU values, any number type.
        name: the file, for the errors.
        rounding: round non-integer values (a resampled volume) instead of refusing them.

    Raises ``ValueError`` naming ``name`` for values that are not finite, not integers (unless ``rounding``) or span
    more than 65535.
    """
    if volume.dtype.kind in "iu":
        values = volume
    else:
        if not np.all(np.isfinite(volume)):
            raise ValueError(f"{name}: the volume holds NaN or infinite values.")
        values = np.round(volume)
        if not rounding and not np.array_equal(values, volume):
            raise ValueError(
                f"{name}: the values are not whole Hounsfield units (a resampled volume?): pass rounding=True "
                "(--rounding) to round them."
            )
    lo, hi = int(values.min()), int(values.max())
    if lo >= -(2**15) and hi < 2**15:
        return values.astype(np.int16), 0.0
    if hi - lo < 2**16:
        return (values.astype(np.int64) - lo).astype(np.uint16), float(lo)
    raise ValueError(f"{name}: values {lo}..{hi} span more than 65535: not a CT in Hounsfield units?")


def _ct_slice(stored: np.ndarray, intercept: float, geometry: SliceGeometry, k: int) -> dict:
    """Image plane, image pixel and CT image attributes of slice ``k`` (PS3.3 C.7.6.2, C.7.6.3, C.8.2.1)."""
    pixels = np.ascontiguousarray(stored[:, :, k].T)  # (I, J) -> (rows J, columns I)
    position = geometry.positions[k]
    normal = np.cross(geometry.orientation[:3], geometry.orientation[3:])
    signed = pixels.dtype == np.int16
    return {
        "ImageType": ["DERIVED", "SECONDARY", "AXIAL"],
        "ImagePositionPatient": [_ds(v) for v in position],
        "ImageOrientationPatient": [_ds(v) for v in geometry.orientation],
        "PixelSpacing": [_ds(v) for v in geometry.pixel_spacing],
        "SliceThickness": _ds(geometry.slice_spacing),
        "SpacingBetweenSlices": _ds(geometry.slice_spacing),
        "SliceLocation": _ds(float(normal @ position)),
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": pixels.shape[0],
        "Columns": pixels.shape[1],
        "BitsAllocated": 16,
        "BitsStored": 16,
        "HighBit": 15,
        "PixelRepresentation": 1 if signed else 0,
        "RescaleIntercept": _ds(intercept),
        "RescaleSlope": _ds(1.0),
        "RescaleType": "HU",
        "KVP": "",
        "AcquisitionNumber": 1,
        "PixelData": pixels.astype("<i2" if signed else "<u2").tobytes(),
    }


def write_ct_series(
    nifti_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    patient_id: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_name: str = "",
    study_date: str | None = None,
    study_description: str = "",
    series_description: str = "",
    series_number: int = 1,
    accession_number: str = "",
    rounding: bool = False,
) -> list[Path]:
    """Write a NIfTI CT volume (HU) as a DICOM CT image series in the new folder ``out_dir``, one file per slice.

    Args:
        nifti_path: the CT volume (I, J, K) in Hounsfield units.
        out_dir: the series folder to create (absent or empty); written whole or not at all.
        patient_id: Patient ID.
        study_uid: Study Instance UID; a new one (``pydicom.uid.generate_uid``) when ``None``.
        series_uid: Series Instance UID; a new one when ``None``.
        patient_name: Patient's Name; the patient ID when empty.
        study_date: ``YYYYMMDD``; today when ``None``.
        study_description: Study Description.
        series_description: Series Description; the NIfTI file name when empty.
        series_number: Series Number.
        accession_number: Accession Number.
        rounding: round non-whole HU values instead of refusing the volume.

    Returns:
        The files, slice k as ``CT{k + 1:05d}.dcm`` (Instance Number k + 1), in slice order.
    """
    path = Path(nifti_path)
    volume, affine = read_ct_volume(path)
    geometry = slice_geometry(affine, volume.shape[2], str(path))
    stored, intercept = hu_to_stored(volume, str(path), rounding)
    study = StudyFields(
        patient_id=patient_id,
        patient_name=patient_name,
        study_uid=study_uid,
        series_uid=series_uid,
        study_date=study_date,
        study_description=study_description,
        series_description=series_description or path.name.split(".")[0],
        series_number=series_number,
        accession_number=accession_number,
    )
    datasets = []
    for k in range(volume.shape[2]):
        ds = new_instance(CTImageStorage, study, "CT", instance_number=k + 1)
        ds.PatientPosition = ""
        ds.Laterality = ""  # type 2C (paired body parts): empty, an abdominal CT
        ds.FrameOfReferenceUID = study.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        for keyword, value in _ct_slice(stored, intercept, geometry, k).items():
            setattr(ds, keyword, value)
        datasets.append(ds)
    return write_folder_atomic(out_dir, datasets, lambda i, ds: f"CT{ds.InstanceNumber:05d}.dcm")
