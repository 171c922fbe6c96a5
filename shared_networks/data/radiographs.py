"""Loading of grey-scale radiographs: PNG/JPEG of any PIL mode and single-file DICOM to one float channel in [0, 1].

Use after ``LoadImaged(keys, reader=..., ensure_channel_first=True, image_only=True, dtype=None)`` (``dtype=None``
keeps the stored integer type, which is what tells 8-bit from 16-bit images)::

    LoadImaged("image", reader=[DicomRadiographReader, CheckedPILReader], ensure_channel_first=True, image_only=True,
               dtype=None)
    ToGreyd("image")  # (C, W, H) uint8/int32, or a DICOM's (1, W, H) displayed picture -> (1, W, H) float32 in [0, 1]

What ``monai.data.PILReader`` returns per PIL mode (with ``ensure_channel_first=True``, ``dtype=None``): ``"L"`` and
``"P"`` (1, W, H) uint8; ``"I;16"`` (1, W, H) int32 holding 0..65535; ``"I"`` (1, W, H) int32; ``"1"`` (1, W, H)
bool; ``"LA"`` (2, W, H), ``"RGB"`` (3, W, H), ``"RGBA"`` (4, W, H) uint8. The PIL mode is kept in the metadata
(``meta["mode"]``), which :class:`ToGrey` reads, since a 16-bit image arrives as int32 like a 32-bit one.

A DICOM radiograph is read by :class:`~shared_networks.data.dicom_display.DicomRadiographReader` as a viewer displays
it (modality LUT, then the VOI LUT or window, else min..max, then MONOCHROME1 inverted; the reasons are in
:mod:`shared_networks.data.dicom_display`): a PNG of the displayed picture and the DICOM give the same input. DICOM read
by ``ITKReader`` is refused: ITK's GDCM inverts MONOCHROME1 by itself and ignores the VOI LUT Sequence.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, PILReader
from monai.transforms import MapTransform, Transform
from monai.utils import ensure_tuple

from shared_networks.data.dicom_display import DISPLAY_KEY

__all__ = ["LUMA_WEIGHTS", "PIL_MODE_MAX", "CheckedPILReader", "ToGrey", "ToGreyd"]

PIL_MODE_MAX: dict[str, int] = {
    "1": 1,
    "L": 255,
    "LA": 255,
    "RGB": 255,
    "RGBA": 255,
    "RGBX": 255,
    "I;16": 65535,
    "I;16B": 65535,
    "I;16L": 65535,
    "I;16N": 65535,
    "I": 65535,  # older Pillow opens 16-bit grey PNGs as "I" (32-bit); PNG holds at most 16 bits per sample
}
"""Full-scale value of each supported PIL mode: the stored value divided by it gives [0, 1]."""

LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)
"""ITU-R 601-2 luma weights of R, G, B (as PIL's ``convert("L")``); they sum to 1, so a grey RGB stays the same."""

_ITK_DICOM_PHOTOMETRIC = "0028|0004"  # how ITKReader's metadata tells a DICOM


class CheckedPILReader(PILReader):
    """``monai.data.PILReader`` whose decoding errors name the file.

    PIL opens an image lazily: a truncated or corrupt PNG passes ``read`` and fails later in ``get_data`` with a bare
    ``OSError: image file is truncated``. This reader decodes each image first and raises a ``ValueError`` naming
    the file instead. (A file PIL cannot identify at all fails in ``read``, and ``LoadImage`` then reports it by
    name after trying its other readers.) Palette images ("P", "PA") are expanded to RGBA, which :class:`ToGrey`
    turns into luminance.
    """

    def get_data(self, img) -> tuple[Any, dict]:
        images = []
        for i in ensure_tuple(img):
            try:
                i.load()
            except Exception as e:  # OSError (truncated), SyntaxError/ValueError (broken chunks), zlib errors
                name = getattr(i, "filename", None) or "<image>"
                raise ValueError(f"{name} cannot be decoded as an image: {e}") from e
            images.append(i.convert("RGBA") if i.mode in ("P", "PA") else i)
        return super().get_data(images if len(images) > 1 else images[0])


def _file_name(img: torch.Tensor) -> str:
    meta = getattr(img, "meta", {}) or {}
    return str(meta.get("filename_or_obj", "<image without file name>"))


class ToGrey(Transform):
    """A loaded radiograph (C, *S) -> one float32 channel (1, *S) in [0, 1].

    * PIL images (``meta["mode"]`` set by ``PILReader``): the stored values are divided by the mode's full scale
      (:data:`PIL_MODE_MAX`: 255 for 8-bit, 65535 for 16-bit, 1 for bilevel); RGB(A) becomes luminance
      (:data:`LUMA_WEIGHTS`), the alpha channel of LA/RGBA is ignored. So one picture stored as 8-bit grey,
      16-bit grey, LA or RGBA gives the same result.
    * DICOM read by :class:`~shared_networks.data.dicom_display.DicomRadiographReader` (``meta["dicom_display"]``):
      the picture as a viewer displays it, already in [0, 1] (0 black, MONOCHROME1 inverted), kept as it is.

    The output's metadata is the same set of keys for every input (file name, affine, spatial shape, and
    ``source``, e.g. ``"PIL RGBA"`` or ``"DICOM MONOCHROME1 window"``), so PNG and DICOM images batch together.

    Raises ``ValueError`` naming the file for palette ("P") or other unsupported PIL modes, values beyond the
    mode's range, DICOM read by ``ITKReader``, and images that are neither PIL nor DICOM. (The DICOM reader refuses
    colour, multi-frame and pixel-less files, naming them.)
    """

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        meta = dict(getattr(img, "meta", {}) or {})
        name = _file_name(img)
        if _ITK_DICOM_PHOTOMETRIC in meta and DISPLAY_KEY not in meta:
            raise ValueError(
                f"{name}: a DICOM read by ITKReader, whose GDCM inverts MONOCHROME1 and ignores the VOI LUT; read "
                "DICOM with shared_networks.DicomRadiographReader, which gives the picture as a DICOM viewer shows it."
            )
        x = torch.as_tensor(img).detach()
        if x.ndim != 3:
            raise ValueError(f"{name}: expected a 2D image (channel, W, H), got shape {tuple(x.shape)}.")
        mode = meta.get("mode")
        if isinstance(mode, str):
            grey, source = self._from_pil(x, mode, name), f"PIL {mode}"
        elif DISPLAY_KEY in meta:
            grey, source = self._from_dicom(x, name), f"DICOM {meta[DISPLAY_KEY]}"
        else:
            raise ValueError(
                f"{name}: neither a PIL image (no 'mode' in its metadata) nor a DICOM radiograph (no "
                f"'{DISPLAY_KEY}'): load PNG/JPEG with CheckedPILReader and DICOM with DicomRadiographReader."
            )
        grey = grey.clamp_(0.0, 1.0).to(torch.float32)
        if not isinstance(img, MetaTensor):
            return grey
        # the same metadata keys for every input format, so that PNG and DICOM images collate into one batch
        out_meta = {
            "filename_or_obj": meta.get("filename_or_obj", name),
            "affine": img.affine,
            "spatial_shape": np.asarray(grey.shape[1:]),
            "original_channel_dim": float("nan"),
            "source": source,
        }
        return MetaTensor(grey, meta=out_meta)

    @staticmethod
    def _luminance(x: torch.Tensor, name: str) -> torch.Tensor:
        """(C, W, H) float -> (1, W, H): grey and grey+alpha keep channel 0, RGB(A) the luma of channels 0..2."""
        c = x.shape[0]
        if c in (1, 2):
            return x[:1]
        if c in (3, 4):
            w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype).reshape(3, 1, 1)
            return (x[:3] * w).sum(dim=0, keepdim=True)
        raise ValueError(f"{name}: {c} channels; expected 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA).")

    def _from_pil(self, x: torch.Tensor, mode: str, name: str) -> torch.Tensor:
        if mode not in PIL_MODE_MAX:
            hint = " (a palette image: CheckedPILReader expands palettes)" if mode in ("P", "PA") else ""
            raise ValueError(f"{name}: PIL mode {mode!r} is not supported{hint}; supported: {sorted(PIL_MODE_MAX)}.")
        full = PIL_MODE_MAX[mode]
        x = x.to(torch.float64)
        if x.numel() and (float(x.min()) < 0 or float(x.max()) > full):
            raise ValueError(f"{name}: values {float(x.min())}..{float(x.max())} outside 0..{full} of mode {mode!r}.")
        return self._luminance(x / full, name)

    @staticmethod
    def _from_dicom(x: torch.Tensor, name: str) -> torch.Tensor:
        """The displayed picture of :class:`DicomRadiographReader`, (1, W, H) in [0, 1]: kept as it is."""
        if x.shape[0] != 1:
            raise ValueError(f"{name}: DICOM with {x.shape[0]} channels/frames; expected one grey frame.")
        return x.to(torch.float64)


class ToGreyd(MapTransform):
    """Dictionary version of :class:`ToGrey`: each key's loaded radiograph -> (1, *S) float32 in [0, 1].

    Args:
        keys: keys of the images (loaded with ``ensure_channel_first=True`` and ``dtype=None``).
        allow_missing_keys: do not raise when a key is absent.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = ToGrey()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d
