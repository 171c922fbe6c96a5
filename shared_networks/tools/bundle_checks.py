"""The checks the MONAI model-zoo runs on a bundle, offline: files, metadata, large_files.yml, network input/output.

Model-zoo's CI (``ci/verify_bundle.py``) checks that the bundle holds ``LICENSE``, ``configs/metadata.json``, an
inference config and the weights (or a ``large_files.yml`` that fetches them); that ``version`` is a key of
``changelog``; that ``metadata.json`` validates against the bundle schema (``meta_schema_20240725.json``, which
``monai.bundle verify_metadata`` downloads); and runs ``monai.bundle verify_net_in_out`` on ``network_def`` of the
inference config. Here the schema's required fields and types are written out (no download), with the tensor keys
the MONAI bundle specification lists (type, format, modality, num_channels, spatial_shape, dtype, value_range,
is_patch_data, channel_def) required for every input and output.

    python -m shared_networks.cli.bundle_checks bundles/btcv_mae_segmentation
    python -m shared_networks.cli.bundle_checks bundles/btcv_mae_segmentation --net_in_out false   # no network built
    python -m shared_networks.cli.bundle_checks dist/btcv_mae_segmentation --released true        # URLs, hashes set
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml
from packaging.version import InvalidVersion, Version

from shared_networks.utils.flags import as_bool

__all__ = [
    "BundleCheckError", "HASH_TYPES", "check_bundle", "check_large_files", "check_metadata",
    "check_net_in_out", "check_required_files", "file_hash", "find_config", "read_large_files",
]  # fmt: skip

logger = logging.getLogger(__name__)

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
REQUIRED_FILES = ("LICENSE", "configs/metadata.json", "docs/README.md")
HASH_TYPES = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}

# meta_schema_20240725.json: top-level properties and their JSON types; "changelog" is required by model-zoo's CI
METADATA_TYPES = {
    "schema": "string", "version": "string", "changelog": "object", "monai_version": "string",
    "pytorch_version": "string", "numpy_version": "string", "required_packages_version": "object", "task": "string",
    "description": "string", "authors": "string", "copyright": "string", "data_source": "string",
    "data_type": "string", "image_classes": "string", "label_classes": "string", "pred_classes": "string",
    "eval_metrics": "object", "intended_use": "string", "references": "array", "supported_apps": "object",
    "network_data_format": "object", "name": "string",
}  # fmt: skip
METADATA_REQUIRED = (
    "schema", "version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
    "task", "description", "authors", "copyright", "network_data_format",
)  # fmt: skip
# a tensor of network_data_format: the schema requires the first six, the bundle specification lists all nine
TENSOR_TYPES = {
    "type": "string", "format": "string", "modality": "string", "num_channels": "integer", "spatial_shape": "array",
    "dtype": "string", "value_range": "array", "is_patch_data": "boolean", "channel_def": "object",
}  # fmt: skip
# the names monai.bundle verify_net_in_out / ckpt_export read: inputs#image and outputs#pred
TENSOR_NAMES = {"inputs": "image", "outputs": "pred"}
DTYPES = ("float16", "float32", "float64", "bfloat16", "uint8", "int8", "int16", "int32", "int64", "bool")


class BundleCheckError(ValueError):
    """A bundle failed one or more checks; ``problems`` lists them, each naming the file."""

    def __init__(self, bundle: str | os.PathLike, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"bundle {bundle} failed {len(self.problems)} check(s):\n  " + "\n  ".join(self.problems))


def _json_type(value: Any) -> str:
    """The JSON-schema type name of a value parsed from JSON/YAML (bool is not an integer)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return "null" if value is None else type(value).__name__


def _type_ok(value: Any, expected: str) -> bool:
    got = _json_type(value)
    return got == expected or (expected == "number" and got == "integer")


def _version_problem(value: str) -> str | None:
    try:
        Version(value)
    except InvalidVersion:
        return f"{value!r} is not a version number"
    return None


def find_config(bundle: str | os.PathLike, name: str) -> Path | None:
    """``configs/<name>.json|yaml|yml`` of ``bundle``, or None."""
    for suffix in CONFIG_SUFFIXES:
        path = Path(bundle) / "configs" / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def _find_large_files(bundle: str | os.PathLike) -> Path | None:
    for suffix in CONFIG_SUFFIXES:
        path = Path(bundle) / f"large_files{suffix}"
        if path.is_file():
            return path
    return None


def file_hash(path: str | os.PathLike, hash_type: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    h = hashlib.new(hash_type)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_large_files(path: str | os.PathLike) -> list[dict]:
    """The ``large_files`` list of a ``large_files.yml`` (or .yaml/.json); ``ValueError`` naming the file if absent."""
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML/JSON: {e}") from e
    if not isinstance(content, Mapping) or not isinstance(content.get("large_files"), list):
        raise ValueError(f"{path} must hold a 'large_files' list of {{path, url, hash_val, hash_type}} entries.")
    return content["large_files"]


def check_required_files(bundle: str | os.PathLike) -> list[str]:
    """Files model-zoo requires (LICENSE, configs/metadata.json) and prefers (an inference config, models/model.pt),
    plus docs/README.md. ``models/model.pt`` may be absent when ``large_files.yml`` lists it."""
    bundle = Path(bundle)
    problems = [f"{bundle / f}: required file is missing" for f in REQUIRED_FILES if not (bundle / f).is_file()]
    if find_config(bundle, "inference") is None:
        problems.append(f"{bundle / 'configs'}: no inference config (inference.json, .yaml or .yml)")
    if not (bundle / "models" / "model.pt").is_file():
        lf = _find_large_files(bundle)
        try:
            listed = lf is not None and any(
                isinstance(e, Mapping) and e.get("path") == "models/model.pt" for e in read_large_files(lf)
            )
        except ValueError:
            listed = False  # reported by check_large_files
        if not listed:
            problems.append(f"{bundle / 'models/model.pt'}: missing, and no large_files.yml entry downloads it")
    return problems


def _check_tensor(tensor: Any, where: str) -> list[str]:
    if not isinstance(tensor, Mapping):
        return [f"{where}: must be an object describing a tensor, got {_json_type(tensor)}"]
    problems = []
    for key, expected in TENSOR_TYPES.items():
        if key not in tensor:
            problems.append(f"{where}#{key}: required field is missing")
        elif not _type_ok(tensor[key], expected):
            problems.append(f"{where}#{key}: must be of type {expected}, got {_json_type(tensor[key])}")
    if problems:
        return problems
    n = tensor["num_channels"]
    if n < 1:
        problems.append(f"{where}#num_channels: must be positive, got {n}")
    for s in tensor["spatial_shape"]:
        if not (isinstance(s, str) and s) and not (_json_type(s) == "integer" and s > 0):
            problems.append(f"{where}#spatial_shape: items must be positive integers or expressions, got {s!r}")
    vr = tensor["value_range"]
    if len(vr) not in (0, 2) or not all(_type_ok(v, "number") for v in vr) or (len(vr) == 2 and vr[0] > vr[1]):
        problems.append(f"{where}#value_range: must be [] or [min, max] numbers, got {vr!r}")
    if tensor["dtype"] not in DTYPES:
        problems.append(f"{where}#dtype: {tensor['dtype']!r} is not one of {', '.join(DTYPES)}")
    if n >= 1 and set(tensor["channel_def"]) != {str(i) for i in range(n)}:
        problems.append(
            f"{where}#channel_def: must describe channels '0'..'{n - 1}' (num_channels {n}), "
            f"got keys {sorted(tensor['channel_def'])}"
        )
    return problems


def check_metadata(metadata: Mapping[str, Any], path: str | os.PathLike = "configs/metadata.json") -> list[str]:
    """Fields and types of the bundle schema (meta_schema_20240725), ``version`` in ``changelog`` and the newest."""
    problems = [f"{path}: {key}: required field is missing" for key in METADATA_REQUIRED if key not in metadata]
    for key, expected in METADATA_TYPES.items():
        if key in metadata and not _type_ok(metadata[key], expected):
            problems.append(f"{path}: {key}: must be of type {expected}, got {_json_type(metadata[key])}")
    if problems:
        return problems
    for key in ("version", "monai_version", "pytorch_version", "numpy_version"):
        if (p := _version_problem(metadata[key])) is not None:
            problems.append(f"{path}: {key}: {p}")
    for name, version in metadata["required_packages_version"].items():
        if not isinstance(version, str) or _version_problem(version) is not None:
            problems.append(f"{path}: required_packages_version#{name}: {version!r} is not a version string")
    if not all(isinstance(r, str) for r in metadata.get("references", [])):
        problems.append(f"{path}: references: must be a list of strings")
    version, changelog = metadata["version"], metadata["changelog"]
    if version not in changelog:
        problems.append(f"{path}: version {version!r} is missing from changelog (keys: {sorted(changelog)})")
    bad = [k for k in changelog if _version_problem(k) is not None]
    if bad:
        problems.append(f"{path}: changelog: keys {bad} are not version numbers")
    elif _version_problem(version) is None and changelog and Version(version) < max(Version(k) for k in changelog):
        problems.append(f"{path}: version {version!r} is older than the newest changelog entry")
    ndf = metadata["network_data_format"]
    for part, name in TENSOR_NAMES.items():
        tensors = ndf.get(part)
        where = f"{path}: network_data_format#{part}"
        if not isinstance(tensors, Mapping):
            problems.append(f"{where}: required object is missing")
        elif name not in tensors:
            problems.append(f"{where}: needs a '{name}' entry (read by monai.bundle verify_net_in_out)")
        else:
            for key, tensor in tensors.items():
                problems += _check_tensor(tensor, f"{where}#{key}")
    return problems


def check_large_files(bundle: str | os.PathLike, released: bool = False) -> list[str]:
    """Entries of ``large_files.yml``: path inside the bundle, hash type and length, the hash of a present file.

    Args:
        bundle: bundle folder.
        released: also require every entry to have an http(s) URL and a hash (an exported bundle).
    """
    bundle = Path(bundle)
    path = _find_large_files(bundle)
    if path is None:
        return [f"{bundle}: no large_files.yml listing the weight files"]
    try:
        entries = read_large_files(path)
    except ValueError as e:
        return [str(e)]
    problems = []
    for i, entry in enumerate(entries):
        where = f"{path}: large_files[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("path"), str) or not entry["path"]:
            problems.append(f"{where}: needs a 'path' (relative to the bundle)")
            continue
        rel, url = entry["path"], entry.get("url", "")
        hash_val, hash_type = entry.get("hash_val", ""), entry.get("hash_type", "sha256")
        where = f"{path}: {rel}"
        target = (bundle / rel).resolve()
        if Path(rel).is_absolute() or os.path.commonpath([bundle.resolve(), target]) != str(bundle.resolve()):
            problems.append(f"{where}: path must stay inside the bundle")
            continue
        if not isinstance(url, str) or not isinstance(hash_val, str) or hash_type not in HASH_TYPES:
            problems.append(f"{where}: url and hash_val must be strings, hash_type one of {', '.join(HASH_TYPES)}")
            continue
        if url and urlparse(url).scheme not in ("http", "https"):
            problems.append(f"{where}: url {url!r} is not an http(s) URL")
        if released and not url:
            problems.append(f"{where}: no url (give --base_url when exporting)")
        if hash_val and not re.fullmatch(f"[0-9a-f]{{{HASH_TYPES[hash_type]}}}", hash_val):
            problems.append(f"{where}: hash_val is not a {hash_type} hex digest")
        elif released and not hash_val:
            problems.append(f"{where}: no hash_val")
        elif hash_val and target.is_file() and file_hash(target, hash_type) != hash_val:
            problems.append(f"{where}: the file's {hash_type} does not match hash_val")
    if "models/model.pt" not in [e.get("path") for e in entries if isinstance(e, Mapping)]:
        problems.append(f"{path}: models/model.pt is not listed")
    return problems


def check_net_in_out(
    bundle: str | os.PathLike,
    config_files: Sequence[str] = ("configs/inference.yaml",),
    net_id: str = "network_def",
    device: str = "cpu",
    **override: Any,
) -> list[str]:
    """``monai.bundle.verify_net_in_out``: a random input of the metadata's input shape through ``net_id`` gives the
    metadata's output channels and dtype. ``override`` is forwarded (config ids, e.g. metadata shapes)."""
    from monai.bundle import verify_net_in_out

    bundle = Path(bundle)
    try:
        verify_net_in_out(
            net_id=net_id,
            meta_file=str(bundle / "configs" / "metadata.json"),
            config_file=[str(bundle / f) for f in config_files],
            device=device,
            bundle_root=str(bundle),
            **override,
        )
    except Exception as e:  # any failure is a finding of the check, reported with its cause
        cause = f"{type(e).__name__}: {e}"
        if isinstance(e, AttributeError) and "tuple" in str(e):
            cause += f" ({net_id} must return one tensor)"
        return [f"{bundle / 'configs/metadata.json'}: verify_net_in_out of {net_id} failed: {cause}"]
    return []


def check_bundle(
    bundle: str | os.PathLike,
    net_in_out: bool = True,
    released: bool = False,
    config_files: Sequence[str] = ("configs/inference.yaml",),
    device: str = "cpu",
) -> list[str]:
    """Run every check on ``bundle``; raise ``BundleCheckError`` listing all problems, or return the checks run.

    Args:
        bundle: bundle folder.
        net_in_out: build the inference network and run ``verify_net_in_out`` (seconds to a minute on a CPU).
        released: an exported bundle: every weight file has a URL and a hash.
        config_files: the inference config files, relative to the bundle, merged in order.
        device: where the network runs.
    """
    bundle = Path(bundle)
    net_in_out, released = as_bool(net_in_out, "net_in_out"), as_bool(released, "released")
    if not bundle.is_dir():
        raise FileNotFoundError(f"bundle folder {bundle} does not exist.")
    done, problems = ["required files"], check_required_files(bundle)
    meta_path = bundle / "configs" / "metadata.json"
    if meta_path.is_file():
        try:
            metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            problems.append(f"{meta_path}: not valid JSON: {e}")
        else:
            done.append("metadata")
            problems += check_metadata(metadata, meta_path) if isinstance(metadata, Mapping) else [
                f"{meta_path}: must hold a JSON object"
            ]  # fmt: skip
    done.append("large files")
    problems += check_large_files(bundle, released=released)
    if net_in_out and not problems:  # a network is only worth building for a bundle that passed the rest
        done.append("network input/output")
        problems += check_net_in_out(bundle, config_files, device=device)
    if problems:
        raise BundleCheckError(bundle, problems)
    logger.info("bundle %s passed: %s", bundle, ", ".join(done))
    return done

