"""The model-zoo checks (shared_networks.tools.bundle_checks) on the three bundles as committed, each config read
alone as model-zoo's CI reads it, and on broken copies of them: every check can fail. The TorchScript check scripts
``network_def``, as model-zoo's does; it runs on a copy with quick weights and configs/quick.yaml baked into its
configs (full-size weights are too slow to write and export here); each full-size network_def is scripted alone."""

from __future__ import annotations

import copy
import functools
import hashlib
import http.server
import io
import json
import locale
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from shared_networks.tools.bundle_checks import (
    BundleCheckError,
    check_bundle,
    check_large_files,
    check_metadata,
    check_net_in_out,
    check_properties,
    check_required_files,
    check_requirements,
    check_torchscript,
    check_version,
    model_zoo_requirements,
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
    """Directory, version, metadata, requirements, properties and verify_net_in_out of the full-size inference network
    of inference.yaml alone (no weights are committed: no TorchScript)."""
    done = check_bundle(REPO / "bundles" / name, download=True)
    assert done == ["directory", "version", "metadata", "requirements", "properties", "data shape"]


@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_and_files_pass(name):
    assert check_metadata(metadata(name)) == [] and check_version(metadata(name)) == []
    assert check_required_files(REPO / "bundles" / name) == []
    assert check_large_files(REPO / "bundles" / name) == []
    meta = metadata(name)
    assert meta["eval_metrics"] == {}  # numbers only, none measured yet
    assert meta["supported_apps"] == {"monailabel": "0.8.5"}
    # model-zoo's CI pip-installs every pin; this repository's package is not on PyPI (a release carries its code)
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert (
        'name = "mae-medical-bundles"' in pyproject and "mae-medical-bundles" not in meta["required_packages_version"]
    )
    version = pyproject.split('\nversion = "')[1].split('"')[0]
    assert f"needs mae-medical-bundles {version}" in meta["changelog"][meta["version"]]
    assert check_requirements(meta) == []


def test_command_line_reports_problems(bundle_copy):
    bundle = bundle_copy("cxr14_mae_classification")
    meta = json.loads((bundle / "configs/metadata.json").read_text(encoding="utf-8"))
    del meta["copyright"]
    (bundle / "configs/metadata.json").write_text(json.dumps(meta))
    run = subprocess.run(
        [sys.executable, "-m", "shared_networks.cli.bundle_checks", str(bundle), "--net_in_out", "false"],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        cwd=REPO,
    )
    assert run.returncode != 0
    assert f"{bundle}/configs/metadata.json: copyright: required field is missing" in run.stderr


def test_switches_from_the_command_line(bundle_copy):
    """fire hands ``--net_in_out false`` over as the string 'false': it must switch the check off."""
    bundle = bundle_copy("cxr14_mae_classification")
    assert check_bundle(bundle, net_in_out="false") == [
        "directory",
        "version",
        "metadata",
        "requirements",
        "properties",
    ]
    assert check_bundle(bundle, net_in_out="false", requirements="false") == [
        "directory",
        "version",
        "metadata",
        "properties",
    ]
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
        ("eval_metrics#mean_dice", "not yet measured", False, "eval_metrics#mean_dice: must be a number"),
        ("eval_metrics#mean_dice", {"liver": 0.9, "spleen": 0.8}, False, None),
        ("supported_apps#monailabel", 0.8, False, "supported_apps#monailabel: 0.8 is not a version string"),
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
    """Types and required fields of the schema (version against changelog: test_version_must_be_in_changelog)."""
    problems = check_metadata(_broken(metadata("btcv_mae_segmentation"), path, value, delete), "m.json")
    if expected is None:
        assert problems == []
    else:
        assert any(p.startswith("m.json: ") and expected in p for p in problems), problems


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("version", "0.9.0", "version '0.9.0' is missing from changelog"),
        ("changelog#0.0.9", "older", None),  # an older entry is fine
        ("changelog#9.0.0", "newer", "is older than the newest changelog entry"),
        ("changelog", None, "changelog: required field is missing"),
    ],
)
def test_version_must_be_in_changelog(path, value, expected):
    problems = check_version(_broken(metadata("btcv_mae_segmentation"), path, value, delete=value is None), "m.json")
    assert problems == [] if expected is None else (len(problems) == 1 and expected in problems[0]), problems


def test_broken_bundle_lists_every_problem(bundle_copy):
    bundle = bundle_copy("brats_mae_segmentation")
    (bundle / "LICENSE").unlink()
    meta = _broken(metadata("brats_mae_segmentation"), "version", "9.0.0")
    (bundle / "configs/metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BundleCheckError) as err:
        check_bundle(bundle)  # net_in_out is skipped once other checks failed
    assert len(err.value.problems) == 2
    assert f"{bundle}/LICENSE: required file is missing" in err.value.problems
    assert "version '9.0.0' is missing from changelog" in err.value.problems[1]
    assert str(bundle / "configs" / "metadata.json") in err.value.problems[1]


def test_large_files_problems(bundle_copy):
    bundle = bundle_copy("btcv_mae_segmentation")
    (bundle / "models").mkdir()
    (bundle / "models" / "model.pt").write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    lf = bundle / "large_files.yml"

    def write(entries):
        lf.write_text(json.dumps({"large_files": entries}))  # JSON is YAML
        return check_large_files(bundle)

    entry = {"path": "models/model.pt", "url": "https://example.org/model.pt", "hash_val": good, "hash_type": "sha256"}
    assert write([entry]) == [] and write([]) == []
    assert "does not match hash_val" in write([{**entry, "hash_val": "0" * 64}])[0]
    assert "not a sha256 hex digest" in write([{**entry, "hash_val": good[:-1]}])[0]
    assert "not an http(s) URL" in write([{**entry, "url": "file:///etc/passwd"}])[0]
    assert "not an http(s) URL" in write([{**entry, "url": "https://"}])[0]
    assert "hash_type" in write([{**entry, "hash_type": "crc32"}])[0]
    assert "path must stay inside the bundle" in write([{**entry, "path": "../outside.pt"}])[0]
    assert write([{**entry, "url": "", "hash_val": ""}]) == [
        f"{lf}: models/model.pt: no url (an entry is written by the export with --base_url, or left out)",
        f"{lf}: models/model.pt: no hash_val",
    ]
    lf.write_text("large_files: {path: x}")
    assert "must hold a 'large_files' list" in check_large_files(bundle)[0]
    lf.unlink()
    assert check_large_files(bundle) == []  # no file to download


def test_model_pt_must_be_present_or_downloadable_in_a_release(bundle_copy):
    bundle = bundle_copy("cxr14_mae_classification")
    assert check_required_files(bundle) == [] == check_required_files(bundle, released=False)
    assert check_required_files(bundle, released=True) == [
        f"{bundle}/models/model.pt: missing, and no large_files.yml entry downloads it"
    ]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's signature)
        pass


@pytest.fixture
def served(tmp_path):
    """A folder served on 127.0.0.1: (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _quick_bundle(make, name: str) -> Path:
    """A copy of ``name`` with quick weights in models/ and configs/quick.yaml baked into its configs."""
    from bundle_weights import write_quick_weights

    from shared_networks.tools.bake_configs import bake_bundle_configs

    bundle = make(name)
    write_quick_weights(bundle, which=("model.pt",))
    baked = bundle.parent / f"{name}_configs"
    bake_bundle_configs(bundle / "configs", [bundle / "configs" / "quick.yaml"], baked)
    shutil.rmtree(bundle / "configs")
    shutil.move(baked, bundle / "configs")
    meta = json.loads((bundle / "configs/metadata.json").read_text(encoding="utf-8"))
    quick = {"btcv_mae_segmentation": [48, 48, 48], "cxr14_mae_classification": [64, 64]}[name]
    meta["network_data_format"]["inputs"]["image"]["spatial_shape"] = quick
    if len(quick) == 3:
        meta["network_data_format"]["outputs"]["pred"]["spatial_shape"] = quick
    (bundle / "configs/metadata.json").write_text(json.dumps(meta))
    return bundle


def test_each_check_can_fail(bundle_copy, served):
    """Model-zoo's sequence on a bundle with weights downloaded from large_files.yml, then broken copies."""
    folder, url = served
    bundle = _quick_bundle(bundle_copy, "cxr14_mae_classification")
    weights = (bundle / "models" / "model.pt").read_bytes()
    (folder / "model.pt").write_bytes(weights)
    (bundle / "models" / "model.pt").unlink()
    good = {"path": "models/model.pt", "url": f"{url}/model.pt", "hash_val": hashlib.sha256(weights).hexdigest()}
    lf = bundle / "large_files.yml"
    lf.write_text(json.dumps({"large_files": [good]}))
    assert check_bundle(bundle, download=True, released=True) == [  # model-zoo's full mode
        "directory",
        "version",
        "metadata",
        "requirements",
        "properties",
        "data shape",
        "torchscript",
    ]
    assert (bundle / "models" / "model.pt").read_bytes() == weights

    def fails(expected: str, **kwargs) -> None:
        with pytest.raises(BundleCheckError) as err:
            check_bundle(bundle, **kwargs)
        assert any(expected in p for p in err.value.problems), err.value.problems

    # directory: an empty URL, a wrong hash (of the file there, and of a download)
    lf.write_text(json.dumps({"large_files": [{**good, "url": ""}]}))
    fails("models/model.pt: no url")
    lf.write_text(json.dumps({"large_files": [{**good, "hash_val": hashlib.sha256(b"x").hexdigest()}]}))
    fails("the file's sha256 does not match hash_val")
    (bundle / "models" / "model.pt").unlink()
    fails("download failed: HashCheckError", download=True)
    lf.write_text(json.dumps({"large_files": [good]}))
    check_bundle(bundle, download=True, net_in_out=False, torchscript=False)
    # version missing from the changelog; a metadata field of the wrong type
    meta_path = bundle / "configs/metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta_path.write_text(json.dumps({**meta, "version": "9.9.9"}))
    fails("version '9.9.9' is missing from changelog")
    meta_path.write_text(json.dumps({**meta, "eval_metrics": {"mean_auc": "not yet measured"}}))
    fails("eval_metrics#mean_auc: must be a number")
    meta_path.write_text(json.dumps(meta))
    # properties, data shape: inference.yaml without network_def; a network the metadata does not describe
    inference = bundle / "configs/inference.yaml"
    text = inference.read_text(encoding="utf-8")
    inference.write_text(
        text.replace("network_def:", "network_definition:").replace("@network_def", "@network_definition")
    )
    fails("inference.yaml: required property 'network_def' (id 'network_def') is missing")  # before any network
    assert "inference.yaml: no 'network_def'" in check_net_in_out(bundle)[0]
    inference.write_text(text)
    meta_path.write_text(
        json.dumps(
            {
                **meta,
                "network_data_format": {
                    **meta["network_data_format"],
                    "inputs": {"image": {**meta["network_data_format"]["inputs"]["image"], "spatial_shape": [96, 96]}},
                },
            }
        )
    )
    fails("verify_net_in_out of network_def failed")
    meta_path.write_text(json.dumps(meta))
    # TorchScript: weights of another size than inference.yaml's network
    (bundle / "configs/inference.yaml").write_text(text.replace("hidden_size: 96", "hidden_size: 48"))
    fails("ckpt_export of network_def with model.pt failed", net_in_out=False)
    inference.write_text(text)
    check_bundle(bundle)


def test_quick_weights_need_their_configs(bundle_copy):
    """Quick weights in a bundle whose configs are full-size: model-zoo's TorchScript check fails (as a downloaded
    release without its overrides baked would)."""
    from bundle_weights import write_quick_weights

    bundle = bundle_copy("cxr14_mae_classification")
    write_quick_weights(bundle, which=("model.pt",))
    with pytest.raises(BundleCheckError, match="ckpt_export of network_def with model.pt failed: RuntimeError: Error"):
        check_bundle(bundle, net_in_out=False)


def test_net_in_out_reports_a_network_returning_a_tuple(bundle_copy):
    """MONAI's ViT returns (x, hidden_states): verify_net_in_out fails on it, and the check says why."""
    bundle = bundle_copy("cxr14_mae_classification")
    vit = {
        "_target_": "monai.networks.nets.ViT",
        "in_channels": 1,
        "img_size": [32, 32],
        "patch_size": 16,
        "hidden_size": 48,
        "mlp_dim": 96,
        "num_layers": 1,
        "num_heads": 4,
        "classification": True,
        "num_classes": 14,
        "spatial_dims": 2,
    }
    small = {"_meta_#network_data_format#inputs#image#spatial_shape": [32, 32]}
    problems = check_net_in_out(bundle, network_def=vit, **small)
    assert len(problems) == 1 and "verify_net_in_out of network_def failed" in problems[0]
    assert "must return one tensor" in problems[0]
    quick = {"img_size": [32, 32], "patch_size": 8, "hidden_size": 48, "num_layers": 1, "num_heads": 4, "mlp_dim": 96}
    assert check_net_in_out(bundle, **quick, **small) == []  # the bundle's own network at that size passes
    problems = check_net_in_out(bundle, **quick, num_classes=13, **small)  # 13 outputs, metadata says 14
    assert "output channel number `13` doesn't match: `14`" in problems[0]


def _network_def(name: str, quick: bool) -> torch.nn.Module:
    """``network_def`` of the bundle's inference.yaml (with configs/quick.yaml merged when ``quick``), in eval mode."""
    configs = REPO / "bundles" / name / "configs"
    p = ConfigParser()
    p.read_config([str(configs / "inference.yaml")] + ([str(configs / "quick.yaml")] if quick else []))
    p["bundle_root"] = str(REPO / "bundles" / name)
    torch.manual_seed(0)
    return p.get_parsed_content("network_def").eval()


@pytest.mark.parametrize("name", BUNDLES)
def test_quick_network_def_scripts_to_the_eager_network(name):
    """What model-zoo's TorchScript check does to network_def (``torch.jit.script``), at quick size: the scripted
    network gives the eager output and survives torch.jit.save / load."""
    net = _network_def(name, quick=True)
    x = torch.rand(2, net.encoder.in_channels, *net.encoder.img_size)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buffer)
    buffer.seek(0)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(buffer)(x), net(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BUNDLES)
def test_full_size_network_def_scripts(name):
    """network_def of inference.yaml alone, as model-zoo builds it for the TorchScript check (drop path included)."""
    scripted = torch.jit.script(_network_def(name, quick=False))
    assert "encoder" in dict(scripted.named_children())


def test_torchscript_check_scripts_the_network(bundle_copy, tmp_path, monkeypatch):
    """As model-zoo's default, the check scripts network_def: a network that traces but that TorchScript cannot compile
    (``math.prod``, the construct it first stopped at in the ViT code) fails it."""
    bundle = _quick_bundle(bundle_copy, "cxr14_mae_classification")
    assert check_torchscript(bundle) == []
    (tmp_path / "prod_net.py").write_text(
        "import math\n\nfrom shared_networks import ViTClassifier\n\n\nclass ProdClassifier(ViTClassifier):\n"
        "    def forward(self, x):\n"
        "        return self.forward_head(self.encoder.forward_features(x)) * math.prod([1])\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    inference = bundle / "configs/inference.yaml"
    text = inference.read_text(encoding="utf-8")
    assert "_target_: shared_networks.ViTClassifier" in text
    inference.write_text(text.replace("_target_: shared_networks.ViTClassifier", "_target_: prod_net.ProdClassifier"))
    problems = check_torchscript(bundle)
    assert len(problems) == 1 and "ckpt_export of network_def with model.pt failed" in problems[0], problems
    assert "prod" in problems[0] and "not supported in Torchscript" in problems[0], problems


def test_requirements_are_model_zoo_pins_the_environment_satisfies():
    """ci/get_bundle_requirements.py's lines (MONAI release candidates allowed); a pin nothing installed here
    satisfies is reported, as model-zoo's install would give other versions or fail."""
    meta = metadata("btcv_mae_segmentation")
    lines = model_zoo_requirements({**meta, "optional_packages_version": {"tqdm": "4.0.0"}})
    assert lines[:3] == [
        f"monai>={meta['monai_version']}rc1,<1.6.2",
        "torch==2.13.0",
        f"numpy=={meta['numpy_version']}",
    ]
    assert lines[3] == "tqdm==4.0.0" and lines[4:] == [
        f"{k}=={v}" for k, v in meta["required_packages_version"].items()
    ]
    assert check_requirements(meta, "m.json") == []
    problems = check_requirements({**meta, "numpy_version": "1.0.0"}, "m.json")
    assert problems == [
        f"m.json: numpy==1.0.0: numpy {np.__version__} is installed here; model-zoo's CI checks numpy==1.0.0"
    ]
    unpublished = {**meta["required_packages_version"], "no-such-pkg": "1.0.0"}
    problems = check_requirements({**meta, "required_packages_version": unpublished}, "m.json")
    assert problems == [
        "m.json: no-such-pkg==1.0.0: no-such-pkg is not installed here (model-zoo's CI pip-installs it)"
    ]
    assert "is not a pip requirement" in check_requirements({**meta, "required_packages_version": {"a b": "1"}})[0]


@pytest.mark.parametrize("name", BUNDLES)
def test_properties_of_train_and_inference(name):
    assert check_properties(REPO / "bundles" / name, "inference") == []
    assert check_properties(REPO / "bundles" / name, "train") == []


def test_broken_properties_are_reported(bundle_copy):
    """MONAI's TrainProperties / InferProperties on broken copies: a required id missing, an optional property
    referred to by another id; check_bundle reports them before building any network."""
    bundle = bundle_copy("cxr14_mae_classification")
    inference, train = bundle / "configs/inference.yaml", bundle / "configs/train.yaml"
    text = inference.read_text(encoding="utf-8")
    assert "\ninferer:" in text and "inferer: '@inferer'" in text
    inference.write_text(text.replace("\ninferer:", "\nmy_inferer:").replace("'@inferer'", "'@my_inferer'"))
    assert check_properties(bundle, "inference") == [
        f"{inference}: required property 'inferer' (id 'inferer') is missing"
    ]
    inference.write_text(text)
    train_text = train.read_text(encoding="utf-8")
    assert train_text.count("    max_epochs: '@max_epochs'") == 1
    train.write_text(train_text.replace("    max_epochs: '@max_epochs'", "    num_epochs: '@max_epochs'"))
    problems = check_properties(bundle, "train")
    assert problems == [f"{train}: required property 'max_epochs' (id 'train#trainer#max_epochs') is missing"]
    with pytest.raises(BundleCheckError, match="max_epochs"):
        check_bundle(bundle, net_in_out=False)
    assert train_text.count("'@validate#handlers'") == 1
    train.write_text(train_text.replace("'@validate#handlers'", "'@train#handlers'"))
    assert check_properties(bundle, "train") == [
        f"{train}: 'validate#evaluator#val_handlers' is '@train#handlers': the optional property 'val_handlers' must"
        " be referred to as '@validate#handlers'"
    ]
    with pytest.raises(ValueError, match="workflow_type must be 'train' or 'inference', got 'evaluate'"):
        check_properties(bundle, "evaluate")


def test_several_inference_configs_are_reported(bundle_copy):
    """Model-zoo checks the last of inference.json|yaml|yml, these checks the first: one must go."""
    bundle = bundle_copy("btcv_mae_segmentation")
    shutil.copy(bundle / "configs/inference.yaml", bundle / "configs/inference.yml")
    assert check_required_files(bundle) == [
        f"{bundle / 'configs'}: several inference configs (inference.yaml, inference.yml): model-zoo checks "
        "inference.yml, these checks and the docs' commands inference.yaml; keep one"
    ]
