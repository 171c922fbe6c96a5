"""Reading inputs: image inputs on disk (NIfTI files, DICOM series folders) and datalist checks before a run."""

from __future__ import annotations

import locale
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "IMAGE_SUFFIXES",
    "is_dicom_file",
    "is_dicom_series",
    "list_image_inputs",
    "nifti_to_dicom_series",
    "require_split",
]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True when ``path`` has a ``.dcm`` suffix or the DICOM preamble (``DICM`` at byte 128)."""
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def is_dicom_series(folder: str | os.PathLike) -> bool:
    """True when ``folder`` directly holds at least one DICOM file (``.dcm`` or the DICM preamble)."""
    folder = Path(folder)
    return folder.is_dir() and any(p.is_file() and is_dicom_file(p) for p in folder.iterdir())


def list_image_inputs(path: str | os.PathLike) -> list[str]:
    """The images to run inference on, as paths MONAI's ``LoadImage`` reads (NIfTI with nibabel, DICOM with ITK).

    ``path`` may be an image file, a DICOM series folder, or a folder holding image files and/or DICOM series
    sub-folders (one level). Raises ``FileNotFoundError`` naming ``path`` when nothing readable is there.
    """
    p = Path(path)
    if p.is_file():
        if not p.name.lower().endswith(IMAGE_SUFFIXES) and not is_dicom_file(p):
            raise ValueError(f"{p} is not a supported image file ({', '.join(IMAGE_SUFFIXES)} or DICOM).")
        return [str(p)]
    if not p.is_dir():
        raise FileNotFoundError(f"inference input {p} does not exist.")
    if is_dicom_series(p):
        return [str(p)]
    found = [str(c) for c in sorted(p.iterdir()) if c.is_file() and c.name.lower().endswith(IMAGE_SUFFIXES)]
    found += [str(c) for c in sorted(p.iterdir()) if c.is_dir() and is_dicom_series(c)]
    if not found:
        raise FileNotFoundError(
            f"no image found in {p}: expected {', '.join(IMAGE_SUFFIXES)} files or DICOM series folders."
        )
    return found


def require_split(datalist: Mapping[str, list], key: str, dataset_dir: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming ``dataset_dir`` when the datalist's ``key`` split is empty."""
    if not datalist.get(key):
        raise ValueError(
            f"the '{key}' split of the dataset in {dataset_dir} is empty: this workflow needs at least one case there "
            f"(add cases, choose another --split, or give a --datalist_file)."
        )


def nifti_to_dicom_series(nifti_path: str | os.PathLike, output_dir: str | os.PathLike, modality: str = "CT") -> Path:
    """Write a 3D NIfTI volume as a DICOM series (one file per slice, int16) that reads back with the same geometry.

    Each slice carries its own position, orientation, pixel spacing and slice thickness, so ITK (and MONAI's
    ``LoadImage``) rebuild the NIfTI's shape and affine from the folder. Meant for testing DICOM input paths.

    Returns:
        ``output_dir``; raises ``ValueError`` naming the file when it is not a 3D volume.
    """
    import itk

    img = itk.imread(str(nifti_path), itk.SS)
    if img.GetImageDimension() != 3:
        raise ValueError(f"{nifti_path} is not a 3D volume.")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    spacing = [float(s) for s in itk.spacing(img)]
    direction = itk.array_from_matrix(img.GetDirection())
    orientation = "\\".join(f"{v:.6f}" for v in list(direction[:, 0]) + list(direction[:, 1]))
    voxels = itk.array_from_image(img)  # (z, y, x)
    saved_locale = locale.setlocale(locale.LC_ALL)  # GDCM's writer switches the process to the C locale
    try:
        _write_dicom_slices(itk, img, voxels, out, spacing, orientation, modality)
    finally:
        locale.setlocale(locale.LC_ALL, saved_locale)
    return out


def _write_dicom_slices(itk, img, voxels, out: Path, spacing, orientation: str, modality: str) -> None:
    import numpy as np

    for z in range(voxels.shape[0]):
        position = img.TransformIndexToPhysicalPoint([0, 0, z])
        tags = itk.MetaDataDictionary()
        for tag, value in {
            "0008|0060": modality,
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.1",  # one series instance UID for all slices
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{p:.6f}" for p in position),
            "0020|0037": orientation,
            "0028|0030": f"{spacing[1]:.6f}\\{spacing[0]:.6f}",
            "0018|0050": f"{spacing[2]:.6f}",
        }.items():
            tags[tag] = value
        sl = itk.image_from_array(np.ascontiguousarray(voxels[z]))
        sl.SetMetaDataDictionary(tags)
        sl.SetSpacing(spacing[:2])
        io = itk.GDCMImageIO.New()
        io.KeepOriginalUIDOn()
        writer = itk.ImageFileWriter[type(sl)].New(Input=sl, FileName=str(out / f"IM{z:04d}.dcm"), ImageIO=io)
        writer.Update()
