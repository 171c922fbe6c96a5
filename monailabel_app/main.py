"""MONAI Label app serving this project's three bundles (inference for all, training for the segmentation ones).

Started by ``scripts/serve_monailabel.sh`` (see README.md, "Serving in MONAI Label"), or directly::

    .venv-monailabel/bin/monailabel start_server --app monailabel_app --studies <images> --host 127.0.0.1 \
        --conf zoo_source local [--conf bundles <folder>] [--conf models <a,b>] [--conf configs quick]

``--conf`` keys of this app:

* ``bundles``: folder holding the bundle folders (default: ``bundles/`` beside this app);
* ``models``: comma-separated bundle names to serve (default: all three);
* ``configs``: comma-separated names of config files merged last onto every workflow, e.g. ``quick`` for weights
  trained with ``configs/quick.yaml`` (the network must match the weights in ``models/model.pt``);
* ``skip_trainers``: ``true`` to serve inference only.

A bundle is served once its ``models/model.pt`` exists (MONAI Label skips it, with a warning, before).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import monailabel
from lib.bundle_tasks import ClassificationInferTask, SplitConfigInferTask, SplitConfigTrainTask
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

from shared_networks.data.regions import LABEL_CONVENTIONS

logger = logging.getLogger(__name__)


class ServedBundle(NamedTuple):
    """How one bundle is served: its infer task class, entries its transforms read from every item, further entries
    of every inference request (MONAI Label options), label names, and whether it is trainable.

    (A NamedTuple, not a dataclass: MONAI Label executes main.py without registering it in ``sys.modules``.)
    """

    infer: type[SplitConfigInferTask] = SplitConfigInferTask
    item_defaults: Mapping[str, Any] = MappingProxyType({})
    request_defaults: Mapping[str, Any] = MappingProxyType({})
    labels: Mapping[str, int] | None = None
    trainable: bool = True


_MSD = LABEL_CONVENTIONS["msd"]
_LABEL_MAP = {"result_dtype": "uint8"}  # MONAI Label's writer keeps the network's float type otherwise
BUNDLES: dict[str, ServedBundle] = {
    "btcv_mae_segmentation": ServedBundle(request_defaults=_LABEL_MAP),
    # MONAI Label's datastore holds single files: BraTS cases are MSD Task01 4-D NIfTI files (FLAIR, T1w, T1gd, T2w),
    # segmented into a label map numbered as MSD (1 edema, 2 non-enhancing tumour, 3 enhancing tumour)
    "brats_mae_segmentation": ServedBundle(
        item_defaults={"layout": _MSD.name},
        request_defaults=_LABEL_MAP,
        labels={name: value for value, name in _MSD.names.items() if value},
    ),
    # 14 finding probabilities; its labels are not label maps, so MONAI Label does not train it
    "cxr14_mae_classification": ServedBundle(infer=ClassificationInferTask, trainable=False),
}


def _names(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


class MAEBundlesApp(MONAILabelApp):
    """The bundles under ``--conf bundles``, each as an infer task and, for segmentation, a train task."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        default_root = os.path.join(os.path.dirname(os.path.realpath(app_dir)), "bundles")
        self.bundles_root = os.path.realpath(conf.get("bundles", default_root))
        self.config_overrides = _names(conf.get("configs"))
        self.models = _names(conf.get("models")) or list(BUNDLES)
        unknown = sorted(set(self.models) - set(BUNDLES))
        if unknown:
            raise ValueError(f"--conf models: unknown bundle(s) {unknown}; this app serves {list(BUNDLES)}.")
        missing = [m for m in self.models if not os.path.isdir(os.path.join(self.bundles_root, m))]
        if missing:
            raise ValueError(f"--conf bundles: '{self.bundles_root}' has no bundle folder {missing}.")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MAE self pre-trained bundles",
            description="BTCV and BraTS segmentation (UNETR), ChestX-ray14 classification (ViT), MAE pre-trained",
            version=monailabel.__version__,
        )

    def _path(self, name: str) -> str:
        return os.path.join(self.bundles_root, name)

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name in self.models:
            b = BUNDLES[name]
            labels = {} if b.labels is None else {"labels": b.labels}
            task = b.infer(
                self._path(name),
                self.conf,
                config_overrides=self.config_overrides,
                item_defaults={**b.request_defaults, **b.item_defaults},
                **labels,
            )
            if task.is_valid():  # invalid: no models/model.pt yet (MONAI Label has logged why)
                logger.info(f"+++ Adding Inferer:: {name} => {task}")
                infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers: dict[str, TrainTask] = {}
        if strtobool(self.conf.get("skip_trainers", "false")):
            return trainers
        for name in self.models:
            b = BUNDLES[name]
            if not b.trainable:
                continue
            task = SplitConfigTrainTask(self._path(name), self.conf, self.config_overrides, b.item_defaults)
            if task.is_valid():
                logger.info(f"+++ Adding Trainer:: {name} => {task}")
                trainers[name] = task
        return trainers

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "first": First()}
