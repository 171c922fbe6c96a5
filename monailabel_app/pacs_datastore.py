"""The server's datastore when ``--studies`` is a DICOMweb URL: MONAI Label's ``DICOMWebDatastore``, made safe.

Built by ``MAEBundlesApp.init_remote_datastore`` (``main.py``; a public method of MONAI Label's app) instead of MONAI
Label's own, which downloads dcmqi from GitHub into the app's ``bin/`` (on the server's ``PATH``) at every start
where it is absent, and logs in with ``MONAI_LABEL_DICOMWEB_USERNAME``/``PASSWORD`` (exported to every process it
starts). Here:

* the PACS is checked and logged into as ``dicomweb_access.py`` says: the URL (https, or plain http to a loopback host
  unless ``MAE_MONAILABEL_DICOMWEB_INSECURE=1``), the login read from the file named by
  ``MAE_MONAILABEL_DICOMWEB_CREDENTIALS`` into the HTTP session only;
* the cache of series and labels is ``MONAI_LABEL_DICOMWEB_CACHE_PATH`` (``scripts/serve_monailabel.sh`` puts it in
  the server's private temporary folder, removed when the server stops: no patient data is left behind);
* ids are Series Instance UIDs (``dicomweb_access.is_uid``), checked before any is joined to a cache path: the
  image a client names, and the series and instance UIDs the PACS answers with (MONAI Label names downloaded files
  after them, so a crafted UID in the PACS would write outside the cache);
* a ``final`` label (``PUT /datastore/label``, or an inference saved with ``label_tag: final``) is written as a DICOM
  SEG by ``dicom_seg.py`` and stored in the PACS with STOW-RS, then kept in the cache as MONAI Label does; other tags
  stay in the cache only;
* a ``final`` label kept in the cache is answered from there (MONAI Label 0.8.5 would fetch the image series again
  as if it were the SEG and fail);
* the image series listed are those of the modalities given (``modalities``: one QIDO-RS search per modality, the
  answers merged, since a QIDO query matches one Modality value), each search with the other keys of MONAI Label's
  ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``; without modalities, that filter as it is (``{"Modality": "CT"}`` by
  default), as MONAI Label does;
* an image series is checked before it is cached (:func:`check_image_series`): each instance an image, its slices
  evenly spaced along their normal (ITK reads a series with a missing slice as a shorter volume, its spacing
  averaged, and labels would land off their organs): otherwise 422 naming the series and the instance or gap. A
  rescale (slope, intercept, signed values) is ITK's to apply: it reads such a CT in HU;
* a radiograph series (:data:`RADIOGRAPH_MODALITIES`) is one image with pixel data that
  ``shared_networks.data.dicom_display`` can display (grey, one frame, a valid window or VOI LUT): otherwise 422
  naming the series (and the instance). Its image is the downloaded DICOM file itself, not a NIfTI conversion: the
  chest X-ray bundle reads it with its own ``DicomRadiographReader`` (MONOCHROME1 inverted, VOI LUT or window
  applied), as its ``inference.yaml`` does;
* every PACS call has a bounded time (:data:`PACS_TIMEOUT_S`, connect and between bytes), and a PACS that does not
  answer, times out or answers an HTTP error is a 502/504 naming the PACS and what was asked, never a traceback.

Public methods of ``DICOMWebDatastore`` overridden: ``__init__`` (calls MONAI Label's with its public arguments),
``get_image_uri``, ``get_label_uri``, ``save_label``, ``list_images``, ``get_labeled_images``, ``datalist``,
``status`` (``tests/monailabel/test_public_api.py``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pydicom
import requests
from cachetools import TTLCache, cached
from dicom_seg import write_seg
from dicomweb_access import CREDENTIALS_ENV, INSECURE_ENV, check_dicomweb_url, is_uid, read_credentials
from dicomweb_client.session_utils import create_session_from_user_pass
from dicomweb_proxy import PacsReader
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.utils.others.generic import md5_digest
from pydicom.dataset import Dataset

from shared_networks.data.dicom_display import display_values

logger = logging.getLogger(__name__)

__all__ = ["RADIOGRAPH_MODALITIES", "PacsDatastore", "check_image_series", "pacs_datastore"]

RADIOGRAPH_MODALITIES = ("DX", "CR")
"""Modalities of series served as one radiograph: its DICOM file, not a volume."""
FAILED_SOP_SEQUENCE = 0x00081198
MODALITY = "00080060"  # the Modality attribute in a QIDO-RS answer
PACS_TIMEOUT_S = (10.0, 120.0)  # connect, then between two reads of an answer
SPACING_TOLERANCE = 0.01  # of the median slice spacing, and at least 0.01 mm: float positions of a regular series


@contextlib.contextmanager
def pacs_errors(url: str, what: str) -> Iterator[None]:
    """Turn a failed PACS call (``what``: the request, for the message) into a 502 or 504 naming the PACS."""
    try:
        yield
    except requests.Timeout:
        raise HTTPException(504, f"The PACS {url} did not answer within {PACS_TIMEOUT_S[1]:g} s ({what}).") from None
    except requests.ConnectionError:
        raise HTTPException(502, f"The PACS {url} cannot be reached ({what}): is it running?") from None
    except requests.HTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        raise HTTPException(502, f"The PACS {url} answered HTTP {status} ({what}).") from None
    except requests.RequestException as e:
        raise HTTPException(502, f"The PACS {url} failed ({what}): {type(e).__name__}.") from None


def check_image_series(folder: str, series_uid: str) -> None:
    """Refuse (422, naming the series and the instance or the gap) a series that ITK would read wrongly: an instance
    that is not an image (a Structured Report, ...), or slices not evenly spaced along their normal; and a radiograph
    series that is not one displayable image (:func:`check_radiograph_series`)."""
    slices = []
    names = sorted(os.listdir(folder))
    for name in names:
        ds = pydicom.dcmread(os.path.join(folder, name), stop_before_pixels=True, force=True)
        sop = str(ds.get("SOPInstanceUID", name))
        if str(ds.get("Modality", "")) in RADIOGRAPH_MODALITIES:
            check_radiograph_series(folder, series_uid)
            return
        if "Rows" not in ds or "Columns" not in ds:
            kind = getattr(ds.get("SOPClassUID"), "name", str(ds.get("SOPClassUID", "?")))
            raise HTTPException(
                422, f"Series {series_uid}: instance {sop} ({ds.get('Modality', '?')}, {kind}) is not an image."
            )
        if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
            slices.append((sop, np.array(ds.ImageOrientationPatient, float), np.array(ds.ImagePositionPatient, float)))
    if len(slices) < 3:
        return
    orientation = slices[0][1]
    for sop, other, _ in slices:
        if np.abs(other - orientation).max() > 1e-3:
            raise HTTPException(422, f"Series {series_uid}: instance {sop} is in another plane than the others.")
    normal = np.cross(orientation[:3], orientation[3:])
    along = sorted((float(position @ normal), sop) for sop, _, position in slices)
    steps = np.diff([a for a, _ in along])
    median = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - median)))
    if median <= 0 or abs(steps[worst] - median) > max(SPACING_TOLERANCE * median, 0.01):
        (a, first), (b, second) = along[worst], along[worst + 1]
        raise HTTPException(
            422,
            f"Series {series_uid}: slices {first} and {second} are {b - a:.3g} mm apart, the others {median:.3g} mm "
            "(a missing slice or uneven spacing); it cannot be read as one volume.",
        )


def check_radiograph_series(folder: str, series_uid: str) -> None:
    """Refuse (422, naming the series) a radiograph series that is not one image the chest X-ray bundle can read as
    displayed: several instances (a PA and a lateral view belong in two series), no pixel data, colour, several
    frames, undecodable pixel data, an invalid window (``display_values``'s checks)."""
    names = sorted(os.listdir(folder))
    if len(names) != 1:
        sops = ", ".join(
            str(pydicom.dcmread(os.path.join(folder, n), stop_before_pixels=True).SOPInstanceUID) for n in names[:4]
        )
        raise HTTPException(
            422,
            f"Series {series_uid} holds {len(names)} radiographs ({sops}{', ...' if len(names) > 4 else ''}); a "
            "radiograph series is read as one image: store each image in a series of its own.",
        )
    path = os.path.join(folder, names[0])
    ds = pydicom.dcmread(path, force=True)
    sop = str(ds.get("SOPInstanceUID", names[0]))
    try:
        display_values(ds)
    except ValueError as e:  # the reader's reasons, naming the file: here the series and instance instead
        reason = str(e).replace(f"{path}: ", "").replace(path, "the file")
        raise HTTPException(422, f"Series {series_uid}: instance {sop} ({ds.get('Modality', '?')}): {reason}") from None


def radiograph_file(folder: str) -> str | None:
    """The DICOM file of a downloaded radiograph series (one instance of :data:`RADIOGRAPH_MODALITIES`), else None."""
    names = os.listdir(folder)
    if len(names) != 1:
        return None
    path = os.path.join(folder, names[0])
    modality = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"], force=True).get("Modality")
    return path if str(modality or "") in RADIOGRAPH_MODALITIES else None


def _uid(value: Any, what: str) -> str:
    if not is_uid(value):
        raise HTTPException(status_code=422, detail=f"{what} {str(value)[:80]!r} is not a DICOM UID.")
    return value


def _download_series(client: DICOMwebClientX, series_uid: str, folder: str, image: bool = True) -> None:
    """The instances of series ``series_uid`` as ``folder/<SOP Instance UID>.dcm``, written whole or not at all (an
    ``image`` series only when :func:`check_image_series` takes it)."""
    found = [Dataset.from_json(s) for s in client.search_for_series(search_filters={"SeriesInstanceUID": series_uid})]
    studies = {str(s.get("StudyInstanceUID", "")) for s in found if s.get("SeriesInstanceUID") == series_uid}
    if len(studies) != 1:
        raise HTTPException(status_code=404, detail=f"Series {series_uid} is not in the PACS (or in several studies).")
    study_uid = _uid(studies.pop(), "The PACS answered a Study Instance UID")
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=".download-", dir=parent)
    try:
        for instance in client.retrieve_series(study_uid, series_uid):
            sop = _uid(str(instance.get("SOPInstanceUID", "")), "The PACS answered a SOP Instance UID")
            instance.save_as(os.path.join(partial, f"{sop}.dcm"))
        if not os.listdir(partial):
            raise HTTPException(404, f"Series {series_uid}: the PACS answered no instance.")
        if image:
            check_image_series(partial, series_uid)
        shutil.rmtree(folder, ignore_errors=True)  # an empty or partial folder of an earlier try
        os.rename(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


class PacsDatastore(DICOMWebDatastore):
    """``DICOMWebDatastore`` with checked ids, safe downloads and DICOM SEGs of its own (module docstring).

    Args:
        client: the PACS's DICOMweb client (logged in).
        cache_path: the folder of the cache (a sub-folder per PACS URL is made there).
        model_labels: a served model's labels (name -> value), to name the segments of an inference it saves.
        search_filter: the QIDO filter of the series listed as images (MONAI Label's setting, CT by default).
        modalities: the modalities of the series listed as images, one search each with ``search_filter``'s other
            keys; empty: ``search_filter`` as it is.
    """

    def __init__(
        self,
        client: DICOMwebClientX,
        cache_path: str,
        model_labels: Callable[[str], Mapping[str, int]],
        search_filter: Mapping[str, Any] | None = None,
        modalities: Sequence[str] = (),
    ) -> None:
        self.pacs = client
        self.cache_folder = os.path.realpath(os.path.join(cache_path, md5_digest(client.base_url)))
        self.model_labels = model_labels
        filters = dict(search_filter if search_filter is not None else settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER)
        others = {k: v for k, v in filters.items() if k != "Modality"}
        self.searches = [{**others, "Modality": m} for m in modalities] or [filters]
        super().__init__(client, filters, cache_path=cache_path, fetch_by_frame=False, convert_to_nifti=True)

    def _series_folder(self, uid: str, *tag: str) -> str:
        labels = ("labels", *tag) if tag else ()
        return os.path.join(self.cache_folder, *labels, uid)

    def _pacs(self, what: str) -> contextlib.AbstractContextManager[None]:
        return pacs_errors(self.pacs.base_url, what)

    def list_images(self) -> list[str]:
        """The Series Instance UIDs of :attr:`searches` (each a QIDO-RS search), in the PACS's order, merged."""
        with self._pacs("listing the image series"):
            return self._listed_series()

    @cached(cache=TTLCache(maxsize=16, ttl=settings.MONAI_LABEL_DICOMWEB_CACHE_EXPIRY))  # as MONAI Label's list
    def _listed_series(self) -> list[str]:
        series: dict[str, None] = {}
        for search in self.searches:
            for found in self.pacs.search_for_series(search_filters=search):
                series.setdefault(str(Dataset.from_json(found)["SeriesInstanceUID"].value), None)
        logger.debug(f"{len(series)} image series ({self.searches})")
        return list(series)

    def series_modality(self, image_id: str) -> str:
        """The Modality of series ``image_id`` as the PACS answers it (QIDO-RS); 404 when it is not there."""
        uid = _uid(image_id, "Image id")
        with self._pacs(f"looking up series {uid}"):
            found = self.pacs.search_for_series(search_filters={"SeriesInstanceUID": uid})
        values = [f.get(MODALITY, {}).get("Value", [""])[0] for f in found]
        if not values:
            raise HTTPException(status_code=404, detail=f"Series {uid} is not in the PACS.")
        return str(values[0])

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        with self._pacs("listing the SEG series"):
            return super().get_labeled_images(label_tag, labels)

    def status(self) -> dict[str, Any]:
        """MONAI Label's counts of series, or, where the PACS fails, its error: ``/info`` is answered all the same."""
        try:
            return super().status()
        except HTTPException as e:
            return {"total": 0, "completed": 0, "label_tags": {}, "pacs_error": e.detail}

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        with self._pacs("fetching the labelled series"):
            items = self._labelled_pairs(full_path)
            images = set(self.list_images())
        kept = [d for d in items if os.path.basename(d["image"]).removesuffix(".nii.gz") in images]
        for d in items:
            if d not in kept:  # MONAI Label keeps the pair it cached, though the series is gone from the PACS
                logger.warning(f"Training list: {os.path.basename(d['image'])} left out, its series is not in the PACS")
        return kept

    def _labelled_pairs(self, full_path: bool, tries: int = 3) -> list[dict[str, Any]]:
        """MONAI Label's training pairs. Its list is built from objects that its file watcher updates in another
        thread: a SEG whose series left the PACS is deleted from the cache while the list is built, and its label
        vanishes between MONAI Label's filter and its read (``KeyError``). Built again, the list no longer holds it."""
        for attempt in range(tries):
            try:
                return super().datalist(full_path)
            except KeyError as e:
                logger.info(f"Training list: label {e} removed while the list was built; building it again")
                time.sleep(0.5 * (attempt + 1))
        raise HTTPException(status_code=503, detail="The datastore changed while the training list was built; retry.")

    def get_image_uri(self, image_id: str) -> str:
        uid = _uid(image_id, "Image id")
        folder = self._series_folder(uid)
        with self._pacs(f"fetching series {uid}"):
            if not (os.path.isdir(folder) and os.listdir(folder)):
                _download_series(self.pacs, uid, folder)
            radiograph = radiograph_file(folder)  # read as it is (DicomRadiographReader), not converted by ITK
            return radiograph if radiograph else super().get_image_uri(uid)

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        if label_tag != DefaultLabelTag.FINAL:
            return super().get_label_uri(label_id, label_tag, image_id)
        kept = LocalDatastore.get_label_uri(self, label_id, label_tag)  # a label saved here: its NIfTI in the cache
        if kept and os.path.exists(kept):
            return kept
        uid = _uid(label_id, "Label id")  # a SEG series of the PACS (training reads them)
        _uid(image_id, "Image id")
        folder = self._series_folder(uid, label_tag)
        with self._pacs(f"fetching the SEG series {uid}"):
            if not (os.path.isdir(folder) and os.listdir(folder)):
                _download_series(self.pacs, uid, folder, image=False)
            return super().get_label_uri(uid, label_tag, image_id)

    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any], label_id: str = ""
    ) -> str:
        if label_tag != DefaultLabelTag.FINAL:
            return super().save_label(image_id, label_filename, label_tag, label_info, label_id)
        uid = _uid(image_id, "Image id")
        image_file = self.get_image_uri(uid)
        try:
            seg = write_seg(self._series_folder(uid), image_file, label_filename, label_info, self.model_labels)
        except ValueError as e:  # dicom_seg.GeometryMismatch: not on the image's grid; values out of range
            raise HTTPException(status_code=422, detail=f"Label of {uid}: {e}") from None
        info = dict(label_info)
        if seg is not None:
            with self._pacs(f"storing the SEG of {uid}"):
                answer = self.pacs.store_instances([seg])
            if FAILED_SOP_SEQUENCE in answer and answer[FAILED_SOP_SEQUENCE].value:
                raise HTTPException(status_code=502, detail=f"The PACS refused the SEG of {uid}: {answer.to_json()}")
            info.update(SeriesInstanceUID=str(seg.SeriesInstanceUID), StudyInstanceUID=str(seg.StudyInstanceUID))
            info.update(Modality="SEG", segments=[s.SegmentLabel for s in seg.SegmentSequence])
            logger.info(f"Stored the SEG {seg.SeriesInstanceUID} of {uid} ({len(seg.SegmentSequence)} segments)")
        return LocalDatastore.save_label(self, uid, label_filename, label_tag, info)


def pacs_datastore(
    url: str, model_labels: Callable[[str], Mapping[str, int]], modalities: Sequence[str] = ()
) -> PacsDatastore:
    """The datastore of the PACS at ``url``, logged in with the file named by ``MAE_MONAILABEL_DICOMWEB_CREDENTIALS``,
    listing the series of ``modalities`` (empty: of ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER``).

    Raises:
        ValueError: the URL or the credentials file is refused (``dicomweb_access``), MONAI Label's own DICOMweb
            login settings are set, or another remote datastore is asked for.
    """
    url = check_dicomweb_url(url, os.environ.get(INSECURE_ENV) == "1")
    if settings.MONAI_LABEL_DATASTORE.lower() not in ("", "dicomweb"):
        raise ValueError(f"MONAI_LABEL_DATASTORE={settings.MONAI_LABEL_DATASTORE}: this app serves DICOMweb only.")
    if settings.MONAI_LABEL_DICOMWEB_USERNAME or settings.MONAI_LABEL_DICOMWEB_PASSWORD:
        raise ValueError(
            "MONAI_LABEL_DICOMWEB_USERNAME/PASSWORD are set: give the PACS login as a file (--dicomweb_credentials); "
            "MONAI Label exports its settings to every process it starts."
        )
    credentials = os.environ.get(CREDENTIALS_ENV, "")
    session = create_session_from_user_pass(*read_credentials(credentials)) if credentials else requests.Session()
    session.request = functools.partial(session.request, timeout=PACS_TIMEOUT_S)  # every call bounded
    client = DICOMwebClientX(
        url=url,
        session=session,
        qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
        wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
        stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX,
    )
    cache = (settings.MONAI_LABEL_DICOMWEB_CACHE_PATH or "").strip()
    if not cache:
        raise ValueError("MONAI_LABEL_DICOMWEB_CACHE_PATH is not set (scripts/serve_monailabel.sh sets it).")
    login = "a credentials file" if credentials else "none"
    listed = ",".join(modalities) or settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER
    logger.info(f"DICOMweb datastore {url} (login: {login}), series of {listed}, cache {cache}")
    datastore = PacsDatastore(client, cache, model_labels, modalities=modalities)
    qido, wado = settings.MONAI_LABEL_QIDO_PREFIX or "", settings.MONAI_LABEL_WADO_PREFIX or ""
    datastore.reader = PacsReader(url, session, qido, wado)  # the viewer's reads (the guard's DICOMweb proxy)
    return datastore
