"""A linear probe's input: each image's pooled encoder features, computed once.

A linear probe trains only the classifier's ``fc_norm`` and head on a frozen encoder. Run as a fine-tuning, every
epoch pushes every image through the encoder again to train a few thousand parameters: nearly all of a probe's time
(``configs/linear_probe.yaml`` of the chest X-ray bundle, benchmarks/README.md). :class:`EncoderFeaturesd` is the
last deterministic transform of the probe's pipeline: in a ``CacheDataset`` with ``runtime_cache`` it runs once per
image, at the image's first use, so after the trainer is built and the encoder's weights loaded (MONAI's
``CacheDataset`` would otherwise fill its cache when the dataset is built, before any weights are loaded); the epochs
then read the cached features. A cache filled in loader worker processes would be lost with them after each epoch:
the probe's loaders run in the main process (``num_workers: 0``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import ImageMetaKey

from shared_networks.networks.classifier import ViTClassifier

__all__ = ["EncoderFeaturesd"]

_FILE_KEY = ImageMetaKey.FILENAME_OR_OBJ


class EncoderFeaturesd(MapTransform):
    """``data[key]``, one image (C, *spatial), becomes ``network.features`` of it: a (D,) float32 CPU tensor (the
    image's file name, when it was a ``MetaTensor``, kept as ``<key>_meta_dict``).

    The encoder runs in evaluation mode (no drop path or dropout), without gradients, in float32 on ``device``;
    the network's modes are restored afterwards. Frozen encoders only: features of an encoder that trains would be
    stale the next epoch, so an encoder with a parameter that requires a gradient is refused.

    Args:
        keys: the image key(s).
        network: the :class:`~shared_networks.networks.classifier.ViTClassifier` whose encoder gives the features.
        device: where the encoder runs.
    """

    def __init__(self, keys: KeysCollection, network: ViTClassifier, device: torch.device | str = "cpu") -> None:
        super().__init__(keys)
        if not isinstance(network, ViTClassifier):
            raise TypeError(f"network must be a ViTClassifier, got {type(network).__name__}.")
        self.network, self.device = network, torch.device(device)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        if any(p.requires_grad for p in self.network.encoder.parameters()):
            raise RuntimeError(
                "EncoderFeaturesd: the encoder is not frozen (a parameter requires a gradient): features computed "
                "once would go stale as it trains. Freeze it first (linear_probe.yaml: encoder.requires_grad_(False))."
            )
        d = dict(data)
        was_training = self.network.training
        self.network.eval()
        try:
            with torch.no_grad():
                for key in self.key_iterator(d):
                    name = d[key].meta.get(_FILE_KEY) if isinstance(d[key], MetaTensor) else None
                    image = d[key].as_tensor() if isinstance(d[key], MetaTensor) else torch.as_tensor(d[key])
                    image = image.to(self.device, torch.float32).unsqueeze(0)
                    d[key] = self.network.features(image)[0].float().cpu()
                    if isinstance(name, str):  # the batch still names its files (StopOnNonFinite)
                        d.setdefault(f"{key}_meta_dict", {_FILE_KEY: name})
        finally:
            self.network.train(was_training)
        return d
