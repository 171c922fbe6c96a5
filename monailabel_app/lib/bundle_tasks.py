"""MONAI Label tasks for this project's bundles, whose workflows may take override files merged last.

MONAI Label's :class:`~monailabel.tasks.infer.bundle.BundleInferTask` and
:class:`~monailabel.tasks.train.bundle.BundleTrainTask` read ``configs/inference.yaml`` or ``configs/train.yaml``
alone, as every workflow here runs; the subclasses below add overrides such as ``configs/quick.yaml``, merged
last, and change nothing else of MONAI Label's behaviour, except:

* items get fixed entries (``item_defaults``) that the bundle's transforms read, e.g. BraTS ``layout: msd``;
* segmentation labels can be given (BraTS returns a label map numbered as MSD, not the TC/WT/ET network channels);
* :class:`ClassificationInferTask` returns the 14 finding probabilities of a classification bundle as JSON:
  ``BundleInferTask`` appends a spatial ``Restored`` and iterates the post-processing as a list, both of which fail
  on a ``(14,)`` output and a single ``Activationsd``;
* training continues from ``models/model.pt`` when it exists (``pretrained``), strictly loaded, and then does not
  overwrite the encoder with the MAE checkpoint (the bundle's ``PretrainedEncoderLoader`` is left out); otherwise
  the bundle's own ``pretrained_ckpt`` applies.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import monai.bundle
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

logger = logging.getLogger(__name__)

__all__ = ["ClassificationInferTask", "SplitConfigInferTask", "SplitConfigTrainTask", "bundle_config_files"]


def bundle_config_files(bundle: str | os.PathLike, workflow: str, overrides: Sequence[str] = ()) -> list[str]:
    """``configs/<workflow>.yaml``, then ``configs/<o>.yaml`` for each override, in order.

    Raises:
        FileNotFoundError: naming the first file that does not exist.
    """
    configs = Path(bundle) / "configs"
    files = [configs / f"{name}.yaml" for name in (workflow, *overrides)]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"bundle config '{f}' does not exist (bundle '{bundle}', workflow '{workflow}').")
    return [str(f) for f in files]


def _read_configs(files: Sequence[str], bundle_root: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(list(files))
    parser.update({"bundle_root": bundle_root})
    return parser


class SplitConfigInferTask(BundleInferTask):
    """``BundleInferTask`` on ``inference.yaml`` (+ ``config_overrides``).

    Args:
        path: bundle folder (``configs/``, ``models/model.pt``).
        conf: the app's ``--conf`` pairs.
        config_overrides: names of further files in ``configs/`` merged last, e.g. ``["quick"]``.
        item_defaults: entries added to every request (the request's own win), e.g. ``{"layout": "msd"}``.
        labels: label name -> value of the returned label map; default: the metadata's output ``channel_def``.
        kwargs: passed to ``BundleInferTask``.
    """

    def __init__(
        self,
        path: str,
        conf: Mapping[str, str],
        config_overrides: Sequence[str] = (),
        item_defaults: Mapping[str, Any] | None = None,
        labels: Mapping[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        self.config_files = bundle_config_files(path, "inference", config_overrides)
        self.item_defaults = dict(item_defaults or {})
        super().__init__(path, dict(conf), **kwargs)
        if labels is not None:
            self.labels = dict(labels)

    def _load_bundle_config(self, path: str, config: str) -> ConfigParser:
        return _read_configs(self.config_files, path)

    def _filter_transforms(self, transforms: Any, filters: Sequence[type] | None) -> Any:
        # a bundle's post-processing may be one transform rather than a Compose: make it a list first
        if transforms is not None and not isinstance(transforms, (list, tuple)):
            transforms = list(transforms.transforms) if isinstance(transforms, Compose) else [transforms]
        return super()._filter_transforms(transforms, filters)

    def __call__(self, request: Mapping[str, Any], callbacks: Any = None) -> tuple[Any, dict]:
        return super().__call__({**self.item_defaults, **request}, callbacks)

    def _run_aside(self, run: Callable, data: dict[str, Any], transforms: Sequence[Callable]) -> dict[str, Any]:
        # MONAI's Spacingd updates every "image_*" entry as a meta dict; MONAI Label adds "image_path" (a str), which
        # the writer needs later: keep such strings out of the transforms' way
        key = f"{self.input_key}_"
        aside = {k: data.pop(k) for k in [k for k, v in data.items() if str(k).startswith(key) and isinstance(v, str)]}
        data = run(data, transforms)
        data.update(aside)
        return data

    def run_pre_transforms(self, data: dict[str, Any], transforms: Sequence[Callable]) -> dict[str, Any]:
        return self._run_aside(super().run_pre_transforms, data, transforms)

    def run_post_transforms(self, data: dict[str, Any], transforms: Sequence[Callable]) -> dict[str, Any]:
        return self._run_aside(super().run_post_transforms, data, transforms)


class ClassificationInferTask(SplitConfigInferTask):
    """Image -> one probability per class of a classification bundle, as JSON (no label file).

    The result follows MONAI Label's ``ClassificationWriter``: ``{"prediction": [{"idx", "label", "score"}, ...]}``,
    one entry per class in the metadata's ``channel_def`` order.
    """

    def __init__(self, path: str, conf: Mapping[str, str], **kwargs: Any) -> None:
        if kwargs.get("labels") is None:  # the metadata's class names as written (BundleInferTask lower-cases them)
            with open(os.path.join(path, "configs", "metadata.json")) as f:
                outputs = json.load(f)["network_data_format"]["outputs"]
            kwargs["labels"] = {v: int(k) for k, v in next(iter(outputs.values()))["channel_def"].items()}
        super().__init__(path, conf, type=InferType.CLASSIFICATION, add_post_restore=False, **kwargs)

    def writer(self, data: dict[str, Any], extension: Any = None, dtype: Any = None) -> tuple[None, dict]:
        scores = torch.as_tensor(data[self.output_label_key]).detach().float().cpu().flatten()
        names = {int(v): k for k, v in self.labels.items()}
        if scores.numel() != len(names):
            raise ValueError(
                f"{self.bundle_path}: the network returned {scores.numel()} scores for {len(names)} classes "
                f"({', '.join(names[i] for i in sorted(names))})."
            )
        prediction = [{"idx": i, "label": names[i], "score": float(scores[i])} for i in sorted(names)]
        return None, {"prediction": prediction}


class SplitConfigTrainTask(BundleTrainTask):
    """``BundleTrainTask`` on ``train.yaml`` (+ ``config_overrides``), on the datastore's labels.

    The datastore's labelled images become the bundle's ``datalist`` (training and, by ``val_split``, validation), so
    the bundle's own checks (e.g. a non-empty validation split) apply.

    Args:
        path: bundle folder.
        conf: the app's ``--conf`` pairs.
        config_overrides: names of further files in ``configs/`` merged last, e.g. ``["quick"]``.
        item_defaults: entries added to every datastore item, e.g. ``{"layout": "msd"}``.
        kwargs: passed to ``BundleTrainTask``.
    """

    def __init__(
        self,
        path: str,
        conf: Mapping[str, str],
        config_overrides: Sequence[str] = (),
        item_defaults: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.config_files = bundle_config_files(path, "train", config_overrides)
        self.item_defaults = dict(item_defaults or {})
        self._pretrained = True
        super().__init__(path, dict(conf), **kwargs)

    def _load_bundle_config(self, path: str, config: str) -> ConfigParser:
        return _read_configs(self.config_files, path)

    def _fetch_datalist(self, request: Mapping[str, Any], datastore: Any) -> list[dict[str, Any]]:
        return [{**self.item_defaults, **d} for d in super()._fetch_datalist(request, datastore)]

    def __call__(self, request: Mapping[str, Any], datastore: Any) -> dict:
        self._pretrained = bool(request.get("pretrained", True))
        return super().__call__(request, datastore)

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: list) -> None:
        self._model_pytorch = model_pytorch  # the loader is added in _update_overrides, on a copy of the handlers

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        train_key, val_key = self.const.key_train_dataset_data(), self.const.key_validate_dataset_data()
        overrides["datalist"] = {"training": overrides[train_key], "validation": overrides.get(val_key) or []}
        handlers = [h for h in overrides[self.const.key_train_handlers()] if h.get("_target_") != "CheckpointLoader"]
        if self._pretrained and os.path.exists(self._model_pytorch):
            logger.info(f"continuing from {self._model_pytorch} (the MAE encoder checkpoint is not loaded)")
            loader = {
                "_target_": "CheckpointLoader",
                "load_path": self._model_pytorch,
                "load_dict": {self.model_dict_key: f"@{self.const.key_network()}"},
                "map_location": "@device",
                "strict": True,
            }
            handlers.insert(0, loader)
            handlers = [h for h in handlers if not str(h.get("_target_", "")).endswith("PretrainedEncoderLoader")]
        overrides[self.const.key_train_handlers()] = handlers
        return overrides

    def run_single_gpu(self, request: Mapping[str, Any], overrides: Mapping[str, Any]) -> None:
        monai.bundle.run(
            run_id=request.get("run_id") or "run",
            meta_file=self.bundle_metadata_path,
            config_file=self.config_files,
            logging_file=os.path.join(self.bundle_path, "configs", "logging.conf"),
            **overrides,
        )
