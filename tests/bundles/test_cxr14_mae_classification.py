"""The ChestX-ray14 bundle's workflows, run for real through monai.bundle's ConfigWorkflow with configs/quick.yaml."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from bundle_configs import BundleConfigs

from shared_networks.data.cxr14 import CXR14_FINDINGS
from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "cxr14_mae_classification"
CONFIGS = BUNDLE / "configs"
BUNDLE_CONFIGS = BundleConfigs("cxr14_mae_classification")  # evaluate and linear_probe over train.yaml
workflow = BUNDLE_CONFIGS.workflow
parser = BUNDLE_CONFIGS.parser


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    return write_cxr14_phantom_dataset(tmp_path_factory.mktemp("cxr14_phantoms"), num_patients=24, size=64, seed=3)


def _random_model(tmp_path: Path, **override) -> Path:
    """A randomly initialised network saved as ``tmp_path/model.pt`` (quick settings)."""
    torch.manual_seed(0)
    network = parser("evaluate", **override).get_parsed_content("network_def")
    torch.nn.init.normal_(network.head.weight, std=0.5)  # outputs that differ between images (not all 0.5)
    torch.save(network.state_dict(), tmp_path / "model.pt")
    return tmp_path / "model.pt"


def test_metadata():
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]  # the version checks: shared_networks.tools.bundle_checks
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 1 and image["spatial_shape"] == [224, 224]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == 14 and list(pred["channel_def"].values()) == list(CXR14_FINDINGS)
    p = parser("train", quick=False)
    assert p["img_size"] == image["spatial_shape"] and p["in_channels"] == 1 and p["num_classes"] == 14
    net = p.get_parsed_content("network_def")
    assert net(torch.zeros(1, 1, 224, 224)).shape == (1, 14)


def test_required_properties(phantoms, tmp_path):
    for name, kind in (
        ("pretrain", "train"),
        ("train", "train"),
        ("linear_probe", "train"),
        ("evaluate", "infer"),
        ("inference", "infer"),
    ):
        data = phantoms / "images" if name == "inference" else phantoms
        wf = workflow(name, kind, dataset_dir=str(data), ckpt_dir=str(tmp_path), output_dir=str(tmp_path / name))
        assert not wf.check_properties(), name


def test_position_embedding_is_handed_over(phantoms, tmp_path):
    """The fine-tuned network starts from the MAE's position embedding (the public reference loses it)."""
    p = parser("pretrain", dataset_dir=str(phantoms))
    mae = p.get_parsed_content("mae_def")
    state = mae.state_dict()
    state["encoder.pos_embed"] = torch.randn_like(state["encoder.pos_embed"])  # as if learned: not the sin-cos init
    torch.save(state, tmp_path / "mae.pt")
    t = parser("train", dataset_dir=str(phantoms), ckpt_dir=str(tmp_path), output_dir=str(tmp_path))
    network, loader = t.get_parsed_content("network"), t.get_parsed_content("train#handlers")[0]
    assert not torch.equal(network.encoder.pos_embed, state["encoder.pos_embed"])
    assert network.encoder.pos_embed.requires_grad  # trained during fine-tuning
    loader()
    assert torch.equal(network.encoder.pos_embed.detach(), state["encoder.pos_embed"])
    assert "pos_embed" in loader.report.loaded and sorted(loader.report.loaded) == sorted(network.encoder.state_dict())
    assert not loader.report.missing and not loader.report.unexpected and not loader.report.interpolated


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
    datalist = wf.parser.get_parsed_content("datalist")
    pretrain_images = {d["image"] for d in datalist["pretrain"]}
    assert pretrain_images == {d["image"] for d in datalist["training"]}
    assert not pretrain_images & {d["image"] for d in datalist["validation"] + datalist["test"]}
    wf.finalize()

    wf = workflow("train", "train", output_dir=str(out / "train"), max_epochs=2, val_interval=1, **common)
    wf.run()
    loader = wf.parser.get_parsed_content("train#handlers")[0]
    network = wf.parser.get_parsed_content("network")
    assert sorted(loader.report.loaded) == sorted(network.encoder.state_dict())  # every encoder tensor, pos_embed too
    assert loader.report.skipped_decoder > 0 and not loader.report.missing
    model_state = torch.load(ckpt / "model.pt", weights_only=True)
    assert model_state.keys() == network.state_dict().keys()
    assert 0.0 <= wf.parser.get_parsed_content("validate#evaluator").state.best_metric <= 1.0
    wf.finalize()

    wf = workflow("evaluate", "infer", output_dir=str(out / "evaluate"), **common)
    wf.run()
    summary = json.loads((out / "evaluate" / "summary.json").read_text())
    test_images = [Path(d["image"]).name for d in datalist["test"]]
    assert summary["n_images"] == len(test_images) >= 2 and list(summary["per_class"]) == list(CXR14_FINDINGS)
    for finding, entry in summary["per_class"].items():
        positives = sum(d["label"][CXR14_FINDINGS.index(finding)] for d in datalist["test"])
        assert entry["positives"] == positives and entry["negatives"] == len(test_images) - positives
        assert (entry["auc"] is None) == (positives in (0, len(test_images))), finding
    with open(out / "evaluate" / "predictions.csv", newline="") as f:
        rows_evaluated = list(csv.DictReader(f))
    assert [r["image"] for r in rows_evaluated] == test_images
    assert all(0.0 <= float(r[c]) <= 1.0 for r in rows_evaluated for c in CXR14_FINDINGS)
    wf.finalize()

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in test_images[:3]:
        shutil.copy(phantoms / "images" / name, inputs / name)
    wf = workflow("inference", "infer", dataset_dir=str(inputs), ckpt_dir=str(ckpt), output_dir=str(out / "inference"))
    wf.run()
    with open(out / "inference" / "probabilities.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", *CXR14_FINDINGS] and [r[0] for r in rows[1:]] == test_images[:3]
    probs = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert probs.shape == (3, 14) and ((probs >= 0) & (probs <= 1)).all()
    evaluated = {r["image"]: [float(r[c]) for c in CXR14_FINDINGS] for r in rows_evaluated}
    np.testing.assert_allclose(probs, [evaluated[n] for n in test_images[:3]], atol=2e-6)  # same model, same input
    wf.finalize()


@pytest.mark.slow
def test_linear_probe_trains_only_the_head(phantoms, tmp_path):
    p = parser("pretrain", dataset_dir=str(phantoms))
    torch.save(p.get_parsed_content("mae_def").state_dict(), tmp_path / "mae.pt")
    mae_state = torch.load(tmp_path / "mae.pt", weights_only=True)
    wf = workflow(
        "linear_probe",
        "train",
        dataset_dir=str(phantoms),
        ckpt_dir=str(tmp_path),
        output_dir=str(tmp_path / "runs"),
        max_epochs=3,
        val_interval=1,
    )
    network = wf.parser.get_parsed_content("network")
    head_before = network.head.weight.detach().clone()
    encoded = []  # images through the encoder: each once (features computed once, not every epoch)
    network.encoder.patch_embed.register_forward_hook(lambda module, args, out: encoded.append(args[0].shape[0]))
    wf.run()
    n_images = len(wf.parser.get_parsed_content("train#dataset#data")) + len(
        wf.parser.get_parsed_content("validate#dataset#data")
    )
    assert sum(encoded) == n_images and set(encoded) == {1}
    optimizer = wf.parser.get_parsed_content("optimizer")
    trained = {id(q) for g in optimizer.param_groups for q in g["params"]}
    assert trained == {id(q) for n, q in network.named_parameters() if not n.startswith("encoder.")}
    for key, value in network.encoder.state_dict().items():  # the encoder is the MAE's, untouched
        assert torch.equal(value, mae_state[f"encoder.{key}"]), key
    saved = torch.load(tmp_path / "linear_probe.pt", weights_only=True)
    assert not torch.equal(network.head.weight.detach(), head_before)  # the head trained
    assert torch.equal(saved["encoder.pos_embed"], mae_state["encoder.pos_embed"])
    assert not (tmp_path / "model.pt").exists()  # the fine-tuned model's name is left alone


@pytest.mark.slow
def test_finetune_from_scratch(phantoms, tmp_path):
    for none in (None, "none"):  # Python None, and what the command line can pass (monai.bundle drops None)
        wf = workflow(
            "train",
            "train",
            dataset_dir=str(phantoms),
            ckpt_dir=str(tmp_path),
            output_dir=str(tmp_path),
            max_epochs=1,
            val_interval=1,
            pretrained_ckpt=none,
        )
        wf.run()
        assert wf.parser.get_parsed_content("train#handlers")[0].report is False  # logged as a from-scratch baseline
        assert (tmp_path / "model.pt").is_file()
        wf.finalize()


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


def test_inference_on_a_dicom_and_a_corrupt_png(phantoms, tmp_path):
    import itk
    from PIL import Image

    name = sorted((phantoms / "images").glob("*.png"))[0]
    pixels = np.asarray(Image.open(name).convert("L"))
    dicom = itk.image_from_array(np.ascontiguousarray(pixels.astype(np.uint16)))
    tags = itk.MetaDataDictionary()
    tags["0028|1050"], tags["0028|1051"] = "128", "256"  # the window that maps 0..255 exactly as PNG's / 255
    dicom.SetMetaDataDictionary(tags)
    io = itk.GDCMImageIO.New()
    inputs = tmp_path / "in"
    inputs.mkdir()
    itk.ImageFileWriter[type(dicom)].New(Input=dicom, FileName=str(inputs / "scan.dcm"), ImageIO=io).Update()
    shutil.copy(name, inputs / "same.png")
    _random_model(tmp_path)
    wf = workflow("inference", "infer", dataset_dir=str(inputs), ckpt_dir=str(tmp_path), output_dir=str(tmp_path / "o"))
    wf.run()
    with open(tmp_path / "o" / "probabilities.csv", newline="") as f:
        rows = {r["image"]: np.array([float(r[c]) for c in CXR14_FINDINGS]) for r in csv.DictReader(f)}
    assert sorted(rows) == ["same.png", "scan.dcm"]
    assert rows["same.png"].std() > 0.01  # the model's outputs vary: the comparison below means something
    np.testing.assert_allclose(rows["scan.dcm"], rows["same.png"], atol=1e-5)  # DICOM = the same picture as PNG
    wf.finalize()

    (inputs / "broken.png").write_bytes((inputs / "same.png").read_bytes()[:200])
    wf = workflow(
        "inference",
        "infer",
        dataset_dir=str(inputs / "broken.png"),
        ckpt_dir=str(tmp_path),
        output_dir=str(tmp_path / "o2"),
    )
    with pytest.raises(RuntimeError) as err:
        wf.run()
    chain, e = [], err.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__
    assert any("broken.png cannot be decoded" in m for m in chain), chain


def _signed_rescaled_copy(dicom: Path, out: Path) -> Path:
    """The MONOCHROME2 8-bit picture ``v`` of ``dicom`` as signed 16-bit values ``s = 8 v - 20000`` with Rescale Slope
    0.5 and Intercept 100 (modality values ``4 v - 9900``) and the window that displays them as ``v / 255``."""
    import pydicom

    ds = pydicom.dcmread(dicom)
    v = ds.pixel_array.astype(np.int64)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = (8 * v - 20000).astype("<i2").tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = 0.5, 100
    ds.WindowCenter, ds.WindowWidth = -9389.5, 1021  # (x - (c - 0.5)) / (w - 1) + 0.5 = v / 255 for x = 4 v - 9900
    ds.save_as(out)
    return out


def test_inference_gives_a_dicom_the_probabilities_of_the_png_of_its_displayed_picture(phantoms, tmp_path):
    """inference.yaml on DICOMs whose display (modality LUT, VOI, MONOCHROME1 inversion) is one 8-bit picture ``p``
    and on the PNG of ``p``: the same probabilities (1e-4), whatever the photometric, window, VOI LUT, bit depth or
    signedness."""
    from PIL import Image

    from shared_networks.dicom import write_radiograph

    p = np.asarray(Image.open(sorted((phantoms / "images").glob("*.png"))[0]).convert("L")).copy()
    p[0, 0], p[-1, -1] = 0, 255  # the full 8-bit range: what min..max (no VOI in the file) stretches to
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(p).save(inputs / "picture.png")
    Image.fromarray(255 - p).save(inputs / "inverted.png")  # what MONOCHROME1 read as MONOCHROME2 would show
    p16 = p.astype(np.uint16)
    # 12-bit stored values 4 p + 1000, and darker/brighter values where p is 0/255 (the window clips them)
    rng = np.random.default_rng(0)
    v12 = 4 * p16 + 1000
    v12[p == 0] = rng.integers(0, 1000, int((p == 0).sum()))
    v12[p == 255] = rng.integers(4 * 255 + 1000, 4096, int((p == 255).sum()))
    lut = 257 * np.clip(np.rint((np.arange(4096) - 7) / 16), 0, 255).astype(np.int64)  # a staircase: 16 p + 7 -> p
    cases = {
        "m2_full_window.dcm": (p, {}),  # DX default: the window of the full 8-bit range
        "m1_full_window.dcm": (p, {"photometric": "MONOCHROME1"}),
        "m2_window_12bit.dcm": (v12, {"bits_stored": 12, "window": (1510.5, 1021)}),
        "m1_window_12bit.dcm": (v12, {"bits_stored": 12, "window": (1510.5, 1021), "photometric": "MONOCHROME1"}),
        "m2_voi_lut_12bit.dcm": (16 * p16 + 7, {"bits_stored": 12, "voi_lut": lut}),
        "m1_voi_lut_12bit.dcm": (16 * p16 + 7, {"bits_stored": 12, "voi_lut": lut, "photometric": "MONOCHROME1"}),
        "cr_no_voi_10bit.dcm": (3 * p16 + 50, {"bits_stored": 10, "modality": "CR"}),  # min..max
    }
    for name, (values, kwargs) in cases.items():
        write_radiograph(values, inputs / name, patient_id="P", **kwargs)
    _signed_rescaled_copy(inputs / "m2_full_window.dcm", inputs / "m2_signed_rescaled.dcm")
    _random_model(tmp_path)
    wf = workflow("inference", "infer", dataset_dir=str(inputs), ckpt_dir=str(tmp_path), output_dir=str(tmp_path / "o"))
    wf.run()
    wf.finalize()
    with open(tmp_path / "o" / "probabilities.csv", newline="") as f:
        rows = {r["image"]: np.array([float(r[c]) for c in CXR14_FINDINGS]) for r in csv.DictReader(f)}
    assert sorted(rows) == sorted([*cases, "m2_signed_rescaled.dcm", "picture.png", "inverted.png"])
    png = rows.pop("picture.png")
    assert png.std() > 0.01 and np.abs(rows.pop("inverted.png") - png).max() > 1e-3  # the comparison has teeth
    for name, probabilities in rows.items():
        np.testing.assert_allclose(probabilities, png, rtol=0, atol=1e-4, err_msg=name)


def _bad_dicoms(folder: Path) -> dict[str, str]:
    """DICOM files inference refuses, and the error each gives."""
    import pydicom

    from shared_networks.dicom import write_radiograph

    good = write_radiograph(np.full((8, 6), 100, np.uint8), folder / "good.dcm", patient_id="P")
    no_pixels = pydicom.dcmread(good)
    del no_pixels.PixelData
    no_pixels.save_as(folder / "no_pixels.dcm")
    colour = pydicom.dcmread(good)
    colour.PhotometricInterpretation, colour.SamplesPerPixel, colour.PlanarConfiguration = "RGB", 3, 0
    colour.PixelData = np.zeros((8, 6, 3), np.uint8).tobytes()
    colour.save_as(folder / "colour.dcm")
    frames = pydicom.dcmread(good)
    frames.NumberOfFrames = 2
    frames.PixelData = np.zeros((2, 8, 6), np.uint8).tobytes()
    frames.save_as(folder / "frames.dcm")
    return {
        "no_pixels.dcm": "a DICOM object without pixel data",
        "colour.dcm": "a colour DICOM image (photometric interpretation 'RGB', 3 samples per pixel)",
        "frames.dcm": "a multi-frame DICOM image (2 frames)",
    }


def test_inference_refuses_a_dicom_without_pixels_in_colour_or_of_several_frames_by_name(tmp_path):
    preprocessing = parser("inference").get_parsed_content("preprocessing")  # inference.yaml's loading
    for name, message in _bad_dicoms(tmp_path).items():
        path = tmp_path / name
        with pytest.raises(RuntimeError) as err:  # Compose wraps what a transform raises
            preprocessing({"image": str(path)})
        cause = err.value.__cause__
        assert f"cannot read '{path}' (key 'image'): ValueError: {path}: {message}" in str(cause), str(cause)


# ---- real chest X-rays (../shared/data/chestxray14) ----


@pytest.mark.slow
def test_real_one_training_iteration(tmp_path, shared_data):
    """Full settings (ViT-B/16 at 224^2), batch of 2, one iteration on real images."""
    data = shared_data("chestxray14")
    short = {"train#trainer#epoch_length": 1, "validate#dataset#data": "$@datalist['validation'][:4]"}
    wf = workflow(
        "train",
        "train",
        quick=False,
        dataset_dir=str(data),
        ckpt_dir=str(tmp_path),
        output_dir=str(tmp_path),
        batch_size=2,
        max_epochs=1,
        warmup_epochs=0,
        pretrained_ckpt=None,
        **short,
    )
    before = {k: v.clone() for k, v in wf.parser.get_parsed_content("network").state_dict().items()}
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == 1 and np.isfinite(float(trainer.state.output[0]["loss"]))
    batch = trainer.state.batch  # decollated: one dict per image
    assert len(batch) == 2 and batch[0]["image"].shape == (1, 224, 224) and batch[0]["label"].shape == (14,)
    after = wf.parser.get_parsed_content("network").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / "model.pt").is_file()  # validated after the (only) epoch: a model is selected


def test_real_evaluation_reports_14_findings(tmp_path, shared_data):
    data = shared_data("chestxray14")
    _random_model(tmp_path, dataset_dir=str(data))
    wf = workflow("evaluate", "infer", dataset_dir=str(data), ckpt_dir=str(tmp_path), output_dir=str(tmp_path / "e"))
    wf.run()
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["n_images"] == 111 and list(summary["per_class"]) == list(CXR14_FINDINGS)
    aucs = [v["auc"] for v in summary["per_class"].values()]
    assert all(a is None or 0.0 <= a <= 1.0 for a in aucs) and summary["n_defined"] == sum(a is not None for a in aucs)
    assert summary["per_class"]["Hernia"]["positives"] == 5 and summary["per_class"]["Infiltration"]["positives"] == 22
    rows = (tmp_path / "e" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 112 and rows[0].split(",")[15] == "label_Atelectasis"


# the small-data recipe (configs/small_data.yaml, merged last)

SMALL = BundleConfigs(
    "cxr14_mae_classification",
    {
        "small_pretrain": ["pretrain", "small_data"],
        "small_train": ["train", "small_data"],
        "small_probe": ["train", "linear_probe", "small_data"],
        "small_evaluate": ["train", "evaluate", "small_data"],
    },
)


def test_small_data_schedules_per_workflow():
    got = {}
    for name in ("small_pretrain", "small_train", "small_probe", "small_evaluate"):
        p = SMALL.parser(name, quick=False)
        got[name] = (p.get_parsed_content("max_epochs"), p.get_parsed_content("warmup_epochs"))
    assert got == {
        "small_pretrain": (100, 10),
        "small_train": (60, 5),
        "small_probe": (60, 5),
        "small_evaluate": (60, 5),
    }
    train = SMALL.parser("small_train", quick=False)
    assert train["img_size"] == [112, 112] and train["freeze_encoder_epochs"] == 20 and train["select_on"] == "last"
    # a value given on the command line wins
    assert SMALL.parser("small_train", quick=False, max_epochs=7).get_parsed_content("max_epochs") == 7
    # the pre-trained and the fine-tuned encoder agree, so the hand-off needs no interpolation
    mae = SMALL.parser("small_pretrain", quick=False).get_parsed_content("mae_def")
    net = train.get_parsed_content("network_def")
    assert mae.encoder.pos_embed.shape == net.encoder.pos_embed.shape == (1, 49, 192)


@pytest.mark.slow
def test_small_data_fits_the_head_then_fine_tunes_and_keeps_the_last_epoch(phantoms, tmp_path):
    torch.manual_seed(0)
    mae = SMALL.parser("small_pretrain", quick=False, dataset_dir=str(phantoms)).get_parsed_content("mae_def")
    torch.save(mae.state_dict(), tmp_path / "mae.pt")
    encoders = {}
    for epochs in (1, 2):  # epoch 1: head only; epoch 2: the whole network
        ckpt = tmp_path / f"e{epochs}"
        wf = SMALL.workflow(
            "small_train",
            "train",
            quick=False,
            dataset_dir=str(phantoms),
            ckpt_dir=str(ckpt),
            output_dir=str(ckpt / "runs"),
            pretrained_ckpt=str(tmp_path / "mae.pt"),
            max_epochs=epochs,
            freeze_encoder_epochs=1,
            batch_size=16,
        )
        wf.run()
        network = wf.parser.get_parsed_content("network")
        saved = torch.load(ckpt / "model.pt", weights_only=True)
        for key, value in network.state_dict().items():  # select_on last: model.pt is the last epoch's network
            assert torch.equal(saved[key], value), key
        encoders[epochs] = {k: v.clone() for k, v in network.encoder.state_dict().items()}
        assert all(p.requires_grad for p in network.parameters())
        wf.finalize()
    mae_encoder = {k[len("encoder.") :]: v for k, v in mae.state_dict().items() if k.startswith("encoder.")}
    changed = [k for k, v in encoders[1].items() if k in mae_encoder and not torch.equal(v, mae_encoder[k])]
    assert changed == []  # frozen for the first epoch: the MAE's encoder, untouched
    assert not torch.equal(encoders[2]["blocks.0.attn.qkv.weight"], mae_encoder["blocks.0.attn.qkv.weight"])
