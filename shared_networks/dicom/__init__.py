"""DICOM for the hospital path: the project's sample formats written as DICOM objects a PACS accepts, and uploaded
to it over DICOMweb (STOW-RS). Not part of a bundle release (imported by the command lines and tests only).

* :func:`write_ct_series` (``ct``): a NIfTI CT volume (Hounsfield units) -> a CT image series, one file per slice.
* :func:`write_radiograph` (``radiograph``): a grey PNG/array -> a DX (For Presentation) or CR object.
* :func:`stow_rs` (``dicomweb``): upload files to a DICOMweb server; :func:`read_credentials` reads ``user:password``.

``scripts/orthanc.sh`` starts a local PACS (Orthanc with its DICOMweb plugin) to upload to;
``python -m shared_networks.cli.to_dicom`` is the command line.
"""

from shared_networks.dicom.ct import write_ct_series
from shared_networks.dicom.dicomweb import StowError, read_credentials, stow_rs
from shared_networks.dicom.radiograph import write_radiograph

__all__ = ["StowError", "read_credentials", "stow_rs", "write_ct_series", "write_radiograph"]
