"""The model-zoo checks (shared_networks.tools.bundle_checks) on the three bundles, and on broken copies of them."""

from __future__ import annotations

import copy
import hashlib
import json
import locale
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared_networks.tools.bundle_checks import (
    BundleCheckError,
    check_bundle,
    check_large_files,
    check_metadata,
    check_net_in_out,
    check_required_files,
)

REPO = Path(__file__).resolve().parents[2]
BUNDLES = ("btcv_mae_segmentation", "brats_mae_segmentation", "cxr14_mae_classification")


@pytest.fixture(autouse=True)
def utf8_locale():
    """MONAI reads configs in the locale's encoding, and GDCM (writing DICOM in other tests of this process) sets
    LC_CTYPE to "C": restore the environment's locale so the bundles' UTF-8 files read as such."""
    locale.setlocale(locale.LC_CTYPE, "")
    yield


def metadata(name: str) -> dict:
    return json.loads((REPO / "bundles" / name / "configs" / "metadata.json").read_text(encoding="utf-8"))


@pytest.fixture
def bundle_copy(tmp_path):
    def make(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(REPO / "bundles" / name, dst, ignore=shutil.ignore_patterns("models", "runs", "__pycache__"))
        return dst

    return make


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_bundles_pass_every_check(name):
    """Files, metadata, large_files.yml and verify_net_in_out of the full-size inference network."""
    done = check_bundle(REPO / "bundles" / name)
    assert done == ["required files", "metadata", "large files", "network input/output"]


@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_and_files_pass(name):
    assert check_metadata(metadata(name)) == []
    assert check_required_files(REPO / "bundles" / name) == []
    assert check_large_files(REPO / "bundles" / name) == []


def test_command_line_reports_problems(bundle_copy):
    bundle = bundle_copy("cxr14_mae_classification")
    meta = json.loads((bundle / "configs/metadata.json").read_text(encoding="utf-8"))
    del meta["copyright"]
    (bundle / "configs/metadata.json").write_text(json.dumps(meta))
    run = subprocess.run(
        [sys.executable, "-m", "shared_networks.cli.bundle_checks", str(bundle), "--net_in_out", "false"],
        capture_output=True, encoding="utf-8", errors="replace", cwd=REPO,
    )  # fmt: skip
    assert run.returncode != 0
    assert f"{bundle}/configs/metadata.json: copyright: required field is missing" in run.stderr


def test_switches_from_the_command_line(bundle_copy):
    """fire hands ``--net_in_out false`` over as the string 'false': it must switch the check off."""
    bundle = bundle_copy("cxr14_mae_classification")
    assert check_bundle(bundle, net_in_out="false") == ["required files", "metadata", "large files"]
    with pytest.raises(ValueError, match="released must be true or false .*got 'maybe'"):
        check_bundle(bundle, net_in_out="false", released="maybe")


def _broken(meta: dict, path: str, value=None, delete: bool = False) -> dict:
    """A copy of ``meta`` with the field at ``a#b#c`` set to ``value`` (or deleted)."""
    meta = copy.deepcopy(meta)
    *parents, last = path.split("#")
    node = meta
    for p in parents:
        node = node[p]
    if delete:
        del node[last]
    else:
        node[last] = value
    return meta


PRED = "network_data_format#outputs#pred"
IMAGE = "network_data_format#inputs#image"


@pytest.mark.parametrize(
    "path, value, delete, expected",
    [
        ("authors", None, True, "authors: required field is missing"),
        ("schema", None, True, "schema: required field is missing"),
        ("network_data_format", None, True, "network_data_format: required field is missing"),
        ("required_packages_version", ["x"], False, "required_packages_version: must be of type object, got array"),
        ("version", 0.1, False, "version: must be of type string, got number"),
        ("references", "Zhou 2023", False, "references: must be of type array, got string"),
        ("version", "0.9.0", False, "version '0.9.0' is missing from changelog"),
        ("changelog#0.0.9", "older", False, None),  # an older entry is fine
        ("changelog#0.3.0", "newer", False, "is older than the newest changelog entry"),
        ("monai_version", "latest", False, "monai_version: 'latest' is not a version number"),
        (f"{IMAGE}#num_channels", "1", False, f"{IMAGE}#num_channels: must be of type integer, got string"),
        (f"{IMAGE}#num_channels", True, False, f"{IMAGE}#num_channels: must be of type integer, got boolean"),
        (f"{IMAGE}#is_patch_data", "true", False, f"{IMAGE}#is_patch_data: must be of type boolean, got string"),
        (f"{IMAGE}#modality", None, True, f"{IMAGE}#modality: required field is missing"),
        (f"{PRED}#channel_def", None, True, f"{PRED}#channel_def: required field is missing"),
        (f"{PRED}#value_range", [1, 0], False, f"{PRED}#value_range: must be [] or [min, max] numbers"),
        (f"{PRED}#dtype", "float", False, f"{PRED}#dtype: 'float' is not one of"),
        (f"{PRED}#spatial_shape", [96, 0, 96], False, f"{PRED}#spatial_shape: items must be positive"),
        (f"{PRED}#num_channels", 13, False, f"{PRED}#channel_def: must describe channels '0'..'12'"),
        ("network_data_format#outputs", {"seg": {}}, False, "outputs: needs a 'pred' entry"),
    ],
)
def test_broken_metadata_is_reported(path, value, delete, expected):
    problems = check_metadata(_broken(metadata("btcv_mae_segmentation"), path, value, delete), "m.json")
    if expected is None:
        assert problems == []
    else:
        assert any(p.startswith("m.json: ") and expected in p for p in problems), problems


def test_broken_bundle_lists_every_problem(bundle_copy):
    bundle = bundle_copy("brats_mae_segmentation")
    (bundle / "LICENSE").unlink()
    meta = _broken(metadata("brats_mae_segmentation"), "version", "0.3.0")
    (bundle / "configs/metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BundleCheckError) as err:
        check_bundle(bundle)  # net_in_out is skipped once other checks failed
    assert len(err.value.problems) == 2
    assert f"{bundle}/LICENSE: required file is missing" in err.value.problems
    assert "version '0.3.0' is missing from changelog" in err.value.problems[1]
    assert str(bundle / "configs" / "metadata.json") in err.value.problems[1]


def test_large_files_problems(bundle_copy):
    bundle = bundle_copy("btcv_mae_segmentation")
    (bundle / "models").mkdir()
    (bundle / "models" / "model.pt").write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    lf = bundle / "large_files.yml"

    def write(entries):
        lf.write_text(json.dumps({"large_files": entries}))  # JSON is YAML
        return check_large_files(bundle, released=True)

    entry = {"path": "models/model.pt", "url": "https://example.org/model.pt", "hash_val": good, "hash_type": "sha256"}
    assert write([entry]) == []
    assert "does not match hash_val" in write([{**entry, "hash_val": "0" * 64}])[0]
    assert "not a sha256 hex digest" in write([{**entry, "hash_val": good[:-1]}])[0]
    assert "no url" in write([{**entry, "url": ""}])[0]
    assert "not an http(s) URL" in write([{**entry, "url": "file:///etc/passwd"}])[0]
    assert "hash_type" in write([{**entry, "hash_type": "crc32"}])[0]
    problems = write([{**entry, "path": "../outside.pt"}])
    assert "path must stay inside the bundle" in problems[0] and "models/model.pt is not listed" in problems[1]
    assert write([{**entry, "url": "", "hash_val": ""}]) == [
        f"{lf}: models/model.pt: no url (give --base_url when exporting)",
        f"{lf}: models/model.pt: no hash_val",
    ]
    assert check_large_files(bundle, released=False) == []  # unreleased entries may lack url and hash
    lf.write_text("large_files: {path: x}")
    assert "must hold a 'large_files' list" in check_large_files(bundle)[0]


def test_model_pt_must_be_present_or_downloadable(bundle_copy):
    bundle = bundle_copy("cxr14_mae_classification")
    assert check_required_files(bundle) == []  # listed in large_files.yml
    (bundle / "large_files.yml").write_text("large_files: []\n")
    assert check_required_files(bundle) == [
        f"{bundle}/models/model.pt: missing, and no large_files.yml entry downloads it"
    ]


def test_net_in_out_reports_a_network_returning_a_tuple(bundle_copy):
    """MONAI's ViT returns (x, hidden_states): verify_net_in_out fails on it, and the check says why."""
    bundle = bundle_copy("cxr14_mae_classification")
    vit = {"_target_": "monai.networks.nets.ViT", "in_channels": 1, "img_size": [32, 32], "patch_size": 16,
           "hidden_size": 48, "mlp_dim": 96, "num_layers": 1, "num_heads": 4, "classification": True,
           "num_classes": 14, "spatial_dims": 2}  # fmt: skip
    small = {"_meta_#network_data_format#inputs#image#spatial_shape": [32, 32]}
    problems = check_net_in_out(bundle, network_def=vit, **small)
    assert len(problems) == 1 and "verify_net_in_out of network_def failed" in problems[0]
    assert "must return one tensor" in problems[0]
    quick = {"img_size": [32, 32], "patch_size": 8, "hidden_size": 48, "num_layers": 1, "num_heads": 4, "mlp_dim": 96}
    assert check_net_in_out(bundle, **quick, **small) == []  # the bundle's own network at that size passes
    problems = check_net_in_out(bundle, **quick, num_classes=13, **small)  # 13 outputs, metadata says 14
    assert "output channel number `13` doesn't match: `14`" in problems[0]
