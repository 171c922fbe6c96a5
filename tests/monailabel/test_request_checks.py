"""The checks of MONAI Label train/infer requests (monailabel_app/request_checks.py) before any field reaches MONAI.

The module needs neither MONAI Label nor MONAI: it is loaded from its file here, in the project's environment.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("mae_request_checks", REPO / "monailabel_app" / "request_checks.py")
rc = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = rc
_spec.loader.exec_module(rc)

BUNDLE = "/srv/app/model/baked-quick/btcv_mae_segmentation"
FACTS = rc.TaskFacts(bundle_path=BUNDLE, model_files=("model.pt",), devices=("cpu",), tracking_uri="")
ATTACK = "$__import__('pathlib').Path('/tmp/marker').write_text('ran') and 1"

# what 3D Slicer sends (the train task's config() options, one value each) with what the server adds
SLICER_TRAIN = {
    "model": "btcv_mae_segmentation",
    "device": "cpu",
    "pretrained": True,
    "max_epochs": 50,
    "val_split": 0.2,
    "multi_gpu": True,
    "gpus": "all",
    "tracking": "None",
    "tracking_uri": "",
    "tracking_experiment_name": "",
    "run_id": "run",
    "model_filename": "model.pt",
    "client_id": "user-xyz",
    "bundle_path": BUNDLE,
    "local_rank": 0,
}
SERVER_INFER = {
    "model": "btcv_mae_segmentation",
    "image": "/studies/img0001.nii.gz",
    "description": "UNETR, MAE pre-trained",
    "save_label": False,
    "device": ["cpu"],
    "model_filename": ["model.pt"],
    "result_dtype": "uint8",
    "result_extension": ".nii.gz",
    "label_tag": "original",
    "session": {"image": "/sessions/x/image.nii.gz", "meta": {"a": 1}},
    "client_id": "user-xyz",
}


def test_good_requests_pass_unchanged():
    assert rc.check_train_request(SLICER_TRAIN, FACTS) == SLICER_TRAIN
    assert rc.check_infer_request(SERVER_INFER, FACTS) == SERVER_INFER
    assert rc.check_train_request({"model": "m", "max_epochs": 1, "val_split": 0}, FACTS)["val_split"] == 0.0
    batch = {
        "model": "m",
        "image": "img0001",
        "images": "unlabeled",
        "max_batch_size": 0,
        "max_workers": 2,
        "multi_gpu": False,
        "gpus": "0,1",
        "_id": 3,
        "_image_id": "img0001",
        "bundle_path": BUNDLE + "/",
    }
    assert rc.check_infer_request(batch, FACTS) == batch


@pytest.mark.parametrize("field", sorted(rc.TRAIN_FIELDS))
def test_an_expression_in_any_train_field_is_refused(field):
    with pytest.raises(rc.RequestRefused, match=f"'{field}'.*config syntax"):
        rc.check_train_request({**SLICER_TRAIN, field: ATTACK}, FACTS)


@pytest.mark.parametrize("field", sorted(rc.INFER_FIELDS))
@pytest.mark.parametrize("sigil", ["$", "@", "%", "  $"])
def test_config_syntax_in_any_infer_field_is_refused(field, sigil):
    with pytest.raises(rc.RequestRefused, match=f"'{field}'.*config syntax"):
        rc.check_infer_request({**SERVER_INFER, field: sigil + "x"}, FACTS)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        (["model.pt", "$x"], r"model_filename\[1\]"),
        ({"image": "ok", "meta": {"deep": ["a", "@train#trainer"]}}, r"session\.meta\.deep\[1\]"),
        ({"%include.yaml": 1}, r"session \(key\)"),
    ],
)
def test_nested_config_syntax_is_refused_naming_where(value, where):
    field = "model_filename" if isinstance(value, list) else "session"
    with pytest.raises(rc.RequestRefused, match=where):
        rc.check_infer_request({**SERVER_INFER, field: value}, FACTS)


def test_the_reported_train_payload_is_refused():
    with pytest.raises(rc.RequestRefused, match="'max_epochs'"):
        rc.check_train_request({"model": "btcv_mae_segmentation", "max_epochs": ATTACK, "device": "cpu"}, FACTS)


@pytest.mark.parametrize("field", ["train#trainer#max_epochs", "network_def", "bundle_root", "roi_size", "foo"])
def test_unknown_fields_are_refused(field):
    for check in (rc.check_train_request, rc.check_infer_request):
        with pytest.raises(rc.RequestRefused, match=f"Unknown .*'{field}'"):
            check({"model": "m", field: 1}, FACTS)


def test_a_request_must_be_an_object():
    with pytest.raises(rc.RequestRefused, match="JSON object"):
        rc.check_train_request(["max_epochs", 1], FACTS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_epochs", "1"),
        ("max_epochs", 0),
        ("max_epochs", -5),
        ("max_epochs", rc.MAX_EPOCHS + 1),
        ("max_epochs", 1.5),
        ("max_epochs", True),
        ("val_split", 1.0),
        ("val_split", -1),
        ("val_split", "0.2"),
        ("val_split", float("nan")),
        ("val_split", True),
        ("multi_gpu", "maybe"),
        ("multi_gpu", 2),
        ("force_multi_gpu", None),
        ("gpus", "0;rm"),
        ("gpus", 0),
        ("device", "cuda:0; x"),
        ("device", "tpu"),
        ("device", []),
        ("device", 1),
        ("tracking", "mlflow"),
        ("tracking", ["mlflow", "None"]),
        ("tracking_uri", "/tmp/elsewhere"),
        ("tracking_run_name", "../x"),
        ("run_id", "initialize"),
        ("run_id", "train#trainer"),
        ("model", "../other"),
        ("model", 3),
        ("bundle_path", "/tmp/evil"),
        ("local_rank", -1),
        ("client_id", {"a": 1}),
    ],
)
def test_bad_train_fields_are_refused_naming_the_field(field, value):
    with pytest.raises(rc.RequestRefused, match=f"'{field}'"):
        rc.check_train_request({**SLICER_TRAIN, field: value}, FACTS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("result_dtype", "object"),
        ("result_extension", "/../../x.nii.gz"),
        ("result_extension", ".py"),
        ("result_compress", "sure"),
        ("skip_writer", 5),
        ("save_label", "nope"),
        ("label_tag", "../../etc"),
        ("label_tag", ".."),
        ("label_tag", "a/b"),
        ("logging", "LOUD"),
        ("timeout", 0),
        ("timeout", "60"),
        ("image", 1),
        ("session", "x"),
        ("images", [1]),
        ("max_workers", -1),
        ("_id", "0"),
    ],
)
def test_bad_infer_fields_are_refused_naming_the_field(field, value):
    with pytest.raises(rc.RequestRefused, match=f"'{field}'"):
        rc.check_infer_request({**SERVER_INFER, field: value}, FACTS)


@pytest.mark.parametrize("name", ["../x.pt", "../../etc/passwd", "/abs/model.pt", "mae.pt", "models/model.pt", ""])
def test_model_filename_is_confined_to_the_offered_files(name):
    for check, request in ((rc.check_train_request, SLICER_TRAIN), (rc.check_infer_request, SERVER_INFER)):
        for value in (name, [name]):
            with pytest.raises(rc.RequestRefused, match="'model_filename'.*models/"):
                check({**request, "model_filename": value}, FACTS)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("false", False),
        ("False", False),
        (" no ", False),
        ("0", False),
        (0, False),
        ("true", True),
        ("YES", True),
        (1, True),
    ],
)
def test_true_false_strings_are_parsed_strictly(word, expected):
    assert rc.check_train_request({**SLICER_TRAIN, "multi_gpu": word}, FACTS)["multi_gpu"] is expected
    assert rc.check_infer_request({**SERVER_INFER, "save_label": word}, FACTS)["save_label"] is expected


@pytest.mark.parametrize("word", ["false", "False", "0", False, 0])
def test_pretrained_false_is_refused_clearly(word):
    # "false" no longer counts as true; MONAI Label 0.8.5 cannot start from nothing (os.path.exists(None))
    with pytest.raises(rc.RequestRefused, match="'pretrained' is false.*configs/train.yaml"):
        rc.check_train_request({**SLICER_TRAIN, "pretrained": word}, FACTS)
    assert rc.check_train_request({**SLICER_TRAIN, "pretrained": "true"}, FACTS)["pretrained"] is True


def test_normalised_values():
    checked = rc.check_train_request({**SLICER_TRAIN, "run_id": "", "tracking": ["None", "mlflow"]}, FACTS)
    assert checked["run_id"] == "run" and checked["tracking"] == "None"
    gpu = rc.TaskFacts(BUNDLE, devices=("NVIDIA H200",), tracking_uri="/srv/mlruns")
    checked = rc.check_train_request({**SLICER_TRAIN, "device": "NVIDIA H200", "tracking_uri": "/srv/mlruns"}, gpu)
    assert checked["device"] == "NVIDIA H200"
    assert rc.check_infer_request({**SERVER_INFER, "device": "cuda:1", "logging": "debug"}, gpu)["device"] == "cuda:1"
