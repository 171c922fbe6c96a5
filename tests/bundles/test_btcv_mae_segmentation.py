"""The BTCV bundle's workflows, run for real through monai.bundle's ConfigWorkflow with configs/quick.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_configs import BundleConfigs
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose

from shared_networks.data.readers import nifti_to_dicom_series
from shared_networks.synthetic.ct import write_btcv_phantom_dataset

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "btcv_mae_segmentation"
CONFIGS = BUNDLE / "configs"
BUNDLE_CONFIGS = BundleConfigs("btcv_mae_segmentation")
workflow = BUNDLE_CONFIGS.workflow
parser = BUNDLE_CONFIGS.parser


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_btcv_phantom_dataset(tmp_path_factory.mktemp("btcv_phantoms"), num_cases=5, seed=3)


def test_required_properties(phantoms, tmp_path):
    for name, kind in (("pretrain", "train"), ("train", "train"), ("evaluate", "infer"), ("inference", "infer")):
        data = phantoms / "imagesTr" if name == "inference" else phantoms
        wf = workflow(name, kind, dataset_dir=str(data), output_dir=str(tmp_path / name), ckpt_dir=str(tmp_path))
        assert not wf.check_properties(), name


@pytest.mark.slow
def test_pretrain_finetune_evaluate_infer(phantoms, tmp_path):
    ckpt, out = tmp_path / "models", tmp_path / "runs"
    common = dict(dataset_dir=str(phantoms), ckpt_dir=str(ckpt))

    wf = workflow("pretrain", "train", output_dir=str(out / "pretrain"), max_epochs=2, recon_interval=1, **common)
    wf.run()
    mae_state = torch.load(ckpt / "mae.pt", weights_only=True)
    assert any(k.startswith("encoder.blocks.") for k in mae_state) and "mask_token" in mae_state
    assert sorted(p.name for p in (out / "pretrain").glob("*.png")) == [
        "reconstruction_epoch1.png",
        "reconstruction_epoch2.png",
    ]
    pretrain_images = {d["image"] for d in wf.parser.get_parsed_content("datalist")["pretrain"]}
    datalist = wf.parser.get_parsed_content("datalist")
    assert not pretrain_images & {d["image"] for d in datalist["validation"] + datalist["test"]}
    wf.finalize()

    wf = workflow("train", "train", output_dir=str(out / "train"), max_epochs=2, val_interval=1, **common)
    wf.run()
    loader = wf.parser.get_parsed_content("train#handlers")[0]
    network = wf.parser.get_parsed_content("network")
    assert sorted(loader.report.loaded) == sorted(network.encoder.state_dict())  # every encoder tensor handed off
    model_state = torch.load(ckpt / "model.pt", weights_only=True)
    assert model_state.keys() == network.state_dict().keys()
    assert wf.parser.get_parsed_content("validate#evaluator").state.best_metric > -1
    wf.finalize()

    wf = workflow("evaluate", "infer", output_dir=str(out / "evaluate"), **common)
    wf.run()
    summary = json.loads((out / "evaluate" / "summary.json").read_text())
    test_cases = [p.split("/")[-1] for p in (d["image"] for d in datalist["test"])]
    assert summary["cases"] == test_cases and summary["n_cases"] == len(test_cases) >= 1
    assert len(summary["dice"]["per_class"]) == 13 and 0.0 <= summary["dice"]["mean"] <= 1.0
    structures = summary["structures"]  # each organ of each case: detected, missed, false positive or both empty
    assert sum(structures[k] for k in ("detected", "missed", "false_positives", "both_empty")) == 13 * len(test_cases)
    for organ, counts in structures["per_class"].items():  # HD95 defined (a distance or the penalty) unless both empty
        assert summary["hd95"]["per_class"][organ]["n"] == len(test_cases) - counts["both_empty"]
    rows = (out / "evaluate" / "per_case.csv").read_text().splitlines()
    assert len(rows) == 1 + len(test_cases) and rows[0].startswith("case,dice_spleen,")
    assert rows[0].endswith(",status_left_adrenal_gland,missed,false_positives,both_empty")
    wf.finalize()

    images = sorted((phantoms / "imagesTr").glob("*.nii.gz"))[:2]
    wf = workflow(
        "inference",
        "infer",
        dataset_dir=str(phantoms / "imagesTr"),
        output_dir=str(out / "inference"),
        ckpt_dir=str(ckpt),
    )
    wf.run()
    for img in images:
        seg = nib.load(out / "inference" / img.name.replace(".nii.gz", "_seg.nii.gz"))
        ref = nib.load(img)
        assert seg.shape == ref.shape and np.allclose(seg.affine, ref.affine)
        assert seg.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(seg.dataobj))) <= set(range(14))
    wf.finalize()


@pytest.mark.slow
def test_finetune_from_scratch(phantoms, tmp_path):
    wf = workflow(
        "train",
        "train",
        dataset_dir=str(phantoms),
        ckpt_dir=str(tmp_path),
        output_dir=str(tmp_path),
        max_epochs=1,
        val_interval=1,
        pretrained_ckpt="none",
    )
    wf.run()
    assert wf.parser.get_parsed_content("train#handlers")[0].report is False  # logged as a from-scratch baseline
    assert (tmp_path / "model.pt").is_file()


def test_missing_pretrained_checkpoint_is_an_error(phantoms, tmp_path):
    wf = workflow(
        "train",
        "train",
        dataset_dir=str(phantoms),
        ckpt_dir=str(tmp_path),
        output_dir=str(tmp_path),
        max_epochs=1,
        pretrained_ckpt=str(tmp_path / "mea.pt"),
    )
    with pytest.raises(RuntimeError) as err:  # monai.bundle wraps what a config expression raises
        wf.run()
    assert isinstance(err.value.__cause__, FileNotFoundError) and "mea.pt" in str(err.value.__cause__)
    assert not (tmp_path / "model.pt").exists()


def test_training_needs_a_validation_case(tmp_path):
    one = write_btcv_phantom_dataset(tmp_path / "one", num_cases=1, seed=0)
    with pytest.raises(RuntimeError) as err:
        workflow("train", "train", dataset_dir=str(one), ckpt_dir=str(tmp_path))
    assert isinstance(err.value.__cause__, ValueError) and "'validation' split" in str(err.value.__cause__)
    assert str(one) in str(err.value.__cause__)


# ---- real CT (../shared/data/btcv) ----


def test_real_ct_preprocessing_full_settings(shared_data):
    """Reference pre-processing at full settings: 96^3 crops, intensities windowed into 0..1, BTCV label values."""
    data = shared_data("btcv")
    p = parser("train", quick=False, dataset_dir=str(data), split="dataset_json")
    items = p.get_parsed_content("datalist")["training"] + p.get_parsed_content("datalist")["validation"]
    transform = p.get_parsed_content("train#preprocessing")
    transform.set_random_state(seed=0)
    first_random = len(transform.transforms) - 1  # the random transforms: one ComposeWithoutMeta, last
    assert type(transform.transforms[first_random]).__name__ == "ComposeWithoutMeta"
    for item in items:
        volume = transform(item, end=first_random)  # what the cache holds
        spacing = volume["image"].pixdim.tolist()
        assert spacing == pytest.approx([1.5, 1.5, 2.0], abs=1e-4)
        crops = transform(volume, start=first_random)
        assert len(crops) == 4
        for c in crops:
            assert c["image"].shape == (1, 96, 96, 96) and c["label"].shape == (1, 96, 96, 96)
            # windowed to 0..1, then RandShiftIntensityd moves it by at most 0.1
            assert -0.1 <= float(c["image"].min()) and float(c["image"].max()) <= 1.1
            assert float(c["image"].max() - c["image"].min()) <= 1.0 + 1e-6
            assert set(torch.unique(c["label"]).int().tolist()) <= set(range(14))
            assert c["image_meta_dict"]["filename_or_obj"] == item["image"]  # plain tensors, the file name kept


@pytest.mark.slow
def test_real_ct_one_training_iteration(tmp_path, shared_data):
    data = shared_data("btcv")
    wf = workflow(
        "train",
        "train",
        dataset_dir=str(data),
        split="dataset_json",
        ckpt_dir=str(tmp_path),
        output_dir=str(tmp_path),
        max_epochs=1,
        warmup_epochs=0,
        pretrained_ckpt=None,
    )
    before = {k: v.clone() for k, v in wf.parser.get_parsed_content("network").state_dict().items()}
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 1 and np.isfinite(float(trainer.state.output[0]["loss"]))
    after = wf.parser.get_parsed_content("network").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_real_ct_inference_keeps_geometry(tmp_path, shared_data):
    """NIfTI and DICOM-series inputs both give a label map with the input's own shape and affine."""
    data = shared_data("btcv")
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "img0002.nii.gz").symlink_to(data / "imagesTr" / "img0002.nii.gz")
    nifti_to_dicom_series(data / "imagesTr" / "img0001.nii.gz", inputs / "img0001_dicom")
    p = parser("inference", dataset_dir=str(inputs))
    torch.save(p.get_parsed_content("network_def").state_dict(), tmp_path / "model.pt")
    wf = workflow(
        "inference", "infer", dataset_dir=str(inputs), ckpt_dir=str(tmp_path), output_dir=str(tmp_path / "out")
    )
    wf.run()
    for name, ref in (("img0002", "img0002"), ("img0001_dicom", "img0001")):
        ref, seg = nib.load(data / "imagesTr" / f"{ref}.nii.gz"), nib.load(tmp_path / "out" / f"{name}_seg.nii.gz")
        assert seg.shape == ref.shape and np.allclose(seg.affine, ref.affine, atol=1e-4), name


def test_real_ct_evaluation_inverts_to_native_resolution(shared_data):
    """A perfect prediction in the resampled space, inverted by evaluate's post-processing, lands on the native
    label grid and scores a high Dice there: the metric is taken at the original resolution."""
    data = shared_data("btcv")
    p = parser("evaluate", quick=False, dataset_dir=str(data), split="dataset_json", eval_split="training")
    item = p.get_parsed_content("datalist")["training"][0]
    d = p.get_parsed_content("preprocessing")(item)
    native = d["label"]
    assert native.shape[1:] == nib.load(item["label"]).shape  # the label is never resampled
    resampled = ConfigParser({**p.config, "spatial_keys": ["image", "label"]})
    both = Compose(resampled.get_parsed_content("deterministic_transforms"))(dict(item))
    assert both["label"].shape[1:] == d["image"].shape[1:] != native.shape[1:]
    onehot = torch.nn.functional.one_hot(both["label"][0].long(), 14).permute(3, 0, 1, 2).float() * 10
    d["pred"] = MetaTensor(onehot, meta=d["image"].meta)
    out = p.get_parsed_content("postprocessing")(d)
    assert out["pred"].shape[1:] == native.shape[1:]
    pred, gt = out["pred"].argmax(0), out["label"].argmax(0)
    for organ in torch.unique(gt).tolist()[1:]:
        a, b = pred == organ, gt == organ
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        if b.sum() > 500:  # organs large enough that a 1.5-2 mm round trip cannot erase them
            assert dice > 0.8, organ
