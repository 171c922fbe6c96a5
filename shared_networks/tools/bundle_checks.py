"""The checks of MONAI model-zoo's CI (``ci/verify_bundle.py``) on one bundle folder, offline, merging nothing else.

Model-zoo's CI first pip-installs ``monai``, ``torch``, ``numpy`` and every ``name==version`` of
``required_packages_version`` / ``optional_packages_version`` (``ci/get_bundle_requirements.py``), then runs, in this
order, on the bundle folder as committed (full mode, its default): the directory (the files of ``large_files.yml``
are downloaded first; ``configs/metadata.json``, ``LICENSE``, ``models/model.pt`` and an inference config), the
version (``version`` is a key of ``changelog``), the metadata format (``monai.bundle verify_metadata`` against
``meta_schema_20240725.json``), the inference properties (only for a ``supported_apps`` app that ships a properties
file in model-zoo; none does for MONAI Label), the data shape (``monai.bundle verify_net_in_out`` on ``network_def``
of ``configs/inference.*`` alone, with the metadata's ``network_data_format``) and TorchScript (``monai.bundle
ckpt_export`` of that ``network_def`` with ``models/model.pt``, then ``torch.jit.load`` of any ``models/model.ts``).
Full mode is ``released=True`` here. Here:

- directory: ``LICENSE``, ``configs/metadata.json``, ``docs/README.md``, one inference config (with several of
  ``inference.json|yaml|yml`` model-zoo reads the last of them, these checks the first); ``large_files.yml``
  parses and every entry has a path inside the bundle, an http(s) URL and a hash (an empty ``large_files: []`` is
  fine); ``download=True`` fetches the files with ``monai.bundle download_large_files`` (hashes checked), as
  model-zoo does; without it, files already present must match their hash.
- version, metadata and requirements: ``bundle_metadata.py``.
- version: ``version`` is a key of ``changelog`` and not older than its newest entry.
- metadata: the schema's required fields and types, written out here (the schema is downloaded by
  ``verify_metadata``, which fails offline), with the tensor fields of the MONAI bundle specification (type, format,
  modality, num_channels, spatial_shape, dtype, value_range, is_patch_data, channel_def) for every input and output;
  ``eval_metrics`` holds numbers only.
- requirements: model-zoo's pins (``monai>=X rc1,<next patch``, as its CI allows release candidates; ``torch==``,
  ``numpy==``, ``name==version`` of both package lists) are valid requirements, satisfied by the environment the
  checks run in (the data shape and TorchScript results stand for model-zoo's only on those versions).
- properties: the required properties of MONAI's ``TrainProperties`` / ``InferProperties`` and ``MetaProperties``
  (what ``ConfigWorkflow.check_properties`` asks) are ids of ``configs/train.*`` / ``configs/inference.*``, each read
  alone with the metadata, and each optional property a config refers to uses its id; ids are not instantiated (that
  needs the data set).
- data shape: ``verify_net_in_out`` on ``network_def`` of ``configs/inference.*`` alone.
- TorchScript, when ``models/model.pt`` is present: ``ckpt_export`` of the same network and weights into a temporary
  file, which is then loaded; scripted (``torch.jit.script``, no input shape), as model-zoo's default.

    python -m shared_networks.cli.bundle_checks bundles/btcv_mae_segmentation
    python -m shared_networks.cli.bundle_checks bundles/btcv_mae_segmentation --net_in_out false   # no network built
    python -m shared_networks.cli.bundle_checks dist/btcv_mae_segmentation --released true --download true  # full mode
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

from shared_networks.tools.bundle_metadata import (
    check_metadata,
    check_requirements,
    check_version,
    model_zoo_requirements,
)
from shared_networks.utils.flags import as_bool

__all__ = [
    "BundleCheckError",
    "CHECKS",
    "HASH_TYPES",
    "check_bundle",
    "check_large_files",
    "check_metadata",
    "check_net_in_out",
    "check_properties",
    "check_required_files",
    "check_requirements",
    "check_torchscript",
    "check_version",
    "file_hash",
    "find_config",
    "model_zoo_requirements",
    "read_large_files",
]

logger = logging.getLogger(__name__)

CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
REQUIRED_FILES = ("LICENSE", "configs/metadata.json", "docs/README.md")
HASH_TYPES = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128}


class BundleCheckError(ValueError):
    """A bundle failed one or more checks; ``problems`` lists them, each naming the file."""

    def __init__(self, bundle: str | os.PathLike, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"bundle {bundle} failed {len(self.problems)} check(s):\n  " + "\n  ".join(self.problems))


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


def check_required_files(bundle: str | os.PathLike, released: bool = False) -> list[str]:
    """LICENSE, configs/metadata.json, docs/README.md and an inference config; for a release (``released``), also
    ``models/model.pt``, present or listed in ``large_files.yml``."""
    bundle = Path(bundle)
    problems = [f"{bundle / f}: required file is missing" for f in REQUIRED_FILES if not (bundle / f).is_file()]
    if find_config(bundle, "inference") is None:
        problems.append(f"{bundle / 'configs'}: no inference config (inference.json, .yaml or .yml)")
    inference = [f"inference{s}" for s in CONFIG_SUFFIXES if (bundle / "configs" / f"inference{s}").is_file()]
    if len(inference) > 1:
        problems.append(
            f"{bundle / 'configs'}: several inference configs ({', '.join(inference)}): model-zoo checks "
            f"{inference[-1]}, these checks and the docs' commands {inference[0]}; keep one"
        )
    if released and not (bundle / "models" / "model.pt").is_file():
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


def check_large_files(bundle: str | os.PathLike, download: bool = False) -> list[str]:
    """Entries of ``large_files.yml`` (absent or ``large_files: []`` is fine): a path inside the bundle, an http(s)
    URL, a hash of its type; a file already present must match its hash.

    Args:
        bundle: bundle folder.
        download: fetch the missing files with ``monai.bundle download_large_files`` (as model-zoo's CI does; MONAI
            checks each hash), after the entries passed.
    """
    bundle = Path(bundle)
    path = _find_large_files(bundle)
    if path is None:
        return []
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
        if not url:
            problems.append(f"{where}: no url (an entry is written by the export with --base_url, or left out)")
        elif urlparse(url).scheme not in ("http", "https") or not urlparse(url).netloc:
            problems.append(f"{where}: url {url!r} is not an http(s) URL")
        if not hash_val:
            problems.append(f"{where}: no hash_val")
        elif not re.fullmatch(f"[0-9a-f]{{{HASH_TYPES[hash_type]}}}", hash_val):
            problems.append(f"{where}: hash_val is not a {hash_type} hex digest")
        elif target.is_file() and file_hash(target, hash_type) != hash_val:
            problems.append(f"{where}: the file's {hash_type} does not match hash_val")
    if download and not problems and entries:
        from monai.bundle import download_large_files

        try:
            download_large_files(bundle_path=str(bundle))
        except Exception as e:  # any failure is a finding, reported with its cause
            problems.append(f"{path}: download failed: {type(e).__name__}: {e}")
    return problems


def _hash_id(config_id: str) -> str:
    """A config id in the ``a#b`` form the bundles write (MONAI's property tables write ``a::b``)."""
    return config_id.replace("::", "#")


def check_properties(bundle: str | os.PathLike, workflow_type: str = "inference") -> list[str]:
    """The properties ``ConfigWorkflow.check_properties`` asks of a ``workflow_type`` ("train" or "inference") config,
    read alone with ``configs/metadata.json``: every required property of MONAI's ``TrainProperties`` /
    ``InferProperties`` and ``MetaProperties`` is an id, and an optional property a config item refers to (say,
    ``evaluator#val_handlers``) is referred to by its id. Nothing is instantiated: that would need the data set.

    Ids compare with ``::`` and ``#`` as one separator (``ConfigWorkflow`` compares the text, so it reports every
    ``@train#handlers`` it finds as a wrong id of ``train::handlers``).
    """
    from monai.bundle import ConfigWorkflow
    from monai.bundle.properties import InferProperties, MetaProperties, TrainProperties
    from monai.utils import BundleProperty, BundlePropertyConfig

    if workflow_type not in ("train", "inference"):
        raise ValueError(f"workflow_type must be 'train' or 'inference', got {workflow_type!r}.")
    bundle = Path(bundle)
    config = find_config(bundle, workflow_type)
    if config is None:
        return [f"{bundle / 'configs'}: no {workflow_type} config ({workflow_type}.json, .yaml or .yml)"]
    try:
        workflow = ConfigWorkflow(
            config_file=str(config),
            meta_file=str(bundle / "configs" / "metadata.json"),
            logging_file=False,
            workflow_type=workflow_type,
            bundle_root=str(bundle),
        )
    except Exception as e:
        return [f"{config}: cannot be read as a {workflow_type} workflow: {type(e).__name__}: {e}"]
    properties = {**(TrainProperties if workflow_type == "train" else InferProperties), **MetaProperties}
    parser = workflow.parser
    handlers = parser.get("train#handlers", [])
    validation = [
        h for h in handlers if isinstance(h, Mapping) and str(h.get("_target_", "")).endswith("ValidationHandler")
    ]
    problems = []
    for name, prop in properties.items():
        prop_id, ref_id = prop[BundlePropertyConfig.ID], prop.get(BundlePropertyConfig.REF_ID)
        if prop.get(BundleProperty.REQUIRED, False):
            if prop_id not in parser:
                problems.append(f"{config}: required property {name!r} (id {_hash_id(prop_id)!r}) is missing")
            continue
        if ref_id is None:
            continue
        if name in ("evaluator", "val_interval"):  # MONAI looks for them in the ValidationHandler of train#handlers
            refs = [h.get(ref_id) for h in validation]
        else:
            refs = [parser.get(ref_id, None)]
        for ref in refs:
            if isinstance(ref, str) and not ref.startswith("$") and _hash_id(ref) != "@" + _hash_id(prop_id):
                problems.append(
                    f"{config}: {_hash_id(ref_id)!r} is {ref!r}: the optional property {name!r} must be referred to"
                    f" as '@{_hash_id(prop_id)}'"
                )
    return problems


def _inference_config(bundle: Path, net_id: str) -> tuple[Path | None, list[str]]:
    config = find_config(bundle, "inference")
    if config is None:
        return None, [f"{bundle / 'configs'}: no inference config (inference.json, .yaml or .yml)"]
    from monai.bundle import ConfigParser

    try:
        content = ConfigParser.load_config_file(str(config))
    except Exception as e:
        return None, [f"{config}: cannot be read: {type(e).__name__}: {e}"]
    if not isinstance(content, Mapping) or net_id not in content:
        return None, [f"{config}: no '{net_id}' (the network model-zoo's checks build from this file alone)"]
    return config, []


def check_net_in_out(
    bundle: str | os.PathLike, net_id: str = "network_def", device: str | None = None, **override: Any
) -> list[str]:
    """Model-zoo's data-shape check: ``monai.bundle.verify_net_in_out`` on ``net_id`` of ``configs/inference.*``
    alone: a random input of batch 1 and the metadata's input shape (``p``, ``n`` and ``*`` in it taken as 1, MONAI's
    defaults, as model-zoo passes none) gives the metadata's output channels and dtype.

    ``device`` ``None`` is MONAI's default (``cuda:0`` if there is a GPU, as on model-zoo's runners); ``override``
    (config ids -> values) is for tests; model-zoo passes none.
    """
    bundle = Path(bundle)
    config, problems = _inference_config(bundle, net_id)
    if problems:
        return problems
    from monai.bundle import verify_net_in_out

    try:
        verify_net_in_out(
            net_id=net_id,
            meta_file=str(bundle / "configs" / "metadata.json"),
            config_file=str(config),
            device=device,
            bundle_root=str(bundle),
            **override,
        )
    except Exception as e:  # any failure is a finding of the check, reported with its cause
        cause = f"{type(e).__name__}: {e}"
        if isinstance(e, AttributeError) and "tuple" in str(e):
            cause += f" ({net_id} must return one tensor)"
        return [f"{config}: verify_net_in_out of {net_id} failed: {cause}"]
    return []


def check_torchscript(bundle: str | os.PathLike, net_id: str = "network_def") -> list[str]:
    """Model-zoo's TorchScript check: ``monai.bundle.ckpt_export`` of ``net_id`` of ``configs/inference.*`` alone
    with ``models/model.pt`` (MONAI loads it strictly), into a temporary file that is then loaded and must hold the
    checkpoint's tensors; a ``models/model.ts`` already in the bundle must load too. Scripted, as model-zoo does."""
    import tempfile

    import torch
    from monai.bundle import ckpt_export

    bundle = Path(bundle)
    config, problems = _inference_config(bundle, net_id)
    if problems:
        return problems
    ckpt = bundle / "models" / "model.pt"
    with tempfile.TemporaryDirectory(prefix="ts_check.") as tmp:
        ts_path = Path(tmp) / "model.ts"
        try:
            ckpt_export(
                net_id=net_id,
                filepath=str(ts_path),
                ckpt_file=str(ckpt),
                config_file=str(config),
                meta_file=str(bundle / "configs" / "metadata.json"),
                bundle_root=str(bundle),
            )
            exported = torch.jit.load(str(ts_path), map_location="cpu").state_dict()
        except Exception as e:
            lines = f"{type(e).__name__}: {e}".splitlines()
            return [f"{config}: ckpt_export of {net_id} with {ckpt.name} failed: " + " / ".join(lines[:4])[:800]]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    differ = [k for k, v in state.items() if k not in exported or not torch.equal(exported[k], v)]
    if differ:
        problems.append(
            f"{ckpt}: the exported TorchScript does not hold {len(differ)} of its tensors ({differ[0]}, ...)"
        )
    if (bundle / "models" / "model.ts").is_file():
        try:
            torch.jit.load(str(bundle / "models" / "model.ts"), map_location="cpu")
        except Exception as e:
            problems.append(f"{bundle / 'models' / 'model.ts'}: does not load: {type(e).__name__}: {e}")
    return problems


CHECKS = ("directory", "version", "metadata", "requirements", "properties", "data shape", "torchscript")


def check_bundle(
    bundle: str | os.PathLike,
    net_in_out: bool = True,
    torchscript: bool = True,
    download: bool = False,
    released: bool = False,
    requirements: bool = True,
    device: str | None = None,
) -> list[str]:
    """Model-zoo's checks on ``bundle`` as it is (no config merged); raise ``BundleCheckError`` listing all problems,
    or return the names of the checks run (of :data:`CHECKS`). ``released=True, download=True`` is model-zoo's full
    mode (``ci/verify_bundle.py``'s default): ``models/model.pt`` is required, so TorchScript always runs.

    Args:
        bundle: bundle folder.
        net_in_out: the data-shape check: build the inference network and run ``verify_net_in_out`` (seconds to a
            minute on a CPU).
        torchscript: the TorchScript check, when ``models/model.pt`` is present (after ``download``).
        download: fetch the files of ``large_files.yml`` first, as model-zoo's CI does.
        released: an exported bundle: ``models/model.pt`` present or listed in ``large_files.yml``.
        requirements: the installed packages satisfy the pins model-zoo's CI installs from the metadata.
        device: where the data-shape check runs; ``None``: a GPU if there is one (MONAI's default, as model-zoo).
    """
    bundle = Path(bundle)
    net_in_out, torchscript = as_bool(net_in_out, "net_in_out"), as_bool(torchscript, "torchscript")
    download, released = as_bool(download, "download"), as_bool(released, "released")
    requirements = as_bool(requirements, "requirements")
    if not bundle.is_dir():
        raise FileNotFoundError(f"bundle folder {bundle} does not exist.")
    done = ["directory"]
    problems = check_required_files(bundle, released=released) + check_large_files(bundle, download=download)
    meta_path = bundle / "configs" / "metadata.json"
    if meta_path.is_file():
        try:
            metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            problems.append(f"{meta_path}: not valid JSON: {e}")
        else:
            if not isinstance(metadata, Mapping):
                problems.append(f"{meta_path}: must hold a JSON object")
            else:
                done += ["version", "metadata"]
                problems += check_version(metadata, meta_path) + check_metadata(metadata, meta_path)
                if requirements and not problems:
                    done.append("requirements")
                    problems += check_requirements(metadata, meta_path)
    if not problems:
        done.append("properties")
        for workflow_type in ("train", "inference"):
            if workflow_type == "inference" or find_config(bundle, workflow_type) is not None:
                problems += check_properties(bundle, workflow_type)
    # networks are only worth building for a bundle that passed the rest (model-zoo stops at the first failure)
    if net_in_out and not problems:
        done.append("data shape")
        problems += check_net_in_out(bundle, device=device)
    if torchscript and not problems and (bundle / "models" / "model.pt").is_file():
        done.append("torchscript")
        problems += check_torchscript(bundle)
    if problems:
        raise BundleCheckError(bundle, problems)
    logger.info("bundle %s passed: %s", bundle, ", ".join(done))
    return done
