"""The metadata checks of MONAI model-zoo's CI on a bundle's ``configs/metadata.json``, offline: the schema's
fields and types (``meta_schema_20240725.json``, written out here), the version against the changelog, and the pins
model-zoo's CI installs (``ci/get_bundle_requirements.py``) against this environment. ``bundle_checks.py`` runs them
with the checks of the bundle folder; each returns a list of problems (empty: passed)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from packaging.version import InvalidVersion, Version

__all__ = ["check_metadata", "check_requirements", "check_version", "model_zoo_requirements"]

# meta_schema_20240725.json: top-level properties and their JSON types; "changelog" is required by model-zoo's CI
METADATA_TYPES = {
    "schema": "string",
    "version": "string",
    "changelog": "object",
    "monai_version": "string",
    "pytorch_version": "string",
    "numpy_version": "string",
    "required_packages_version": "object",
    "task": "string",
    "description": "string",
    "authors": "string",
    "copyright": "string",
    "data_source": "string",
    "data_type": "string",
    "image_classes": "string",
    "label_classes": "string",
    "pred_classes": "string",
    "eval_metrics": "object",
    "intended_use": "string",
    "references": "array",
    "supported_apps": "object",
    "network_data_format": "object",
    "name": "string",
}
METADATA_REQUIRED = (
    "schema",
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)
# a tensor of network_data_format: the schema requires the first six, the bundle specification lists all nine
TENSOR_TYPES = {
    "type": "string",
    "format": "string",
    "modality": "string",
    "num_channels": "integer",
    "spatial_shape": "array",
    "dtype": "string",
    "value_range": "array",
    "is_patch_data": "boolean",
    "channel_def": "object",
}
# the names monai.bundle verify_net_in_out / ckpt_export read: inputs#image and outputs#pred
TENSOR_NAMES = {"inputs": "image", "outputs": "pred"}
DTYPES = ("float16", "float32", "float64", "bfloat16", "uint8", "int8", "int16", "int32", "int64", "bool")


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


def check_version(metadata: Mapping[str, Any], path: str | os.PathLike = "configs/metadata.json") -> list[str]:
    """``version`` and ``changelog`` present, ``version`` a key of ``changelog`` and not older than its newest key."""
    problems = [f"{path}: {k}: required field is missing" for k in ("version", "changelog") if k not in metadata]
    if problems:
        return problems
    version, changelog = metadata["version"], metadata["changelog"]
    if not isinstance(version, str) or not isinstance(changelog, Mapping):
        return [f"{path}: version must be a string and changelog an object"]
    if version not in changelog:
        problems.append(f"{path}: version {version!r} is missing from changelog (keys: {sorted(changelog)})")
    bad = [k for k in changelog if _version_problem(k) is not None]
    if bad:
        problems.append(f"{path}: changelog: keys {bad} are not version numbers")
    elif _version_problem(version) is None and changelog and Version(version) < max(Version(k) for k in changelog):
        problems.append(f"{path}: version {version!r} is older than the newest changelog entry")
    return problems


def _metric_problems(value: Any, where: str) -> list[str]:
    """``eval_metrics``: numbers, or objects of numbers (per class, per split); a text is not a measurement."""
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _metric_problems(v, f"{where}#{k}")]
    if _json_type(value) in ("integer", "number"):
        return []
    return [f"{where}: must be a number (drop the key until it is measured), got {_json_type(value)} {value!r}"]


def check_metadata(metadata: Mapping[str, Any], path: str | os.PathLike = "configs/metadata.json") -> list[str]:
    """Fields and types of the bundle schema (meta_schema_20240725) and of every tensor in ``network_data_format``.

    ``version`` against ``changelog`` is :func:`check_version`.
    """
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
    for name, version in metadata.get("supported_apps", {}).items():
        if not isinstance(version, str) or _version_problem(version) is not None:
            problems.append(f"{path}: supported_apps#{name}: {version!r} is not a version string")
    problems += _metric_problems(metadata.get("eval_metrics", {}), f"{path}: eval_metrics")
    if not all(isinstance(r, str) for r in metadata.get("references", [])):
        problems.append(f"{path}: references: must be a list of strings")
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


def _next_patch(version: str) -> str:
    """``1.6.1`` -> ``1.6.2``: the upper bound of the MONAI range model-zoo's CI installs."""
    parts = [*Version(version).release, 0, 0][:3]
    return ".".join(map(str, [*parts[:2], parts[2] + 1]))


def model_zoo_requirements(metadata: Mapping[str, Any]) -> list[str]:
    """The lines model-zoo's CI pip-installs before it checks a bundle (``ci/get_bundle_requirements.py``, with
    release candidates of MONAI allowed, as its CI runs): ``monai>=X rc1,<next patch``, ``torch==``, ``numpy==`` and
    ``name==version`` for ``optional_packages_version`` then ``required_packages_version``."""
    lines = []
    if "monai_version" in metadata:
        lines.append(f"monai>={metadata['monai_version']}rc1,<{_next_patch(metadata['monai_version'])}")
    for key, name in (("pytorch_version", "torch"), ("numpy_version", "numpy")):
        if key in metadata:
            lines.append(f"{name}=={metadata[key]}")
    for key in ("optional_packages_version", "required_packages_version"):
        lines += [f"{name}=={version}" for name, version in dict(metadata.get(key, {})).items()]
    return lines


def check_requirements(metadata: Mapping[str, Any], path: str | os.PathLike = "configs/metadata.json") -> list[str]:
    """Each of :func:`model_zoo_requirements` is a valid requirement that the installed environment satisfies.

    Model-zoo installs them from PyPI before its checks; offline, the environment stands in for that install, so a
    pin no distribution here satisfies (a package not installed, another version) is reported. Whether each pin is on
    PyPI cannot be seen offline (``pip index versions <name>`` tells).
    """
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import InvalidRequirement, Requirement

    try:
        lines = model_zoo_requirements(metadata)
    except (InvalidVersion, TypeError, ValueError, AttributeError) as e:
        return [f"{path}: the versions cannot be made into pip requirements: {type(e).__name__}: {e}"]
    problems = []
    for line in lines:
        try:
            req = Requirement(line)
        except InvalidRequirement as e:
            problems.append(f"{path}: {line!r} is not a pip requirement: {e}")
            continue
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            problems.append(f"{path}: {line}: {req.name} is not installed here (model-zoo's CI pip-installs it)")
            continue
        if not req.specifier.contains(installed, prereleases=True):
            problems.append(f"{path}: {line}: {req.name} {installed} is installed here; model-zoo's CI checks {line}")
    return problems
