"""The DICOM modules every written object shares: file meta information, SOP common, patient, general study, general
series and general equipment (DICOM PS3.3 C.7, C.12), and writing a file or a folder of files atomically.

A :class:`StudyFields` is checked once (UIDs valid, IDs within their value representation, dates as ``YYYYMMDD``) and
then fills the same modules into every instance of a series, so that a PACS files them under one patient, study and
series.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from shared_networks.utils.files import atomic_write, current_umask

__all__ = ["StudyFields", "check_uid", "new_instance", "write_file_atomic", "write_folder_atomic"]

IMPLEMENTATION_VERSION = "MAE_BUNDLES_1"  # (0002,0013), SH: at most 16 characters
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{6}$")
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")  # PS3.5 9.1: no leading zeros in a component


def check_uid(value: str | None, what: str) -> str:
    """A new UID (``pydicom.uid.generate_uid``) for ``None``, else ``value`` checked (digits and dots, at most 64)."""
    if value is None:
        return generate_uid()
    uid = str(value).strip()
    if len(uid) > 64 or not _UID.fullmatch(uid):
        raise ValueError(f"{what} {value!r} is not a valid DICOM UID (digits and dots, at most 64 characters).")
    return uid


def _check_text(value: str, what: str, max_len: int, required: bool = False) -> str:
    """A DICOM string value (LO, SH, PN component): no backslash (the value separator), no control characters."""
    text = "" if value is None else str(value)
    if required and not text.strip():
        raise ValueError(f"{what} is required and must not be empty.")
    if len(text) > max_len or "\\" in text or any(ord(ch) < 32 for ch in text):
        raise ValueError(f"{what} {text!r}: at most {max_len} characters, no backslash or control characters.")
    return text


@dataclass(frozen=True)
class StudyFields:
    """Patient, study and series of one written series (the same values in every instance).

    Args:
        patient_id: Patient ID (0010,0020), required.
        patient_name: Patient's Name (0010,0010); the patient ID when empty.
        study_uid: Study Instance UID; a new one when ``None``.
        series_uid: Series Instance UID; a new one when ``None``.
        study_date: ``YYYYMMDD``; today when ``None``.
        study_time: ``HHMMSS``; now when ``None``.
        study_description: Study Description.
        series_description: Series Description.
        series_number: Series Number.
        accession_number: Accession Number (the order of the radiology information system), may be empty.
    """

    patient_id: str
    patient_name: str = ""
    study_uid: str | None = None
    series_uid: str | None = None
    study_date: str | None = None
    study_time: str | None = None
    study_description: str = ""
    series_description: str = ""
    series_number: int = 1
    accession_number: str = ""
    frame_of_reference_uid: str = field(default_factory=generate_uid)

    def __post_init__(self) -> None:
        now = datetime.datetime.now()
        set_ = object.__setattr__  # frozen: the checked values replace the given ones once
        set_(self, "patient_id", _check_text(self.patient_id, "patient_id", 64, required=True))
        set_(self, "patient_name", _check_text(self.patient_name or self.patient_id, "patient_name", 64))
        set_(self, "study_uid", check_uid(self.study_uid, "study_uid"))
        set_(self, "series_uid", check_uid(self.series_uid, "series_uid"))
        if self.study_uid == self.series_uid:
            raise ValueError(f"study_uid and series_uid are the same UID {self.study_uid}.")
        date = now.strftime("%Y%m%d") if self.study_date is None else str(self.study_date)
        if not _DATE.fullmatch(date):
            raise ValueError(f"study_date {self.study_date!r} is not a date YYYYMMDD.")
        time = now.strftime("%H%M%S") if self.study_time is None else str(self.study_time)
        if not _TIME.fullmatch(time):
            raise ValueError(f"study_time {self.study_time!r} is not a time HHMMSS.")
        set_(self, "study_date", date)
        set_(self, "study_time", time)
        for name, max_len in (("study_description", 64), ("series_description", 64), ("accession_number", 16)):
            set_(self, name, _check_text(getattr(self, name), name, max_len))
        if not isinstance(self.series_number, int) or not 0 <= self.series_number < 2**31:
            raise ValueError(f"series_number {self.series_number!r} is not a non-negative integer.")

    def fill(self, ds: Dataset, modality: str) -> None:
        """Patient, general study, general series and general equipment modules (C.7.1.1, C.7.2.1, C.7.3.1, C.7.5.1)."""
        ds.PatientName = self.patient_name
        ds.PatientID = self.patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyInstanceUID = self.study_uid
        ds.StudyDate = self.study_date
        ds.StudyTime = self.study_time
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.AccessionNumber = self.accession_number
        if self.study_description:
            ds.StudyDescription = self.study_description
        ds.Modality = modality
        ds.SeriesInstanceUID = self.series_uid
        ds.SeriesNumber = self.series_number
        ds.SeriesDate = self.study_date
        ds.SeriesTime = self.study_time
        if self.series_description:
            ds.SeriesDescription = self.series_description
        ds.Manufacturer = "mae-medical-bundles"
        ds.ManufacturerModelName = "shared_networks.dicom"


def new_instance(sop_class_uid: str, study: StudyFields, modality: str, instance_number: int) -> Dataset:
    """A dataset with file meta information (explicit VR little endian), SOP common (UTF-8 character set, a new SOP
    Instance UID), the study's patient/study/series/equipment modules, Instance Number and content date/time."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate = study.study_date
    ds.InstanceCreationTime = study.study_time
    study.fill(ds, modality)
    ds.InstanceNumber = instance_number
    ds.ContentDate = study.study_date
    ds.ContentTime = study.study_time
    return ds


def _save(ds: Dataset, target) -> None:
    ds.save_as(target, enforce_file_format=True)


def write_file_atomic(ds: Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` as a DICOM file (PS3.10: preamble, ``DICM``, file meta) to ``path`` atomically."""
    return atomic_write(path, lambda f: _save(ds, f))


def write_folder_atomic(
    out_dir: str | os.PathLike, datasets: Sequence[Dataset], names: Callable[[int, Dataset], str]
) -> list[Path]:
    """Write ``datasets`` as files of a new folder ``out_dir``: into a temporary folder beside it, then one rename, so
    that ``out_dir`` holds either the whole series or nothing.

    Args:
        out_dir: the folder to create; it must not exist, or be an empty folder.
        datasets: the instances.
        names: file name of each instance, from its index and dataset.

    Returns:
        The absolute paths written, in the order of ``datasets``.
    """
    target = Path(out_dir).expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"{target} exists and is not an empty folder: give a new folder for the series.")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        files = [tmp / names(i, ds) for i, ds in enumerate(datasets)]
        if len(set(files)) != len(files):
            raise AssertionError("two instances got the same file name")
        for ds, path in zip(datasets, files, strict=True):
            _save(ds, path)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700; a plain mkdir's mode instead
        os.replace(tmp, target)  # onto an absent or empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [target / p.name for p in files]
