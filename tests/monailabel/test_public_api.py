"""The MONAI Label app uses MONAI Label's public bundle API only, and serves ``--conf configs quick`` from baked copies.

MONAI Label's private methods (``_load_bundle_config``, ``_fetch_datalist``, ...) change between its releases: no
class of the app may override one. The checks import the app in MONAI Label's own environment (``.venv-monailabel``,
``scripts/setup_monailabel.sh``) in a subprocess; they are skipped without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV = Path(os.environ.get("MONAILABEL_VENV", REPO / ".venv-monailabel"))
APP = REPO / "monailabel_app"


def _monailabel_installed() -> bool:
    return (VENV / "bin" / "python").exists() and any(VENV.glob("lib/python3*/site-packages/monailabel/__init__.py"))


pytestmark = pytest.mark.skipif(
    not _monailabel_installed(),
    reason=f"MONAI Label is not installed in {VENV}: run `bash scripts/setup_monailabel.sh` (CI does)",
)

# imports the app's main.py as MONAI Label does (its folder first on sys.path), then prints one JSON object
_PRELUDE = """
import importlib.util, inspect, json, sys
sys.path.insert(0, {app!r})
spec = importlib.util.spec_from_file_location("mae_bundles_app", {main!r})
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)

def monailabel_class(c):
    return c.__module__ == "monailabel" or c.__module__.startswith("monailabel.")

def public_name(c, n):
    # a public method: no leading "_", or a dunder method (``__call__``: how MONAI Label runs a task)
    dunder = n.startswith("__") and n.endswith("__") and inspect.isfunction(vars(c)[n])
    return not n.startswith("_") or dunder

def public_overrides(cls):
    # names of the public methods of MONAI Label's classes that classes of the MRO outside MONAI Label override
    theirs = [c for c in cls.__mro__ if monailabel_class(c)]
    found = {{}}
    for c in cls.__mro__:
        if monailabel_class(c) or c is object:
            continue
        names = [n for n in vars(c) if public_name(c, n) and any(n in vars(t) for t in theirs)]
        if names:
            found[c.__qualname__] = sorted(names)
    return found

def private_overrides(cls):
    '''Names "C.m" of the methods starting with "_" (dunders excepted) that a class of cls's MRO outside
    MONAI Label defines while a MONAI Label class of the MRO defines them too.'''
    theirs = [c for c in cls.__mro__ if monailabel_class(c)]
    found = []
    for c in cls.__mro__:
        if monailabel_class(c) or c is object:
            continue
        for name in vars(c):
            dunder = name.startswith("__") and name.endswith("__")
            value = vars(c)[name]
            method = inspect.isfunction(value) or isinstance(value, (staticmethod, classmethod, property))
            if method and name.startswith("_") and not dunder and any(name in vars(t) for t in theirs):
                found.append(f"{{c.__qualname__}}.{{name}}")
    return found
"""


def _run(script: str, tmp_path: Path) -> dict:
    code = _PRELUDE.format(app=str(APP), main=str(APP / "main.py")) + textwrap.dedent(script)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_class_of_the_app_overrides_a_private_method_of_monailabel(tmp_path):
    result = _run(
        """
        from monailabel.datastore.dicom import DICOMWebDatastore
        from monailabel.tasks.infer.bundle import BundleInferTask
        from monailabel.tasks.train.bundle import BundleTrainTask
        from pacs_datastore import PacsDatastore

        classes = {app.INFER_TASK, app.TRAIN_TASK, PacsDatastore}
        classes |= {c for c in vars(app).values() if inspect.isclass(c) and c.__module__ == app.__name__}

        class OldStyle(BundleTrainTask):  # the checker itself finds what the app used to do
            def _fetch_datalist(self, request, datastore):
                return []

        print(json.dumps({
            "tasks": [app.INFER_TASK.__module__ + "." + app.INFER_TASK.__name__,
                      app.TRAIN_TASK.__module__ + "." + app.TRAIN_TASK.__name__],
            "checked": sorted(c.__qualname__ for c in classes),
            "overrides": {c.__qualname__: private_overrides(c) for c in classes if private_overrides(c)},
            "public": {
                k: v for c in (app.INFER_TASK, app.TRAIN_TASK, PacsDatastore) for k, v in public_overrides(c).items()
            },
            "declared": {k: list(v) for k, v in app.PUBLIC_OVERRIDES.items()},
            "old_style": private_overrides(OldStyle),
            "app_is_monailabel": issubclass(app.MAEBundlesApp, app.MONAILabelApp),
            "infer_subclass": issubclass(app.INFER_TASK, BundleInferTask),
            "train_subclass": issubclass(app.TRAIN_TASK, BundleTrainTask),
            "datastore_subclass": issubclass(PacsDatastore, DICOMWebDatastore),
        }))
        """,
        tmp_path,
    )
    assert result["overrides"] == {}, f"the app overrides private methods of MONAI Label: {result['overrides']}"
    assert result["old_style"] == ["OldStyle._fetch_datalist"]
    assert {"MAEBundlesApp", "PacsDatastore"} <= set(result["checked"]) and result["app_is_monailabel"]
    assert result["infer_subclass"] and result["train_subclass"] and result["datastore_subclass"]
    # the public methods overridden are the ones declared (and documented in the app's docstring), no more
    expected = {
        "BundleInferTaskKeepingPaths": ["__call__", "run_pre_transforms"],
        "BundleTrainTaskOnModelPt": ["__call__", "config"],
        "PacsDatastore": [
            "__init__",
            "datalist",
            "get_image_uri",
            "get_label_uri",
            "get_labeled_images",
            "list_images",
            "save_label",
            "status",
        ],
    }
    assert result["public"] == result["declared"] == expected


def test_pre_transforms_keep_the_image_path(tmp_path):
    """MONAI 1.6's Spacingd updates every ``image_*`` entry of a NIfTI input as a dict: the override keeps
    MONAI Label's ``image_path`` (a string its writer reads) out of its way, and the stock task fails there."""
    result = _run(
        """
        import torch
        from monai.data import MetaTensor
        from monai.transforms import Spacingd
        from monailabel.tasks.infer.bundle import BundleInferTask

        def request():
            image = MetaTensor(torch.rand(1, 8, 8, 8), meta={"filename_or_obj": "ct.nii.gz"})
            return {"image": image, "image_path": "/studies/ct.nii.gz", "image_meta_dict": {}}

        transforms = [Spacingd(keys="image", pixdim=(2.0, 2.0, 2.0))]
        task = object.__new__(app.INFER_TASK)  # only input_key is read: no bundle needed
        task.input_key = "image"
        out = task.run_pre_transforms(request(), transforms)
        stock = object.__new__(BundleInferTask)
        stock.input_key = "image"
        try:
            stock.run_pre_transforms(request(), transforms)
            stock_error = None
        except Exception as e:
            stock_error = repr(e)
        print(json.dumps({"path": out["image_path"], "shape": list(out["image"].shape),
                          "meta_updated": "affine" in out["image_meta_dict"], "stock_error": stock_error}))
        """,
        tmp_path,
    )
    assert result["path"] == "/studies/ct.nii.gz" and result["shape"] == [1, 4, 4, 4]
    assert result["meta_updated"]  # the dict entries are still updated by Spacingd
    assert result["stock_error"] is not None and "update" in result["stock_error"]


def test_baked_bundle_for_configs_quick(tmp_path):
    bundle = tmp_path / "bundles" / "btcv_mae_segmentation"
    result = _run(
        f"""
        import os, shutil
        shutil.copytree({str(REPO / "bundles" / "btcv_mae_segmentation" / "configs")!r}, {str(bundle / "configs")!r})
        out = os.path.join("app", "model", "baked-quick", "btcv_mae_segmentation")
        first = app.baked_bundle({str(bundle)!r}, ["quick"], out)
        open(os.path.join(first, "configs", "stale.yaml"), "w").close()
        os.makedirs(os.path.join(first, "runs", "train"))
        open(os.path.join(first, "runs", "train", "events.out"), "w").close()  # a training run's log
        again = app.baked_bundle({str(bundle)!r}, ["quick"], out)  # replaces the earlier copy's configs
        for f in ("mae.pt", "model.pt", "train_checkpoint_epoch=10.pt"):  # names only: nothing is loaded here
            open(os.path.join(again, "models", f), "w").close()
        infer = app.infer_task("btcv_mae_segmentation", again, {{}})
        train = app.train_task("btcv_mae_segmentation", again, {{}})
        from monai.bundle import ConfigParser
        p = ConfigParser()
        p.read_config(os.path.join(again, "configs", "inference.yaml"))
        try:
            app.baked_bundle({str(bundle)!r}, ["nosuch"], "other")
            missing = None
        except FileNotFoundError as e:
            missing = str(e)
        print(json.dumps({{
            "path": again,
            "files": sorted(os.listdir(os.path.join(again, "configs"))),
            "runs_kept": os.path.isfile(os.path.join(again, "runs", "train", "events.out")),
            "models": os.path.realpath(os.path.join(again, "models")),
            "roi_size": p["roi_size"], "hidden_size": p["hidden_size"],
            "missing": missing,
            "infer_models": infer.config()["model_filename"], "train_models": train.config()["model_filename"],
            "infer_dtype": infer.config()["result_dtype"], "strict": [infer.load_strict, train.load_strict],
        }}))
        """,
        tmp_path,
    )
    assert result["path"] == str((tmp_path / "app/model/baked-quick/btcv_mae_segmentation").resolve())
    assert "quick.yaml" not in result["files"] and "stale.yaml" not in result["files"]
    assert result["runs_kept"]  # what a training run wrote beside the configs stays (POST /reload rebuilds the app)
    assert {"inference.yaml", "train.yaml", "metadata.json", "logging.conf"} <= set(result["files"])
    assert result["models"] == str((bundle / "models").resolve())  # created, and linked: trained weights land there
    assert (bundle / "models").is_dir()
    assert result["roi_size"] == [48, 48, 48] and result["hidden_size"] == 96  # configs/quick.yaml's values
    assert "nosuch.yaml" in result["missing"]
    # MONAI Label would offer every models/*.pt, mae.pt first: only the fine-tuned weights are served and trained on
    assert result["infer_models"] == result["train_models"] == ["model.pt"]
    assert result["infer_dtype"] == "uint8" and result["strict"] == [True, True]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
