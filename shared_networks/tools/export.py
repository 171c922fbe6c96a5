"""Pack one bundle into a zip that runs on its own: configs, docs, LICENSE, weights and the ``shared_networks`` code.

Only the runtime layers of the package are packed (:data:`RUNTIME_PARTS`: the facade ``__init__.py``, ``utils``,
``networks``, ``engine``, ``data``); the data-set checks, phantoms, tools and command lines are not.

MONAI runs a bundle from its folder (``python -m monai.bundle run`` puts the working directory, and from ``run()``
on the bundle root, on ``sys.path``), so the ``shared_networks`` package packed at the bundle root is what the configs'
``$import shared_networks...`` lines load: the unpacked bundle needs MONAI and its listed packages, not this
repository. The weight files named in the bundle's ``large_files.yml`` are packed and listed there again with their
URL (``--base_url``) and sha256, so ``python -m monai.bundle download_large_files`` can fetch and check them.

    python -m shared_networks.cli.export --bundle bundles/btcv_mae_segmentation --out dist \\
        --base_url https://github.com/<owner>/<repo>/releases/download/v0.1.1

writes, all at once or not at all:

    dist/btcv_mae_segmentation_v0.1.1.zip            btcv_mae_segmentation/{configs,docs,LICENSE,large_files.yml,
                                                     models/*.pt,shared_networks/}
    dist/btcv_mae_segmentation_v0.1.1_model.pt       the weights again, to upload beside the zip (large_files.yml URLs)
    dist/btcv_mae_segmentation_v0.1.1_mae.pt
    dist/btcv_mae_segmentation_v0.1.1.sha256         ``sha256sum -c`` list of the files above
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from shared_networks.tools.bundle_checks import check_bundle, file_hash, find_config, read_large_files
from shared_networks.utils.files import atomic_write_text
from shared_networks.utils.flags import as_bool

__all__ = ["RUNTIME_PARTS", "export_bundle", "render_large_files", "weights_check"]

logger = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parents[1]
# what a bundle runs: the facade and the runtime layers (validation, synthetic, tools and cli stay out of a release)
RUNTIME_PARTS: tuple[str, ...] = ("__init__.py", "utils", "networks", "engine", "data")
# weight file -> (workflow config, network id) it must load into strictly
WEIGHT_NETWORKS = {
    "models/model.pt": ("inference", "network_def"),
    "models/mae.pt": ("pretrain", "mae_def"),
    "models/linear_probe.pt": ("inference", "network_def"),  # ChestX-ray14: the same classifier, encoder frozen
}
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same inputs give the same zip


def render_large_files(entries: Sequence[Mapping[str, str]], header: str) -> str:
    """``large_files.yml`` text: ``header`` as comments, then one ``path/url/hash_val/hash_type`` block per entry."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()] + ["large_files:"]
    for e in entries:
        lines.append(f"  - path: {json.dumps(e['path'])}")
        lines += [f"    {k}: {json.dumps(e.get(k, ''))}" for k in ("url", "hash_val", "hash_type")]
    return "\n".join(lines) + "\n"


def weights_check(bundle: Path, rel: str, config_overrides: Sequence[str] = ()) -> None:
    """Load ``bundle/rel`` with ``weights_only=True`` and, for model.pt and mae.pt, strictly into the network the
    bundle's configs build (``config_overrides`` merged last, e.g. ``configs/quick.yaml``).

    Raises ``ValueError`` naming the file when it is not a state dict or does not fit the network.
    """
    from monai.bundle import ConfigParser

    path = bundle / rel
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a weights-only PyTorch checkpoint: {type(e).__name__}: {e}") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} must hold a state dict (names -> tensors), got {type(state).__name__}.")
    workflow, net_id = WEIGHT_NETWORKS.get(rel, (None, None))
    config = find_config(bundle, workflow) if workflow else None
    if config is None:
        return
    parser = ConfigParser()
    files = [config, *(bundle / c for c in config_overrides)]
    parser.read_config([str(f) for f in files])
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content(net_id)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = str(e).splitlines()
        more = [f"... ({len(lines) - 4} more lines)"] if len(lines) > 4 else []
        detail = "\n".join([ln[:300] for ln in lines[:4]] + more)
        overrides = f" with {', '.join(config_overrides)}" if config_overrides else ""
        raise ValueError(
            f"{path} does not fit {net_id} of {config.name}{overrides} (trained with other settings? pass them as "
            f"--config_overrides): {detail}"
        ) from e


def _zip_folder(folder: Path, target: Path, arc_root: str, skip: set[Path]) -> None:
    """Deflate ``folder`` into ``target`` under ``arc_root/``, sorted, with fixed times and modes (reproducible)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_dir() or path in skip:
                continue
            info = zipfile.ZipInfo(f"{arc_root}/{path.relative_to(folder).as_posix()}", date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with open(path, "rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    with open(target, "rb+") as f:
        os.fsync(f.fileno())


def export_bundle(
    bundle: str,
    out: str = "dist",
    base_url: str | None = None,
    config_overrides: Sequence[str] = (),
    weights_in_zip: bool = True,
    update_bundle: bool = False,
) -> dict[str, str]:
    """Pack ``bundle`` into ``out/<name>_v<version>.zip`` with its weights and the ``shared_networks`` package.

    Args:
        bundle: bundle folder (``bundles/<name>``); ``models/model.pt`` must exist, the other weight files that
            ``large_files.yml`` lists (``models/mae.pt``, ...) are packed when present.
        out: output folder.
        base_url: where the weight files will be uploaded; each URL is ``<base_url>/<name>_v<version>_<file>``.
            Without it, URLs already in ``large_files.yml`` are kept (else left empty: the zip carries the weights).
        config_overrides: config files (relative to the bundle) merged last when checking that the weights fit the
            networks, e.g. ``['configs/quick.yaml']`` for weights trained with it.
        weights_in_zip: pack the weights in the zip; ``False`` gives a light zip whose weights are fetched with
            ``download_large_files`` (needs ``base_url``).
        update_bundle: also write the filled-in ``large_files.yml`` back into ``bundle``.

    Returns:
        The paths written: ``zip``, ``sha256`` and one ``weights:<path>`` per weight file.
    """
    weights_in_zip, update_bundle = as_bool(weights_in_zip, "weights_in_zip"), as_bool(update_bundle, "update_bundle")
    config_overrides = [config_overrides] if isinstance(config_overrides, str) else list(config_overrides)
    src = Path(bundle).expanduser().resolve()
    meta_path = src / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} does not exist: {src} is not a bundle folder.")
    try:
        version = json.loads(meta_path.read_text(encoding="utf-8"))["version"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{meta_path} has no readable 'version': {e}") from e
    name, lf_path = src.name, src / "large_files.yml"
    if not lf_path.is_file():
        raise FileNotFoundError(f"{lf_path} does not exist: it names the bundle's weight files.")
    entries = read_large_files(lf_path)
    for e in entries:
        rel = e.get("path") if isinstance(e, Mapping) else None
        if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ValueError(f"{lf_path}: each entry needs a 'path' inside the bundle, got {rel!r}.")
    listed = [e["path"] for e in entries]
    if "models/model.pt" not in listed:
        raise ValueError(f"{lf_path} does not list models/model.pt, the fine-tuned weights a bundle is released with.")
    if not (src / "models" / "model.pt").is_file():
        raise FileNotFoundError(
            f"{src / 'models' / 'model.pt'} does not exist: export a bundle after fine-tuning it (train.yaml writes "
            f"models/model.pt), or copy its weights there."
        )
    if not weights_in_zip and not base_url:
        raise ValueError("a zip without weights (--weights_in_zip false) needs --base_url to download them from.")
    present = [e for e in entries if (src / e["path"]).is_file()]
    for e in entries:
        if e not in present:
            logger.info("%s: %s is absent, not packed", name, e.get("path"))
    for e in present:
        weights_check(src, e["path"], config_overrides)

    stem = f"{name}_v{version}"
    out_dir = Path(out).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{stem}."))
    try:
        root = stage / name
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(src / "configs", root / "configs", ignore=ignore)
        for item in ("docs", "LICENSE"):
            if (src / item).is_dir():
                shutil.copytree(src / item, root / item, ignore=ignore)
            elif (src / item).is_file():
                shutil.copy2(src / item, root / item)
        (root / PACKAGE.name).mkdir()
        for part in RUNTIME_PARTS:
            if (PACKAGE / part).is_dir():
                shutil.copytree(PACKAGE / part, root / PACKAGE.name / part, ignore=ignore)
            else:
                shutil.copy2(PACKAGE / part, root / PACKAGE.name / part)
        filled, assets = [], {}
        for e in present:
            rel = e["path"]
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / rel, root / rel)
            asset = f"{stem}_{Path(rel).name}"
            url = f"{base_url.rstrip('/')}/{asset}" if base_url else e.get("url", "")
            filled.append({"path": rel, "url": url, "hash_val": file_hash(root / rel), "hash_type": "sha256"})
            assets[asset] = root / rel
        header = (
            f"Weights of {name} v{version} with their sha256 (written by python -m shared_networks.cli.export).\n"
            "`python -m monai.bundle download_large_files --bundle_path .` downloads the missing ones and checks them."
        )
        lf_text = render_large_files(filled, header)
        (root / "large_files.yml").write_text(lf_text, encoding="utf-8")
        check_bundle(root, net_in_out=False, released=bool(base_url))

        tmp_zip = stage / f"{stem}.zip"
        _zip_folder(root, tmp_zip, name, skip=set() if weights_in_zip else set(assets.values()))
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
        written = {"zip": str(out_dir / f"{stem}.zip"), "sha256": str(out_dir / f"{stem}.sha256"), **written}
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if update_bundle:
        kept = [e for e in entries if e not in present]
        atomic_write_text(lf_path, render_large_files(filled + kept, header))
        written["large_files"] = str(lf_path)
    logger.info("exported %s", written["zip"])
    return written

