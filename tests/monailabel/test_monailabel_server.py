"""The three bundles served by a real MONAI Label server (scripts/serve_monailabel.sh, .venv-monailabel) on 127.0.0.1.

The server (``live_server.py``) serves freshly initialised quick-size networks on real samples. Each answer is checked
against the bundle's own inference workflow run in this process on the same file with the same weights; then one BTCV
training epoch runs through MONAI Label on labels saved in its datastore, and the trained weights are served. What
the server refuses is tested in ``test_server_attacks.py``.
"""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_configs import BundleConfigs
from live_server import BRATS, BTCV, CXR, CXR_IMAGE, LIVE, SHARED_DATA, Server

from shared_networks.data.cxr14 import CXR14_FINDINGS

TRAIN_TIMEOUT_S = 600
pytestmark = LIVE


def _bundle_inference(name: str, image: Path, model: Path, out: Path) -> Path:
    """The bundle's own inference workflow (quick) on ``image`` with ``model``; returns its output folder."""
    wf = BundleConfigs(name).workflow(
        "inference", "inference", dataset_dir=str(image), model_path=str(model), output_dir=str(out)
    )
    wf.run()
    wf.finalize()
    return out


def _infer_label_map(server: Server, model: str, image: str, tmp_path: Path) -> nib.Nifti1Image:
    data = server.request("POST", f"/infer/{model}?image={image}&output=image")
    assert isinstance(data, bytes) and data[:2] == b"\x1f\x8b", f"{model}: expected a gzipped NIfTI, got {data[:200]!r}"
    path = tmp_path / f"{model}_{image}.nii.gz"
    path.write_bytes(data)
    return nib.load(path)


def test_serves_the_three_bundles(server):
    for name in (BTCV, BRATS, CXR):  # from copies with configs/quick.yaml baked in, on the bundle's own weights
        served = server.app / "model" / "baked-quick" / name
        assert (served / "configs" / "inference.yaml").read_text().startswith("# baked: configs/quick.yaml")
        assert (served / "models").resolve() == (server.bundles / name / "models").resolve()
    models = server.info["models"]
    assert set(models) == {BTCV, BRATS, CXR}
    assert set(server.info["trainers"]) == {BTCV, BRATS}
    assert models[BTCV]["type"] == "segmentation" and models[BTCV]["dimension"] == 3
    assert models[BTCV]["labels"]["spleen"] == 1 and models[BTCV]["labels"]["left adrenal gland"] == 13
    assert models[BRATS]["labels"] == {"edema": 1, "non-enhancing tumour": 2, "enhancing tumour": 3}
    assert models[CXR]["type"] == "classification" and models[CXR]["dimension"] == 2
    assert models[CXR]["labels"] == {f: i for i, f in enumerate(CXR14_FINDINGS)}


@pytest.mark.parametrize(
    ("model", "image", "values"),
    [(BTCV, "img0001", set(range(14))), (BRATS, "BRATS_001", {0, 1, 2, 3})],
)
def test_segmentation_label_map_in_the_image_geometry(server, tmp_path, model, image, values):
    seg = _infer_label_map(server, model, image, tmp_path)
    src = nib.load(server.studies / f"{image}.nii.gz")
    assert seg.shape == src.shape[:3]  # BraTS: the 4 modalities of a 4-D file -> one label map
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-4)
    labels = np.asarray(seg.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels).tolist()) <= values

    # the same map as the bundle's own inference workflow on the same file with the same weights
    out = _bundle_inference(
        model, server.studies / f"{image}.nii.gz", server.bundles / model / "models" / "model.pt", tmp_path / "bundle"
    )
    own = np.asarray(nib.load(next(out.glob("*_seg.nii.gz"))).dataobj)
    assert own.shape == labels.shape
    assert len(np.unique(own)) > 1  # not a constant map: the agreement below means something
    assert np.mean(own == labels) > 0.999


def test_classification_returns_the_14_probabilities(server, tmp_path):
    result = server.request("POST", f"/infer/{CXR}?image={CXR_IMAGE}&output=json")
    prediction = result["prediction"]
    assert [(p["idx"], p["label"]) for p in prediction] == list(enumerate(CXR14_FINDINGS))
    scores = np.array([p["score"] for p in prediction])
    assert np.all((scores >= 0) & (scores <= 1))

    out = _bundle_inference(
        CXR, server.studies / f"{CXR_IMAGE}.png", server.bundles / CXR / "models" / "model.pt", tmp_path / "bundle"
    )
    with open(out / "probabilities.csv") as f:
        (row,) = list(csv.DictReader(f))
    own = np.array([float(row[name]) for name in CXR14_FINDINGS])
    assert np.ptp(own) > 0.05  # the classes differ: the comparison below means something
    np.testing.assert_allclose(scores, own, atol=1e-5)


def _wait_for_training(server: Server) -> dict:
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while (task := server.request("GET", "/train/"))["status"] in ("SUBMITTED", "RUNNING"):
        assert time.monotonic() < deadline, f"training still running after {TRAIN_TIMEOUT_S} s:\n{server.log_tail()}"
        time.sleep(2)
    return task


def test_one_training_epoch_on_datastore_labels(server, tmp_path):
    model_pt = server.bundles / BTCV / "models" / "model.pt"
    before = torch.load(model_pt, map_location="cpu", weights_only=True)
    written = model_pt.stat().st_mtime_ns
    for n in (1, 2):
        saved = server.put_file(
            f"/datastore/label?image=img000{n}&tag=final",
            "label",
            SHARED_DATA / "btcv" / "labelsTr" / f"label000{n}.nii.gz",
        )
        assert saved == {"image": f"img000{n}", "label": f"img000{n}"}

    started = server.request(
        "POST", f"/train/{BTCV}", {"max_epochs": 1, "val_split": 0.5, "device": "cpu", "multi_gpu": False}
    )
    assert started["status"] in ("SUBMITTED", "RUNNING")
    task = _wait_for_training(server)
    assert task["status"] == "DONE", f"training ended as {task['status']}:\n{server.log_tail()}"
    log = server.log.read_text(errors="replace")  # the server logs every line of its training process
    assert "Epoch: 1/1, Iter: 1/1" in log  # one epoch, one training image (the other validates)
    # continued from the served weights (read through the baked copy's link to the bundle's models/)
    restored = re.search(rf"Restored all variables from \S*/{BTCV}/models/model\.pt", log)
    assert restored
    # the bundle's MAE encoder was loaded before (when the trainer was built): the fine-tuned weights won
    encoder = re.search(rf"pre-trained encoder from \S*/{BTCV}/models/mae\.pt: \d+ tensors loaded", log)
    assert encoder and encoder.start() < restored.start()
    assert re.search(r"Epoch\[1\] Metrics -- (val_\w+: \S+ )*val_mean_dice: \d", log)  # validated on the other image
    # the best model of the run, written by the bundle's checkpoint saver, replaced the served one
    assert model_pt.stat().st_mtime_ns > written
    after = torch.load(model_pt, map_location="cpu", weights_only=True)
    assert after.keys() == before.keys() and all(after[k].shape == before[k].shape for k in before)

    # the server reloads the new weights for its next answer, still in the image's geometry
    seg = _infer_label_map(server, BTCV, "img0001", tmp_path)
    assert seg.shape == nib.load(server.studies / "img0001.nii.gz").shape
    assert "Reload model from cache" in server.log.read_text(errors="replace")
