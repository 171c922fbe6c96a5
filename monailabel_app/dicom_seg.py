"""A label map as a DICOM Segmentation (SEG) of the image series it was drawn on, for the PACS.

MONAI Label 0.8.5 writes the SEG of a saved ``final`` label with dcmqi's ``itkimage2segimage`` (which it downloads
from GitHub into the app's ``bin/`` when absent: not on this server), and names the segments by their position among
the labels present in the map: when a label is absent (an organ the model did not find) every later segment gets the
name of the one before it. Here the SEG is written with ``pydicom-seg`` (a MONAI Label dependency), one segment per
label value present in the map, each named and coloured by its value:

* the name: the ``label_info`` entry whose ``idx`` is the value (3D Slicer sends ``{"name", "idx"}`` per segment;
  an entry without ``idx`` counts by its position, from 1), else the label of that value of the served model named
  by ``model`` (a client's ``params``, or MONAI Label's own for an inference saved with ``save_label``), else
  ``Segment <value>``;
* the colour: the entry's ``color`` (RGB 0..255), else 3D Slicer's and MONAI Label's generic anatomy colour of the
  name, else a fixed colour of the value; stored as the Recommended Display CIELab Value;
* the coded property: SNOMED CT (``SCT``) from pydicom's code dictionary when the name is a concept there, with a
  ``Right``/``Left`` modifier for a name starting so ("right kidney": Kidney + Right), else the project's local
  code (``99MAE``, the value) with the name as its meaning; the category is Anatomical Structure, as MONAI Label's;
* the algorithm: ``AUTOMATIC`` for an inference MONAI Label saves as it is, ``SEMIAUTOMATIC`` for a label a client
  submits (reviewed, perhaps edited); named after the model when one is given.

The SEG references the source series (Referenced Series Sequence, each frame its source image) and shares its study,
patient and frame of reference (pydicom-seg 0.4.1 draws a new Frame of Reference UID: set back here); empty slices are
left out (the reader puts them back).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom_seg
import SimpleITK as sitk
from monailabel.datastore.utils.colors import GENERIC_ANATOMY_COLORS
from pydicom.sr.codedict import codes

__all__ = ["GeometryMismatch", "Segment", "segments_for", "write_seg"]

ANATOMICAL_STRUCTURE = {
    "CodeValue": "123037004",
    "CodingSchemeDesignator": "SCT",
    "CodeMeaning": "Anatomical Structure",
}
LOCAL_SCHEME = "99MAE"  # a private coding scheme (PS3.16 8.2: designators starting with 99)
PALETTE = (  # colours of values without a known one (Okabe-Ito, then greys)
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
    (128, 128, 128),
)
SPACING_TOLERANCE_MM = 1e-3
DIRECTION_TOLERANCE = 1e-4
_CLINICAL_TRIAL = (
    "ClinicalTrialSeriesID",
    "ClinicalTrialTimePointID",
    "ClinicalTrialCoordinatingCenterName",
)


class GeometryMismatch(ValueError):
    """The label map is not on the grid of the image it labels."""


@dataclass(frozen=True)
class Segment:
    """One label value of the map as a SEG segment: its number (the value), name, display colour, the property it
    codes (``SCT`` code or local) and how it was made."""

    number: int
    name: str
    rgb: tuple[int, int, int]
    algorithm_type: str = "SEMIAUTOMATIC"
    algorithm_name: str = "MONAI Label"

    def attributes(self) -> dict[str, Any]:
        """The segment as dcmqi's meta-information JSON describes one (``pydicom_seg.template``)."""
        words = self.name.split()
        side = words[0].lower() if len(words) > 1 and words[0].lower() in ("right", "left") else ""
        concept = _sct(" ".join(words[1:]) if side else self.name)
        out: dict[str, Any] = {
            "labelID": self.number,
            "SegmentLabel": self.name,
            "SegmentDescription": self.name,
            "SegmentAlgorithmType": self.algorithm_type,
            "SegmentAlgorithmName": self.algorithm_name,
            "SegmentedPropertyCategoryCodeSequence": dict(ANATOMICAL_STRUCTURE),
            "recommendedDisplayRGBValue": list(self.rgb),
        }
        if concept is None:
            code = {"CodeValue": str(self.number), "CodingSchemeDesignator": LOCAL_SCHEME, "CodeMeaning": self.name}
            out["SegmentedPropertyTypeCodeSequence"] = code
        else:
            out["SegmentedPropertyTypeCodeSequence"] = concept
            if side:
                out["SegmentedPropertyTypeModifierCodeSequence"] = _sct(side)
        return out


def _sct(name: str) -> dict[str, str] | None:
    """The SNOMED CT concept of pydicom's code dictionary named ``name`` ("inferior vena cava" ->
    InferiorVenaCava), as dcmqi JSON; ``None`` when there is none."""
    key = "".join(w[:1].upper() + w[1:].lower() for w in name.replace("-", " ").split())
    if not key.isalnum():
        return None
    try:
        code = getattr(codes.SCT, key)
    except AttributeError:
        return None
    return {"CodeValue": code.value, "CodingSchemeDesignator": "SCT", "CodeMeaning": code.meaning}


def _colour(number: int, name: str, given: Any) -> tuple[int, int, int]:
    if isinstance(given, (list, tuple)) and len(given) >= 3:
        return tuple(int(c) for c in given[:3])  # checked by request_checks.check_label_info
    known = GENERIC_ANATOMY_COLORS.get(name.lower())
    return tuple(int(c) for c in known[:3]) if known else PALETTE[(number - 1) % len(PALETTE)]


def segments_for(
    values: Sequence[int], label_info: Mapping[str, Any], model_labels: Callable[[str], Mapping[str, int]]
) -> list[Segment]:
    """The segments of the label ``values`` (> 0) present in a map, named as the module docstring says.

    Args:
        values: the label values present.
        label_info: what MONAI Label hands to ``save_label``: a client's form ``params`` (``label_info``: a list of
            ``{"name", "idx", "color", "description", "model_name"}``; ``model``: the served model whose labels name
            the values no entry names), or ``{"model": ..., "params": ...}`` for an inference it saves itself.
        model_labels: a served model's labels (name -> value).
    """
    entries = label_info.get("label_info") or []
    by_value: dict[int, Mapping[str, Any]] = {}
    for position, entry in enumerate(entries, start=1):
        if isinstance(entry, Mapping):
            by_value.setdefault(int(entry.get("idx", position)), entry)
    model = label_info.get("model")
    names = {v: k for k, v in (model_labels(model) if isinstance(model, str) else {}).items()}
    maker = model if isinstance(model, str) and names else "MONAI Label"
    # MONAI Label saves an inference as {"model", "params": its result}: the model's map as it is
    algorithm = ("AUTOMATIC" if "params" in label_info and names else "SEMIAUTOMATIC", maker)
    segments = []
    for value in values:
        entry = by_value.get(value, {})
        name = str(entry.get("name") or names.get(value) or f"Segment {value}")
        maker = str(entry.get("model_name") or algorithm[1])
        segments.append(Segment(value, name, _colour(value, name, entry.get("color")), algorithm[0], maker))
    return segments


def _check_geometry(label: sitk.Image, image: sitk.Image) -> None:
    same = (
        label.GetSize() == image.GetSize()
        and np.allclose(label.GetSpacing(), image.GetSpacing(), atol=SPACING_TOLERANCE_MM)
        and np.allclose(label.GetOrigin(), image.GetOrigin(), atol=SPACING_TOLERANCE_MM)
        and np.allclose(label.GetDirection(), image.GetDirection(), atol=DIRECTION_TOLERANCE)
    )
    if not same:
        raise GeometryMismatch(
            f"the label map (size {label.GetSize()}, spacing {np.round(label.GetSpacing(), 4).tolist()}, origin "
            f"{np.round(label.GetOrigin(), 3).tolist()}) is not on the image's grid (size {image.GetSize()}, spacing "
            f"{np.round(image.GetSpacing(), 4).tolist()}, origin {np.round(image.GetOrigin(), 3).tolist()})."
        )


def write_seg(
    series_dir: str | os.PathLike,
    image_file: str | os.PathLike,
    label_file: str | os.PathLike,
    label_info: Mapping[str, Any],
    model_labels: Callable[[str], Mapping[str, int]],
    series_description: str = "MONAI Label",
) -> pydicom.Dataset | None:
    """The DICOM SEG of ``label_file`` (a label map on the grid of ``image_file``, the series of ``series_dir`` as
    MONAI Label converted it) referencing the series' instances; ``None`` when the map holds no label.

    Raises:
        GeometryMismatch: the label map is not on the image's grid.
        ValueError: a label value over 65535 or below 0.
    """
    image = sitk.ReadImage(str(image_file))
    label = sitk.ReadImage(str(label_file))
    if label.GetNumberOfComponentsPerPixel() != 1 or label.GetDimension() != 3:
        raise GeometryMismatch(f"the label map must be one 3D channel; got {label.GetDimension()}D.")
    _check_geometry(label, image)
    array = sitk.GetArrayViewFromImage(label)
    if array.min() < 0 or array.max() > 65535 or not np.array_equal(array, np.round(array)):
        raise ValueError("the label map holds values that are not whole numbers in 0..65535.")
    mask = sitk.Cast(label, sitk.sitkUInt16)
    mask.CopyInformation(image)  # within the tolerance above: the source images' exact positions
    values = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(mask)) if v > 0]
    if not values:
        return None
    segments = segments_for(values, label_info, model_labels)
    template = pydicom_seg.template.from_dcmqi_metainfo(
        {
            "ContentCreatorName": "MONAILabel",
            "SeriesDescription": series_description[:64],
            "SeriesNumber": "300",
            "InstanceNumber": "1",
            "ContentLabel": "SEGMENTATION",
            "ContentDescription": "MONAI Label segmentation",
            "BodyPartExamined": "",
            "segmentAttributes": [[s.attributes() for s in segments]],
        }
    )
    sources = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in sorted(Path(series_dir).glob("*.dcm"))]
    writer = pydicom_seg.MultiClassWriter(
        template=template, inplane_cropping=False, skip_empty_slices=True, skip_missing_segment=False
    )
    frames_of_reference = {str(d.get("FrameOfReferenceUID", "")) for d in sources}
    if len(frames_of_reference) != 1 or "" in frames_of_reference:
        raise ValueError(f"the series' images are not in one frame of reference: {sorted(frames_of_reference)}.")
    seg = writer.write(mask, sources)
    # pydicom-seg 0.4.1 imports the first image's Frame of Reference UID, then draws a new one (in that image's data
    # element, which it shares): the SEG takes the series' back
    seg.FrameOfReferenceUID = frames_of_reference.pop()
    for keyword in _CLINICAL_TRIAL:  # pydicom-seg's template defaults: no clinical trial here
        if keyword in seg:
            delattr(seg, keyword)
    return seg
