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
  (:func:`standalone_config_text`): ``shared_networks: "$(sys.path.insert(0, os.path.abspath(@bundle_root)),
  pkgutil.resolve_name('shared_networks'))[1]"``, with every ``$shared_networks.x`` use written as
  ``$@shared_networks.x`` and every ``_target_: shared_networks.X`` as ``_target_: $@shared_networks.X``, so the
  bundle root is on ``sys.path`` before the first use.
- **Docs that read offline.** The repository's guide (``docs/*.md``) is packed as ``docs/guide/``, and every relative
  Markdown link of the packed ``.md`` files is rewritten (:func:`release_links`): to a file of the release, as its path
  in the release (anchor kept); to anything else (another bundle, the repository's README, benchmarks, tools), as its
  plain text. So no link of a downloaded release is broken.
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
import posixpath
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from shared_networks.networks.handoff import check_finite
from shared_networks.tools.bake_configs import bake_bundle_configs, read_overrides
from shared_networks.tools.bundle_checks import check_bundle, file_hash, find_config, read_large_files
from shared_networks.utils.files import atomic_write_text
from shared_networks.utils.flags import as_bool

__all__ = [
    "RUNTIME_PARTS", "export_bundle", "release_links", "render_large_files", "resolve_overrides",
    "standalone_config_text", "weights_check",
]  # fmt: skip

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
SHAPE_KEYS = ("roi_size", "img_size")  # the config key that sets the network's input size, per bundle

# released configs: the packed package is imported through a config item (see the module docs)
_IMPORT_LINE = re.compile(r"^(\s*-\s*)\$import shared_networks\s*(#.*)?$")
_TARGET = re.compile(r"^(\s*(?:-\s+)?_target_:\s*)shared_networks\.([\w.]+)(?=\s|$)")
_USE = re.compile(r"(?<![\w.@'\"])shared_networks\.")
# Markdown links (!?[text](target "title")) and code spans, as tests/test_docs_links.py reads them
_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)(\s+\"[^\"]*\")?\)")
_CODE_SPAN = re.compile(r"`[^`]*`")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")  # https:, mailto:, ...: not a relative link
_BOOT_IMPORTS = ("$import sys", "$import os", "$import pkgutil")
_BOOT = (
    "\n# The shared_networks packed at the bundle root, from any working directory: its folder goes on sys.path\n"
    "# before the first use (MONAI adds the bundle root only when run() starts). Written by the release export.\n"
    'shared_networks: "$(sys.path.insert(0, os.path.abspath(@bundle_root)), '
    "pkgutil.resolve_name('shared_networks'))[1]\"\n"
)


def _standalone_value(value: Any, key: str = "") -> Any:
    """What :func:`standalone_config_text` does to one parsed value (the check of its text edits)."""
    if isinstance(value, Mapping):
        return {k: _standalone_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        out = []
        for v in value:
            out += list(_BOOT_IMPORTS) if v == "$import shared_networks" else [_standalone_value(v)]
        return out
    if isinstance(value, str) and key == "_target_" and value.startswith("shared_networks."):
        return "$@" + value
    if isinstance(value, str) and value.startswith("$"):
        return _USE.sub("@shared_networks.", value)
    return value


def standalone_config_text(text: str) -> str:
    """One YAML config with its uses of the ``shared_networks`` package routed through a ``shared_networks`` config
    item that puts ``@bundle_root`` on ``sys.path`` first (comments and layout kept).

    ``$import shared_networks`` becomes ``$import sys``, ``$import os``, ``$import pkgutil`` and the item is appended;
    ``_target_: shared_networks.X`` becomes ``_target_: $@shared_networks.X``; ``shared_networks.`` in a ``$``
    expression becomes ``@shared_networks.``. A config that only uses the package (merged over one that imports it)
    gets the rewritten uses and no item. Raises ``AssertionError`` when the edit would change anything else.
    """
    lines, importing = [], False
    for line in text.splitlines():
        if m := _IMPORT_LINE.match(line):
            lines += [f"{m.group(1)}{imp}" for imp in _BOOT_IMPORTS]
            importing = True
        elif m := _TARGET.match(line):
            lines.append(f"{m.group(1)}$@shared_networks.{m.group(2)}{line[m.end() :]}")
        elif "$" in line and "shared_networks." in line:
            start = line.index("$")
            end = line.find(" #", start)
            end = len(line) if end < 0 else end
            lines.append(line[:start] + _USE.sub("@shared_networks.", line[start:end]) + line[end:])
        else:
            lines.append(line)
    new = "\n".join(lines) + "\n" + (_BOOT if importing else "")
    before, after = yaml.safe_load(text) or {}, yaml.safe_load(new) or {}
    expected = _standalone_value(before)
    if importing:
        expected["shared_networks"] = after.get("shared_networks")
    if after != expected or (importing and "shared_networks" in before):
        raise AssertionError("rewriting the shared_networks imports changed more than them")  # internal invariant
    return new


def resolve_overrides(bundle: Path, specs: str | Sequence[str] | None) -> list[Path]:
    """The override files named by ``specs``: a name (``quick`` -> ``configs/quick.yaml``), a path relative to the
    bundle (``configs/quick.yaml``) or any other path (relative to the working directory)."""
    if specs is None or specs == "":
        return []
    specs = [specs] if isinstance(specs, str) else list(specs)
    files = []
    for spec in specs:
        spec = str(spec)
        named = find_config(bundle, spec) if re.fullmatch(r"[\w-]+", spec) else None
        for candidate in (named, bundle / spec, Path(spec).expanduser()):
            if candidate is not None and candidate.is_file():
                files.append(candidate.resolve())
                break
        else:
            raise FileNotFoundError(
                f"config override {spec!r} is neither configs/{spec}.yaml of {bundle} nor a file (give a name such "
                f"as quick, configs/quick.yaml, or a path)."
            )
    return files


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


def release_links(text: str, doc: Path, packed: Mapping[Path, str]) -> str:
    """``text``, the Markdown of ``doc``, with its relative links made to work inside a release.

    Outside fenced blocks and code spans, each link's target is resolved from ``doc`` (``#anchor`` kept): a file or
    folder of ``packed`` becomes its path in the release, relative to ``doc``'s; any other target becomes the link's
    plain text. Web links (``https:``, ``mailto:``, ...) and ``#anchor`` links are kept. So in
    ``bundles/b/docs/README.md``, ``[cpu](../../../docs/settings.md#cpu)`` -> ``[cpu](guide/settings.md#cpu)`` and
    ``[c](../../c/docs/README.md)`` -> ``c``.

    Args:
        text: the Markdown of ``doc``.
        doc: where the file lies in the repository; its links are resolved from there.
        packed: what the release holds, as place in the repository -> path in the release (POSIX, from the bundle
            root); ``doc`` among them. Places are compared as written, normalised but not resolved.
    """
    here = posixpath.dirname(packed[doc]) or "."

    def rewrite(m: re.Match[str]) -> str:  # a link found in the masked text, read from ``text``
        label, target = text[m.start(1) : m.end(1)], text[m.start(2) : m.end(2)]
        file, hash_sign, anchor = target.partition("#")
        if not file or _SCHEME.match(target):
            return text[m.start() : m.end()]
        dest = packed.get(Path(os.path.normpath(doc.parent / file)))
        if dest is None:
            return label
        title = text[m.start(3) : m.end(3)] if m.group(3) else ""
        return f"{text[m.start() : m.start(1)]}{label}]({posixpath.relpath(dest, here)}{hash_sign}{anchor}{title})"

    # the text with fenced blocks and code spans blanked out, at the same offsets (a link's text may span lines)
    masked, fenced = [], False
    for line in text.splitlines(keepends=True):
        fence = line.startswith("```")
        fenced ^= fence
        body = line.rstrip("\r\n")
        if fence or fenced:
            masked.append(" " * len(body) + line[len(body) :])
        else:
            masked.append(_CODE_SPAN.sub(lambda c: "x" * len(c.group()), line))
    pieces, end = [], 0
    for m in _LINK.finditer("".join(masked)):
        pieces += [text[end : m.start()], rewrite(m)]
        end = m.end()
    return "".join(pieces) + text[end:]


def _rewrite_release_links(root: Path, home: Path, left_out: set[Path]) -> None:
    """Rewrite the links of every ``.md`` file staged in ``root`` (:func:`release_links`). ``home``: the bundle's
    place in the repository; ``left_out``: staged files the zip does not hold."""
    origins = {"docs/guide": GUIDE, PACKAGE.name: PACKAGE}  # release folder -> its place in the repository
    packed = {}
    for path in sorted(root.rglob("*")):
        if path in left_out:
            continue
        rel = path.relative_to(root).as_posix()
        folder = next((f for f in origins if rel == f or rel.startswith(f + "/")), None)
        packed[origins[folder] / rel[len(folder) + 1 :] if folder else home / rel] = rel
    for place, rel in packed.items():
        if rel.endswith(".md") and (root / rel).is_file():
            text = (root / rel).read_text(encoding="utf-8")
            (root / rel).write_text(release_links(text, place, packed), encoding="utf-8")


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


def _release_configs(src: Path, root: Path, overrides: list[Path]) -> dict[str, Any]:
    """Write ``root/configs``: ``overrides`` baked in, the package import made standalone, metadata and docs noting
    the overrides. Returns the baked values (empty without overrides)."""
    configs = root / "configs"
    if overrides:
        bake_bundle_configs(src / "configs", overrides, configs)
    else:
        shutil.copytree(src / "configs", configs, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for f in sorted(configs.glob("*.yaml")):
        f.write_text(standalone_config_text(f.read_text(encoding="utf-8")), encoding="utf-8")
    values = read_overrides(overrides) if overrides else {}
    if not values:
        return values
    names = [f"configs/{f.name}" if f.parent == (src / "configs").resolve() else f.name for f in overrides]
    meta_path = configs / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    shape = next((values[k] for k in SHAPE_KEYS if k in values), None)
    image = meta["network_data_format"]["inputs"]["image"]
    if shape is not None:
        for tensor in meta["network_data_format"]["outputs"].values():
            if tensor.get("spatial_shape") == image["spatial_shape"]:  # a segmentation: the output has the ROI's size
                tensor["spatial_shape"] = list(shape)
        image["spatial_shape"] = list(shape)
    meta["config_overrides"] = {"files": names, "values": values}
    meta_path.write_text(json.dumps(meta, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
    docs = root / "docs" / "README.md"
    if docs.is_file():
        listed = ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in values.items())
        note = (
            f"> **This release.** Its weights were trained with {' + '.join(f'`{n}`' for n in names)} merged last; "
            f"those values are baked into its configs (each baked line ends with `# from ...`), so the commands below "
            f"run as they are, without merging it again: {listed}. The same values are in `configs/metadata.json` "
            f"under `config_overrides`.\n\n"
        )
        docs.write_text(note + docs.read_text(encoding="utf-8"), encoding="utf-8")
    return values


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
    meta_path = src / "configs" / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} does not exist: {src} is not a bundle folder.")
    try:
        version = json.loads(meta_path.read_text(encoding="utf-8"))["version"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{meta_path} has no readable 'version': {e}") from e
    overrides = resolve_overrides(src, config_overrides)
    name, lf_path = src.name, src / "large_files.yml"
    entries = read_large_files(lf_path) if lf_path.is_file() else []
    for e in entries:
        rel = e.get("path") if isinstance(e, Mapping) else None
        if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ValueError(f"{lf_path}: each entry needs a 'path' inside the bundle, got {rel!r}.")
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

    stem = f"{name}_v{version}"
    out_dir = Path(out).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{stem}."))
    try:
        root = stage / name
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
        _release_configs(src, root, overrides)
        (root / PACKAGE.name).mkdir()
        for part in RUNTIME_PARTS:
            if (PACKAGE / part).is_dir():
                shutil.copytree(PACKAGE / part, root / PACKAGE.name / part, ignore=ignore)
            else:
                shutil.copy2(PACKAGE / part, root / PACKAGE.name / part)
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
        if base_url:
            header = (
                f"Weights of {name} v{version} with their sha256 (written by python -m shared_networks.cli.export).\n"
                "`python -m monai.bundle download_large_files --bundle_path .` downloads the missing ones and checks "
                "them."
            )
        else:
            header = (
                f"Weights of {name} v{version}: packed in the zip (models/); exported without --base_url, so none is\n"
                "listed here (an entry needs the URL it is downloaded from). See the .sha256 file beside the zip."
            )
        (root / "large_files.yml").write_text(render_large_files(filled, header), encoding="utf-8")
        left_out = set() if weights_in_zip else set(assets.values())
        _rewrite_release_links(root, src if src.is_relative_to(REPO) else REPO / "bundles" / name, left_out)
        check_bundle(root, net_in_out=False, torchscript=False, released=True)

        tmp_zip = stage / f"{stem}.zip"
        _zip_folder(root, tmp_zip, name, skip=left_out)
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
        kept = [e for e in entries if e["path"] not in present and e.get("url")]
        atomic_write_text(lf_path, render_large_files(filled + kept, header))
        written["large_files"] = str(lf_path)
    logger.info("exported %s", written["zip"])
    return written
