"""shared_networks.tools.export: what the zip holds, the hashes in large_files.yml, errors and atomicity.

Weights here are freshly initialised networks of configs/quick.yaml (``network_def`` -> models/model.pt, ``mae_def``
-> models/mae.pt, tests/bundles/bundle_weights.py), saved as state dicts: the export checks that they load strictly
into the bundle's networks.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import locale
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from bundle_weights import write_quick_weights

import shared_networks
from shared_networks.tools import export as export_module
from shared_networks.tools.bundle_checks import check_bundle
from shared_networks.tools.export import RUNTIME_PARTS, export_bundle, release_links

REPO = Path(__file__).resolve().parents[3]
CXR_VERSION = json.loads((REPO / "bundles/cxr14_mae_classification/configs/metadata.json").read_text())["version"]
QUICK = ["configs/quick.yaml"]
URL = "https://example.org/releases/v1"
GUIDE = sorted(p.name for p in (REPO / "docs").glob("*.md"))


def load_docs_links():
    """tests/test_docs_links.py (not importable by name under --import-mode=importlib): its link reading and GitHub's
    anchor rule check a release's docs the way they check the repository's."""
    spec = importlib.util.spec_from_file_location("docs_links", REPO / "tests" / "test_docs_links.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def link_texts(markdown: str) -> str:
    """The Markdown with each link replaced by its text: what a release's link rewriting leaves unchanged."""
    return re.sub(r"!?\[([^\]]*)\]\([^)\s]+(?:\s+\"[^\"]*\")?\)", r"\1", markdown)


@pytest.fixture(autouse=True)
def utf8_locale():
    """MONAI reads configs in the locale's encoding, and GDCM (writing DICOM in other tests of this process) sets
    LC_CTYPE to "C": restore the environment's locale so the bundles' UTF-8 files read as such."""
    locale.setlocale(locale.LC_CTYPE, "")
    yield


@pytest.fixture
def weighted(tmp_path):
    def make(name: str, which=("model.pt", "mae.pt")) -> Path:
        dst = tmp_path / "src" / name
        shutil.copytree(REPO / "bundles" / name, dst, ignore=shutil.ignore_patterns("models", "runs", "__pycache__"))
        write_quick_weights(dst, which)
        return dst

    return make


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_zip_holds_the_bundle_its_weights_and_the_package(weighted, tmp_path):
    bundle = weighted("cxr14_mae_classification")
    out = export_bundle(str(bundle), str(tmp_path / "dist"), base_url=URL + "/", config_overrides=QUICK)
    stem = f"cxr14_mae_classification_v{CXR_VERSION}"
    assert out == {
        "zip": str(tmp_path / "dist" / f"{stem}.zip"),
        "sha256": str(tmp_path / "dist" / f"{stem}.sha256"),
        "weights:models/model.pt": str(tmp_path / "dist" / f"{stem}_model.pt"),
        "weights:models/mae.pt": str(tmp_path / "dist" / f"{stem}_mae.pt"),
    }
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == sorted(Path(p).name for p in out.values())
    with zipfile.ZipFile(out["zip"]) as zf:
        names = set(zf.namelist())
        members = {n: zf.read(n) for n in names}
    root = "cxr14_mae_classification/"
    assert all(n.startswith(root) for n in names)  # one base folder named after the bundle
    configs = {f"{root}configs/{p.name}" for p in (bundle / "configs").iterdir() if p.name != "quick.yaml"}
    source_root = Path(shared_networks.__file__).parent
    package = {
        f"{root}shared_networks/{p.relative_to(source_root).as_posix()}"
        for p in source_root.rglob("*.py")
        if p.relative_to(source_root).parts[0] in RUNTIME_PARTS
    }
    assert not {n for n in names if n.split("/")[2:3] in (["synthetic"], ["tools"], ["cli"])}
    expected = configs | package | {f"{root}{n}" for n in ("LICENSE", "docs/README.md", "large_files.yml")}
    expected |= {f"{root}docs/guide/{page}" for page in GUIDE}
    assert names == expected | {f"{root}models/model.pt", f"{root}models/mae.pt"}
    assert members[root + "LICENSE"] == (bundle / "LICENSE").read_bytes()
    docs = members[root + "docs/README.md"].decode()
    assert docs.startswith("> **This release.**") and "`configs/quick.yaml`" in docs.splitlines()[0]
    assert link_texts(docs).endswith(link_texts((bundle / "docs/README.md").read_text(encoding="utf-8")))
    train = members[root + "configs/train.yaml"].decode()
    assert train.startswith("# baked: configs/quick.yaml (")
    assert "img_size: [64, 64]  # from configs/quick.yaml" in train
    assert yaml.safe_load(train)["img_size"] == [64, 64]
    vit = "shared_networks/networks/vit.py"
    assert members[root + vit] == (REPO / vit).read_bytes()

    entries = yaml.safe_load(members[root + "large_files.yml"])["large_files"]
    assert entries == [
        {
            "path": f"models/{w}",
            "url": f"{URL}/{stem}_{w}",
            "hash_val": sha256((bundle / "models" / w).read_bytes()),
            "hash_type": "sha256",
        }
        for w in ("model.pt", "mae.pt")
    ]
    for w in ("model.pt", "mae.pt"):
        assert members[root + f"models/{w}"] == (bundle / "models" / w).read_bytes()
        assert Path(out[f"weights:models/{w}"]).read_bytes() == (bundle / "models" / w).read_bytes()
    sums = dict(reversed(line.split("  ")) for line in Path(out["sha256"]).read_text().splitlines())
    assert sums == {Path(p).name: sha256(Path(p).read_bytes()) for k, p in out.items() if k != "sha256"}
    source = REPO / "bundles" / "cxr14_mae_classification" / "large_files.yml"
    assert (bundle / "large_files.yml").read_text() == source.read_text()  # the source is left alone

    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(out["zip"]).extractall(unpacked)
    assert check_bundle(unpacked / "cxr14_mae_classification", net_in_out=False, released=True)


def test_packed_package_imports_on_its_own(weighted, tmp_path):
    """The runtime layers packed in a release import without the layers left out (synthetic, tools, cli)."""
    bundle = weighted("cxr14_mae_classification", which=("model.pt",))
    out = export_bundle(str(bundle), str(tmp_path / "dist"), config_overrides=QUICK)
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(out["zip"]).extractall(unpacked)
    root = unpacked / "cxr14_mae_classification"
    assert sorted(p.name for p in (root / "shared_networks").iterdir()) == sorted(RUNTIME_PARTS)
    code = (
        "import json, sys, shared_networks as sn; "
        "print(json.dumps([sn.__file__, sorted(m for m in sys.modules if m.startswith('shared_networks')),"
        " all(hasattr(sn, n) for n in sn.__all__)]))"
    )
    # -I: isolated (no PYTHONPATH, no user site, no script folder); the cwd is put on sys.path by -c only without -I,
    # so the unpacked bundle root is added explicitly, before the installed copy of the repository
    boot = f"import sys; sys.path.insert(0, {str(root)!r}); " + code
    result = subprocess.run(
        [sys.executable, "-I", "-c", boot], cwd=root, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    path, loaded, complete = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(path).resolve() == (root / "shared_networks" / "__init__.py").resolve()
    assert complete and "shared_networks.networks.mae" in loaded and "shared_networks.validation.workflow" in loaded
    assert not [m for m in loaded if m.split(".")[1:2] in (["synthetic"], ["tools"], ["cli"])]


def test_same_inputs_give_the_same_zip(weighted, tmp_path):
    bundle = weighted("cxr14_mae_classification", which=("model.pt",))
    a = export_bundle(str(bundle), str(tmp_path / "a"), config_overrides=QUICK)
    b = export_bundle(str(bundle), str(tmp_path / "b"), config_overrides=QUICK)
    assert Path(a["zip"]).read_bytes() == Path(b["zip"]).read_bytes()
    with zipfile.ZipFile(a["zip"]) as zf:
        assert "cxr14_mae_classification/models/mae.pt" not in zf.namelist()  # absent -> not packed, not listed
        entries = yaml.safe_load(zf.read("cxr14_mae_classification/large_files.yml"))["large_files"]
    assert entries == []  # no --base_url: the weights travel in the zip only, no entry without a URL


def test_bundle_without_weights_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="models/model.pt does not exist: export a bundle after fine-tuning"):
        export_bundle(str(REPO / "bundles" / "btcv_mae_segmentation"), str(tmp_path / "dist"))
    assert not (tmp_path / "dist").exists()
    with pytest.raises(FileNotFoundError, match="is not a bundle folder"):
        export_bundle(str(tmp_path), str(tmp_path / "dist"))


def test_weights_that_do_not_fit_the_network_are_an_error(weighted, tmp_path):
    bundle = weighted("btcv_mae_segmentation")
    with pytest.raises(ValueError, match=r"model.pt does not fit network_def of inference.yaml \(trained with other"):
        export_bundle(str(bundle), str(tmp_path / "dist"))  # quick-size weights, full-size configs
    assert list((tmp_path / "dist").glob("*")) == []
    with pytest.raises(FileNotFoundError, match="config override 'quik' is neither configs/quik.yaml"):
        export_bundle(str(bundle), str(tmp_path / "dist"), config_overrides="quik")


def test_large_files_paths_must_stay_in_the_bundle(weighted, tmp_path):
    bundle = weighted("cxr14_mae_classification", which=("model.pt",))
    (bundle / "large_files.yml").write_text('large_files:\n  - {path: "../../secret.pt", url: "", hash_val: ""}\n')
    with pytest.raises(ValueError, match=r"large_files.yml: each entry needs a 'path' inside the bundle, got '\.\./"):
        export_bundle(str(bundle), str(tmp_path / "dist"), config_overrides=QUICK)


def test_non_weights_checkpoints_are_refused(weighted, tmp_path):
    bundle = weighted("cxr14_mae_classification")
    torch.save({"net": torch.nn.Linear(2, 2)}, bundle / "models" / "mae.pt")  # a pickled module, not a state dict
    with pytest.raises(ValueError, match=r"mae.pt is not a weights-only PyTorch checkpoint"):
        export_bundle(str(bundle), str(tmp_path / "dist"), config_overrides=QUICK)
    (bundle / "models" / "mae.pt").write_bytes(b"truncated")
    with pytest.raises(ValueError, match=r"mae.pt is not a weights-only PyTorch checkpoint"):
        export_bundle(str(bundle), str(tmp_path / "dist"), config_overrides=QUICK)
    assert list((tmp_path / "dist").glob("*")) == []


def test_a_failed_export_leaves_the_previous_one_intact(weighted, tmp_path, monkeypatch):
    bundle = weighted("cxr14_mae_classification")
    dist = tmp_path / "dist"
    first = export_bundle(str(bundle), str(dist), base_url=URL, config_overrides=QUICK)
    before = {p.name: p.read_bytes() for p in dist.iterdir()}
    write_quick_weights(bundle, seed=1)  # new weights, then the zip step fails half-way

    def failing_zip(folder, target, arc_root, skip):
        target.write_bytes(b"PK half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "_zip_folder", failing_zip)
    with pytest.raises(OSError, match="disk full"):
        export_bundle(str(bundle), str(dist), base_url=URL, config_overrides=QUICK)
    assert {p.name: p.read_bytes() for p in dist.iterdir()} == before  # no temporary left, nothing replaced
    assert zipfile.ZipFile(first["zip"]).testzip() is None


def test_light_zip_and_update_bundle(weighted, tmp_path):
    bundle = weighted("cxr14_mae_classification")
    with pytest.raises(ValueError, match="need --base_url"):
        export_bundle(str(bundle), str(tmp_path / "dist"), weights_in_zip=False, config_overrides=QUICK)
    out = export_bundle(
        str(bundle),
        str(tmp_path / "dist"),
        base_url=URL,
        weights_in_zip=False,
        update_bundle=True,
        config_overrides=QUICK,
    )
    with zipfile.ZipFile(out["zip"]) as zf:
        assert not [n for n in zf.namelist() if "/models/" in n]
        packed = zf.read("cxr14_mae_classification/large_files.yml").decode()
    assert out["large_files"] == str(bundle / "large_files.yml")
    updated = yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"]
    assert updated[:2] == yaml.safe_load(packed)["large_files"]  # the source bundle now lists the released files
    assert len(updated) == 2  # linear_probe.pt is absent: not listed


def test_command_line(weighted, tmp_path):
    bundle = weighted("cxr14_mae_classification", which=("model.pt",))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared_networks.cli.export",
            "--bundle",
            str(bundle),
            "--out",
            str(tmp_path / "dist"),
            "--base_url",
            URL,
            "--config_overrides",
            "quick",
        ],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "dist" / f"cxr14_mae_classification_v{CXR_VERSION}.zip").is_file()
    assert f"cxr14_mae_classification_v{CXR_VERSION}_model.pt" in run.stdout


def _unsafe_loads(source: str) -> list[int]:
    """Lines of ``torch.load(...)`` calls without ``weights_only=True`` in Python source."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
            kw = {k.arg: k.value for k in node.keywords}
            if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                lines.append(node.lineno)
    return lines


def test_every_checkpoint_load_is_weights_only():
    """A checkpoint is data: every ``torch.load`` in the code, tests, scripts and bundle configs passes
    ``weights_only=True`` (MONAI's CheckpointLoader, ignite's Checkpoint and monai.bundle's exports already do)."""
    assert _unsafe_loads("torch.load(p)\ntorch.load(p, weights_only=False)\ntorch.load(p, weights_only=True)") == [1, 2]
    found = {}
    code = [
        p
        for d in ("shared_networks", "tests", "scripts", "benchmarks", "monailabel_app", "bundles")
        for p in (REPO / d).glob("**/*.py")
    ]  # the project's code, not the environments beside it
    for path in sorted(code):
        if lines := _unsafe_loads(path.read_text(encoding="utf-8")):
            found[str(path.relative_to(REPO))] = lines
    for path in sorted(REPO.glob("bundles/*/configs/*.yaml")):
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                found.setdefault(str(path.relative_to(REPO)), []).append(i)
    assert found == {}


def test_override_spellings_give_the_same_release(weighted, tmp_path):
    """``quick``, ``configs/quick.yaml`` and the file's path name the same overrides; the release records them."""
    bundle = weighted("cxr14_mae_classification", which=("model.pt",))
    zips = [
        Path(export_bundle(str(bundle), str(tmp_path / str(i)), config_overrides=spec)["zip"]).read_bytes()
        for i, spec in enumerate(["quick", "configs/quick.yaml", [str(bundle / "configs" / "quick.yaml")]])
    ]
    assert zips[0] == zips[1] == zips[2]
    with zipfile.ZipFile(tmp_path / "0" / f"cxr14_mae_classification_v{CXR_VERSION}.zip") as zf:
        meta = json.loads(zf.read("cxr14_mae_classification/configs/metadata.json"))
    source = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [64, 64]  # quick.yaml's img_size
    assert meta["network_data_format"]["outputs"] == source["network_data_format"]["outputs"]  # class scores
    quick = yaml.safe_load((bundle / "configs" / "quick.yaml").read_text(encoding="utf-8"))
    assert meta["config_overrides"] == {"files": ["configs/quick.yaml"], "values": quick}


def test_without_overrides_the_configs_are_copied(weighted, tmp_path):
    """Weights that fit the configs as they are: the release holds them unchanged but for the package import."""
    from shared_networks.tools.bake_configs import bake_bundle_configs
    from shared_networks.tools.export import standalone_config_text

    bundle = weighted("cxr14_mae_classification", which=("model.pt",))
    baked = tmp_path / "baked"
    bake_bundle_configs(bundle / "configs", [bundle / "configs" / "quick.yaml"], baked)
    shutil.rmtree(bundle / "configs")
    shutil.move(baked, bundle / "configs")  # a bundle whose own configs are quick-size
    out = export_bundle(str(bundle), str(tmp_path / "dist"))
    with zipfile.ZipFile(out["zip"]) as zf:
        for f in (bundle / "configs").iterdir():
            packed = zf.read(f"cxr14_mae_classification/configs/{f.name}").decode()
            text = f.read_text(encoding="utf-8")
            assert packed == (standalone_config_text(text) if f.suffix == ".yaml" else text), f.name
        docs = zf.read("cxr14_mae_classification/docs/README.md").decode()
    assert link_texts(docs) == link_texts((bundle / "docs/README.md").read_text(encoding="utf-8"))  # no release note


def test_standalone_configs_import_the_packed_package():
    from shared_networks.tools.export import standalone_config_text

    text = (
        "imports:\n  - $import os\n  - $import shared_networks  # the package\nbundle_root: .\n"
        "net:\n  _target_: shared_networks.UNETR  # comment with shared_networks.X\n  a: 1\n"
        "xs:\n  - _target_: shared_networks.Foo\n"
        "inputs: $shared_networks.list_image_inputs(@dataset_dir)  # shared_networks.list_image_inputs\n"
        "f: $shared_networks.case_name_formatter\nname: shared_networks.not_an_expression\n"
    )
    new = standalone_config_text(text)
    content = yaml.safe_load(new)
    assert content["imports"] == ["$import os", "$import sys", "$import os", "$import pkgutil"]
    assert content["net"]["_target_"] == "$@shared_networks.UNETR" and content["xs"][0]["_target_"].startswith("$@")
    assert content["inputs"] == "$@shared_networks.list_image_inputs(@dataset_dir)"
    assert content["f"] == "$@shared_networks.case_name_formatter"
    assert content["name"] == "shared_networks.not_an_expression"
    assert content["shared_networks"].startswith("$(sys.path.insert(0, os.path.abspath(@bundle_root))")
    assert "# comment with shared_networks.X" in new and "# shared_networks.list_image_inputs" in new
    # a config merged over another uses the item and does not define it
    merged = standalone_config_text("device: $shared_networks.local_device()\n")
    assert yaml.safe_load(merged) == {"device": "$@shared_networks.local_device()"}
    for path in sorted(REPO.glob("bundles/*/configs/*.yaml")):  # every bundle config rewrites (the edit checks itself)
        standalone_config_text(path.read_text(encoding="utf-8"))


def test_export_refuses_a_model_with_non_finite_values(weighted, tmp_path):
    import math

    bundle = weighted("btcv_mae_segmentation", which=("model.pt",))
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    key = sorted(state)[3]
    state[key] = state[key].clone().fill_(math.nan)
    torch.save(state, bundle / "models" / "model.pt")
    expected = rf"export {bundle / 'models' / 'model.pt'}: tensor '{key}'"
    with pytest.raises(shared_networks.NonFiniteError, match=expected):
        export_bundle(str(bundle), str(tmp_path / "dist"), config_overrides=QUICK)
    assert not list((tmp_path / "dist").glob("*.zip")) and not list((tmp_path / "dist").glob("*.sha256"))


def test_export_refuses_links_out_of_the_bundle_and_packs_links_inside_as_files(weighted, tmp_path):
    bundle = weighted("cxr14_mae_classification", which=("model.pt",))
    secret = tmp_path / "secret.txt"
    secret.write_text("not for release")
    (bundle / "docs" / "notes.md").symlink_to(secret)
    with pytest.raises(ValueError, match=r"refusing to export '.*docs/notes\.md': a symbolic link to '.*secret\.txt'"):
        export_bundle(str(bundle), str(tmp_path / "dist"), config_overrides=QUICK)
    (bundle / "docs" / "notes.md").unlink()
    (bundle / "docs" / "extra").symlink_to(tmp_path, target_is_directory=True)  # a linked folder out
    with pytest.raises(ValueError, match=r"docs/extra'"):
        export_bundle(str(bundle), str(tmp_path / "dist"), config_overrides=QUICK)
    (bundle / "docs" / "extra").unlink()
    outside_model = tmp_path / "model.pt"
    shutil.move(bundle / "models" / "model.pt", outside_model)
    (bundle / "models" / "model.pt").symlink_to(outside_model)
    with pytest.raises(ValueError, match=r"models/model\.pt'"):
        export_bundle(str(bundle), str(tmp_path / "dist"), config_overrides=QUICK)
    # a link inside the bundle is packed as the file it points to
    (bundle / "models" / "model.pt").unlink()
    shutil.move(outside_model, bundle / "models" / "model.pt")
    (bundle / "docs" / "copy.md").symlink_to(bundle / "docs" / "README.md")
    out = export_bundle(str(bundle), str(tmp_path / "dist"), config_overrides=QUICK)
    with zipfile.ZipFile(out["zip"]) as zf:
        names = zf.namelist()
        assert "cxr14_mae_classification/docs/copy.md" in names
        assert not any("secret" in n or "extra" in n for n in names)


def test_release_docs_link_only_inside_the_release(weighted, tmp_path):
    """The guide is packed as docs/guide/; every relative link of the release's Markdown leads to a file of the zip
    (and a heading of it), a link to anything the zip lacks is its plain text."""
    bundle = weighted("btcv_mae_segmentation", which=("model.pt",))
    readme = bundle / "docs" / "README.md"
    readme.write_text(
        readme.read_text(encoding="utf-8") + "\n## Release links\n\n"
        "See [the settings](../../../docs/settings.md#settings-against-the-reference) and "
        "[the chest X-ray bundle](../../cxr14_mae_classification/docs/README.md#small-data-recipe), "
        '[this section](#release-links), [the config](../configs/inference.yaml "baked"), '
        "[the web](https://example.org/x.md), `[code](../../../docs/gone.md)`, [a link over\ntwo lines](../../c/x.md)."
        "\n\n"
        "```bash\n# [fenced](../../../docs/gone.md)\n```\n",
        encoding="utf-8",
    )
    out = export_bundle(str(bundle), str(tmp_path / "dist"), config_overrides=QUICK)
    again = export_bundle(str(bundle), str(tmp_path / "again"), config_overrides=QUICK)
    assert Path(out["zip"]).read_bytes() == Path(again["zip"]).read_bytes()
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(out["zip"]).extractall(unpacked)
    root = (unpacked / "btcv_mae_segmentation").resolve()
    assert sorted(p.name for p in (root / "docs" / "guide").iterdir()) == GUIDE

    docs_links = load_docs_links()
    docs = sorted(root.rglob("*.md"))
    assert len(docs) == len(GUIDE) + 1
    for doc in docs:
        assert docs_links.broken_links(doc) == [], doc.relative_to(root)
        outside = [
            t
            for t in docs_links.local_links(doc)
            if not (doc.parent / t.partition("#")[0]).resolve().is_relative_to(root)
        ]
        assert outside == [], doc.relative_to(root)
    text = (root / "docs" / "README.md").read_text(encoding="utf-8")
    assert text.startswith("> **This release.**")
    assert "See [the settings](guide/settings.md#settings-against-the-reference) and the chest X-ray bundle, " in text
    assert '[this section](#release-links), [the config](../configs/inference.yaml "baked")' in text
    assert "[the web](https://example.org/x.md), `[code](../../../docs/gone.md)`, a link over\ntwo lines." in text
    assert "# [fenced](../../../docs/gone.md)\n" in text
    for page in GUIDE:  # the guide's pages: only their links changed
        packed = (root / "docs" / "guide" / page).read_text(encoding="utf-8")
        assert link_texts(packed) == link_texts((REPO / "docs" / page).read_text(encoding="utf-8")), page


def test_release_links_resolve_from_the_repository():
    """Targets resolve from the file's place in the repository: packed ones (files, folders) become release paths,
    the rest plain text; anchors, titles, images, code spans, fences, web links and line endings are respected."""
    repo = Path("/repo")
    packed = {
        repo / "bundles/b/docs/README.md": "docs/README.md",
        repo / "bundles/b/configs": "configs",
        repo / "bundles/b/configs/train.yaml": "configs/train.yaml",
        repo / "docs/settings.md": "docs/guide/settings.md",
        repo / "docs/training.md": "docs/guide/training.md",
        repo / "shared_networks/networks/mae.py": "shared_networks/networks/mae.py",
    }
    guide = (
        "[train](training.md#from-scratch) [own bundle](../bundles/b/docs/README.md#usage) "
        "[other](../bundles/c/docs/README.md) [bench](../benchmarks/README.md#gpu) [readme](../README.md)\n"
        "[mae](../shared_networks/networks/mae.py) [tool](../shared_networks/tools/export.py) "
        "![plot](plot.png) [`code` text](settings.md) [here](#top) [mail](mailto:a@b.org)\n"
    )
    assert release_links(guide, repo / "docs/settings.md", packed) == (
        "[train](training.md#from-scratch) [own bundle](../README.md#usage) other bench readme\n"
        "[mae](../../shared_networks/networks/mae.py) tool plot [`code` text](settings.md) [here](#top) "
        "[mail](mailto:a@b.org)\n"
    )
    bundle_doc = (
        '[cpu](../../../docs/settings.md#cpu "CPU") ![img](../../../docs/settings.md) [configs](../configs/)\r\n'
        "`[span](../../c/docs/README.md)` [c](../../c/docs/README.md) [over\ntwo lines](../../../docs/training.md#x)\n"
        "```\n[fenced](../../c/docs/README.md)\n```\n"
    )
    assert release_links(bundle_doc, repo / "bundles/b/docs/README.md", packed) == (
        '[cpu](guide/settings.md#cpu "CPU") ![img](guide/settings.md) [configs](../configs)\r\n'
        "`[span](../../c/docs/README.md)` c [over\ntwo lines](guide/training.md#x)\n"
        "```\n[fenced](../../c/docs/README.md)\n```\n"
    )
