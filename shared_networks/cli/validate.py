"""Check a data set and report every problem, by file (exit status 1 when there is an error).

Command line::

    python -m shared_networks.cli.validate btcv --dataset_dir DIR
    python -m shared_networks.cli.validate brats --dataset_dir DIR
    python -m shared_networks.cli.validate cxr14 --dataset_dir DIR [--missing skip] [--report_json FILE]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from shared_networks.cli import run_fire
from shared_networks.cli.prepare import ArgumentError, check_limit, check_output_file
from shared_networks.validation.datasets import validate_brats, validate_btcv, validate_cxr14
from shared_networks.validation.images import MAX_PIXELS
from shared_networks.validation.problems import ValidationReport
from shared_networks.validation.volumes import MAX_VOXELS

__all__ = ["ValidationCommands", "main"]

PathLike = str | os.PathLike[str]

_VALIDATORS: dict[str, Callable[..., ValidationReport]] = {
    "btcv": validate_btcv,
    "brats": validate_brats,
    "cxr14": validate_cxr14,
}


def _start(report_json: PathLike | None, limit: int, name: str) -> None:
    """Arguments checked before any data is read: the report file and the size limit."""
    if report_json:
        check_output_file(report_json, "--report_json")
    check_limit(limit, name)


def _finish(report: ValidationReport, report_json: PathLike | None, max_shown: int) -> ValidationReport:
    print(report.format(max_shown))
    if report_json:
        report.write_json(report_json)
    if not report.ok:
        sys.exit(1)
    return report


class ValidationCommands:
    """Check a data set and report every problem (exit status 1 when there is an error, 0 otherwise).

    Each command reads every file (voxel data included: truncated .nii.gz files and NaN values show only there);
    give --read_data false to read headers only. --report_json FILE writes every problem as JSON.
    """

    def btcv(
        self,
        dataset_dir: str,
        datalist_file: str | None = None,
        read_data: bool = True,
        num_workers: int = 2,
        report_json: str | None = None,
        max_shown: int = 100,
        max_voxels: int = MAX_VOXELS,
    ) -> None:
        """Check a BTCV folder: the Synapse layout RawData/Training/img/img0001.nii.gz with
        RawData/Training/label/label0001.nii.gz (optional RawData/Testing/img/; the RawData/ prefix may be left out),
        or the tutorial layout imagesTr/img0001.nii.gz with labelsTr/label0001.nii.gz (optional imagesTs/).
        Images must be 3-D CTs, labels 3-D maps of 0..13 on the image's grid.

        Args:
            dataset_dir: the BTCV folder.
            datalist_file: check the files of this datalist JSON instead.
            read_data: read voxel data too.
            num_workers: threads reading files.
            report_json: also write the problems to this JSON file.
            max_shown: problems printed of each kind.
            max_voxels: files whose header declares more voxels are reported, not read.
        """
        _start(report_json, max_voxels, "max_voxels")
        _finish(validate_btcv(dataset_dir, datalist_file, read_data, num_workers, max_voxels), report_json, max_shown)

    def brats(
        self,
        dataset_dir: str,
        datalist_file: str | None = None,
        read_data: bool = True,
        num_workers: int = 2,
        report_json: str | None = None,
        max_shown: int = 100,
        max_voxels: int = MAX_VOXELS,
    ) -> None:
        """Check an MSD Task01 folder (imagesTr/BRATS_001.nii.gz 4-D FLAIR, T1w, t1gd, T2w; labelsTr/; optional
        imagesTs/) or BraTS 2021 case folders (BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz).
        Labels must hold MSD 0-3 or BraTS 2021 0, 1, 2, 4 on the image's grid.

        Args:
            dataset_dir: the data set folder.
            datalist_file: check the files of this datalist JSON instead.
            read_data: read voxel data too.
            num_workers: threads reading files.
            report_json: also write the problems to this JSON file.
            max_shown: problems printed of each kind.
            max_voxels: files whose header declares more voxels are reported, not read.
        """
        _start(report_json, max_voxels, "max_voxels")
        _finish(validate_brats(dataset_dir, datalist_file, read_data, num_workers, max_voxels), report_json, max_shown)

    def cxr14(
        self,
        dataset_dir: str,
        missing: str = "error",
        labels_csv: str | None = None,
        read_data: bool = True,
        num_workers: int = 2,
        report_json: str | None = None,
        max_shown: int = 100,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        """Check a ChestX-ray14 folder in the NIH layout: images/*.png (or images_001/images/ ...),
        Data_Entry_2017.csv (or Data_Entry_2017_v2020.csv), train_val_list.txt and test_list.txt.

        Args:
            dataset_dir: the NIH folder.
            missing: "error" or "skip" (a warning) for listed images absent from disk.
            labels_csv: label file, default Data_Entry_2017_v2020.csv or Data_Entry_2017.csv.
            read_data: decode every image too.
            num_workers: threads decoding images.
            report_json: also write the problems to this JSON file.
            max_shown: problems printed of each kind.
            max_pixels: images whose header declares more pixels are reported, not decoded.
        """
        _start(report_json, max_pixels, "max_pixels")
        report = validate_cxr14(dataset_dir, missing, labels_csv, read_data, num_workers, max_pixels)
        _finish(report, report_json, max_shown)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shared_networks.cli.validate btcv|brats|cxr14 --dataset_dir DIR``.

    Args:
        argv: command line arguments; ``None`` reads ``sys.argv``.
    """
    try:
        run_fire(ValidationCommands, "shared_networks.cli.validate", argv)
    except ArgumentError as err:  # found before any data is read; no traceback
        print(err, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
