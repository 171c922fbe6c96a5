"""Synthetic skull-stripped 4-channel brain MRI with a glioma, in the MSD Task01 and BraTS 2021 layouts.

:func:`make_brain_phantom` draws a brain (white matter, grey matter, ventricles and a thin CSF rim; zero outside, as
in skull-stripped BraTS data) holding one tumour: peritumoural edema around a core made of an enhancing rim and a
necrotic / non-enhancing centre. The four channels (FLAIR, T1w, T1gd, T2w, the MSD order) carry the usual contrasts:
edema bright on FLAIR and T2, the rim bright on T1gd only, CSF bright on T2 and dark on FLAIR and T1. Each channel
has its own scale, a smooth bias field and noise.

:func:`write_msd_phantom_dataset` and :func:`write_brats2021_phantom_dataset` write such cases in the two public
layouts, which :func:`shared_networks.data.brats.brats_datalist` reads like the real data sets, with each layout's
own label numbering (see :mod:`shared_networks.data.regions`).

Command line::

    python -m shared_networks.cli.phantoms msd OUTPUT_DIR --num_cases 6 [--num_unlabelled 1] [--seed 0]
    python -m shared_networks.cli.phantoms brats2021 OUTPUT_DIR --num_cases 6
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from shared_networks.data.brats import BRATS2021_LABEL_SUFFIX, BRATS2021_SUFFIXES, MODALITIES
from shared_networks.data.files import save_nifti
from shared_networks.data.regions import LABEL_CONVENTIONS
from shared_networks.synthetic.common import case_seed, check_geometry, interp_matrix
from shared_networks.utils.files import write_json_atomic

__all__ = [
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "make_brain_phantom",
    "write_brats2021_phantom_dataset",
    "write_msd_phantom_dataset",
]

logger = logging.getLogger(__name__)

DEFAULT_SHAPE: tuple[int, int, int] = (80, 96, 72)
DEFAULT_SPACING: tuple[float, float, float] = (2.0, 2.0, 2.0)

# tissue classes of the drawing; the tumour classes map to label values through shared_networks.data.regions
BACKGROUND, WM, GM, CSF, EDEMA, CORE, ENHANCING = range(7)
# mean intensity of each tissue class (rows) in each channel (columns: FLAIR, T1w, T1gd, T2w)
TISSUE_INTENSITY = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],  # background (outside the brain)
        [400.0, 700.0, 700.0, 350.0],  # white matter
        [480.0, 500.0, 520.0, 500.0],  # grey matter
        [120.0, 200.0, 220.0, 1000.0],  # CSF
        [820.0, 420.0, 430.0, 820.0],  # edema
        [560.0, 260.0, 270.0, 900.0],  # necrotic / non-enhancing core
        [650.0, 450.0, 1150.0, 650.0],  # enhancing rim
    ],
    dtype=np.float32,
)


def _smooth_field(shape: Sequence[int], rng: np.random.Generator, knots: int = 5) -> np.ndarray:
    """A smooth random field of ``shape`` with values of about unit size (knots interpolated linearly)."""
    grid = rng.normal(0.0, 1.0, (knots,) * 3)
    field = np.einsum("ia,jb,kc,abc->ijk", *(interp_matrix(n, knots) for n in shape), grid, optimize=True)
    return field.astype(np.float32)


def make_brain_phantom(
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    seed: int = 0,
    layout: str = "msd",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw a synthetic skull-stripped 4-channel brain MRI with a tumour.

    The brain is a randomly perturbed ellipsoid filling about 85 % of the field (per axis); the tumour (edema radius
    24-38 mm, enhancing rim 5-11 mm thick) sits in one hemisphere and holds all three tumour labels at the default
    geometry.

    Args:
        shape: array size ``(x, y, z)``, each at least 8.
        spacing: voxel size in mm.
        seed: random seed; the same seed gives the same case.
        layout: label numbering: ``"msd"`` (1 edema, 2 non-enhancing, 3 enhancing) or ``"brats2021"`` (2 edema,
            1 necrotic core, 4 enhancing).

    Returns:
        ``(image, label, affine)``: float32 image ``(x, y, z, 4)`` with channels FLAIR, T1w, T1gd, T2w (0 outside the
        brain), uint8 label map ``(x, y, z)``, and a 4x4 affine in mm with the x and y axes flipped (LPS-ordered
        arrays, as ITK writes BraTS files), so that readers must reorient.

    Raises:
        ValueError: if ``shape``, ``spacing`` or ``layout`` is malformed.
    """
    if layout not in LABEL_CONVENTIONS:
        raise ValueError(f"layout must be one of {sorted(LABEL_CONVENTIONS)}, got {layout!r}.")
    shape, spacing = check_geometry(shape, spacing)
    rng = np.random.default_rng(seed)
    extent = np.array(shape) * np.array(spacing)
    axes = [(np.arange(n) + 0.5) * s - e / 2 for n, s, e in zip(shape, spacing, extent, strict=True)]  # mm from centre
    x, y, z = np.meshgrid(*axes, indexing="ij")

    # brain: perturbed ellipsoid; r < 1 inside
    semi = extent * np.array([0.41, 0.42, 0.4]) * rng.uniform(0.92, 1.05, 3)
    r = np.sqrt((x / semi[0]) ** 2 + (y / semi[1]) ** 2 + (z / semi[2]) ** 2) * (1 + 0.04 * _smooth_field(shape, rng))
    tissue = np.full(shape, BACKGROUND, dtype=np.uint8)
    tissue[r < 1.0] = GM
    tissue[r < 0.78 + 0.05 * _smooth_field(shape, rng, knots=7)] = WM
    tissue[(r > 0.95) & (r < 1.0)] = CSF  # thin CSF rim under the (removed) skull
    for side in (-1.0, 1.0):  # lateral ventricles
        vx, vy, vz = x - side * 0.12 * semi[0], y - 0.05 * semi[1], z - 0.1 * semi[2]
        tissue[(vx / (0.08 * semi[0])) ** 2 + (vy / (0.35 * semi[1])) ** 2 + (vz / (0.15 * semi[2])) ** 2 < 1] = CSF

    # tumour: edema ⊃ enhancing rim ⊃ necrotic centre, irregular radial profile
    side = rng.choice([-1.0, 1.0])
    centre = np.array([side * rng.uniform(0.3, 0.5), rng.uniform(-0.35, 0.35), rng.uniform(-0.25, 0.3)]) * semi
    radius = rng.uniform(24.0, 38.0)
    d = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / radius
    d = d * (1 + 0.12 * _smooth_field(shape, rng, knots=6))
    core, rim = rng.uniform(0.5, 0.7), rng.uniform(0.2, 0.3)  # in units of the edema radius
    brain = r < 1.0
    tissue[brain & (d < 1.0)] = EDEMA
    tissue[brain & (d < core)] = ENHANCING
    tissue[brain & (d < core - rim)] = CORE

    # contrasts: per-channel gain, smooth bias field, partial-volume blur, noise; zero outside the brain
    texture = 1.0 + 0.04 * _smooth_field(shape, rng, knots=9)[..., None]
    image = TISSUE_INTENSITY[tissue] * texture * rng.uniform(0.6, 1.6, 4).astype(np.float32)  # (x, y, z, 4)
    for c in range(len(MODALITIES)):
        bias = 1.0 + 0.08 * _smooth_field(shape, rng, knots=3)
        channel = gaussian_filter(image[..., c] * bias, sigma=0.6)
        channel += rng.normal(0.0, 0.03 * float(channel[brain].mean()), shape).astype(np.float32)
        image[..., c] = np.where(brain, np.maximum(channel, 1.0), 0.0)

    conv = LABEL_CONVENTIONS[layout]
    values = np.zeros(len(TISSUE_INTENSITY), dtype=np.uint8)
    values[[EDEMA, CORE, ENHANCING]] = conv.edema, conv.core, conv.enhancing
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = [extent[0] / 2, extent[1] / 2, -extent[2] / 2]
    return image.astype(np.float32), values[tissue], affine


def _check_counts(num_cases: int, num_unlabelled: int, seed: int) -> None:
    """Raise ``ValueError`` naming a bad count or seed."""
    for name, value, low in (("num_cases", num_cases, 0), ("num_unlabelled", num_unlabelled, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    if num_cases + num_unlabelled < 1:
        raise ValueError("num_cases + num_unlabelled must be at least 1.")


def _output_root(output_dir: str | os.PathLike[str]) -> Path:
    """``output_dir`` resolved and created; ``ValueError`` when it is a file."""
    root = Path(output_dir).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ValueError(f"output_dir '{root}' exists and is not a folder.")
    root.mkdir(parents=True, exist_ok=True)
    return root


def write_msd_phantom_dataset(
    output_dir: str | os.PathLike[str],
    num_cases: int = 6,
    num_unlabelled: int = 1,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    seed: int = 0,
) -> Path:
    """Write synthetic brain tumour cases in the MSD Task01 layout.

    Writes ``imagesTr/BRATS_001.nii.gz ...`` (4-D float32, channels FLAIR, T1w, t1gd, T2w), ``labelsTr/`` (uint8,
    MSD numbering), ``imagesTs/`` (the unlabelled cases, numbered after the labelled ones) and ``dataset.json`` as
    in the decathlon. Files are written to a temporary name and renamed.

    Args:
        output_dir: folder to write (created when missing).
        num_cases: labelled cases.
        num_unlabelled: unlabelled cases in ``imagesTs``.
        shape: array size of each case.
        spacing: voxel size in mm.
        seed: seed of the data set; each case gets its own seed derived from it.

    Returns:
        The absolute path of ``output_dir``.

    Raises:
        ValueError: if a count, ``shape`` or ``spacing`` is malformed, or ``output_dir`` is a file.
    """
    _check_counts(num_cases, num_unlabelled, seed)
    shape, spacing = check_geometry(shape, spacing)
    root = _output_root(output_dir)
    training, test = [], []
    for case in range(1, num_cases + num_unlabelled + 1):
        image, label, affine = make_brain_phantom(shape, spacing, case_seed(seed, case), layout="msd")
        name = f"BRATS_{case:03d}.nii.gz"
        folder = "imagesTr" if case <= num_cases else "imagesTs"
        (root / folder).mkdir(exist_ok=True)
        save_nifti(image, affine, root / folder / name)
        if case <= num_cases:
            (root / "labelsTr").mkdir(exist_ok=True)
            save_nifti(label, affine, root / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            test.append(f"./imagesTs/{name}")
    content = {
        "name": "BRATS",
        "description": "Synthetic 4-channel brain MRI with a glioma (shared_networks.synthetic.brain)",
        "licence": "CC0-1.0 (synthetic data)",
        "tensorImageSize": "4D",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": num_cases,
        "numTest": num_unlabelled,
        "phantom": {"seed": int(seed), "shape": list(shape), "spacing": list(spacing)},
        "training": training,
        "test": test,
    }
    write_json_atomic(content, root / "dataset.json")
    logger.info("Wrote %d labelled and %d unlabelled MSD-layout phantoms to '%s'.", num_cases, num_unlabelled, root)
    return root


def write_brats2021_phantom_dataset(
    output_dir: str | os.PathLike[str],
    num_cases: int = 6,
    num_unlabelled: int = 1,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    seed: int = 0,
) -> Path:
    """Write synthetic brain tumour cases in the BraTS 2021 layout.

    Writes one folder per case, ``BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2}.nii.gz`` (3-D int16, one
    modality each, one affine) and, for the labelled cases, ``BraTS2021_00000_seg.nii.gz`` (uint8, BraTS numbering:
    1 necrotic core, 2 edema, 4 enhancing); the unlabelled cases follow the labelled ones and have no ``seg``.

    Args:
        output_dir: folder to write (created when missing).
        num_cases: labelled cases.
        num_unlabelled: cases without a label.
        shape: array size of each case.
        spacing: voxel size in mm.
        seed: seed of the data set; each case gets its own seed derived from it.

    Returns:
        The absolute path of ``output_dir``.

    Raises:
        ValueError: if a count, ``shape`` or ``spacing`` is malformed, or ``output_dir`` is a file.
    """
    _check_counts(num_cases, num_unlabelled, seed)
    shape, spacing = check_geometry(shape, spacing)
    root = _output_root(output_dir)
    for index in range(num_cases + num_unlabelled):
        image, label, affine = make_brain_phantom(shape, spacing, case_seed(seed, index + 1), layout="brats2021")
        case = f"BraTS2021_{index:05d}"
        folder = root / case
        folder.mkdir(exist_ok=True)
        for c, suffix in enumerate(BRATS2021_SUFFIXES):
            save_nifti(np.round(image[..., c]).astype(np.int16), affine, folder / f"{case}_{suffix}.nii.gz")
        if index < num_cases:
            save_nifti(label, affine, folder / f"{case}_{BRATS2021_LABEL_SUFFIX}.nii.gz")
    logger.info("Wrote %d labelled and %d unlabelled BraTS 2021 phantoms to '%s'.", num_cases, num_unlabelled, root)
    return root
