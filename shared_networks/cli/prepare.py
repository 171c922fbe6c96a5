"""Prepare a data set for the bundles: check every file, then write the datalist JSON (nothing when a check fails).

Command line::

    python -m shared_networks.cli.prepare btcv --dataset_dir DIR --output_json FILE [--split transunet] [--seed 0]
    python -m shared_networks.cli.prepare brats --dataset_dir DIR --output_json FILE [--fold 0] [--num_folds 5]
    python -m shared_networks.cli.prepare cxr14 --dataset_dir DIR --output_json FILE [--val_fraction 0.1] [--seed 0]

Each command takes the arguments of the data set's datalist builder (:mod:`shared_networks.data.btcv`, ``.brats``,
``.cxr14``) and ``--validate`` / ``--read_data`` / ``--num_workers`` for the checks of
:mod:`shared_networks.validation`; a data set with errors prints its report and exits with status 1.

The datalist's ``pretrain`` list (what MAE pre-training reads) is the training images. ``btcv`` and ``brats`` add the
data set's unlabelled images (BTCV ``imagesTs/`` or ``Testing/img/``, MSD ``imagesTs/``, BraTS folders without a
segmentation) only with ``--pretrain_extra_images true``; ChestX-ray14's NIH layout holds no unlabelled image.
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
from shared_networks.utils.flags import as_bool
from shared_networks.validation.datasets import validate_brats, validate_btcv, validate_cxr14
from shared_networks.validation.images import MAX_PIXELS
from shared_networks.validation.problems import DatasetError, require_valid
from shared_networks.validation.volumes import MAX_VOXELS

__all__ = [
    "PREPARE_COMMANDS",
    "ArgumentError",
    "check_limit",
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


def _command(name: str, write: Callable[..., Path], check: Check, limit: str, default: int) -> Callable[..., Path]:
    """``prepare_<name>``: the arguments and docstring of the data set's ``write`` (its datalist writer) plus the
    checks' arguments; every file is checked by ``check(arguments, read_data, num_workers, limit)`` (the data set's
    validator) before ``write`` runs, and nothing is written when there is an error."""
    write_sig = inspect.signature(write)
    extra = [
        inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d, annotation=a)
        for n, d, a in (
            ("validate", True, bool),
            ("read_data", True, bool),
            ("num_workers", 2, int),
            (limit, default, int),
        )
    ]
    signature = write_sig.replace(parameters=[*write_sig.parameters.values(), *extra])

    def command(*args: Any, **kwargs: Any) -> Path:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        validate, read_data, num_workers = (arguments.pop(k) for k in ("validate", "read_data", "num_workers"))
        most = arguments.pop(limit)
        check_output_file(arguments["output_json"])
        if "pretrain_extra_images" in arguments:
            arguments["pretrain_extra_images"] = as_bool(arguments["pretrain_extra_images"], "pretrain_extra_images")
        if as_bool(validate, "validate"):
            require_valid(check(arguments, as_bool(read_data, "read_data"), num_workers, check_limit(most, limit)))
        return write(**arguments)

    doc = inspect.getdoc(write) or ""
    doc = doc.replace(
        inspect.cleandoc(_NOT_CHECKED), "Every file is checked first; nothing is written when a check fails."
    )
    unit = "pixels" if limit == "max_pixels" else "voxels"
    head, returns = doc.split("\n\nReturns:", 1)
    command.__doc__ = head + _CHECK_ARGS.format(limit=limit, unit=unit) + "\n\nReturns:" + returns
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
    except (OSError, ValueError) as err:  # a datalist builder's refusal (--validate false), naming file and problem
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
