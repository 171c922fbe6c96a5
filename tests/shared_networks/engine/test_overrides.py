"""check_overrides: the keys of ``python -m monai.bundle run``'s command line against the settings of the config files
run (nested ids, list indices, ``+`` keys, --tracking, --args_file, the bundle's other files, suggestions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

import shared_networks
from shared_networks.engine.overrides import (
    ALLOW_ENV,
    check_overrides,
    cli_overrides,
    config_ids,
    find_unknown_overrides,
    has_id,
)

MAIN = "/env/lib/python3.11/site-packages/monai/bundle/__main__.py"  # sys.argv[0] under python -m monai.bundle
REPO = Path(__file__).resolve().parents[3]
CXR = REPO / "bundles" / "cxr14_mae_classification" / "configs"
BTCV = REPO / "bundles" / "btcv_mae_segmentation" / "configs"


def test_facade_name():
    assert shared_networks.check_overrides is check_overrides and "check_overrides" in shared_networks.__all__


def test_has_id_nested_lists_and_separators():
    config = {"a": {"b": {"c": 1}}, "train": {"handlers": [{"interval": 2}, 3]}, "x": None}
    for key in [
        "a",
        "a#b",
        "a#b#c",
        "a::b::c",
        "train#handlers#0#interval",
        "train#handlers#1",
        "train#handlers#-1",
        "x",
    ]:
        assert has_id(config, key), key
    for key in ["b", "a#c", "a#b#c#d", "train#handlers#2", "train#handlers#first", "x#y", "train#handlers#0#intervals"]:
        assert not has_id(config, key), key
    assert list(config_ids({"a": {"b": [5, {"c": 1}]}})) == ["a", "a#b", "a#b#0", "a#b#1", "a#b#1#c"]


def test_cli_parses_like_fire():
    argv = [
        MAIN,
        "run",
        "training",
        "--config_file",
        "['a.yaml','b.yaml']",
        "--lr",
        "-0.5",
        "--max-epochs=3",
        "--train#trainer#max_epochs",
        "2",
        "-k",
        "v",
        "--noamp",
        "--flag",
        "--",
        "--help",
    ]
    assert cli_overrides(argv) == {
        "run_id": "training",
        "config_file": ["a.yaml", "b.yaml"],
        "lr": -0.5,
        "max_epochs": 3,
        "train#trainer#max_epochs": 2,
        "k": "v",
        "amp": False,
        "flag": True,
    }


@pytest.mark.parametrize("argv", [["pytest", "run", "--x", "1"], [MAIN, "verify_metadata", "--x", "1"], [MAIN], []])
def test_not_monai_bundle_run_is_a_no_op(argv):
    assert cli_overrides(argv) is None
    check_overrides(argv)  # no SystemExit, nothing read


def test_existing_keys_pass():
    overrides = {
        "mae_base_lr": 1,
        "max_epochs": 1,
        "train#trainer#max_epochs": 1,
        "train::trainer::max_epochs": 1,
        "train#handlers#0": 1,
        "+initialize": [],
        "mae_def#hidden_size": 96,
        "_meta_#version": "x",
        "dataset_dir": "d",
        "bundle_root": "b",
        "num_workers": 0,
        "device": "cpu",
    }
    report = find_unknown_overrides(overrides, str(CXR / "pretrain.yaml"))
    assert report.errors == [] and report.warnings == []


def test_unknown_keys_name_the_closest():
    report = find_unknown_overrides(
        {"base_lr": 0.1, "max_epoch": 3, "train#trainer#max_epoch": 3, "zzz_qqq": 1}, str(CXR / "pretrain.yaml")
    )
    base_lr, max_epoch, nested, nothing = report.errors
    assert base_lr.startswith("--base_lr:") and "--mae_base_lr" in base_lr and "train.yaml" in base_lr
    assert "did you mean --max_epochs" in max_epoch
    assert "did you mean --train#trainer#max_epochs" in nested
    assert nothing.startswith("--zzz_qqq: no such setting in pretrain.yaml") and "did you mean" not in nothing


def test_setting_of_another_workflow():
    files = [str(CXR / "train.yaml"), str(CXR / "evaluate.yaml")]
    (msg,) = find_unknown_overrides({"mae_base_lr": 1e-3}, files).errors
    assert "is a setting of pretrain.yaml" in msg and "not of the files run here" in msg
    (msg,) = find_unknown_overrides({"probe_base_lr": 1e-3}, str(CXR / "train.yaml")).errors
    assert "linear_probe.yaml" in msg or "quick.yaml" in msg


def test_tracking_adds_keys():
    keys = {"tracking_uri": "sqlite:///x.db", "run_name": "r", "experiment_name": "e"}
    (msg, *_) = find_unknown_overrides(keys, str(BTCV / "train.yaml")).errors
    assert "mlflow.yaml" in msg and "--tracking" in msg
    assert find_unknown_overrides(keys, str(BTCV / "train.yaml"), tracking=str(BTCV / "mlflow.yaml")).errors == []
    assert find_unknown_overrides(keys, str(BTCV / "train.yaml"), tracking="mlflow").errors == []


def test_overlay_keys_nothing_uses_are_warnings():
    files = [str(BTCV / "pretrain.yaml"), str(BTCV / "quick.yaml")]
    report = find_unknown_overrides({"val_interval": 1, "max_epochs": 1}, files)
    assert report.errors == []
    (msg,) = report.warnings
    assert msg.startswith("--val_interval:") and "quick.yaml" in msg


def test_missing_config_file_is_left_to_monai():
    assert find_unknown_overrides({"x": 1}, "no/such/train.yaml") == ([], [])


def test_check_overrides_exits(capsys):
    argv = [MAIN, "run", "--config_file", str(CXR / "pretrain.yaml"), "--base_lr", "0.1", "--dataset_dir", "d"]
    with pytest.raises(SystemExit) as raised:
        check_overrides(argv)
    assert "--base_lr" in str(raised.value) and "--mae_base_lr" in str(raised.value)
    check_overrides([MAIN, "run", "--config_file", str(CXR / "pretrain.yaml"), "--mae_base_lr", "0.1"])


def test_allow_env_turns_the_error_into_a_warning(monkeypatch, capsys):
    monkeypatch.setenv(ALLOW_ENV, "1")
    check_overrides([MAIN, "run", "--config_file", str(CXR / "pretrain.yaml"), "--base_lr", "0.1"])
    assert "--base_lr" in capsys.readouterr().err


def test_args_file_overrides_are_checked(tmp_path):
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"config_file": str(CXR / "pretrain.yaml"), "max_epoch": 3}), encoding="utf-8")
    with pytest.raises(SystemExit, match="max_epoch"):
        check_overrides([MAIN, "run", "--args_file", str(args)])
    args.write_text(json.dumps({"config_file": str(CXR / "pretrain.yaml"), "max_epochs": 3}), encoding="utf-8")
    check_overrides([MAIN, "run", "--args_file", str(args), "--seed", "1"])


def test_every_workflow_checks_first():
    """The check is the first initialize step of every workflow file (before anything reads data)."""
    for bundle in ("btcv_mae_segmentation", "brats_mae_segmentation", "cxr14_mae_classification"):
        for path in sorted((REPO / "bundles" / bundle / "configs").glob("*.yaml")):
            content = ConfigParser.load_config_file(str(path))
            if "initialize" in content:
                assert content["initialize"][0] == "$shared_networks.check_overrides()", path
