"""Brain tumour regions (TC, WT, ET) from BraTS label maps and back, in both public label conventions.

The BraTS challenges score three nested regions rather than the labels themselves: whole tumour (WT) ⊇ tumour core
(TC) ⊇ enhancing tumour (ET). Which label values make up each region depends on the files' numbering:

========================  =====================================  ===================================
convention                labels                                 regions
========================  =====================================  ===================================
``msd`` (MSD Task01)      1 edema, 2 non-enhancing tumour,       TC = {2, 3}, WT = {1, 2, 3}, ET = {3}
                          3 enhancing tumour
``brats2021`` (2018-21)   1 necrotic tumour core, 2 edema,       TC = {1, 4}, WT = {1, 2, 4}, ET = {4}
                          4 enhancing tumour
========================  =====================================  ===================================

(The public reference code of Zhou et al. takes ET as label 2, which is the non-enhancing tumour in MSD files.)
Menze et al., "The Multimodal Brain Tumor Image Segmentation Benchmark (BRATS)", IEEE TMI 2015; Baid et al.,
"The RSNA-ASNR-MICCAI BraTS 2021 Benchmark", https://arxiv.org/abs/2107.02314.

The dictionary transforms read the convention of each item from its ``layout`` entry (written by
:func:`shared_networks.data.brats.brats_datalist`), so one pipeline serves both layouts:

* :class:`LabelToRegionsd`: label map (1, *S) -> regions (3, *S) in the order TC, WT, ET;
* :class:`RegionsToLabeld`: regions (3, *S) -> label map (1, *S) in the item's own numbering;
* :class:`CheckChannelCountd`: refuses an image with the wrong number of channels, naming its file.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import ImageMetaKey, look_up_option

__all__ = [
    "LABEL_CONVENTIONS",
    "REGION_NAMES",
    "CheckChannelCountd",
    "LabelConvention",
    "LabelToRegionsd",
    "RegionsToLabeld",
    "get_convention",
    "labels_to_regions",
    "regions_to_labels",
]

REGION_NAMES: tuple[str, ...] = ("TC", "WT", "ET")
"""Output channels of the segmentation network, in order: tumour core, whole tumour, enhancing tumour."""


@dataclass(frozen=True)
class LabelConvention:
    """The label values of one file convention; the regions follow from them.

    Attributes:
        name: ``"msd"`` or ``"brats2021"``.
        edema: value of peritumoural edema (in WT only).
        core: value of the non-enhancing / necrotic tumour core (in TC and WT).
        enhancing: value of the enhancing tumour (in ET, TC and WT).
        names: label value -> name, background included.
    """

    name: str
    edema: int
    core: int
    enhancing: int
    names: Mapping[int, str]

    @property
    def regions(self) -> dict[str, tuple[int, ...]]:
        """Region name -> label values, in :data:`REGION_NAMES` order."""
        return {
            "TC": tuple(sorted((self.core, self.enhancing))),
            "WT": tuple(sorted((self.edema, self.core, self.enhancing))),
            "ET": (self.enhancing,),
        }

    @property
    def values(self) -> tuple[int, ...]:
        """Every valid label value, background (0) included."""
        return tuple(sorted((0, self.edema, self.core, self.enhancing)))


LABEL_CONVENTIONS: dict[str, LabelConvention] = {
    "msd": LabelConvention(
        "msd",
        edema=1,
        core=2,
        enhancing=3,
        names={0: "background", 1: "edema", 2: "non-enhancing tumour", 3: "enhancing tumour"},
    ),
    "brats2021": LabelConvention(
        "brats2021",
        edema=2,
        core=1,
        enhancing=4,
        names={0: "background", 1: "necrotic tumour core", 2: "peritumoural edema", 4: "GD-enhancing tumour"},
    ),
}
"""The two label conventions, keyed by the layout names of :mod:`shared_networks.data.brats`."""


def get_convention(name: str | LabelConvention) -> LabelConvention:
    """The :class:`LabelConvention` called ``name`` (``"msd"`` or ``"brats2021"``); raises ``ValueError`` otherwise."""
    if isinstance(name, LabelConvention):
        return name
    return look_up_option(name, LABEL_CONVENTIONS)


def _source(data: torch.Tensor | np.ndarray) -> str:
    """The file an array was loaded from (``MetaTensor`` meta), for error messages."""
    name = getattr(data, "meta", {}).get(ImageMetaKey.FILENAME_OR_OBJ)
    return f"'{name}'" if name else "the input"


def labels_to_regions(label: torch.Tensor, convention: str | LabelConvention) -> torch.Tensor:
    """(1, *S) label map -> (3, *S) float regions TC, WT, ET (1 inside, 0 outside).

    Args:
        label: integer-valued label map with one channel.
        convention: ``"msd"``, ``"brats2021"`` or a :class:`LabelConvention`.

    Raises:
        ValueError: if ``label`` has more than one channel or holds a value foreign to the convention (a file of the
            other layout, or not a label map); the message names the file when ``label`` carries its metadata.
    """
    conv = get_convention(convention)
    if label.ndim < 2 or label.shape[0] != 1:
        raise ValueError(f"label map {_source(label)} must have one channel, got shape {tuple(label.shape)}.")
    values = torch.as_tensor(label).as_subclass(torch.Tensor).round().long()
    foreign = sorted(set(torch.unique(values).tolist()) - set(conv.values))
    if foreign:
        raise ValueError(
            f"label map {_source(label)} holds values {foreign}, foreign to the {conv.name} convention "
            f"{dict(conv.names)}: is the data set in the other layout?"
        )
    allowed = {name: torch.tensor(v, device=values.device) for name, v in conv.regions.items()}
    regions = torch.cat([torch.isin(values, allowed[name]) for name in REGION_NAMES]).to(torch.float32)
    if isinstance(label, MetaTensor):
        return MetaTensor(regions, meta=label.meta, applied_operations=label.applied_operations)
    return regions


def regions_to_labels(regions: torch.Tensor, convention: str | LabelConvention, threshold: float = 0.5) -> torch.Tensor:
    """(3, *S) regions TC, WT, ET -> (1, *S) uint8 label map in the convention's numbering.

    The regions are made nested before labelling: a voxel in ET is enhancing tumour, one in TC (and not ET) is
    core, one in WT only is edema; so a voxel predicted ET is tumour even where WT or TC was not predicted.

    Args:
        regions: probabilities or binary masks, channels in :data:`REGION_NAMES` order.
        convention: ``"msd"``, ``"brats2021"`` or a :class:`LabelConvention`.
        threshold: a region holds the voxels above it.

    Raises:
        ValueError: if ``regions`` does not have 3 channels.
    """
    conv = get_convention(convention)
    if regions.ndim < 2 or regions.shape[0] != len(REGION_NAMES):
        raise ValueError(f"regions must have {len(REGION_NAMES)} channels (TC, WT, ET), got {tuple(regions.shape)}.")
    tc, wt, et = (torch.as_tensor(regions[i : i + 1]).as_subclass(torch.Tensor) > threshold for i in range(3))
    label = torch.zeros(tc.shape, dtype=torch.uint8, device=tc.device)
    label[wt | tc | et] = conv.edema
    label[tc | et] = conv.core
    label[et] = conv.enhancing
    if isinstance(regions, MetaTensor):
        return MetaTensor(label, meta=regions.meta, applied_operations=regions.applied_operations)
    return label


class _ConventionTransform(MapTransform):
    """A dictionary transform that finds each item's label convention under ``convention_key`` (or a fixed one)."""

    def __init__(
        self,
        keys: KeysCollection,
        convention: str | None = None,
        convention_key: str = "layout",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.convention = None if convention is None else get_convention(convention)
        self.convention_key = convention_key

    def _convention(self, d: Mapping[Hashable, object]) -> LabelConvention:
        name = d.get(self.convention_key)
        if name is None:
            if self.convention is None:
                raise ValueError(
                    f"{type(self).__name__}: the item has no '{self.convention_key}' entry (msd or brats2021) and no "
                    "fixed convention was given."
                )
            return self.convention
        return get_convention(name if isinstance(name, str) else name[0])  # a collated batch holds a list


class LabelToRegionsd(_ConventionTransform):
    """Dictionary version of :func:`labels_to_regions`: label (1, *S) -> regions TC, WT, ET (3, *S).

    Args:
        keys: label keys.
        convention: fixed convention for items without a ``convention_key`` entry.
        convention_key: item entry naming the convention (``"msd"`` or ``"brats2021"``).
        allow_missing_keys: skip absent keys (so one pipeline serves items with and without labels).
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = labels_to_regions(d[key], self._convention(d))
        return d


class RegionsToLabeld(_ConventionTransform):
    """Dictionary version of :func:`regions_to_labels`: regions TC, WT, ET (3, *S) -> label map (1, *S).

    Args:
        keys: prediction keys (probabilities or binary masks).
        convention: fixed convention for items without a ``convention_key`` entry.
        convention_key: item entry naming the convention (``"msd"`` or ``"brats2021"``).
        threshold: a region holds the voxels above it.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        convention: str | None = None,
        convention_key: str = "layout",
        threshold: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, convention, convention_key, allow_missing_keys)
        self.threshold = threshold

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = regions_to_labels(d[key], self._convention(d), self.threshold)
        return d


class CheckChannelCountd(MapTransform):
    """Refuses a loaded channel-first image whose channel count is not ``num_channels``, naming its file.

    Placed right after ``LoadImaged(ensure_channel_first=True)``: a 3-channel 4-D file, or a 3-D file given where
    the 4 modalities are expected, stops the run with a ``ValueError`` instead of a shape error deep in the network.

    Args:
        keys: image keys.
        num_channels: expected number of channels.
        channel_names: names of the channels, for the message.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        num_channels: int,
        channel_names: Sequence[str] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if channel_names is not None and len(channel_names) != num_channels:
            raise ValueError(f"channel_names {list(channel_names)} do not match num_channels={num_channels}.")
        self.num_channels = int(num_channels)
        self.channel_names = list(channel_names) if channel_names is not None else None

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            channels = d[key].shape[0]
            if channels != self.num_channels:
                names = f" ({', '.join(self.channel_names)})" if self.channel_names else ""
                raise ValueError(
                    f"image {_source(d[key])} has {channels} channel(s) (loaded shape {tuple(d[key].shape)}); "
                    f"expected {self.num_channels}{names}."
                )
        return d
