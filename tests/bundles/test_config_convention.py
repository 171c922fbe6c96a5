"""Model-zoo's config convention in every bundle: pretrain.yaml, train.yaml and inference.yaml each run alone (from
any folder, from a copied bundle, through ``ConfigWorkflow``); evaluate.yaml and linear_probe.yaml merge over
train.yaml; the three standalone files agree on the encoder and the deterministic pre-processing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_configs import REPO, BundleConfigs
from monai.bundle import ConfigParser, ConfigWorkflow

import shared_networks
from shared_networks.synthetic.brain import write_msd_phantom_dataset
from shared_networks.synthetic.ct import write_btcv_phantom_dataset
from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset

BUNDLES = ["btcv_mae_segmentation", "brats_mae_segmentation", "cxr14_mae_classification"]
STANDALONE = {"pretrain": "train", "train": "train", "inference": "infer"}  # file -> ConfigWorkflow's workflow_type
ENCODER = ["in_channels", "img_size", "patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim"]
# what each bundle's inference reads, under the dataset folder; every phantom is already on quick.yaml's grid
INFERENCE_INPUT = {
    "btcv_mae_segmentation": "imagesTr",
    "brats_mae_segmentation": "imagesTs",
    "cxr14_mae_classification": "images",
}


def write_phantoms(bundle: str, folder: Path) -> Path:
    if bundle == "btcv_mae_segmentation":
        return write_btcv_phantom_dataset(folder, num_cases=5, seed=3)
    if bundle == "brats_mae_segmentation":
        return write_msd_phantom_dataset(
            folder, num_cases=5, num_unlabelled=1, seed=3, shape=(56, 64, 48), spacing=(3.0, 3.0, 3.0)
        )
    return write_cxr14_phantom_dataset(folder, num_patients=24, size=64, seed=3)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> dict[str, Path]:
    return {b: write_phantoms(b, tmp_path_factory.mktemp(b)) for b in BUNDLES}


def package_env() -> dict[str, str]:
    """The environment of a user who installed the package: ``shared_networks`` importable from where this process
    has it (an installed package, or a checkout's root given as PYTHONPATH), nothing else of the repository."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(shared_networks.__file__).resolve().parents[1])
    return env


def monai_bundle_run(config_file: str, cwd: Path, **override) -> str:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config_file]
    for key, value in {"num_workers": 0, **override}.items():
        cmd += [f"--{key}", str(value)]
    proc = subprocess.run(
        cmd, cwd=cwd, env=package_env(), capture_output=True, encoding="utf-8", errors="replace", timeout=900
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{config_file} failed (rc {proc.returncode}):\n{output[-6000:]}"
    return output


# ConfigWorkflow: MONAI's own entry point (MONAI Label, model-zoo's CI) on one file


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("name", list(STANDALONE))
def test_check_properties_of_each_file_alone_from_another_folder(bundle, name, phantoms, tmp_path, monkeypatch):
    """The full settings, the file alone, absolute paths, another working directory: no missing required property
    and no optional property under a wrong id. pretrain.yaml has no validation: every validate#... property is
    optional and referenced by nothing there, so MONAI's check of their ids passes; its network (the MAE) is
    ``mae_def``, and ``network_def`` is optional for a train workflow and referenced by no id MONAI checks."""
    monkeypatch.chdir(tmp_path)
    root = REPO / "bundles" / bundle
    data = phantoms[bundle] / INFERENCE_INPUT[bundle] if name == "inference" else phantoms[bundle]
    wf = ConfigWorkflow(
        config_file=str(root / "configs" / f"{name}.yaml"),
        workflow_type=STANDALONE[name],
        bundle_root=str(root),
        dataset_dir=str(data),
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "runs"),
        num_workers=0,
        cache_rate=0.0,  # nothing pre-processed ahead: the check builds the datasets, not their caches
    )
    wf.initialize()
    assert wf.check_properties() == []
    assert Path(wf.bundle_root) == root


# the three standalone files agree


def _resolved_transforms(parser: ConfigParser, transforms_id: str) -> list[dict]:
    """The deterministic transforms a workflow runs, references resolved, as config dicts."""
    # the deterministic part is deterministic_transforms itself (pretrain: followed by its random transforms), or the
    # chest X-ray training datasets' dataset_transforms: deterministic_transforms as they are unless a prepared store
    # of them is given (prepared_dir, null by default), or BraTS training's cached_transforms: deterministic_transforms
    # but the label's region channels, built after the cache (label_transforms)
    expr = parser[transforms_id]
    for name in ("deterministic_transforms", "dataset_transforms", "cached_transforms"):
        if expr == f"$@{name}" or expr.startswith(f"$@{name} + "):
            break
    else:
        raise AssertionError(f"{transforms_id}: {expr}")
    if name == "cached_transforms":
        assert parser["deterministic_transforms"] == "$@cached_transforms + @label_transforms"
        assert expr.endswith("[shared_networks.AfterCache(@restore_transforms + @label_transforms)]"), expr
    if name == "dataset_transforms":
        assert parser["dataset_transforms"] == (
            "$shared_networks.prepared_transforms(@deterministic_transforms, @prepared_dir, @img_size)"
        )
        assert parser["prepared_dir"] is None
    return [c.get_config() for c in parser.get_parsed_content("deterministic_transforms", instantiate=False)]


def _on_keys(transforms: list[dict], keep: set[str]) -> list[dict]:
    """The transforms as they act on the keys in ``keep`` (per-key arguments such as ``mode`` picked alike)."""
    out = []
    for t in transforms:
        keys = [t["keys"]] if isinstance(t["keys"], str) else list(t["keys"])
        picked = [i for i, k in enumerate(keys) if k in keep]
        if not picked:
            continue
        t = {**t, "keys": [keys[i] for i in picked]}
        if isinstance(t.get("mode"), list) and len(t["mode"]) == len(keys):
            t["mode"] = [t["mode"][i] for i in picked]
        out.append(t)
    return out


@pytest.mark.parametrize("bundle", BUNDLES)
@pytest.mark.parametrize("quick", [False, True])
def test_pretrain_train_and_inference_agree(bundle, quick):
    configs = BundleConfigs(bundle)
    pretrain, train, infer = (configs.parser(n, quick=quick) for n in ("pretrain", "train", "inference"))
    for arg in ENCODER:
        size = "img_size" if bundle.startswith("cxr14") else "roi_size"
        top = size if arg == "img_size" else arg
        values = [p.get_parsed_content(top) for p in (pretrain, train, infer)]
        assert values[0] == values[1] == values[2], (arg, values)
        assert pretrain.get_parsed_content(f"mae_def#{arg}") == values[0], arg
        assert train.get_parsed_content(f"network_def#{arg}") == infer.get_parsed_content(f"network_def#{arg}")
        assert train.get_parsed_content(f"network_def#{arg}") == values[0], arg
    assert train["network_def"] == infer["network_def"]
    validate = _resolved_transforms(train, "validate#preprocessing#transforms")
    inference = _resolved_transforms(infer, "preprocessing#transforms")
    mae = _resolved_transforms(pretrain, "train#preprocessing#transforms")
    if bundle.startswith("cxr14"):  # inference also reads DICOM: a DICOM reader beside train's PIL one, the rest alike
        assert inference[0].pop("reader") == [shared_networks.DicomRadiographReader, shared_networks.CheckedPILReader]
        assert validate[0].pop("reader") == mae[0].pop("reader") == "shared_networks.CheckedPILReader"
    # inference and validation: the same list on what inference has (the image; labels only where they are given)
    load_keys = set(infer.get_parsed_content("load_keys", default=None) or ["image", "label"])
    assert _on_keys(inference, load_keys) == _on_keys(validate, load_keys)
    assert len(_on_keys(inference, load_keys)) >= 5
    assert _on_keys(mae, {"image"}) == _on_keys(validate, {"image"}) == _on_keys(inference, {"image"})


def test_no_config_names_a_module_of_the_package():
    """Configs name shared code as ``shared_networks.<Name>`` from the package's public list only."""
    for path in sorted((REPO / "bundles").glob("*/configs/*.yaml")):
        text = path.read_text(encoding="utf-8")
        for name in re.findall(r"shared_networks\.(\w+)", text):
            assert name in shared_networks.__all__, f"{path}: shared_networks.{name}"
        imports = ConfigParser.load_config_file(str(path)).get("imports", [])
        assert all(i in ("$import shared_networks",) or "shared_networks" not in i for i in imports), path


# configs hold settings: logic lives in named functions of the package (configs call them in one-line `$` items)

LOGIC = re.compile(r"\bif\b|\bfor\b|\blambda\b|\band\b|\bor\b|\bnot\b|[<>]=?|==|!=")


def test_config_expressions_hold_no_logic():
    """No ``$`` item decides, loops or defines a function: conditions, comprehensions and lambdas are named functions
    of ``shared_networks`` (``$shared_networks.keep_workers(...)``), tested there."""
    found = []
    for path in sorted((REPO / "bundles").glob("*/configs/*.yaml")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split(" #", 1)[0]
            if "$" in code and LOGIC.search(code[code.index("$") :]):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert found == [], "\n".join(found)


def test_config_comments_name_existing_guides():
    """``docs/<topic>.md`` in a config comment is the guide at the repository root or the bundle's own docs."""
    for path in sorted((REPO / "bundles").glob("*/configs/*.yaml")):
        bundle = path.parents[1]
        for name in re.findall(r"\bdocs/([\w.-]+\.md)", path.read_text(encoding="utf-8")):
            assert (REPO / "docs" / name).is_file() or (bundle / "docs" / name).is_file(), f"{path}: docs/{name}"


# monai.bundle run: each file alone from another folder; evaluate and the linear probe over train.yaml


def _arg(*files: Path) -> str:
    return str(files[0]) if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES)
def test_standalone_commands_from_another_folder(bundle, phantoms, tmp_path):
    root = REPO / "bundles" / bundle
    c = {n: root / "configs" / f"{n}.yaml" for n in ("pretrain", "train", "evaluate", "inference", "quick")}
    models, runs = tmp_path / "models", tmp_path / "runs"
    common = dict(bundle_root=root, dataset_dir=phantoms[bundle], ckpt_dir=models)
    monai_bundle_run(
        _arg(c["pretrain"], c["quick"]),
        tmp_path,
        output_dir=runs / "pretrain",
        max_epochs=1,
        recon_interval=1,
        **common,
    )
    assert (models / "mae.pt").is_file()
    monai_bundle_run(
        _arg(c["train"], c["quick"]), tmp_path, output_dir=runs / "train", max_epochs=1, val_interval=1, **common
    )
    assert (models / "model.pt").is_file()
    monai_bundle_run(_arg(c["train"], c["evaluate"], c["quick"]), tmp_path, output_dir=runs / "evaluate", **common)
    assert (runs / "evaluate" / "summary.json").is_file()
    if bundle.startswith("cxr14"):
        probe = root / "configs" / "linear_probe.yaml"
        monai_bundle_run(
            _arg(c["train"], probe, c["quick"]),
            tmp_path,
            output_dir=runs / "linear_probe",
            max_epochs=1,
            val_interval=1,
            **common,
        )
        assert (models / "linear_probe.pt").is_file()
    data = phantoms[bundle] / INFERENCE_INPUT[bundle]
    monai_bundle_run(
        _arg(c["inference"], c["quick"]), tmp_path, output_dir=runs / "inference", **{**common, "dataset_dir": data}
    )
    assert any((runs / "inference").iterdir())
    assert not (root / "models").exists() and not (root / "runs").exists()  # nothing written into the repository


@pytest.mark.slow
def test_a_copied_bundle_runs_from_its_own_folder(phantoms, tmp_path):
    """``bundles/<name>`` copied alone, run from the copy with the relative command of its docs (bundle_root '.')."""
    bundle = tmp_path / "btcv_mae_segmentation"
    shutil.copytree(REPO / "bundles" / "btcv_mae_segmentation", bundle, ignore=shutil.ignore_patterns("models", "runs"))
    monai_bundle_run(
        "['configs/pretrain.yaml','configs/quick.yaml']",
        bundle,
        dataset_dir=phantoms["btcv_mae_segmentation"],
        max_epochs=1,
    )
    assert (bundle / "models" / "mae.pt").is_file() and (bundle / "runs" / "pretrain").is_dir()
    assert REPO not in bundle.parents
