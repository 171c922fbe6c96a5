"""Released bundles: downloaded from a local HTTP server with MONAI's own commands and run as downloaded, with no
checkout beside them; TorchScript and ONNX exports of every fine-tuned network give the eager output.

The documented exports refuse weights with NaN/inf values (non-zero exit, the file and the tensor named, nothing
written), in the bundle folder and in the downloaded release.

Weights are freshly initialised quick-size networks (configs/quick.yaml; tests/bundles/bundle_weights.py), exported
with ``--config_overrides quick`` baked into the release's configs: the documented commands (no quick.yaml) run
unchanged. The unpacked bundle runs in a Python that cannot import this repository: ``python -S`` (no site-packages
processing, so the editable install's finder is not loaded) with only the environment's site-packages on
``PYTHONPATH``; the ``shared_networks`` it imports is the copy packed at the bundle root, from the bundle folder and
from any other working directory (``--bundle_root``).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import http.server
import json
import locale
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from bundle_weights import write_quick_weights
from monai.apps.utils import HashCheckError
from monai.bundle import ckpt_export, download_large_files, onnx_export
from monai.data import load_net_with_metadata

from shared_networks.synthetic.ct import write_btcv_phantom_dataset
from shared_networks.tools.bundle_checks import check_bundle
from shared_networks.tools.export import export_bundle

REPO = Path(__file__).resolve().parents[2]
NAME = "btcv_mae_segmentation"
QUICK_SHAPES = {  # (B, C, *S) of each bundle's quick network
    "btcv_mae_segmentation": (1, 1, 48, 48, 48),
    "brats_mae_segmentation": (1, 4, 48, 48, 48),
    "cxr14_mae_classification": (1, 1, 64, 64),
}


@pytest.fixture(autouse=True)
def utf8_locale():
    """MONAI reads configs in the locale's encoding, and GDCM (writing DICOM in other tests of this process) sets
    LC_CTYPE to "C": restore the environment's locale so the bundles' UTF-8 files read as such."""
    locale.setlocale(locale.LC_CTYPE, "")
    yield


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's signature)
        pass


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A btcv bundle with quick weights, exported into a folder served on 127.0.0.1 (its URLs point there)."""
    tmp = tmp_path_factory.mktemp("release")
    dist = tmp / "dist"
    dist.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(dist)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    src = tmp / "src" / NAME
    shutil.copytree(REPO / "bundles" / NAME, src, ignore=shutil.ignore_patterns("models", "runs", "__pycache__"))
    write_quick_weights(src)
    out = export_bundle(str(src), str(dist), base_url=base_url, config_overrides="quick")
    yield {"url": base_url, "out": out, "src": src, "zip": Path(out["zip"])}
    server.shutdown()
    server.server_close()


def isolated(args: list[str], cwd: Path, tmp: Path) -> subprocess.CompletedProcess:
    """``python -S <args>`` with only site-packages importable: no editable install, no repository on the path."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "PYTHONNOUSERSITE": "1",
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
        "TMPDIR": str(tmp),
        "LANG": "C.UTF-8",
    }
    command = [sys.executable, "-S", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, encoding="utf-8", errors="replace")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_downloaded_bundle_runs_on_its_own(release, tmp_path):
    site = tmp_path / "site"  # an empty folder, no checkout beside it
    run = isolated(
        [
            "-m",
            "monai.bundle",
            "download",
            "--name",
            NAME,
            "--url",
            f"{release['url']}/{release['zip'].name}",
            "--bundle_dir",
            str(site),
            "--progress",
            "False",
        ],
        cwd=tmp_path,
        tmp=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    bundle = site / NAME
    with zipfile.ZipFile(release["zip"]) as zf:
        for member in zf.namelist():
            assert (site / member).read_bytes() == zf.read(member), member
    assert not (bundle / "configs" / "quick.yaml").exists()  # baked in, not merged

    # nothing but the packed copy provides shared_networks, from any working directory
    probe = "import importlib.util as u; s = u.find_spec('shared_networks'); print(s.origin if s else None)"
    assert isolated(["-c", probe], cwd=tmp_path, tmp=tmp_path).stdout.strip() == "None"
    packed = str(bundle / "shared_networks" / "__init__.py")
    via_config = (
        "import sys; from monai.bundle import ConfigParser; p = ConfigParser(); p.read_config(sys.argv[1]); "
        "p['bundle_root'] = sys.argv[2]; print(p.get_parsed_content('shared_networks').__file__)"
    )
    found = isolated(["-c", via_config, f"{NAME}/configs/inference.yaml", NAME], cwd=site, tmp=tmp_path)
    assert found.stdout.strip().splitlines()[-1] == packed, found.stderr[-2000:]

    data = write_btcv_phantom_dataset(tmp_path / "data", num_cases=4, shape=(64, 64, 48), seed=3)
    image = data / "imagesTr" / "img0001.nii.gz"
    ref = nib.load(image)
    # the documented commands, unchanged: from the bundle folder, then from its parent with --bundle_root
    for cwd, config, root in (
        (bundle, "configs/inference.yaml", []),
        (site, f"{NAME}/configs/inference.yaml", ["--bundle_root", NAME]),
    ):
        out = tmp_path / f"inference_{cwd.name}"
        run = isolated(
            [
                "-m",
                "monai.bundle",
                "run",
                "--config_file",
                config,
                *root,
                "--dataset_dir",
                str(image),
                "--output_dir",
                str(out),
                "--num_workers",
                "0",
            ],
            cwd=cwd,
            tmp=tmp_path,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        seg = nib.load(out / "img0001_seg.nii.gz")
        assert seg.shape == ref.shape and np.allclose(seg.affine, ref.affine)

    # the TorchScript export of the docs (model-zoo's ckpt_export, scripted) with the packed shared_networks' sources
    run = isolated(
        [
            "-m",
            "monai.bundle",
            "ckpt_export",
            "network_def",
            "--filepath",
            "models/model.ts",
            "--ckpt_file",
            "models/model.pt",
            "--meta_file",
            "configs/metadata.json",
            "--config_file",
            "configs/inference.yaml",
        ],
        cwd=bundle,
        tmp=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    ts = torch.jit.load(bundle / "models" / "model.ts")
    assert hasattr(ts.encoder, "forward_intermediates")  # scripted: the methods are kept, not one traced graph
    weights = torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(ts.state_dict()[k], v) for k, v in weights.items())
    (bundle / "models" / "model.ts").unlink()

    packed = sha256(bundle / "models" / "model.pt")
    run = isolated(
        [
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            "configs/train.yaml",
            "--dataset_dir",
            str(data),
            "--max_epochs",
            "1",
            "--val_interval",
            "1",
            "--num_workers",
            "0",
            "--num_samples",
            "1",
        ],
        cwd=bundle,
        tmp=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    log = run.stdout + run.stderr
    assert "pre-trained encoder from ./models/mae.pt: 53 tensors loaded" in log  # the packed MAE checkpoint
    assert sha256(bundle / "models" / "model.pt") != packed  # fine-tuned weights replaced the packed ones
    assert (
        torch.load(bundle / "models" / "model.pt", weights_only=True).keys()
        == torch.load(release["src"] / "models" / "model.pt", weights_only=True).keys()
    )


EXPORT_DOC = REPO / "docs" / "export.md"  # the guide's TorchScript and ONNX commands, the same for every bundle


def documented_exports(doc: Path = EXPORT_DOC) -> list[list[str]]:
    """The arguments after ``python -m`` of the doc's ``monai.bundle ckpt_export`` / ``onnx_export`` commands, in
    order (``\\`` continuations joined)."""
    text = doc.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [ln.strip() for ln in text.splitlines()]
    return [shlex.split(ln)[1:] for ln in lines if re.match(r"python -m monai\.bundle (ckpt|onnx)_export ", ln)]


def poison(path: Path) -> str:
    """Overwrite one tensor of the state dict at ``path`` with NaN; returns its key."""
    state = torch.load(path, weights_only=True)
    key = next(k for k in state if k.startswith("encoder.blocks.0.") and state[k].is_floating_point())
    state[key] = torch.full_like(state[key], math.nan)
    torch.save(state, path)
    return key


@pytest.mark.slow
def test_downloaded_bundle_exports_refuse_non_finite_weights(release, tmp_path):
    """The docs' ckpt_export and onnx_export (docs/export.md), exactly as written, in the release (the packed
    shared_networks): a model.pt with a NaN tensor exits non-zero naming the file and the tensor and writes nothing;
    the released weights export."""
    with zipfile.ZipFile(release["zip"]) as zf:
        zf.extractall(tmp_path)
    bundle, models = tmp_path / NAME, tmp_path / NAME / "models"
    commands = documented_exports()
    assert [c[:3] for c in commands] == [["-m", "monai.bundle", x] for x in ("ckpt_export", "onnx_export")]
    good = (models / "model.pt").read_bytes()
    key = poison(models / "model.pt")
    for argv in commands:
        run = isolated(argv, cwd=bundle, tmp=tmp_path)
        assert run.returncode != 0, run.stderr[-3000:]
        assert f"NonFiniteError: checkpoint 'models/model.pt': tensor '{key}' holds non-finite values" in run.stderr
        assert sorted(p.name for p in models.iterdir()) == ["mae.pt", "model.pt"]
    (models / "model.pt").write_bytes(good)
    for argv in commands:
        run = isolated(argv, cwd=bundle, tmp=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
    assert sorted(p.name for p in models.iterdir()) == ["mae.pt", "model.onnx", "model.pt", "model.ts"]


@pytest.mark.slow
def test_release_passes_model_zoo_checks(release, tmp_path):
    """Model-zoo's checks in full mode on the light download (configs alone, weights fetched from large_files.yml):
    directory with the download, version, metadata, requirement pins, properties, data shape and TorchScript of the
    baked quick network."""
    with zipfile.ZipFile(release["zip"]) as zf:
        zf.extractall(tmp_path)
    bundle = tmp_path / NAME
    shutil.rmtree(bundle / "models")
    done = check_bundle(bundle, download=True, released=True)
    assert done == ["directory", "version", "metadata", "requirements", "properties", "data shape", "torchscript"]
    assert sha256(bundle / "models" / "model.pt") == sha256(release["src"] / "models" / "model.pt")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [48, 48, 48]
    assert meta["config_overrides"]["files"] == ["configs/quick.yaml"]
    assert meta["config_overrides"]["values"]["roi_size"] == [48, 48, 48]
    assert "configs/quick.yaml" in (bundle / "docs" / "README.md").read_text(encoding="utf-8").split("\n")[0]


@pytest.mark.slow
def test_download_large_files_checks_sha256(release, tmp_path):
    with zipfile.ZipFile(release["zip"]) as zf:
        zf.extractall(tmp_path)
    bundle, models = tmp_path / NAME, tmp_path / NAME / "models"
    expected = {e["path"]: e for e in yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"]}
    shutil.rmtree(models)
    run = isolated(["-m", "monai.bundle", "download_large_files", "--bundle_path", str(bundle)], tmp_path, tmp_path)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in models.iterdir()) == ["mae.pt", "model.pt"]
    for rel, entry in expected.items():
        assert sha256(bundle / rel) == entry["hash_val"] == sha256(release["src"] / rel)

    # a wrong hash: MONAI downloads into a temporary folder and raises before moving the file into the bundle
    lf = bundle / "large_files.yml"
    good = lf.read_text()
    lf.write_text(good.replace(expected["models/model.pt"]["hash_val"], hashlib.sha256(b"other").hexdigest()))
    (models / "model.pt").unlink()
    with pytest.raises(HashCheckError, match="hash check of downloaded file failed"):
        download_large_files(bundle_path=str(bundle))
    assert sorted(p.name for p in models.iterdir()) == ["mae.pt"]

    # a file already there that does not match is refused, every time, not taken as good
    lf.write_text(good)
    (models / "model.pt").write_bytes(b"not the released weights")
    with pytest.raises(HashCheckError, match="hash check of existing file failed"):
        download_large_files(bundle_path=str(bundle))

    # an address that does not answer with the file
    (models / "model.pt").unlink()
    lf.write_text(good.replace(expected["models/model.pt"]["url"], f"{release['url']}/missing.pt"))
    with pytest.raises(OSError):
        download_large_files(bundle_path=str(bundle))
    assert sorted(p.name for p in models.iterdir()) == ["mae.pt"]


def _eager_and_inputs(name: str, tmp_path: Path):
    bundle = tmp_path / name
    shutil.copytree(REPO / "bundles" / name, bundle, ignore=shutil.ignore_patterns("models", "runs", "__pycache__"))
    net = write_quick_weights(bundle, which=("model.pt",))["model.pt"]
    shape = QUICK_SHAPES[name]
    torch.manual_seed(1)
    x = torch.rand(2, *shape[1:])  # batch 2: the exports are not tied to the batch they were traced with
    with torch.no_grad():
        y = net(x)
    args = dict(
        net_id="network_def",
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=[str(bundle / "configs" / f) for f in ("inference.yaml", "quick.yaml")],
        input_shape=list(shape),
        bundle_root=str(bundle),
    )
    return bundle, x, y, args


ONNX_NAMES = {"input_names": ["image"], "output_names": ["pred"], "dynamic_axes": {"image": {0: "b"}, "pred": {0: "b"}}}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["btcv_mae_segmentation", "brats_mae_segmentation"])  # cxr14: the command lines
def test_torchscript_and_onnx_exports_match_eager(name, tmp_path):
    import onnxruntime

    bundle, x, y, args = _eager_and_inputs(name, tmp_path)
    version = json.loads((REPO / "bundles" / name / "configs" / "metadata.json").read_text())["version"]
    for use_trace in (False, True):  # scripted (model-zoo's default) and traced
        ts_path = bundle / "models" / f"model_{'traced' if use_trace else 'scripted'}.ts"
        ckpt_export(filepath=str(ts_path), use_trace=use_trace, **args)
        ts, meta, extra = load_net_with_metadata(str(ts_path), more_extra_files=["inference.json"])
        assert meta["version"] == version and "network_def" in extra["inference.json"].decode()
        assert "evaluator" in extra["inference.json"].decode()  # the configs travel inside the TorchScript file
        with torch.no_grad():
            torch.testing.assert_close(ts(x), y, rtol=1e-4, atol=1e-5)

    onnx_path = bundle / "models" / "model.onnx"
    onnx_export(filepath=str(onnx_path), converter_kwargs=copy.deepcopy(ONNX_NAMES), **args)  # MONAI adds to it
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (pred,) = session.run(None, {"image": x.numpy()})
    assert pred.shape == tuple(y.shape)
    np.testing.assert_allclose(pred, y.numpy(), rtol=1e-3, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(QUICK_SHAPES))
def test_export_command_lines_refuse_non_finite_weights(name, tmp_path):
    """The docs' ckpt_export and onnx_export of each bundle (quick.yaml merged, its input shape) on a model.pt with a
    NaN tensor: non-zero exit, the file and the tensor named, no model.ts / model.onnx."""
    bundle, *_ = _eager_and_inputs(name, tmp_path)
    key = poison(bundle / "models" / "model.pt")
    shape = str([1, *QUICK_SHAPES[name][1:]])
    for argv in documented_exports():
        at = argv.index("--config_file") + 1
        argv = [*argv[:at], "['configs/inference.yaml','configs/quick.yaml']", *argv[at + 1 :], "--input_shape", shape]
        run = subprocess.run(
            [sys.executable, *argv], cwd=bundle, capture_output=True, encoding="utf-8", errors="replace"
        )
        assert run.returncode != 0, run.stderr[-3000:]
        assert f"NonFiniteError: checkpoint 'models/model.pt': tensor '{key}' holds non-finite values" in run.stderr
        assert sorted(p.name for p in (bundle / "models").iterdir()) == ["model.pt"]


@pytest.mark.slow
def test_export_command_lines(tmp_path):
    """The commands of the bundles' docs, run from the bundle folder: the ChestX-ray14 classifier's exports (the
    TorchScript one scripted, as documented, and traced)."""
    name = "cxr14_mae_classification"
    bundle, x, y, _ = _eager_and_inputs(name, tmp_path)
    common = [
        "network_def",
        "--ckpt_file",
        "models/model.pt",
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        "['configs/inference.yaml','configs/quick.yaml']",
        "--input_shape",
        "[1, 1, 64, 64]",
    ]
    for command, out, extra in (
        ("ckpt_export", "models/model.ts", []),
        ("ckpt_export", "models/model_traced.ts", ["--use_trace", "true"]),
        ("onnx_export", "models/model.onnx", ["--converter_kwargs", str(ONNX_NAMES)]),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "monai.bundle", command, *common, "--filepath", out, *extra],
            cwd=bundle,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
        )
        assert run.returncode == 0, run.stderr[-3000:]
    with torch.no_grad():
        for ts in ("model.ts", "model_traced.ts"):
            torch.testing.assert_close(torch.jit.load(bundle / "models" / ts)(x), y, rtol=1e-4, atol=1e-5)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(bundle / "models" / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], y.numpy(), rtol=1e-3, atol=1e-4)
