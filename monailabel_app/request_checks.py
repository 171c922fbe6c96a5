"""Checks of the train and infer requests MONAI Label hands to the app's bundle tasks, before any field reaches them.

MONAI Label 0.8.5 copies request fields unchecked into the overrides of ``monai.bundle.run`` (train: ``max_epochs``,
``device``, the tracking fields) or into the bundle's parsed config (infer: ``device``), and joins ``model_filename``
to the bundle's ``models/`` folder. MONAI evaluates a config string starting with ``$`` as Python (``@`` is a
reference, ``%`` a file include), so a request field ``"$__import__('os')..."`` would run as code in the server.

Every request is checked here by the task's ``__call__`` (``main.py``) before MONAI Label's own code reads it:

* only the fields MONAI Label's train/infer code and its server legitimately put in a request are accepted
  (:data:`TRAIN_FIELDS`, :data:`INFER_FIELDS`); any other field is refused;
* any string value starting with ``$``, ``@`` or ``%``, also nested in lists and dicts (and dict keys), is refused;
* each accepted field is typed and range-checked; true/false fields are parsed with
  :func:`shared_networks.utils.flags.as_bool` (the string ``"false"`` is false) and passed on as ``bool``;
* ``model_filename`` names a file of the bundle's ``models/`` folder among those offered (``model.pt``), nothing else;
* ``label_info`` (a DICOM SEG's segments, :func:`check_label_info`) is a list of plain objects, not MONAI Label's
  ``segmentAttribute`` templates.

A refusal raises :class:`RequestRefused` (a ``ValueError``) naming the field. This module needs neither MONAI Label
nor MONAI: what it checks against (allowed devices, the server's tracking URI, the bundle's folder) is passed in.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from shared_networks.utils.flags import as_bool

__all__ = [
    "CONFIG_SIGILS",
    "INFER_FIELDS",
    "MAX_EPOCHS",
    "TRAIN_FIELDS",
    "RequestRefused",
    "TaskFacts",
    "check_infer_request",
    "check_label_info",
    "check_train_request",
    "refuse_config_syntax",
]

CONFIG_SIGILS = ("$", "@", "%")  # MONAI bundle config: expression, reference, file include
MAX_EPOCHS = 10_000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
RESULT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd")
RESULT_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float16", "float32", "float64")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")  # a model name, label tag, run name: no path separator
_GPUS = re.compile(r"\d{1,3}(,\d{1,3}){0,63}")  # CUDA_VISIBLE_DEVICES of a background task
_CUDA = re.compile(r"cuda(:\d{1,3})?")


class RequestRefused(ValueError):
    """A request field the app refuses to pass on to MONAI Label's task; the message names the field."""


class TaskFacts:
    """What a request is checked against: the task's bundle folder, the model files it offers, the devices of this
    machine (MONAI Label's ``device_list()`` and ``device_map()`` names), the server's tracking URI and its datastore
    folder (``image_root``; '' when the studies are not a folder: the image is then not checked against it)."""

    def __init__(
        self,
        bundle_path: str,
        model_files: Sequence[str] = ("model.pt",),
        devices: Sequence[str] = ("cpu",),
        tracking_uri: str = "",
        image_root: str = "",
    ) -> None:
        self.bundle_path = bundle_path
        self.model_files = tuple(model_files)
        self.devices = tuple(devices)
        self.tracking_uri = tracking_uri
        self.image_root = image_root


Check = Callable[[Any, str, TaskFacts], Any]


def refuse_config_syntax(value: Any, name: str) -> None:
    """Raises :class:`RequestRefused` if ``value`` or anything nested in it (list, tuple, dict key or value) is a
    string that MONAI's config parser would not read as plain text (it starts with ``$``, ``@`` or ``%``)."""
    if isinstance(value, str):
        if value.lstrip().startswith(CONFIG_SIGILS):
            raise RequestRefused(
                f"Request field '{name}' is refused: a value starting with '$', '@' or '%' is MONAI bundle config "
                f"syntax (an expression, reference or include), not data; got {value[:60]!r}."
            )
    elif isinstance(value, Mapping):
        for k, v in value.items():
            refuse_config_syntax(k, f"{name} (key)")
            refuse_config_syntax(v, f"{name}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            refuse_config_syntax(v, f"{name}[{i}]")


def _refuse(name: str, expected: str, value: Any) -> RequestRefused:
    return RequestRefused(f"Request field '{name}' must be {expected}; got {value!r}.")


def _text(value: Any, name: str, facts: TaskFacts) -> str:
    if not isinstance(value, str) or len(value) > 4096:
        raise _refuse(name, "a string (at most 4096 characters)", value)
    return value


def _plain(value: Any, name: str, facts: TaskFacts) -> Any:
    """JSON data passed through as it is (strings in it were checked by :func:`refuse_config_syntax`)."""
    return value


def _flag(value: Any, name: str, facts: TaskFacts) -> bool:
    try:
        return as_bool(value, f"'{name}'")
    except ValueError as e:
        raise RequestRefused(f"Request field {e}") from None


def _integer(low: int, high: int) -> Check:
    def check(value: Any, name: str, facts: TaskFacts) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _refuse(name, f"an integer in [{low}, {high}]", value)
        return value

    return check


def _number(low: float, high: float) -> Check:
    def check(value: Any, name: str, facts: TaskFacts) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not low < value <= high:
            raise _refuse(name, f"a number in ({low}, {high}]", value)
        return value

    return check


def _val_split(value: Any, name: str, facts: TaskFacts) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not 0.0 <= value < 1.0:
        raise _refuse(name, "a number in [0, 1) (the fraction of the labelled images that validates)", value)
    return float(value)


def _choice(choices: Sequence[str], *, fold_case: bool = False, allow_none: bool = False) -> Check:
    def check(value: Any, name: str, facts: TaskFacts) -> str | None:
        if value is None and allow_none:
            return None
        word = value.upper() if fold_case and isinstance(value, str) else value
        if word not in choices:
            raise _refuse(name, f"one of {list(choices)}", value)
        return value

    return check


def _name(*, empty: bool = False) -> Check:
    def check(value: Any, name: str, facts: TaskFacts) -> str | None:
        if empty and value in ("", None):
            return value
        if not isinstance(value, str) or not _NAME.fullmatch(value) or set(value) == {"."}:
            raise _refuse(name, "a name of letters, digits, '_', '.' and '-' (no path)", value)
        return value

    return check


def _device(value: Any, name: str, facts: TaskFacts) -> str | list[str]:
    """A device name as MONAI Label offers it (``cpu``, ``cuda``, ``cuda:N`` or a GPU's name), or a list of them."""
    names = value if isinstance(value, (list, tuple)) else [value]
    known = {"", "cpu", *facts.devices}
    if not names or not all(isinstance(d, str) and (d in known or _CUDA.fullmatch(d)) for d in names):
        raise _refuse(name, f"a device of this server ({sorted(known - {''})}, cuda, cuda:N) or a list of them", value)
    return list(value) if isinstance(value, (list, tuple)) else value


def _model_file(value: Any, name: str, facts: TaskFacts) -> str | list[str]:
    """A file of the bundle's ``models/`` offered by the task (MONAI Label joins it to that folder and loads it)."""
    names = value if isinstance(value, (list, tuple)) else [value]
    if not names or not all(isinstance(f, str) and f in facts.model_files for f in names):
        raise _refuse(name, f"one of {list(facts.model_files)} (a file of the bundle's models/ folder)", value)
    return list(value) if isinstance(value, (list, tuple)) else value


def _bundle_path(value: Any, name: str, facts: TaskFacts) -> str:
    """Set by the server itself to the bundle's folder (its training process gets it on PYTHONPATH)."""
    if not isinstance(value, str) or os.path.realpath(value) != os.path.realpath(facts.bundle_path):
        raise _refuse(name, f"this bundle's folder {facts.bundle_path!r}", value)
    return value


def _image_file(value: Any, name: str, facts: TaskFacts) -> str:
    """The image MONAI Label resolved from a datastore id: a file inside the datastore folder, nothing else."""
    _text(value, name, facts)
    if facts.image_root:
        root = os.path.realpath(facts.image_root)
        path = os.path.realpath(value)
        if os.path.commonpath([root, path]) != root or not os.path.isfile(path):
            raise _refuse(name, f"an image of the datastore (a file in {root!r})", value)
    return value


def _gpus(value: Any, name: str, facts: TaskFacts) -> str:
    if value in ("", "all") or (isinstance(value, str) and _GPUS.fullmatch(value)):
        return value
    raise _refuse(name, "'all' or comma-separated GPU indices", value)


def _pretrained(value: Any, name: str, facts: TaskFacts) -> bool:
    if not _flag(value, name, facts):
        raise RequestRefused(
            "Request field 'pretrained' is false: not supported here (MONAI Label 0.8.5 then fails on "
            "os.path.exists(None)); training continues from models/model.pt. To fine-tune afresh from the MAE "
            "encoder, run the bundle's configs/train.yaml."
        )
    return True


def _run_id(value: Any, name: str, facts: TaskFacts) -> str:
    if value not in ("", "run"):  # the config id monai.bundle.run runs; MONAI Label's clients send "" by default
        raise _refuse(name, "'run' or '' (the bundle's 'run' workflow)", value)
    return "run"


def _tracking(value: Any, name: str, facts: TaskFacts) -> str:
    first = value[0] if isinstance(value, (list, tuple)) and value else value  # MONAI Label takes a list's first
    if first not in ("", "None", "none", None):
        raise _refuse(name, "'None' (experiment tracking is off on this server)", value)
    return "None"


def _tracking_uri(value: Any, name: str, facts: TaskFacts) -> str | None:
    if value in ("", None, facts.tracking_uri):
        return value
    raise _refuse(name, f"'' or the server's own tracking URI {facts.tracking_uri!r}", value)


def _image_list(value: Any, name: str, facts: TaskFacts) -> str | list[str]:
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return value
    raise _refuse(name, "a string or a list of strings", value)


def _labels_filter(value: Any, name: str, facts: TaskFacts) -> Any:
    if value is None or isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return value
    raise _refuse(name, "a label name or a list of them", value)


def _mapping(value: Any, name: str, facts: TaskFacts) -> Any:
    if not isinstance(value, Mapping):
        raise _refuse(name, "a JSON object", value)
    return value


MAX_SEGMENTS = 255
_SEGMENT_TEXT = 64  # DICOM LO: at most 64 characters, no backslash or control character


def _segment_text(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > _SEGMENT_TEXT or any(c == "\\" or ord(c) < 32 for c in value):
        raise _refuse(name, f"a text of at most {_SEGMENT_TEXT} characters without '\\' or control characters", value)
    return value


def _segment_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _refuse(name, f"an integer in [{low}, {high}]", value)
    return value


_SEGMENT_FIELDS: dict[str, Callable[[Any, str], Any]] = {
    "name": _segment_text,
    "description": _segment_text,
    "model_name": _segment_text,
    "idx": lambda v, n: _segment_int(v, n, 1, 65535),
}


def check_label_info(value: Any, name: str = "label_info") -> list[dict[str, Any]]:
    """``label_info``: the segments of a label map as a client names them for a DICOM SEG (3D Slicer sends
    ``{"name", "idx"}`` per segment): a list of at most 255 objects with ``name``, ``description``, ``model_name``
    (DICOM texts), ``idx`` (the label value) and ``color`` (RGB, 0..255). MONAI Label would also take a
    ``segmentAttribute`` object written as it is into the SEG's template: refused, like any other key.

    Raises:
        RequestRefused: naming the entry and field.
    """
    if not isinstance(value, list) or len(value) > MAX_SEGMENTS:
        raise _refuse(name, f"a list of at most {MAX_SEGMENTS} segments", value)
    for i, entry in enumerate(value):
        where = f"{name}[{i}]"
        if not isinstance(entry, Mapping):
            raise _refuse(where, "an object {name, idx, color, description, model_name}", entry)
        for key, item in entry.items():
            if key == "color":
                ok = isinstance(item, list) and len(item) == 3
                if not ok or not all(not isinstance(c, bool) and isinstance(c, int) and 0 <= c <= 255 for c in item):
                    raise _refuse(f"{where}.color", "three integers in [0, 255] (RGB)", item)
            elif key in _SEGMENT_FIELDS:
                _SEGMENT_FIELDS[key](item, f"{where}.{key}")
            else:
                raise _refuse(f"{where} key {str(key)[:40]!r}", f"one of {sorted([*_SEGMENT_FIELDS, 'color'])}", key)
    return value


def _label_info(value: Any, name: str, facts: TaskFacts) -> list[dict[str, Any]]:
    return check_label_info(value, name)


# fields MONAI Label 0.8.5 puts in a train request: its client/3D Slicer/OHIF (the train task's config() options and
# client_id), the /train endpoint (model), AsyncTask (bundle_path), its background runner (gpus) and the training
# process (local_rank); what BundleTrainTask.__call__ reads
TRAIN_FIELDS: dict[str, Check] = {
    "model": _name(),
    "bundle_path": _bundle_path,
    "local_rank": _integer(0, 1023),
    "client_id": _text,
    "device": _device,
    "pretrained": _pretrained,
    "max_epochs": _integer(1, MAX_EPOCHS),
    "val_split": _val_split,
    "multi_gpu": _flag,
    "force_multi_gpu": _flag,
    "gpus": _gpus,
    "tracking": _tracking,
    "tracking_uri": _tracking_uri,
    "tracking_experiment_name": _name(empty=True),
    "tracking_run_name": _name(empty=True),
    "run_id": _run_id,
    "model_filename": _model_file,
}

# fields MONAI Label 0.8.5 puts in an infer request: the /infer endpoint (model, image, label: an uploaded file's
# path, session), the app (description, save_label), batch inference (images, labels, label_tag, max_batch_size,
# max_workers, multi_gpu, gpus, _id, _image_id, bundle_path), clients (the infer task's config() options, client_id,
# label_info for DICOM SEG, result_*), and what BasicInferTask/BundleInferTask and their writers read
INFER_FIELDS: dict[str, Check] = {
    "model": _name(),
    "image": _image_file,
    "label": _text,
    "session": _mapping,
    "description": _text,
    "save_label": _flag,
    "label_tag": _name(),
    "timeout": _number(0, 86_400),
    "client_id": _text,
    "label_info": _label_info,
    "device": _device,
    "model_filename": _model_file,
    "result_extension": _choice(RESULT_EXTENSIONS, allow_none=True),
    "result_dtype": _choice(RESULT_DTYPES, allow_none=True),
    "result_compress": _flag,
    "skip_writer": _flag,
    "logging": _choice(LOG_LEVELS, fold_case=True),
    "images": _image_list,
    "labels": _labels_filter,
    "max_batch_size": _integer(0, 1_000_000),
    "max_workers": _integer(0, 1024),
    "multi_gpu": _flag,
    "gpus": _gpus,
    "bundle_path": _bundle_path,
    "_id": _integer(0, 10_000_000),
    "_image_id": _text,
}


def _check(request: Any, fields: Mapping[str, Check], facts: TaskFacts, kind: str) -> dict[str, Any]:
    if not isinstance(request, Mapping):
        raise RequestRefused(f"A {kind} request must be a JSON object; got {type(request).__name__}.")
    unknown = sorted(str(k) for k in request if k not in fields)
    if unknown:
        raise RequestRefused(
            f"Unknown {kind} request field(s) {unknown} refused; this server accepts {sorted(fields)}."
        )
    checked = {}
    for key, value in request.items():
        refuse_config_syntax(value, key)
        checked[key] = fields[key](value, key, facts)
    return checked


def check_train_request(request: Any, facts: TaskFacts) -> dict[str, Any]:
    """The train ``request`` with its true/false fields as ``bool`` and ``run_id`` as ``"run"``, each field checked.

    Raises:
        RequestRefused: naming the first field refused (unknown, config syntax, wrong type or out of range).
    """
    return _check(request, TRAIN_FIELDS, facts, "train")


def check_infer_request(request: Any, facts: TaskFacts) -> dict[str, Any]:
    """The infer ``request`` with its true/false fields as ``bool``, each field checked.

    Raises:
        RequestRefused: naming the first field refused (unknown, config syntax, wrong type or out of range).
    """
    return _check(request, INFER_FIELDS, facts, "infer")
