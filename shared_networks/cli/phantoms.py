"""Write synthetic data sets (phantoms) in the public layouts, for demos and smoke runs.

Command line::

    python -m shared_networks.cli.phantoms btcv OUTPUT_DIR --num_cases 6 [--shape 96,96,64] [--seed 0]
    python -m shared_networks.cli.phantoms cxr OUTPUT_DIR --num_patients 60 [--size 256] [--seed 0]
    python -m shared_networks.cli.phantoms msd OUTPUT_DIR --num_cases 6 [--num_unlabelled 1] [--seed 0]
    python -m shared_networks.cli.phantoms brats2021 OUTPUT_DIR --num_cases 6
"""

from __future__ import annotations

from collections.abc import Sequence

from shared_networks.cli import run_fire
from shared_networks.synthetic.brain import DEFAULT_SHAPE as BRAIN_SHAPE
from shared_networks.synthetic.brain import DEFAULT_SPACING as BRAIN_SPACING
from shared_networks.synthetic.brain import write_brats2021_phantom_dataset, write_msd_phantom_dataset
from shared_networks.synthetic.ct import DEFAULT_SHAPE as CT_SHAPE
from shared_networks.synthetic.ct import DEFAULT_SPACING as CT_SPACING
from shared_networks.synthetic.ct import write_btcv_phantom_dataset
from shared_networks.synthetic.cxr import write_cxr14_phantom_dataset

__all__ = ["PhantomCommands", "main"]


class PhantomCommands:
    """Write synthetic data sets (``btcv``: abdominal CT in the BTCV tutorial layout; ``cxr``: chest radiographs in
    the NIH ChestX-ray14 layout; ``msd`` and ``brats2021``: brain tumour MRI in the MSD Task01 and BraTS 2021
    layouts)."""

    def btcv(
        self,
        output_dir: str,
        num_cases: int = 6,
        shape: Sequence[int] = CT_SHAPE,
        spacing: Sequence[float] = CT_SPACING,
        seed: int = 0,
    ) -> str:
        """Write synthetic abdominal CTs with 13 organ labels as imagesTr/, labelsTr/ and dataset_0.json.

        Args:
            output_dir: folder to write.
            num_cases: number of cases; the last third are listed as validation.
            shape: array size of each case, e.g. 96,96,64.
            spacing: voxel size in mm, e.g. 3,3,4.
            seed: seed of the data set.

        Returns:
            The folder written.
        """
        return str(write_btcv_phantom_dataset(output_dir, num_cases=num_cases, shape=shape, spacing=spacing, seed=seed))

    def cxr(
        self,
        output_dir: str,
        num_patients: int = 60,
        size: int = 256,
        seed: int = 0,
        prevalence: float = 0.15,
        test_fraction: float = 0.2,
    ) -> str:
        """Write synthetic chest radiographs with the 14 findings as images/, Data_Entry_2017.csv and the split lists.

        Args:
            output_dir: folder to write.
            num_patients: number of patients (1-3 images each).
            size: image side in pixels.
            seed: seed of the data set.
            prevalence: probability of each finding per patient.
            test_fraction: fraction of patients listed in test_list.txt.

        Returns:
            The folder written.
        """
        return str(
            write_cxr14_phantom_dataset(
                output_dir,
                num_patients=num_patients,
                size=size,
                seed=seed,
                prevalence=prevalence,
                test_fraction=test_fraction,
            )
        )

    def msd(
        self,
        output_dir: str,
        num_cases: int = 6,
        num_unlabelled: int = 1,
        shape: Sequence[int] = BRAIN_SHAPE,
        spacing: Sequence[float] = BRAIN_SPACING,
        seed: int = 0,
    ) -> str:
        """Write the MSD Task01 layout: imagesTr/ (4-D), labelsTr/, imagesTs/, dataset.json.

        Args:
            output_dir: folder to write.
            num_cases: labelled cases.
            num_unlabelled: unlabelled cases (imagesTs).
            shape: array size of each case, e.g. 80,96,72.
            spacing: voxel size in mm, e.g. 2,2,2.
            seed: seed of the data set.

        Returns:
            The folder written.
        """
        return str(write_msd_phantom_dataset(output_dir, num_cases, num_unlabelled, shape, spacing, seed))

    def brats2021(
        self,
        output_dir: str,
        num_cases: int = 6,
        num_unlabelled: int = 1,
        shape: Sequence[int] = BRAIN_SHAPE,
        spacing: Sequence[float] = BRAIN_SPACING,
        seed: int = 0,
    ) -> str:
        """Write the BraTS 2021 layout: BraTS2021_NNNNN/BraTS2021_NNNNN_{flair,t1,t1ce,t2,seg}.nii.gz.

        Args:
            output_dir: folder to write.
            num_cases: labelled cases.
            num_unlabelled: cases without seg.
            shape: array size of each case, e.g. 80,96,72.
            spacing: voxel size in mm, e.g. 2,2,2.
            seed: seed of the data set.

        Returns:
            The folder written.
        """
        return str(write_brats2021_phantom_dataset(output_dir, num_cases, num_unlabelled, shape, spacing, seed))


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m shared_networks.cli.phantoms btcv|cxr|msd|brats2021 OUTPUT_DIR``.

    Args:
        argv: command line arguments; ``None`` reads ``sys.argv``.
    """
    run_fire(PhantomCommands, "shared_networks.cli.phantoms", argv)


if __name__ == "__main__":
    main()
