"""The BraTS bundle's workflows, run for real through monai.bundle's ConfigWorkflow with configs/quick.yaml."""

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

from shared_networks.synthetic.brain import write_brats2021_phantom_dataset, write_msd_phantom_dataset

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "brats_mae_segmentation"
CONFIGS = BUNDLE / "configs"
BUNDLE_CONFIGS = BundleConfigs("brats_mae_segmentation")
workflow = BUNDLE_CONFIGS.workflow
parser = BUNDLE_CONFIGS.parser
PHANTOM = dict(shape=(56, 64, 48), spacing=(3.0, 3.0, 3.0))  # already on quick.yaml's 3 mm grid


def save_constant_model(path: Path, region_logits: tuple[float, float, float], **override) -> None:
    """A model.pt whose output is the same logits (TC, WT, ET) at every voxel: its label map is known in advance."""
    network = parser("inference", dataset_dir=str(REPO), **override).get_parsed_content("network_def")
    state = network.state_dict()
    weight, bias = "out.conv.conv.weight", "out.conv.conv.bias"
    state[weight] = torch.zeros_like(state[weight])
    state[bias] = torch.tensor(region_logits)
    torch.save(state, path)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    return write_msd_phantom_dataset(tmp_path_factory.mktemp("msd"), num_cases=5, num_unlabelled=1, seed=3, **PHANTOM)


@pytest.fixture(scope="module")
def brats2021(tmp_path_factory):
    return write_brats2021_phantom_dataset(tmp_path_factory.mktemp("b21"), num_cases=2, num_unlabelled=1, **PHANTOM)


def test_required_properties(phantoms, tmp_path):
    for name, kind in (("pretrain", "train"), ("train", "train"), ("evaluate", "infer"), ("inference", "infer")):
        data = phantoms / "imagesTs" if name == "inference" else phantoms
        wf = workflow(name, kind, dataset_dir=str(data), output_dir=str(tmp_path / name), ckpt_dir=str(tmp_path))
        assert not wf.check_properties(), name


def test_network_shapes_full_settings():
    """The reference settings: ViT-B/16 with 512 tokens at 128^3 on 4 channels, UNETR with 3 outputs."""
    p = parser("pretrain", quick=False, dataset_dir=str(REPO))
    mae = p.get_parsed_content("mae_def")
    assert mae.encoder.num_patches == 512 and mae.in_channels == 4 and len(mae.decoder_blocks) == 8
    assert mae.mask_ratio == 0.75 and p.get_parsed_content("loss").per_channel
    net = parser("train", quick=False, dataset_dir=str(REPO)).get_parsed_content("network_def")
    assert net.encoder.num_layers == 12 and net.skip_indices == (3, 6, 9) and net.out.conv.conv.out_channels == 3


@pytest.mark.parametrize("layout", ["msd", "brats2021"])
def test_regions_follow_each_layouts_numbering(phantoms, brats2021, layout):
    """Pre-processing stacks 4 channels and turns each layout's labels into TC, WT, ET: ET is label 3 in MSD files and
    label 4 in BraTS 2021 files (the phantoms are on quick.yaml's grid, so voxel counts survive unchanged)."""
    p = parser("train", dataset_dir=str(phantoms if layout == "msd" else brats2021))
    item = p.get_parsed_content("datalist")["training"][0]
    assert item["layout"] == layout and isinstance(item["image"], list) == (layout == "brats2021")
    raw = np.asarray(nib.load(item["label"]).dataobj)
    d = p.get_parsed_content("validate#preprocessing")(dict(item))
    assert d["image"].shape[0] == 4 and d["label"].shape == (3, *d["image"].shape[1:])
    sets = {"msd": ([2, 3], [1, 2, 3], [3]), "brats2021": ([1, 4], [1, 2, 4], [4])}[layout]
    for i, values in enumerate(sets):
        assert int(d["label"][i].sum()) == int(np.isin(raw, values).sum()) > 0, (layout, "TC WT ET".split()[i])


@pytest.mark.slow
def test_pretrain_finetune_evaluate_infer(phantoms, brats2021, tmp_path):
    ckpt, out = tmp_path / "models", tmp_path / "runs"
    common = dict(dataset_dir=str(phantoms), ckpt_dir=str(ckpt))

    wf = workflow(
        "pretrain",
        "train",
        output_dir=str(out / "pretrain"),
        max_epochs=2,
        recon_interval=1,
        pretrain_extra_images=True,
        **common,
    )
    datalist = wf.parser.get_parsed_content("datalist")
    pretrain_images = {d["image"] for d in datalist["pretrain"]}
    # the unlabelled image, asked for (the default is the training split only: tests/bundles/test_pretrain_images.py)
    assert str(phantoms / "imagesTs" / "BRATS_006.nii.gz") in pretrain_images
    assert {d["image"] for d in datalist["training"]} <= pretrain_images
    assert not pretrain_images & {d["image"] for d in datalist["validation"] + datalist["test"]}
    wf.run()
    mae_state = torch.load(ckpt / "mae.pt", weights_only=True)
    assert mae_state["encoder.patch_embed.proj.weight"].shape[1] == 4 and "mask_token" in mae_state
    assert sorted(p.name for p in (out / "pretrain").glob("*.png")) == [
        "reconstruction_epoch1.png",
        "reconstruction_epoch2.png",
    ]
    wf.finalize()

    wf = workflow("train", "train", output_dir=str(out / "train"), max_epochs=2, val_interval=1, **common)
    wf.run()
    loader = wf.parser.get_parsed_content("train#handlers")[0]
    network = wf.parser.get_parsed_content("network")
    assert sorted(loader.report.loaded) == sorted(network.encoder.state_dict())  # every encoder tensor handed off
    assert not loader.report.missing and not loader.report.unexpected
    model_state = torch.load(ckpt / "model.pt", weights_only=True)
    assert model_state.keys() == network.state_dict().keys()
    assert 0.0 <= wf.parser.get_parsed_content("validate#evaluator").state.best_metric <= 1.0
    wf.finalize()

    wf = workflow("evaluate", "infer", output_dir=str(out / "evaluate"), **common)
    wf.run()
    summary = json.loads((out / "evaluate" / "summary.json").read_text())
    test_cases = [Path(d["image"]).name for d in datalist["test"]]
    assert summary["cases"] == test_cases and summary["n_cases"] == len(test_cases) >= 1
    for metric in ("dice", "hd95"):
        assert list(summary[metric]["per_class"]) == ["TC", "WT", "ET"]
    assert 0.0 <= summary["dice"]["mean"] <= 1.0
    structures = summary["structures"]  # each region of each case: detected, missed, false positive or both empty
    assert sum(structures[k] for k in ("detected", "missed", "false_positives", "both_empty")) == 3 * len(test_cases)
    for region, counts in structures["per_class"].items():  # HD95 defined (a distance or 373.13) unless both empty
        assert summary["hd95"]["per_class"][region]["n"] == len(test_cases) - counts["both_empty"]
    rows = (out / "evaluate" / "per_case.csv").read_text().splitlines()
    assert rows[0] == (
        "case,dice_TC,dice_WT,dice_ET,hd95_TC,hd95_WT,hd95_ET,status_TC,status_WT,status_ET,"
        "missed,false_positives,both_empty"
    ) and len(rows) == 1 + len(test_cases)
    wf.finalize()

    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "BRATS_006.nii.gz").symlink_to(phantoms / "imagesTs" / "BRATS_006.nii.gz")
    (inputs / "BraTS2021_00000").symlink_to(brats2021 / "BraTS2021_00000")
    wf = workflow("inference", "infer", dataset_dir=str(inputs), output_dir=str(out / "inference"), ckpt_dir=str(ckpt))
    wf.run()
    for name, ref, values in (
        ("BRATS_006", phantoms / "imagesTs" / "BRATS_006.nii.gz", {0, 1, 2, 3}),
        ("BraTS2021_00000", brats2021 / "BraTS2021_00000" / "BraTS2021_00000_t1ce.nii.gz", {0, 1, 2, 4}),
    ):
        seg, ref = nib.load(out / "inference" / f"{name}_seg.nii.gz"), nib.load(ref)
        assert seg.shape == ref.shape[:3] and np.allclose(seg.affine, ref.affine), name
        assert seg.get_data_dtype() == np.uint8 and set(np.unique(np.asarray(seg.dataobj))) <= values, name
    wf.finalize()


@pytest.mark.slow
@pytest.mark.parametrize(
    "logits, msd_value, brats_value",
    [((-9.0, -9.0, 9.0), 3, 4), ((9.0, 9.0, -9.0), 2, 1), ((-9.0, 9.0, -9.0), 1, 2)],
    ids=["ET", "TC", "WT"],
)
def test_inference_writes_each_layouts_numbering(phantoms, brats2021, tmp_path, logits, msd_value, brats_value):
    """A model that predicts one region everywhere writes that region's label of each layout inside the brain's box:
    ET is 3 in MSD files and 4 in BraTS 2021 files; core 2 / 1; edema 1 / 2."""
    save_constant_model(tmp_path / "model.pt", logits)
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "BRATS_001.nii.gz").symlink_to(phantoms / "imagesTr" / "BRATS_001.nii.gz")
    (inputs / "case").symlink_to(brats2021 / "BraTS2021_00001")
    wf = workflow("inference", "infer", dataset_dir=str(inputs), ckpt_dir=str(tmp_path), output_dir=str(tmp_path))
    wf.run()
    flair = {
        "BRATS_001": nib.load(phantoms / "imagesTr" / "BRATS_001.nii.gz").dataobj[..., 0],
        "BraTS2021_00001": nib.load(brats2021 / "BraTS2021_00001" / "BraTS2021_00001_flair.nii.gz").dataobj,
    }
    for name, value in (("BRATS_001", msd_value), ("BraTS2021_00001", brats_value)):
        seg = np.asarray(nib.load(tmp_path / f"{name}_seg.nii.gz").dataobj)
        assert set(np.unique(seg)) == {0, value}, name
        # the brain's box is labelled, the air around it is not
        assert np.mean(seg[np.asarray(flair[name]) > 0] == value) > 0.99 and np.mean(seg == value) < 0.9, name


def test_bad_channel_count_is_refused_naming_the_file(tmp_path):
    """A 3-channel 4-D file is refused from its header (datalist, inference inputs) and after loading."""
    three = tmp_path / "BRATS_003ch.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 3), dtype=np.float32), np.eye(4)), three)
    with pytest.raises(RuntimeError) as err:  # monai.bundle wraps what a config expression raises
        parser("inference", dataset_dir=str(three)).get_parsed_content("inputs")
    assert isinstance(err.value.__cause__, ValueError) and "BRATS_003ch.nii.gz" in str(err.value.__cause__)
    preprocessing = parser("inference", dataset_dir=str(tmp_path)).get_parsed_content("preprocessing", lazy=True)
    with pytest.raises(RuntimeError) as err:  # Compose wraps what a transform raises
        preprocessing({"image": str(three), "layout": "msd"})
    cause = err.value.__cause__
    assert isinstance(cause, ValueError) and "BRATS_003ch.nii.gz' has 3 channel(s)" in str(cause)


# ---- real MRI (../shared/data/Task01_BrainTumour) ----


def test_real_msd_preprocessing_full_settings(shared_data):
    """Reference pre-processing at 1 mm: 4 z-scored channels, and regions counted by hand from the raw label."""
    data = shared_data("Task01_BrainTumour")
    p = parser("train", quick=False, dataset_dir=str(data))
    item = p.get_parsed_content("datalist")["training"][0]
    raw = np.asarray(nib.load(item["label"]).dataobj)
    d = p.get_parsed_content("validate#preprocessing")(dict(item))
    image, regions = d["image"], d["label"]
    assert image.shape[0] == 4 and regions.shape == (3, *image.shape[1:])
    assert image.pixdim.tolist() == pytest.approx([1.0, 1.0, 1.0])
    for c in range(4):  # z-score over the brain of each channel
        brain = image[c][image[c] != 0]
        assert abs(float(brain.mean())) < 0.05 and abs(float(brain.std()) - 1) < 0.05
    counts = {name: int(regions[i].sum()) for i, name in enumerate(("TC", "WT", "ET"))}
    assert counts == {
        "TC": int(np.isin(raw, [2, 3]).sum()),
        "WT": int(np.isin(raw, [1, 2, 3]).sum()),
        "ET": int((raw == 3).sum()),
    }
    assert counts["WT"] == 24188 and counts["TC"] == 9281  # this sample has no enhancing voxel
    crops = p.get_parsed_content("train#preprocessing")(dict(item))
    assert crops[0]["image"].shape == (4, 128, 128, 128) and crops[0]["label"].shape == (3, 128, 128, 128)


def test_real_msd_training_needs_a_validation_case(shared_data, tmp_path):
    data = shared_data("Task01_BrainTumour")
    with pytest.raises(RuntimeError) as err:
        workflow("train", "train", dataset_dir=str(data), ckpt_dir=str(tmp_path), output_dir=str(tmp_path))
    assert isinstance(err.value.__cause__, ValueError) and "'validation' split" in str(err.value.__cause__)


@pytest.mark.slow
def test_real_msd_one_training_iteration(tmp_path, shared_data):
    """The real labelled case twice (a training and a validation copy): one fine-tuning iteration on real MRI."""
    data = shared_data("Task01_BrainTumour")
    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for name in ("BRATS_001.nii.gz", "BRATS_101.nii.gz"):
            (tmp_path / "data" / folder / name).symlink_to(data / folder / "BRATS_001.nii.gz")
    wf = workflow(
        "train",
        "train",
        dataset_dir=str(tmp_path / "data"),
        ckpt_dir=str(tmp_path),
        output_dir=str(tmp_path),
        max_epochs=1,
        warmup_epochs=0,
        pretrained_ckpt="",
    )
    before = {k: v.clone() for k, v in wf.parser.get_parsed_content("network").state_dict().items()}
    wf.run()
    assert wf.parser.get_parsed_content("train#handlers")[0].report is False  # '' (the CLI's from-scratch form)
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 1 and np.isfinite(float(trainer.state.output[0]["loss"]))
    after = wf.parser.get_parsed_content("network").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow
def test_real_msd_inference_keeps_geometry(tmp_path, shared_data):
    data = shared_data("Task01_BrainTumour")
    save_constant_model(tmp_path / "model.pt", (-9.0, 9.0, -9.0))
    wf = workflow(
        "inference",
        "infer",
        dataset_dir=str(data / "imagesTs"),
        ckpt_dir=str(tmp_path),
        output_dir=str(tmp_path / "out"),
    )
    wf.run()
    ref, seg = nib.load(data / "imagesTs" / "BRATS_002.nii.gz"), nib.load(tmp_path / "out" / "BRATS_002_seg.nii.gz")
    assert ref.shape[3] == 4 and seg.shape == ref.shape[:3] and np.allclose(seg.affine, ref.affine)
    brain = np.asarray(ref.dataobj)[..., 0] > 0
    labels = np.asarray(seg.dataobj)
    assert np.mean(labels[brain] == 1) > 0.99 and set(np.unique(labels)) == {0, 1}  # MSD edema: the WT-only label


def test_real_msd_evaluation_inverts_to_native_resolution(shared_data):
    """Perfect regions in the 3 mm space, inverted by evaluate's post-processing, land on the native 1 mm label grid
    and score a high Dice there against the regions of the untouched label."""
    data = shared_data("Task01_BrainTumour")
    p = parser("evaluate", dataset_dir=str(data), eval_split="training")
    item = p.get_parsed_content("datalist")["training"][0]
    d = p.get_parsed_content("preprocessing")(item)
    native = d["label"]
    assert native.shape[1:] == nib.load(item["label"]).shape  # the label is never resampled
    resampled = ConfigParser({**p.config, "spatial_keys": ["image", "label"]}).get_parsed_content("preprocessing")
    both = resampled(dict(item))
    assert both["label"].shape[1:] == d["image"].shape[1:] != native.shape[1:]
    d["pred"] = MetaTensor((both["label"] * 2 - 1) * 10, meta=d["image"].meta)  # logits of the resampled regions
    out = p.get_parsed_content("postprocessing")(d)
    assert out["pred"].shape == native.shape
    for i, name in enumerate(("TC", "WT")):
        a, b = out["pred"][i] > 0, out["label"][i] > 0
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.8, name
