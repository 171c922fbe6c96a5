"""Prepare a data set for the bundles: check every file, then write the datalist JSON (nothing when a check fails).

Command line::

    python -m shared_networks.cli.prepare btcv --dataset_dir DIR --output_json FILE [--split transunet] [--seed 0]
    python -m shared_networks.cli.prepare brats --dataset_dir DIR --output_json FILE [--fold 0] [--num_folds 5]
    python -m shared_networks.cli.prepare cxr14 --dataset_dir DIR --output_json FILE [--val_fraction 0.1] [--seed 0]
    python -m shared_networks.cli.prepare cxr14 --dataset_dir DIR --output_dir STORE --cache_size 224 [--num_workers 8]

Each command takes the arguments of the data set's datalist builder (:mod:`shared_networks.data.btcv`, ``.brats``,
``.cxr14``) and ``--validate`` / ``--read_data`` / ``--num_workers`` for the checks of
:mod:`shared_networks.validation`; a data set with errors prints its report and exits with status 1.

The datalist's ``pretrain`` list (what MAE pre-training reads) is the training images. ``btcv`` and ``brats`` add the
data set's unlabelled images (BTCV ``imagesTs/`` or ``Testing/img/``, MSD ``imagesTs/``, BraTS folders without a
segmentation) only with ``--pretrain_extra_images true``; ChestX-ray14's NIH layout holds no unlabelled image.

``cxr14 --output_dir STORE --cache_size S`` (with or without ``--output_json``) also writes the prepared store of
:mod:`shared_networks.data.prepared`: every listed radiograph pre-processed once at S x S, which the workflows read with
``--prepared_dir STORE`` instead of the full-size PNGs.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shared_networks.cli import run_fire
from shared_networks.data.brats import write_brats_datalist
from shared_networks.data.btcv import write_btcv_datalist
from shared_networks.data.cxr14 import write_cxr14_datalist
from shared_networks.data.loading import ImageReadError
from shared_networks.data.prepared import write_cxr14_store
from shared_networks.utils.flags import as_bool
from shared_networks.validation.datasets import validate_brats, validate_btcv, validate_cxr14
from shared_networks.validation.images import MAX_PIXELS
from shared_networks.validation.problems import DatasetError, require_valid
from shared_networks.validation.volumes import MAX_VOXELS

__all__ = [
    "PREPARE_COMMANDS",
    "ArgumentError",
    "check_limit",
    "check_output_dir",
    "check_output_file",
    "main",
    "prepare_brats",
    "prepare_btcv",
    "prepare_cxr14",
]

PathLike = str | os.PathLike[str]


class ArgumentError(ValueError):
    """A command line argument that cannot work, found before any data is read."""


def check_output_file(path: PathLike, what: str = "--output_json") -> Path:
    """``path`` as a file that can be written: not a folder, in an existing folder. Checked before any data is read.

    Raises:
        ArgumentError: naming the argument and the path.
    """
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        raise ArgumentError(f"{what} '{target}' is a folder; give a file name (e.g. '{target / 'datalist.json'}').")
    if not target.parent.is_dir():
        raise ArgumentError(f"{what} '{target}': the folder '{target.parent}' does not exist; create it first.")
    return target


def check_output_dir(path: PathLike, what: str = "--output_dir") -> Path:
    """``path`` as a folder that can be written: not a file, in an existing folder. Checked before any data is read.

    Raises:
        ArgumentError: naming the argument and the path.
    """
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise ArgumentError(f"{what} '{target}' is a file; give a folder for the store.")
    if not target.parent.is_dir():
        raise ArgumentError(f"{what} '{target}': the folder '{target.parent}' does not exist; create it first.")
    return target


def check_limit(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(f"--{name} must be a positive whole number, got {value!r}.")
    return value


_CHECK_ARGS = """
    validate: check every file first (shared_networks.validation: missing, unpaired, truncated or corrupt files,
        wrong dimensions or channels, grids, label values, NaN, constant images, split lists) and write nothing
        when there is an error; warnings are logged.
    read_data: with validate, read the voxel data too (False: headers only, faster, NaN and truncated data
        unnoticed).
    num_workers: threads reading files for the check.
    {limit}: files whose header declares more {unit} are reported as errors, not read."""
_NOT_CHECKED = """    The files are not checked here; ``python -m shared_networks.cli.prepare`` checks them first
    (:mod:`shared_networks.validation`).
"""
Check = Callable[[dict[str, Any], bool, int, int], Any]


def _store_arguments(store: Callable[..., Path] | None, write_sig: inspect.Signature) -> list[inspect.Parameter]:
    """The arguments of ``store`` that the datalist writer lacks (``num_workers`` is the checks'), all optional."""
    if store is None:
        return []
    return [
        p.replace(default=None if p.default is inspect.Parameter.empty else p.default)
        for n, p in inspect.signature(store).parameters.items()
        if n not in write_sig.parameters and n != "num_workers"
    ]


def _store_doc(store: Callable[..., Path], names: list[str]) -> str:
    """The ``Args:`` lines of ``names`` in ``store``'s docstring."""
    doc = inspect.getdoc(store) or ""
    args = doc.split("\n\nArgs:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    out, keep = [], False
    for line in args:
        if not line.startswith("        "):
            keep = line.strip().split(":", 1)[0] in names
        if keep:
            out.append(line)
    return "\n".join(out)


def _command(
    name: str,
    write: Callable[..., Path],
    check: Check,
    limit: str,
    default: int,
    store: Callable[..., Path] | None = None,
) -> Callable[..., Path]:
    """``prepare_<name>``: the arguments and docstring of the data set's ``write`` (its datalist writer) plus the
    checks' arguments; every file is checked by ``check(arguments, read_data, num_workers, limit)`` (the data set's
    validator) before ``write`` runs, and nothing is written when there is an error. With ``store`` (a writer of
    pre-processed images taking ``dataset_dir``, ``output_dir``, ``missing``, ``num_workers`` and settings of its own),
    its own arguments are added too, ``output_json`` becomes optional and ``store`` runs when ``output_dir`` is
    given."""
    write_sig = inspect.signature(write)
    stored = _store_arguments(store, write_sig)
    written = [p.replace(default=None) if stored and n == "output_json" else p for n, p in write_sig.parameters.items()]
    extra = [
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d, annotation=a)
        for n, d, a in (
            ("validate", True, bool),
            ("read_data", True, bool),
            ("num_workers", 2, int),
            (limit, default, int),
        )
    ]
    signature = write_sig.replace(parameters=[*written, *stored, *extra])

    def command(*args: Any, **kwargs: Any) -> Path:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        validate, read_data, num_workers = (arguments.pop(k) for k in ("validate", "read_data", "num_workers"))
        most = arguments.pop(limit)
        store_args = {p.name: arguments.pop(p.name) for p in stored}
        writes_store = store_args.get("output_dir") is not None
        if arguments["output_json"] is None and not writes_store:
            raise ArgumentError(
                "give --output_json (the datalist), --output_dir with --cache_size (the store), or both."
            )
        if arguments["output_json"] is not None:
            check_output_file(arguments["output_json"])
        if writes_store:
            check_limit(store_args.get("cache_size"), "cache_size")
            check_output_dir(store_args["output_dir"])
        if "pretrain_extra_images" in arguments:
            arguments["pretrain_extra_images"] = as_bool(arguments["pretrain_extra_images"], "pretrain_extra_images")
        if as_bool(validate, "validate"):
            require_valid(check(arguments, as_bool(read_data, "read_data"), num_workers, check_limit(most, limit)))
        target = write(**arguments) if arguments["output_json"] is not None else None
        if writes_store:
            shared = {k: arguments[k] for k in ("dataset_dir", "missing")}
            target = store(**shared, **store_args, num_workers=check_limit(num_workers, "num_workers"))
        return target

    doc = inspect.getdoc(write) or ""
    doc = doc.replace(
        inspect.cleandoc(_NOT_CHECKED), "Every file is checked first; nothing is written when a check fails."
    )
    unit = "pixels" if limit == "max_pixels" else "voxels"
    head, returns = doc.split("\n\nReturns:", 1)
    checks = _CHECK_ARGS.format(limit=limit, unit=unit)
    if stored:
        summary = (inspect.getdoc(store) or "").split("\n\n", 1)[0]
        head = head.replace(
            "\n\nArgs:", f"\n\nWith output_dir and cache_size: {summary[0].lower()}{summary[1:]}\n\nArgs:", 1
        )
        head += "\n" + _store_doc(store, [p.name for p in stored])
        checks = checks.replace(
            "threads reading files for the check.",
            "threads reading files for the check, and processes writing the store.",
        )
        returns = returns.replace(
            "The absolute path of the written file.",
            "The absolute path of the written datalist, or of the store when output_dir is given.",
        )
    command.__doc__ = head + checks + "\n\nReturns:" + returns
    command.__signature__ = signature  # what fire reads for the command line
    command.__name__ = command.__qualname__ = f"prepare_{name}"
    return command


prepare_btcv = _command(
    "btcv",
    write_btcv_datalist,
    lambda a, r, w, m: validate_btcv(a["dataset_dir"], a["datalist_file"], r, w, m),
    "max_voxels",
    MAX_VOXELS,
)
prepare_brats = _command(
    "brats",
    write_brats_datalist,
    lambda a, r, w, m: validate_brats(a["dataset_dir"], a["datalist_file"], r, w, m),
    "max_voxels",
    MAX_VOXELS,
)
prepare_cxr14 = _command(
    "cxr14",
    write_cxr14_datalist,
    lambda a, r, w, m: validate_cxr14(a["dataset_dir"], a["missing"], a["labels_csv"], r, w, m),
    "max_pixels",
    MAX_PIXELS,
    store=write_cxr14_store,
)

PREPARE_COMMANDS = {"btcv": prepare_btcv, "brats": prepare_brats, "cxr14": prepare_cxr14}


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shared_networks.cli.prepare btcv|brats|cxr14 --dataset_dir DIR --output_json FILE``.

    Args:
        argv: command line arguments; ``None`` reads ``sys.argv``.
    """
    try:
        run_fire(PREPARE_COMMANDS, "shared_networks.cli.prepare", argv, serialize=str)
    except (DatasetError, ArgumentError) as err:  # the report or the argument's problem, without a traceback
        print(err, file=sys.stderr)
        sys.exit(1)
    except (OSError, ValueError, ImageReadError) as err:  # a builder's refusal (--validate false), naming the file
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
