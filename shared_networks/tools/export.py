"""Pack one bundle into a zip that runs as downloaded: configs, docs, LICENSE, weights and the ``shared_networks`` code.

Only the runtime layers of the package are packed (:data:`RUNTIME_PARTS`: the facade ``__init__.py``, ``utils``,
``networks``, ``engine``, ``data``, ``validation``: the training workflows check their split first); the phantoms,
tools and command lines are not.

- **Configs as the weights need them.** ``--config_overrides`` names the override files the weights were trained with
  (``quick``, ``configs/quick.yaml`` or any file path); their values are baked into the released configs
  (:func:`shared_networks.tools.bake_configs.bake_bundle_configs`: in place, comments kept, a ``# baked:`` header),
  the metadata's ``network_data_format`` takes the baked ROI size, and the release records the overrides (metadata
  ``config_overrides``, a note at the top of ``docs/README.md``). The weights must load strictly into the networks
  of the baked ``inference.yaml`` (and ``pretrain.yaml`` for ``models/mae.pt``), each read alone, so the release's
  documented commands run unchanged. Without overrides the configs are copied unchanged.
- **Any working directory, package not installed.** MONAI resolves a config's ``$import`` lines before it puts the
  bundle root on ``sys.path`` (only when ``run()`` starts), so ``--bundle_root <folder>`` from elsewhere would not
  find the packed package. The released configs import it through a config item instead
  (:func:`~shared_networks.tools.release_configs.standalone_config_text`): ``shared_networks:
  "$(sys.path.insert(0, os.path.abspath(@bundle_root)), pkgutil.resolve_name('shared_networks'))[1]"``, with every
  ``$shared_networks.x`` use written as ``$@shared_networks.x`` and every ``_target_: shared_networks.X`` as
  ``_target_: $@shared_networks.X``, so the bundle root is on ``sys.path`` before the first use.
- **Docs that read offline.** The repository's guide (``docs/*.md``) is packed as ``docs/guide/``, and every relative
  Markdown link of the packed ``.md`` files is rewritten (:func:`~shared_networks.tools.release_docs.release_links`):
  to a file of the release, as its path in the release (anchor kept); to anything else (another bundle, the
  repository's README, benchmarks, tools), as its plain text. So no link of a downloaded release is broken.
- **Weights with URL and sha256.** With ``--base_url``, ``large_files.yml`` lists each weight file with its URL
  (``<base_url>/<name>_v<version>_<file>``) and sha256, so ``python -m monai.bundle download_large_files`` can
  fetch and check them; without it the weights travel in the zip only and ``large_files.yml`` lists none (an entry
  needs a real URL).

    python -m shared_networks.cli.export --bundle bundles/btcv_mae_segmentation --out dist \\
        --base_url https://github.com/<owner>/<repo>/releases/download/v0.3.0 --config_overrides quick

writes, all at once or not at all:

    dist/btcv_mae_segmentation_v0.3.0.zip            btcv_mae_segmentation/{configs,docs,docs/guide,LICENSE,
                                                     large_files.yml,models/*.pt,shared_networks/}
    dist/btcv_mae_segmentation_v0.3.0_model.pt       the weights again, to upload beside the zip (large_files.yml URLs)
    dist/btcv_mae_segmentation_v0.3.0_mae.pt
    dist/btcv_mae_segmentation_v0.3.0.sha256         ``sha256sum -c`` list of the files above
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from shared_networks.networks.handoff import check_finite
from shared_networks.tools.bundle_checks import check_bundle, file_hash, find_config, read_large_files
from shared_networks.tools.release_configs import release_configs, resolve_overrides, standalone_config_text
from shared_networks.tools.release_docs import release_links, rewrite_release_links
from shared_networks.utils.files import atomic_write_text
from shared_networks.utils.flags import as_bool

__all__ = [
    "RUNTIME_PARTS",
    "export_bundle",
    "release_links",
    "render_large_files",
    "resolve_overrides",
    "standalone_config_text",
    "weights_check",
]

logger = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parents[1]
REPO = PACKAGE.parent  # the repository the package is exported from: its guide and its bundles
GUIDE = REPO / "docs"  # the guide the bundles' docs link into, packed as docs/guide/ (its *.md)
# what a bundle runs: the facade and the runtime layers (synthetic, tools and cli stay out of a release)
RUNTIME_PARTS: tuple[str, ...] = ("__init__.py", "utils", "networks", "engine", "data", "validation")
# weight file -> (workflow config, network id) it must load into strictly
WEIGHT_NETWORKS = {
    "models/model.pt": ("inference", "network_def"),
    "models/mae.pt": ("pretrain", "mae_def"),
    "models/linear_probe.pt": ("inference", "network_def"),  # ChestX-ray14: the same classifier, encoder frozen
}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same inputs give the same zip


def render_large_files(entries: Sequence[Mapping[str, str]], header: str) -> str:
    """``large_files.yml`` text: ``header`` as comments, then one ``path/url/hash_val/hash_type`` block per entry."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    if not entries:
        return "\n".join([*lines, "large_files: []"]) + "\n"
    lines.append("large_files:")
    for e in entries:
        lines.append(f"  - path: {json.dumps(e['path'])}")
        lines += [f"    {k}: {json.dumps(e.get(k, ''))}" for k in ("url", "hash_val", "hash_type")]
    return "\n".join(lines) + "\n"


def weights_check(
    bundle: Path, rel: str, config_overrides: Sequence[str | os.PathLike] = (), source: str | os.PathLike | None = None
) -> None:
    """Load ``bundle/rel`` with ``weights_only=True``, check that every tensor is finite and, for model.pt, mae.pt and
    linear_probe.pt, load it strictly into the network the bundle's config builds, read alone (``config_overrides``
    merged last, paths relative to ``bundle``).

    Raises ``ValueError`` naming the file (``source`` when given: the file a staged copy came from) when it is not a
    state dict or does not fit the network, ``NonFiniteError`` naming it and the first tensor with NaN or inf values.
    """
    from monai.bundle import ConfigParser

    path = bundle / rel
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a weights-only PyTorch checkpoint: {type(e).__name__}: {e}") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} must hold a state dict (names -> tensors), got {type(state).__name__}.")
    check_finite(
        state,
        f"refusing to export {source or path}",
        "the model was trained on bad data or diverged; retrain it after checking the data",
    )
    workflow, net_id = WEIGHT_NETWORKS.get(rel, (None, None))
    config = find_config(bundle, workflow) if workflow else None
    if config is None:
        return
    parser = ConfigParser()
    parser.read_config([str(f) for f in [config, *(bundle / c for c in config_overrides)]])
    parser["bundle_root"] = str(bundle)
    saved_path = list(sys.path)  # a released config puts its bundle root on sys.path: not in this process for good
    try:
        network = parser.get_parsed_content(net_id)
    finally:
        sys.path[:] = saved_path
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = str(e).splitlines()
        more = [f"... ({len(lines) - 4} more lines)"] if len(lines) > 4 else []
        detail = "\n".join([ln[:300] for ln in lines[:4]] + more)
        overrides = f" with {', '.join(str(c) for c in config_overrides)}" if config_overrides else ""
        raise ValueError(
            f"{path} does not fit {net_id} of {config.name}{overrides} (trained with other settings? pass them as "
            f"--config_overrides, e.g. --config_overrides quick): {detail}"
        ) from e


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == r or path.is_relative_to(r) for r in roots)


def check_packed_files(paths: Sequence[Path], roots: Sequence[Path]) -> None:
    """Refuse to pack anything but regular files and folders inside ``roots``: for each of ``paths`` (a file or a
    folder, walked without following links) a symbolic link whose target lies outside ``roots``, a dangling link, or
    a special file (FIFO, socket, device) raises ``ValueError`` naming it. A link to a file or folder inside
    ``roots`` is packed as what it points to."""
    roots = [Path(r).resolve() for r in roots]

    def check(entry: Path) -> None:
        if entry.is_symlink():
            target = entry.resolve()
            if not target.exists():
                raise ValueError(f"refusing to export '{entry}': a symbolic link to '{target}', which does not exist.")
            if not _inside(target, roots):
                raise ValueError(
                    f"refusing to export '{entry}': a symbolic link to '{target}', outside the bundle and the "
                    f"package ({', '.join(map(str, roots))}). Copy the file into the bundle, or remove the link."
                )
        elif not (entry.is_file() or entry.is_dir()):
            raise ValueError(f"refusing to export '{entry}': not a regular file or folder.")

    for top in paths:
        if not (top.exists() or top.is_symlink()):
            continue
        check(top)
        if top.is_dir():
            for dirpath, dirnames, filenames in os.walk(top.resolve(), followlinks=False):
                for name in sorted(dirnames + filenames):
                    check(Path(dirpath) / name)
                    # a linked folder inside the roots is copied (walked) as the folder it points to
                    if name in dirnames and (Path(dirpath) / name).is_symlink():
                        check_packed_files([(Path(dirpath) / name).resolve()], roots)


def _zip_folder(folder: Path, target: Path, arc_root: str, skip: set[Path]) -> None:
    """Deflate ``folder`` into ``target`` under ``arc_root/``, sorted, with fixed times and modes (reproducible).
    Only regular files are packed: a symbolic link or a special file in ``folder`` raises ``ValueError``."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise ValueError(f"refusing to pack '{path}': not a regular file.")
            if path.is_dir() or path in skip:
                continue
            info = zipfile.ZipInfo(f"{arc_root}/{path.relative_to(folder).as_posix()}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(path, "rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    with open(target, "rb+") as f:
        os.fsync(f.fileno())


def _bundle_version(src: Path) -> str:
    """The ``version`` of ``src/configs/metadata.json``; raises naming the file when it is missing or unreadable."""
    meta_path = src / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} does not exist: {src} is not a bundle folder.")
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))["version"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{meta_path} has no readable 'version': {e}") from e


def _large_file_entries(lf_path: Path) -> list[dict[str, Any]]:
    """The entries of the bundle's ``large_files.yml`` (none without the file), each with a ``path`` inside the
    bundle (else ``ValueError``)."""
    entries = read_large_files(lf_path) if lf_path.is_file() else []
    for e in entries:
        rel = e.get("path") if isinstance(e, Mapping) else None
        if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ValueError(f"{lf_path}: each entry needs a 'path' inside the bundle, got {rel!r}.")
    return entries


def _packed_sources(
    src: Path, entries: Sequence[Mapping[str, Any]], base_url: str | None, weights_in_zip: bool, update_bundle: bool
) -> tuple[list[str], list[Path]]:
    """Check what the release will pack: ``models/model.pt`` is there, the options fit, nothing leads out of the
    bundle, the guide and the package (:func:`check_packed_files`).

    Returns:
        ``(weights, guide)``: the weight files present (paths relative to ``src``: :data:`WEIGHT_NETWORKS` and the
        files ``large_files.yml`` lists) and the guide's pages.
    """
    if not (src / "models" / "model.pt").is_file():
        raise FileNotFoundError(
            f"{src / 'models' / 'model.pt'} does not exist: export a bundle after fine-tuning it (train.yaml writes "
            f"models/model.pt), or copy its weights there."
        )
    if not base_url and (not weights_in_zip or update_bundle):
        raise ValueError("--weights_in_zip false and --update_bundle true need --base_url (the weights' URLs).")
    candidates = list(dict.fromkeys([*WEIGHT_NETWORKS, *(e["path"] for e in entries)]))
    present = [rel for rel in candidates if (src / rel).is_file()]
    if (src / "docs" / "guide").exists():
        raise ValueError(f"{src / 'docs' / 'guide'}: a release packs the repository's guide there; rename it.")
    guide = sorted(GUIDE.glob("*.md"))
    # only regular files of the bundle, the guide and the package: no link (or linked folder) that leads out of them
    packed = [src / "docs", src / "LICENSE", src / "configs", *guide, *(PACKAGE / p for p in RUNTIME_PARTS)]
    check_packed_files([*packed, *(src / rel for rel in present)], [src, GUIDE, PACKAGE])
    return present, guide


def _stage_bundle(src: Path, root: Path, overrides: list[Path], guide: Sequence[Path]) -> None:
    """Copy into ``root`` the bundle's docs and LICENSE, the guide as ``docs/guide/``, the released configs
    (:func:`~shared_networks.tools.release_configs.release_configs`) and the runtime layers of the package
    (:data:`RUNTIME_PARTS`)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for item in ("docs", "LICENSE"):
        if (src / item).is_dir():
            shutil.copytree(src / item, root / item, ignore=ignore)
        elif (src / item).is_file():
            shutil.copy2(src / item, root / item)
    if guide:
        (root / "docs" / "guide").mkdir(parents=True)
    for page in guide:
        shutil.copyfile(page, root / "docs" / "guide" / page.name)
    release_configs(src, root, overrides)
    (root / PACKAGE.name).mkdir()
    for part in RUNTIME_PARTS:
        if (PACKAGE / part).is_dir():
            shutil.copytree(PACKAGE / part, root / PACKAGE.name / part, ignore=ignore)
        else:
            shutil.copy2(PACKAGE / part, root / PACKAGE.name / part)


def _stage_weights(
    src: Path, root: Path, present: Sequence[str], stem: str, base_url: str | None
) -> tuple[list[dict[str, str]], dict[str, Path]]:
    """Copy the weight files into ``root`` and check each (:func:`weights_check`).

    Returns:
        ``(filled, assets)``: the ``large_files.yml`` entries (with ``base_url`` only) and, per weight file, its
        release asset name (``<stem>_<file>``) -> its staged copy.
    """
    filled, assets = [], {}
    for rel in present:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, root / rel)
        weights_check(root, rel, source=src / rel)  # finite; the released configs, each read alone
        asset = f"{stem}_{Path(rel).name}"
        if base_url:
            url = f"{base_url.rstrip('/')}/{asset}"
            filled.append({"path": rel, "url": url, "hash_val": file_hash(root / rel), "hash_type": "sha256"})
        assets[asset] = root / rel
    return filled, assets


def _large_files_header(name: str, version: str, base_url: str | None) -> str:
    """The comment at the top of the release's ``large_files.yml``."""
    if base_url:
        return (
            f"Weights of {name} v{version} with their sha256 (written by python -m shared_networks.cli.export).\n"
            "`python -m monai.bundle download_large_files --bundle_path .` downloads the missing ones and checks "
            "them."
        )
    return (
        f"Weights of {name} v{version}: packed in the zip (models/); exported without --base_url, so none is\n"
        "listed here (an entry needs the URL it is downloaded from). See the .sha256 file beside the zip."
    )


def _publish(
    stage: Path, root: Path, stem: str, out_dir: Path, assets: Mapping[str, Path], left_out: set[Path]
) -> dict[str, str]:
    """Zip the staged ``root`` (but ``left_out``) and list the sha256 of the zip and the weights, then move them into
    ``out_dir``. Returns the paths written: ``zip``, ``sha256`` and one ``weights:<path>`` per weight file."""
    tmp_zip = stage / f"{stem}.zip"
    _zip_folder(root, tmp_zip, root.name, skip=left_out)
    sums = {f"{stem}.zip": file_hash(tmp_zip)} | {a: file_hash(p) for a, p in assets.items()}
    tmp_sums = stage / f"{stem}.sha256"
    tmp_sums.write_text("".join(f"{h}  {f}\n" for f, h in sums.items()), encoding="utf-8")
    # publish: weights first, the zip and its checksum list last, each by an atomic rename in the same folder
    written = {}
    for asset, path in assets.items():
        os.replace(path, out_dir / asset)
        written[f"weights:{path.relative_to(root).as_posix()}"] = str(out_dir / asset)
    os.replace(tmp_zip, out_dir / f"{stem}.zip")
    os.replace(tmp_sums, out_dir / f"{stem}.sha256")
    return {"zip": str(out_dir / f"{stem}.zip"), "sha256": str(out_dir / f"{stem}.sha256"), **written}


def export_bundle(
    bundle: str,
    out: str = "dist",
    base_url: str | None = None,
    config_overrides: str | Sequence[str] | None = None,
    weights_in_zip: bool = True,
    update_bundle: bool = False,
) -> dict[str, str]:
    """Pack ``bundle`` into ``out/<name>_v<version>.zip`` with its weights and the ``shared_networks`` package.

    Args:
        bundle: bundle folder (``bundles/<name>``); ``models/model.pt`` must exist; ``models/mae.pt`` and
            ``models/linear_probe.pt`` (and any other file ``large_files.yml`` lists) are packed when present.
        out: output folder.
        base_url: where the weight files will be uploaded; each URL is ``<base_url>/<name>_v<version>_<file>``.
            Without it the weights travel in the zip only and the release's ``large_files.yml`` lists none.
        config_overrides: the override files the weights were trained with, baked into the released configs: names
            (``quick``), paths relative to the bundle (``configs/quick.yaml``) or other paths; a list for several
            (later ones win).
        weights_in_zip: pack the weights in the zip; ``False`` gives a light zip whose weights are fetched with
            ``download_large_files`` (needs ``base_url``).
        update_bundle: also write the filled-in ``large_files.yml`` back into ``bundle`` (needs ``base_url``).

    Returns:
        The paths written: ``zip``, ``sha256`` and one ``weights:<path>`` per weight file.
    """
    weights_in_zip, update_bundle = as_bool(weights_in_zip, "weights_in_zip"), as_bool(update_bundle, "update_bundle")
    src = Path(bundle).expanduser().resolve()
    version = _bundle_version(src)
    overrides = resolve_overrides(src, config_overrides)
    name, lf_path = src.name, src / "large_files.yml"
    entries = _large_file_entries(lf_path)
    present, guide = _packed_sources(src, entries, base_url, weights_in_zip, update_bundle)

    stem, header = f"{name}_v{version}", _large_files_header(name, version, base_url)
    out_dir = Path(out).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{stem}."))
    try:
        root = stage / name
        _stage_bundle(src, root, overrides, guide)
        filled, assets = _stage_weights(src, root, present, stem, base_url)
        (root / "large_files.yml").write_text(render_large_files(filled, header), encoding="utf-8")
        left_out = set() if weights_in_zip else set(assets.values())
        home = src if src.is_relative_to(REPO) else REPO / "bundles" / name  # the bundle's place in the repository
        rewrite_release_links(root, home, left_out, {"docs/guide": GUIDE, PACKAGE.name: PACKAGE})
        # the installed versions are no property of the release: the requirements check is left to bundle_checks
        check_bundle(root, net_in_out=False, torchscript=False, released=True, requirements=False)
        written = _publish(stage, root, stem, out_dir, assets, left_out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if update_bundle:
        kept = [e for e in entries if e["path"] not in present and e.get("url")]
        atomic_write_text(lf_path, render_large_files(filled + kept, header))
        written["large_files"] = str(lf_path)
    logger.info("exported %s", written["zip"])
    return written
