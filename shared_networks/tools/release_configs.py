"""The configs of a release (:mod:`shared_networks.tools.export`): the override files the weights were trained with
baked in, and the packed package imported through a config item so that they run from any working directory.

- ``--config_overrides`` names the override files (:func:`resolve_overrides`: ``quick``, ``configs/quick.yaml`` or any
  file path); their values are baked into the released configs
  (:func:`shared_networks.tools.bake_configs.bake_bundle_configs`: in place, comments kept, a ``# baked:`` header),
  the metadata's ``network_data_format`` takes the baked ROI size, and the release records the overrides (metadata
  ``config_overrides``, a note at the top of ``docs/README.md``). Without overrides the configs are copied unchanged.
- MONAI resolves a config's ``$import`` lines before it puts the bundle root on ``sys.path`` (only when ``run()``
  starts), so the released configs import the package through a config item (:func:`standalone_config_text`).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from shared_networks.tools.bake_configs import bake_bundle_configs, read_overrides
from shared_networks.tools.bundle_checks import find_config

__all__ = ["SHAPE_KEYS", "release_configs", "resolve_overrides", "standalone_config_text"]

SHAPE_KEYS = ("roi_size", "img_size")  # the config key that sets the network's input size, per bundle

# the packed package is imported through a config item (see the module docs)
_IMPORT_LINE = re.compile(r"^(\s*-\s*)\$import shared_networks\s*(#.*)?$")
_TARGET = re.compile(r"^(\s*(?:-\s+)?_target_:\s*)shared_networks\.([\w.]+)(?=\s|$)")
_USE = re.compile(r"(?<![\w.@'\"])shared_networks\.")
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


def release_configs(src: Path, root: Path, overrides: list[Path]) -> dict[str, Any]:
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
