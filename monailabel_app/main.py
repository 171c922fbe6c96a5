"""MONAI Label app serving this project's three bundles (inference for all, training for the segmentation ones).

Started by ``scripts/serve_monailabel.sh`` (see README.md, "Serving in MONAI Label"), or directly::

    .venv-monailabel/bin/monailabel start_server --app monailabel_app --studies <images> --host 127.0.0.1 \
        --conf zoo_source local [--conf bundles <folder>] [--conf models <a,b>] [--conf configs quick]

(``serve_monailabel.sh`` adds ``--uvicorn_app guarded_server:app``: ``server_guard.py`` checks every request, on every
route, before MONAI Label sees it; docs/monailabel.md.)

``--conf`` keys of this app:

* ``bundles``: folder holding the bundle folders (default: ``bundles/`` beside this app);
* ``models``: comma-separated bundle names to serve (default: all three);
* ``configs``: comma-separated names of override files in each bundle's ``configs/``, e.g. ``quick`` for weights
  trained with ``configs/quick.yaml`` (the network must match the weights in ``models/model.pt``): the bundle is then
  served from a copy in ``<app>/model/baked-<names>/<bundle>`` whose configs hold the override values
  (:func:`shared_networks.tools.bake_configs.bake_bundle_configs`) and whose ``models`` links to the bundle's own
  ``models/``, so weights trained through MONAI Label land there;
* ``skip_trainers``: ``true`` to serve inference only;
* ``modalities``: with a PACS, the comma-separated modalities of the series served as images (default: those of the
  served bundles, :attr:`ServedBundle.modalities`: CT for BTCV, DX and CR for the chest X-ray classifier).

A bundle is served once its ``models/model.pt`` exists (MONAI Label skips it, with a warning, before).

``--studies`` is a folder, or a PACS's DICOMweb URL: then ``init_remote_datastore`` (a public method of MONAI Label's
app) builds :class:`pacs_datastore.PacsDatastore` (MONAI Label's ``DICOMWebDatastore`` with its login read from a
file, UIDs checked, and ``final`` labels stored in the PACS as DICOM SEGs written by ``dicom_seg.py``; the public
methods it overrides are in :data:`PUBLIC_OVERRIDES`). It lists the series of ``--conf modalities`` (one QIDO-RS search
each). A radiograph series (DX, CR) is served as its one DICOM file, which the chest X-ray bundle's own reader reads as
displayed; ``MAEBundlesApp.infer`` (MONAI Label's public method) first refuses (422, naming the series) a series
whose modality the model does not take (a CT to the classifier, a radiograph to a segmentation bundle).

Every bundle is served by MONAI Label's own :class:`~monailabel.tasks.train.bundle.BundleTrainTask` and
:class:`~monailabel.tasks.infer.bundle.BundleInferTask`, built with public constructor arguments only. Two public
methods of each are overridden (:data:`PUBLIC_OVERRIDES`), where MONAI Label 0.8.5 cannot serve these bundles as they
are or safely; no private method of MONAI Label is (``tests/monailabel/test_public_api.py`` checks both):

* both classes, ``__call__`` (how MONAI Label runs a task, with the request): checks the request
  (``request_checks.py`` beside this file) and then calls MONAI Label's. MONAI Label copies request fields unchecked
  into the overrides of ``monai.bundle.run`` and the bundle's parsed config, where a string starting with ``$`` is
  run as Python (``@`` a reference, ``%`` an include), and joins ``model_filename`` to ``models/``. Only the fields
  MONAI Label's server, clients and tasks use are accepted, each typed and range-checked (true/false strictly:
  ``"false"`` is false), ``model_filename`` only ``model.pt``, and no string starting with ``$``, ``@`` or ``%``
  anywhere in a request. A refusal is an HTTP 422 naming the field for an infer request (and a ``run_sync`` train
  request); a training run in the background ends as ERROR with the refusal in its details (``GET /train/``);
* :class:`BundleInferTaskKeepingPaths`, ``run_pre_transforms``: keeps the string entries ``image_*`` that MONAI Label
  adds to a request (``image_path``, read by its writer) out of the transforms' way, because MONAI 1.6's ``Spacingd``
  updates every ``image_*`` entry of a NIfTI input as a metadata dict and fails on a string (``'str' object has no
  attribute 'update'``; MONAI Label 0.8.5 predates that);
* :class:`BundleTrainTaskOnModelPt`, ``config``: offers ``models/model.pt`` alone as the ``model_filename`` to
  continue from. MONAI Label lists every ``models/*.pt``, shortest name first, and a client (3D Slicer, OHIF) sends
  the first: here the MAE checkpoint ``mae.pt``, which is not weights of the fine-tuning network (nor are the resume
  checkpoints ``train_checkpoint_epoch=N.pt``). The infer task's ``model_filename`` option is set the same way after
  construction, through the dict its public ``config()`` returns (MONAI Label reads its defaults from it); and it
  loads strictly (``load_strict=True``), so a wrong file fails loudly instead of leaving layers at random.

What each bundle needs besides is said in :data:`BUNDLES`:

* the two segmentation bundles return a ``uint8`` label map: the infer task's ``config`` holds
  ``result_dtype: uint8`` (a request may still ask for another type); MONAI Label's writer keeps the network's float
  type otherwise;
* the BraTS label map is numbered as MSD Task01 (1 edema, 2 non-enhancing tumour, 3 enhancing tumour), not as the
  network's TC/WT/ET channels of the metadata, so its ``labels`` are set after construction; the bundle numbers items
  without a ``layout`` entry (MONAI Label's ``{image, label}``) as MSD itself;
* the chest X-ray classifier returns its 14 probabilities with MONAI Label's ``ClassificationWriter``
  (``add_post_restore=False``: the spatial ``Restored`` does not apply to a vector); its labels keep the metadata's
  spelling (``BundleInferTask`` lower-cases them); MONAI Label does not train it (its labels are not label maps);
* training continues from ``models/model.pt`` (``pretrained``, the default) with a strict ``CheckpointLoader``
  (``load_strict=True``), which loads when the trainer starts, after the bundle's ``PretrainedEncoderLoader`` (it
  loads when attached, so ``models/mae.pt`` must exist): the fine-tuned weights win over the MAE encoder.
  ``"pretrained": false`` fails in MONAI Label 0.8.5 (``os.path.exists(None)``). The datastore's labelled images
  replace ``train#dataset#data`` and ``validate#dataset#data`` (``val_split`` >= 0); ``monai.bundle.run`` still runs
  the config's ``initialize`` (``init_id=None`` is its default id), whose split check reads ``validate#dataset#data``:
  the bundle's ``dataset_dir`` is never read.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

import monailabel
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
from monailabel.utils.others.generic import device_list, device_map, strtobool
from pacs_datastore import RADIOGRAPH_MODALITIES, PacsDatastore, pacs_datastore
from request_checks import RequestRefused, TaskFacts, check_infer_request, check_train_request

from shared_networks.data.cxr14 import CXR14_FINDINGS
from shared_networks.data.regions import LABEL_CONVENTIONS
from shared_networks.tools.bake_configs import bake_bundle_configs

logger = logging.getLogger(__name__)


class ServedBundle(NamedTuple):
    """How one bundle is served: the public arguments of its infer task, its labels when they are not the
    metadata's output channels (lower-cased), and whether MONAI Label trains it.

    (A NamedTuple, not a dataclass: MONAI Label executes main.py without registering it in ``sys.modules``.)
    """

    infer_args: Mapping[str, Any] = MappingProxyType({})
    labels: Mapping[str, int] | None = None
    trainable: bool = True
    modalities: tuple[str, ...] = ("CT",)  # the series of a PACS it reads; () none (it takes no single series)


MODEL_FILE = "model.pt"  # the fine-tuned weights in each bundle's models/


def _checked(check: Any, request: Mapping[str, Any], bundle_path: str, kind: str) -> dict[str, Any]:
    """``check(request)`` against the task's facts; a refusal is raised as an HTTP 422 naming the field.

    The server answers an infer request (and a train request with ``run_sync``) with that 422; a training run in the
    background (the default) ends as ERROR, the refusal last in its ``details`` (``GET /train/``).
    """
    facts = TaskFacts(
        bundle_path=bundle_path,
        model_files=(MODEL_FILE,),
        devices=[*device_list(), *device_map()],
        tracking_uri=settings.MONAI_LABEL_TRACKING_URI,
        image_root=settings.MONAI_LABEL_STUDIES if os.path.isdir(settings.MONAI_LABEL_STUDIES or "") else "",
    )
    try:
        return check(request, facts)
    except RequestRefused as e:
        logger.error(f"Refused {kind} request for {os.path.basename(bundle_path)}: {e}")
        raise HTTPException(status_code=422, detail=str(e)) from e


class BundleInferTaskKeepingPaths(BundleInferTask):
    """``BundleInferTask`` whose pre-processing leaves the request's string entries ``<input_key>_*`` (MONAI Label's
    ``image_path``) untouched: MONAI 1.6's ``Spacingd`` would update them as metadata dicts and fail."""

    def __call__(self, request: Mapping[str, Any], callbacks: Any = None) -> Any:
        """Checks ``request`` (:func:`request_checks.check_infer_request`), then runs MONAI Label's inference."""
        return super().__call__(_checked(check_infer_request, request, self.bundle_path, "infer"), callbacks)

    def run_pre_transforms(self, data: dict[str, Any], transforms: Sequence[Any]) -> dict[str, Any]:
        prefix = f"{self.input_key}_"
        keys = [k for k, v in data.items() if str(k).startswith(prefix) and isinstance(v, str)]
        aside = {k: data.pop(k) for k in keys}
        data = super().run_pre_transforms(data, transforms)
        data.update(aside)
        return data


class BundleTrainTaskOnModelPt(BundleTrainTask):
    """``BundleTrainTask`` whose ``model_filename`` option (the weights training continues from) is ``model.pt`` alone:
    MONAI Label would offer every ``models/*.pt``, the MAE checkpoint ``mae.pt`` first."""

    def __call__(self, request: Mapping[str, Any], datastore: Any) -> Any:
        """Checks ``request`` (:func:`request_checks.check_train_request`), then runs MONAI Label's training."""
        return super().__call__(_checked(check_train_request, request, self.bundle_path, "train"), datastore)

    def config(self) -> dict[str, Any]:
        options = super().config()
        options["model_filename"] = [MODEL_FILE]
        return options


INFER_TASK = BundleInferTaskKeepingPaths
TRAIN_TASK = BundleTrainTaskOnModelPt
PUBLIC_OVERRIDES = {  # tests/monailabel/test_public_api.py
    "BundleInferTaskKeepingPaths": ("__call__", "run_pre_transforms"),
    "BundleTrainTaskOnModelPt": ("__call__", "config"),
    "PacsDatastore": (  # pacs_datastore.py
        "__init__",
        "datalist",
        "get_image_uri",
        "get_label_uri",
        "get_labeled_images",
        "list_images",
        "save_label",
        "status",
    ),
}
_MSD = LABEL_CONVENTIONS["msd"]
_LABEL_MAP = MappingProxyType({"config": {"result_dtype": "uint8"}})
BUNDLES: dict[str, ServedBundle] = {
    "btcv_mae_segmentation": ServedBundle(infer_args=_LABEL_MAP),
    # MONAI Label's datastore holds single files: BraTS cases are MSD Task01 4-D NIfTI files (FLAIR, T1w, T1gd, T2w)
    "brats_mae_segmentation": ServedBundle(
        infer_args=_LABEL_MAP, labels={name: value for value, name in _MSD.names.items() if value}, modalities=()
    ),
    "cxr14_mae_classification": ServedBundle(
        infer_args={"type": InferType.CLASSIFICATION, "add_post_restore": False},
        labels={name: i for i, name in enumerate(CXR14_FINDINGS)},
        trainable=False,
        modalities=RADIOGRAPH_MODALITIES,
    ),
}
MODALITY_CODE = re.compile(r"[A-Z0-9_]{1,16}")  # a DICOM Modality (code string)


def _names(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def served_modalities(value: str | None, models: Sequence[str]) -> list[str]:
    """The modalities of ``--conf modalities`` (comma-separated), else those of the bundles ``models`` in order.

    Raises:
        ValueError: naming a value that is not a DICOM modality code (``CT``, ``DX``, ``CR``, ...).
    """
    given = _names(value)
    bad = [m for m in given if not MODALITY_CODE.fullmatch(m)]
    if bad:
        raise ValueError(f"--conf modalities: {bad} are not DICOM modalities (upper-case codes such as CT, DX, CR).")
    derived = [m for name in models for m in BUNDLES[name].modalities]
    return list(dict.fromkeys(given or derived))


def infer_task(name: str, path: str, conf: Mapping[str, str]) -> InferTask | None:
    """The infer task of bundle ``name`` at ``path``; None (MONAI Label has logged why) without ``models/model.pt``."""
    b = BUNDLES[name]
    task = INFER_TASK(path, dict(conf), load_strict=True, **b.infer_args)
    if not task.is_valid():
        return None
    if b.labels is not None:
        task.labels = dict(b.labels)
    task.config()["model_filename"] = [MODEL_FILE]  # the request defaults (MONAI Label lists every models/*.pt)
    return task


def train_task(name: str, path: str, conf: Mapping[str, str]) -> TrainTask | None:
    """The train task of bundle ``name`` at ``path`` (continuing from ``models/model.pt``, strictly loaded)."""
    task = TRAIN_TASK(path, dict(conf), load_strict=True)
    return task if task.is_valid() else None


def baked_bundle(bundle: str | os.PathLike, overrides: Sequence[str], out: str | os.PathLike) -> str:
    """A copy of ``bundle`` at ``out`` whose ``configs/`` hold the values of ``configs/<o>.yaml`` for each override.

    ``out/models`` is a link to ``bundle/models`` (created if absent): the served weights are the bundle's own, and
    weights trained through MONAI Label are written there. An earlier copy's ``configs`` are replaced; what its runs
    wrote beside them (``runs/``: training logs) stays (MONAI Label rebuilds the app on ``POST /reload``).

    Raises:
        FileNotFoundError: naming the first override file the bundle does not have.
    """
    bundle, out = os.path.realpath(bundle), os.path.realpath(out)
    files = [os.path.join(bundle, "configs", f"{name}.yaml") for name in overrides]
    for f in files:
        if not os.path.isfile(f):
            raise FileNotFoundError(f"--conf configs: bundle '{bundle}' has no override file '{f}'.")
    configs, link, models = os.path.join(out, "configs"), os.path.join(out, "models"), os.path.join(bundle, "models")
    if os.path.lexists(configs):
        shutil.rmtree(configs)
    bake_bundle_configs(os.path.join(bundle, "configs"), files, configs)
    os.makedirs(models, exist_ok=True)
    if os.path.lexists(link) and not (os.path.islink(link) and os.path.realpath(link) == models):
        raise FileExistsError(f"{link} exists and is not a link to {models}; remove it.")
    if not os.path.lexists(link):
        os.symlink(models, link, target_is_directory=True)
    return out


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
        self.paths = {m: os.path.join(self.bundles_root, m) for m in self.models}
        self.modalities = served_modalities(conf.get("modalities"), self.models)
        if self.config_overrides:
            baked = os.path.join(app_dir, "model", "baked-" + "-".join(self.config_overrides))
            for m in self.models:
                self.paths[m] = baked_bundle(self.paths[m], self.config_overrides, os.path.join(baked, m))
                logger.info(f"{m}: served from {self.paths[m]} (configs with {self.config_overrides} baked in)")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MAE self pre-trained bundles",
            description="BTCV and BraTS segmentation (UNETR), ChestX-ray14 classification (ViT), MAE pre-trained",
            version=monailabel.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name in self.models:
            task = infer_task(name, self.paths[name], self.conf)
            if task is None:  # no models/model.pt yet (MONAI Label has logged why)
                continue
            logger.info(f"+++ Adding Inferer:: {name} => {task}")
            infers[name] = task
        return infers

    def init_trainers(self) -> dict[str, TrainTask]:
        trainers: dict[str, TrainTask] = {}
        if strtobool(self.conf.get("skip_trainers", "false")):
            return trainers
        for name in self.models:
            if not BUNDLES[name].trainable:
                continue
            task = train_task(name, self.paths[name], self.conf)
            if task is not None:
                logger.info(f"+++ Adding Trainer:: {name} => {task}")
                trainers[name] = task
        return trainers

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "first": First()}

    def init_remote_datastore(self) -> Datastore:
        """``--studies`` is a DICOMweb URL: the PACS as :class:`pacs_datastore.PacsDatastore` (checked URL, login
        from a file, UIDs checked, DICOM SEGs written without dcmqi)."""
        return pacs_datastore(self.studies, self.served_labels, self.modalities)

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """MONAI Label's inference, after refusing (422, naming the series) a PACS series whose modality the model
        does not take: a CT series to the chest X-ray classifier, a radiograph to a segmentation bundle."""
        store = datastore if datastore else self.datastore()
        model, image = request.get("model"), request.get("image")
        if isinstance(store, PacsDatastore) and model in self.models and isinstance(image, str):
            wanted = BUNDLES[model].modalities
            modality = store.series_modality(image) if wanted else ""
            if wanted and modality not in wanted:
                raise HTTPException(
                    status_code=422,
                    detail=f"Series {image} is {modality or 'of no modality'}: {model} takes {'/'.join(wanted)} "
                    f"series{' of one radiograph' if set(wanted) <= set(RADIOGRAPH_MODALITIES) else ''}.",
                )
        return super().infer(request, datastore)

    def served_labels(self, model: str) -> Mapping[str, int]:
        """The labels (name -> value) of the served model ``model``; empty for another name."""
        labels = self.info().get("models", {}).get(model, {}).get("labels")
        return labels if isinstance(labels, Mapping) else {}
