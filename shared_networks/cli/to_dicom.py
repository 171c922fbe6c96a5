"""Turn a NIfTI CT or a grey radiograph into DICOM, and optionally upload it to a PACS over DICOMweb (STOW-RS).

Command line::

    python -m shared_networks.cli.to_dicom ct IMAGE.nii.gz OUT_DIR --patient_id ID [--study_uid UID]
        [--series_uid UID] [--study_date YYYYMMDD] [--rounding] [--stow_url URL [--stow_auth FILE]]
    python -m shared_networks.cli.to_dicom radiograph IMAGE.png OUT.dcm --patient_id ID [--modality DX|CR]
        [--photometric MONOCHROME2|MONOCHROME1] [--bits_stored 8..16] [--window CENTER,WIDTH]
        [--pixel_spacing MM] [--stow_url URL [--stow_auth FILE]]

``--stow_url`` is the server's DICOMweb root (``http://127.0.0.1:8042/dicom-web`` for ``scripts/orthanc.sh``),
``--stow_auth`` a file holding ``user:password`` (``scripts/orthanc.sh`` writes ``DIR/credentials``). Each command
prints a JSON summary: the files, the study and series UIDs, and how many instances the server stored.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from shared_networks.cli import run_fire
from shared_networks.dicom.ct import write_ct_series
from shared_networks.dicom.dicomweb import StowError, read_credentials, stow_rs
from shared_networks.dicom.radiograph import write_radiograph

__all__ = ["ToDicomCommands", "main"]


def _text(value, name: str) -> str | None:
    """A string option as given: ``fire`` turns ``--patient_id 123`` into an int (kept as its digits); a float
    (``--study_uid 1.20``) would lose digits, so it is refused."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"--{name} {value!r}: give it as a string, quoted (--{name} '\"{value}\"').")


def _upload(files: Sequence[Path], stow_url: str | None, stow_auth: str | None) -> int | None:
    """Upload ``files`` with STOW-RS when ``stow_url`` is given; the number of instances the server stored."""
    if stow_url is None:
        if stow_auth is not None:
            raise ValueError("--stow_auth is given without --stow_url.")
        return None
    answers = stow_rs(stow_url, files, auth=None if stow_auth is None else read_credentials(stow_auth))
    return sum(len((a.get("00081199") or {}).get("Value", [])) for a in answers)


class ToDicomCommands:
    """Write DICOM from the project's sample formats (``ct``: a NIfTI CT as a CT image series; ``radiograph``: a
    PNG as a DX or CR object) and optionally upload it to a PACS (``--stow_url``)."""

    def ct(
        self,
        image: str,
        out_dir: str,
        patient_id: str,
        study_uid: str | None = None,
        series_uid: str | None = None,
        study_date: str | None = None,
        study_description: str = "",
        rounding: bool = False,
        stow_url: str | None = None,
        stow_auth: str | None = None,
    ) -> dict:
        """Write a NIfTI CT (Hounsfield units) as a DICOM CT series, one file per slice, into the new folder out_dir.

        Args:
            image: the NIfTI volume.
            out_dir: the series folder to create (absent or empty).
            patient_id: Patient ID.
            study_uid: Study Instance UID; a new one when absent.
            series_uid: Series Instance UID; a new one when absent.
            study_date: YYYYMMDD; today when absent.
            study_description: Study Description.
            rounding: round non-whole HU values (a resampled volume) instead of refusing the file.
            stow_url: a DICOMweb root to upload the series to (STOW-RS).
            stow_auth: a file holding user:password for the upload.

        Returns:
            The files, UIDs and the number of instances stored.
        """
        files = write_ct_series(
            image,
            out_dir,
            patient_id=_text(patient_id, "patient_id"),
            study_uid=_text(study_uid, "study_uid"),
            series_uid=_text(series_uid, "series_uid"),
            study_date=_text(study_date, "study_date"),
            study_description=_text(study_description, "study_description"),
            rounding=bool(rounding),
        )
        return _summary(files, _upload(files, stow_url, stow_auth))

    def radiograph(
        self,
        image: str,
        out_path: str,
        patient_id: str,
        modality: str = "DX",
        photometric: str = "MONOCHROME2",
        bits_stored: int | None = None,
        window: Sequence[float] | None = None,
        pixel_spacing: float | None = None,
        study_uid: str | None = None,
        series_uid: str | None = None,
        study_date: str | None = None,
        stow_url: str | None = None,
        stow_auth: str | None = None,
    ) -> dict:
        """Write a grey radiograph (PNG/JPEG, 8 or 16 bit) as one DICOM DX or CR file.

        Args:
            image: the image file.
            out_path: the DICOM file to write.
            patient_id: Patient ID.
            modality: DX (Digital X-Ray, For Presentation) or CR.
            photometric: MONOCHROME2 (0 = black) or MONOCHROME1 (0 = white; values stored inverted).
            bits_stored: 8..16; the image's bit depth when absent.
            window: CENTER,WIDTH for the picture's values; for DX the full range when absent.
            pixel_spacing: Imager Pixel Spacing in mm.
            study_uid: Study Instance UID; a new one when absent.
            series_uid: Series Instance UID; a new one when absent.
            study_date: YYYYMMDD; today when absent.
            stow_url: a DICOMweb root to upload the file to (STOW-RS).
            stow_auth: a file holding user:password for the upload.

        Returns:
            The file, UIDs and the number of instances stored.
        """
        path = write_radiograph(
            image,
            out_path,
            patient_id=_text(patient_id, "patient_id"),
            modality=str(modality),
            photometric=str(photometric),
            bits_stored=bits_stored,
            window=window,
            pixel_spacing=pixel_spacing,
            study_uid=_text(study_uid, "study_uid"),
            series_uid=_text(series_uid, "series_uid"),
            study_date=_text(study_date, "study_date"),
        )
        return _summary([path], _upload([path], stow_url, stow_auth))


def _summary(files: Sequence[Path], stored: int | None) -> dict:
    from pydicom import dcmread

    first = dcmread(files[0], stop_before_pixels=True)
    return {
        "files": [str(f) for f in files],
        "study_uid": str(first.StudyInstanceUID),
        "series_uid": str(first.SeriesInstanceUID),
        "stored": stored,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shared_networks.cli.to_dicom ct|radiograph IMAGE OUT --patient_id ID``.

    Args:
        argv: command line arguments; ``None`` reads ``sys.argv``.
    """
    try:
        run_fire(ToDicomCommands, "shared_networks.cli.to_dicom", argv, serialize=lambda r: json.dumps(r, indent=4))
    except (OSError, ValueError, StowError) as err:  # a refused input (named) or the server's answer: no traceback
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
