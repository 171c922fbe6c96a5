"""Writes override files (e.g. ``configs/quick.yaml``) into a bundle's standalone configs, comments kept.

A release or a served bundle whose weights were trained with ``--config_file "['configs/train.yaml',
'configs/quick.yaml']"`` must run its documented commands (``--config_file configs/inference.yaml``) unchanged: its
configs have to hold the values the weights were trained with. :func:`bake_text` replaces the value of every top-level
key of the overrides that a config defines, in place, with a comment that names the override file and the value it
replaced; keys a config does not define are left out of it (that workflow does not read them).

    bake_bundle_configs("bundles/btcv_mae_segmentation/configs", ["configs/quick.yaml"], "dist/btcv/configs")
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["BAKED_MARK", "bake_bundle_configs", "bake_text", "read_overrides"]

BAKED_MARK = "# baked:"  # starts the header line of a baked config
_KEY = re.compile(r"^([A-Za-z_][\w#]*)\s*:(.*)$")


def read_overrides(files: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """The merged top-level pairs of YAML/JSON override files, later files winning.

    Raises:
        ValueError: naming the file whose content is not a mapping, or that has a nested ``a#b`` key (only top-level
            keys are baked; write the whole top-level value instead).
    """
    merged: dict[str, Any] = {}
    for f in files:
        text = Path(f).read_text(encoding="utf-8")
        content = yaml.safe_load(text) if str(f).endswith((".yaml", ".yml")) else json.loads(text)
        if not isinstance(content, Mapping):
            raise ValueError(f"override file '{f}' does not hold a mapping of config keys.")
        for key in content:
            if not isinstance(key, str) or "#" in key or key.startswith(("+", "%", "@", "$")):
                raise ValueError(f"override file '{f}': key '{key}' cannot be baked (top-level plain keys only).")
        merged.update(content)
    return merged


def _value_end(lines: list[str], start: int) -> int:
    """Index after the last line of the top-level value whose key is on ``lines[start]``.

    The value goes on over indented lines and block-list items (``- x``); blank lines and column-0 comments belong to
    it only when more of the value follows them.
    """
    last, j = start + 1, start + 1
    while j < len(lines):
        line = lines[j]
        if not line.strip() or line.startswith("#"):
            j += 1
        elif line[0] in " \t-":
            j += 1
            last = j
        else:
            break
    return last


def bake_text(text: str, overrides: Mapping[str, Any], source: str) -> tuple[str, list[str]]:
    """``text`` (one YAML config) with each top-level key of ``overrides`` it defines set to the override's value.

    Args:
        text: the config file's text.
        overrides: top-level key -> value (as :func:`read_overrides` returns).
        source: what the values come from, written into the comments (e.g. ``configs/quick.yaml``).

    Returns:
        The new text and the keys replaced. The text starts with a ``# baked:`` line naming ``source`` and the keys.
    """
    lines = text.splitlines()
    defined = yaml.safe_load(text) or {}
    baked: list[str] = []
    i = 0
    while i < len(lines):
        m = _KEY.match(lines[i])
        if m and m.group(1) in overrides and m.group(1) in defined:
            key = m.group(1)
            end = _value_end(lines, i)
            old = " ".join(s.split(" #")[0].strip() for s in [m.group(2), *lines[i + 1 : end]] if s.strip())
            old = old if len(old) <= 60 else old[:57] + "..."
            lines[i:end] = [f"{key}: {json.dumps(overrides[key])}  # from {source} (was: {old})"]
            baked.append(key)
        i += 1
    if yaml.safe_load("\n".join(lines)) != {**defined, **{k: overrides[k] for k in baked}}:
        raise AssertionError(f"baking {source} changed more than the keys {baked}")  # internal invariant
    header = f"{BAKED_MARK} {source} ({', '.join(baked) if baked else 'no key of it is read here'})"
    return "\n".join([header, *lines]) + "\n", baked


def bake_bundle_configs(
    configs_dir: str | os.PathLike,
    override_files: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    skip: Sequence[str] = (),
) -> dict[str, list[str]]:
    """Writes every YAML config of ``configs_dir`` to ``out_dir`` with ``override_files`` baked in.

    The override files themselves and those named in ``skip`` are not baked (nor written). Other files
    (``metadata.json``, ``logging.conf``) are copied unchanged.

    Returns:
        File name -> keys replaced in it.
    """
    src, out = Path(configs_dir), Path(out_dir)
    overrides = read_overrides(override_files)
    source = " + ".join(f"configs/{Path(f).name}" for f in override_files)
    own = {Path(f).resolve() for f in override_files}
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, list[str]] = {}
    for f in sorted(src.iterdir()):
        if not f.is_file() or f.name in skip or f.resolve() in own:
            continue
        text = f.read_text(encoding="utf-8")
        if f.suffix in (".yaml", ".yml") and overrides:
            text, report[f.name] = bake_text(text, overrides, source)
        (out / f.name).write_text(text, encoding="utf-8")
    return report
