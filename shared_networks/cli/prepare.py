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

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from shared_networks.cli import run_fire
from shared_networks.data.brats import write_brats_datalist
from shared_networks.data.btcv import write_btcv_datalist
from shared_networks.data.cxr14 import write_cxr14_datalist
from shared_networks.utils.flags import as_bool
from shared_networks.validation.datasets import validate_brats, validate_btcv, validate_cxr14
from shared_networks.validation.images import MAX_PIXELS
from shared_networks.validation.report import DatasetError, require_valid
from shared_networks.validation.volumes import MAX_VOXELS

__all__ = [
    "PREPARE_COMMANDS", "ArgumentError", "check_limit", "check_output_file", "main", "prepare_brats", "prepare_btcv",
    "prepare_cxr14",
]  # fmt: skip

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


def prepare_btcv(
    dataset_dir: PathLike,
    output_json: PathLike,
    split: str = "seeded",
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    num_val: int | None = None,
    datalist_file: PathLike | None = None,
    pretrain_extra_images: bool = False,
    validate: bool = True,
    read_data: bool = True,
    num_workers: int = 2,
    max_voxels: int = MAX_VOXELS,
) -> Path:
    """Check every file of a BTCV folder, then write its datalist JSON (training/validation/test/pretrain).

    The dataset folder may hold either public layout. The Synapse download: RawData/Training/img/img0001.nii.gz
    with RawData/Training/label/label0001.nii.gz and unlabelled RawData/Testing/img/ (the RawData/ prefix may be
    left out). The tutorial layout of UNETR/Swin-UNETR: imagesTr/img0001.nii.gz with labelsTr/label0001.nii.gz,
    optional unlabelled imagesTs/ and an optional dataset_0.json with a pre-made training/validation split.
    Images and labels are paired by the case number in their file names. Paths under the dataset folder are
    written relative to it; the file is written atomically (temporary file, then rename). A dataset_0.json may name
    only files inside the dataset folder, and its training and validation lists must not be empty or overlap.

    Args:
        dataset_dir: folder of the BTCV data set (either layout).
        output_json: JSON file to write.
        split: "seeded" (random split with seed), "transunet" (the usual 12 test cases) or "dataset_json" (the
            split of dataset_0.json).
        seed: seed of the random split.
        val_fraction: fraction of cases for validation.
        test_fraction: fraction of cases for test ("seeded" only).
        num_val: number of validation cases; overrides val_fraction.
        datalist_file: an existing datalist JSON to check and rewrite instead of splitting.
        pretrain_extra_images: add the unlabelled images (imagesTs/, Testing/img/) to the pretrain list; default:
            the training images alone.
        validate: check every file first (shared_networks.validation: missing, unpaired, truncated or corrupt files,
            wrong dimensions or channels, grids, label values, NaN, constant images, split lists) and write nothing
            when there is an error; warnings are logged.
        read_data: with validate, read the voxel data too (False: headers only, faster, NaN and truncated data
            unnoticed).
        num_workers: threads reading files for the check.
        max_voxels: files whose header declares more voxels are reported as errors, not read.

    Returns:
        The absolute path of the written JSON file.
    """
    check_output_file(output_json)
    if as_bool(validate, "validate"):
        require_valid(
            validate_btcv(dataset_dir, datalist_file, read_data, num_workers, check_limit(max_voxels, "max_voxels"))
        )
    return write_btcv_datalist(
        dataset_dir, output_json, split=split, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
        num_val=num_val, datalist_file=datalist_file,
        pretrain_extra_images=as_bool(pretrain_extra_images, "pretrain_extra_images"),
    )  # fmt: skip


def prepare_brats(
    dataset_dir: PathLike,
    output_json: PathLike,
    fold: int = 0,
    num_folds: int = 5,
    seed: int = 0,
    datalist_file: PathLike | None = None,
    pretrain_extra_images: bool = False,
    validate: bool = True,
    read_data: bool = True,
    num_workers: int = 2,
    max_voxels: int = MAX_VOXELS,
) -> Path:
    """Check every file of an MSD Task01 or BraTS 2021 folder, then write its datalist JSON (train/val/test/pretrain).

    The folder may hold the MSD Task01 layout (imagesTr/ 4-D FLAIR, T1w, t1gd, T2w files, labelsTr/, optional
    unlabelled imagesTs/) or BraTS 2021 case folders (BraTS2021_NNNNN/BraTS2021_NNNNN_{flair,t1,t1ce,t2,seg}.nii.gz;
    folders without seg are unlabelled). The labelled cases are shuffled with the seed and dealt into num_folds
    folds: test is fold `fold`, validation the next fold, training the rest. Paths under the folder are written
    relative to it; the file is written atomically.

    Args:
        dataset_dir: folder of the data set (either layout).
        output_json: JSON file to write.
        fold: test fold (validation is fold + 1 mod num_folds).
        num_folds: number of folds.
        seed: seed of the split.
        datalist_file: an existing datalist JSON to check and rewrite instead of splitting.
        pretrain_extra_images: add the unlabelled images (MSD imagesTs/, BraTS folders without seg) to the pretrain
            list; default: the training images alone.
        validate: check every file first (shared_networks.validation: missing, unpaired, truncated or corrupt files,
            wrong dimensions or channels, grids, label values, NaN, constant images, split lists) and write nothing
            when there is an error; warnings are logged.
        read_data: with validate, read the voxel data too (False: headers only, faster, NaN and truncated data
            unnoticed).
        num_workers: threads reading files for the check.
        max_voxels: files whose header declares more voxels are reported as errors, not read.

    Returns:
        The absolute path of the written file.
    """
    check_output_file(output_json)
    if as_bool(validate, "validate"):
        require_valid(
            validate_brats(dataset_dir, datalist_file, read_data, num_workers, check_limit(max_voxels, "max_voxels"))
        )
    return write_brats_datalist(
        dataset_dir, output_json, fold=fold, num_folds=num_folds, seed=seed, datalist_file=datalist_file,
        pretrain_extra_images=as_bool(pretrain_extra_images, "pretrain_extra_images"),
    )  # fmt: skip


def prepare_cxr14(
    dataset_dir: PathLike,
    output_json: PathLike,
    val_fraction: float = 0.1,
    seed: int = 0,
    num_val: int | None = None,
    missing: str = "error",
    labels_csv: PathLike | None = None,
    validate: bool = True,
    read_data: bool = True,
    num_workers: int = 2,
    max_pixels: int = MAX_PIXELS,
) -> Path:
    """Check every file of a ChestX-ray14 folder in the NIH layout, then write its datalist JSON.

    The NIH layout: images/00000001_000.png ... (or the download's images_001/images/ ... images_012/images/),
    Data_Entry_2017.csv or Data_Entry_2017_v2020.csv (columns "Image Index", "Finding Labels", "Patient ID"; findings
    separated by '|', "No Finding" for none), train_val_list.txt and test_list.txt (one image name per line, the
    official patient-wise split). test is test_list.txt; pretrain is the training images.
    Image paths under the dataset folder are written relative to it; the file is written atomically. The
    arguments are those of cxr14_datalist: the validation split is val_fraction of the train_val_list.txt
    patients (or num_val patients), drawn with seed; missing="skip" leaves out listed images absent from disk.

    Args:
        dataset_dir: folder in the NIH layout.
        output_json: JSON file to write.
        val_fraction: fraction of train_val patients for validation.
        seed: seed of the patient shuffle.
        num_val: number of validation patients; overrides val_fraction.
        missing: "error" or "skip" for listed images absent from disk.
        labels_csv: label file; default Data_Entry_2017_v2020.csv or Data_Entry_2017.csv.
        validate: check every file first (shared_networks.validation: missing, unpaired, truncated or corrupt files,
            wrong dimensions or channels, grids, label values, NaN, constant images, split lists) and write nothing
            when there is an error; warnings are logged.
        read_data: with validate, read the voxel data too (False: headers only, faster, NaN and truncated data
            unnoticed).
        num_workers: threads reading files for the check.
        max_pixels: images whose header declares more pixels are reported as errors, not decoded.

    Returns:
        The absolute path of the written file.
    """
    check_output_file(output_json)
    if as_bool(validate, "validate"):
        max_pixels = check_limit(max_pixels, "max_pixels")
        require_valid(validate_cxr14(dataset_dir, missing, labels_csv, read_data, num_workers, max_pixels))
    return write_cxr14_datalist(
        dataset_dir, output_json, val_fraction=val_fraction, seed=seed, num_val=num_val, missing=missing,
        labels_csv=labels_csv,
    )  # fmt: skip


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
