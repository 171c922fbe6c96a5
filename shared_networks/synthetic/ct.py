"""Synthetic abdominal CT in the BTCV tutorial layout, for tests, demos and smoke runs of the bundles.

:func:`make_ct_phantom` draws a contrast-enhanced abdominal CT volume (in HU) with the 13 BTCV organ labels:
an elliptical body (skin, subcutaneous fat, muscle wall, visceral fat) in air on a table, a spine, ribs, psoas and
paraspinal muscles, bowel loops with gas, and smooth randomly perturbed organs at anatomically plausible places.
:func:`write_btcv_phantom_dataset` writes such cases in the BTCV tutorial layout (``imagesTr``, ``labelsTr``,
``dataset_0.json``), which :func:`shared_networks.data.btcv.btcv_datalist` reads like the real data set.

Command line::

    python -m shared_networks.cli.phantoms btcv OUTPUT_DIR --num_cases 6 [--shape 96,96,64] [--seed 0]
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from shared_networks.data.btcv import BTCV_LABELS, DATASET_JSON_NAME
from shared_networks.data.files import save_nifti
from shared_networks.synthetic.common import case_seed, check_geometry, interp_matrix
from shared_networks.synthetic.ct_canvas import (
    AIR_HU,
    AORTA,
    ESOPHAGUS,
    GALLBLADDER,
    IVC,
    L_ADRENAL,
    L_KIDNEY,
    LIVER,
    ORGAN_HU,
    PANCREAS,
    PORTAL_SPLENIC_VEIN,
    R_ADRENAL,
    R_KIDNEY,
    SPLEEN,
    STOMACH,
    Canvas,
    Region,
)
from shared_networks.utils.files import write_json_atomic

__all__ = ["DEFAULT_SHAPE", "DEFAULT_SPACING", "make_ct_phantom", "write_btcv_phantom_dataset"]

logger = logging.getLogger(__name__)

DEFAULT_SHAPE: tuple[int, int, int] = (96, 96, 64)
DEFAULT_SPACING: tuple[float, float, float] = (3.0, 3.0, 4.0)


def _draw_body(canvas: Canvas, with_table: bool) -> np.ndarray:
    """Body wall, table, spine, ribs and back muscles; sets ``canvas.cavity``.

    Returns:
        ``(nx, ny)`` mask of the body cross-section.
    """
    rng, (nx, ny, nz), (sx, sy, sz) = canvas.rng, canvas.shape, canvas.spacing
    xs = (np.arange(nx) * sx - canvas.cx)[:, None] / canvas.a
    ys = (np.arange(ny) * sy - canvas.cy)[None, :] / canvas.b
    u, v = np.broadcast_arrays(xs, ys)
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    body = rho < 1.0

    # Cross-section: skin, subcutaneous fat, muscle wall, visceral fat.
    fat_hu, muscle_hu = -100.0 + rng.normal(0.0, 8.0), 50.0 + rng.normal(0.0, 5.0)
    inner_muscle = rng.uniform(0.78, 0.82)
    outer_muscle = inner_muscle + rng.uniform(0.05, 0.08)
    section = np.full((nx, ny), AIR_HU, dtype=np.float32)
    section[body] = 20.0
    section[rho < 0.97] = fat_hu
    section[rho < outer_muscle] = muscle_hu
    section[rho < inner_muscle] = fat_hu + 10.0
    back_muscles = np.zeros((nx, ny), dtype=bool)
    for side in (-1.0, 1.0):
        back_muscles |= np.hypot((u - side * 0.2) / 0.17, (v + 0.74) / 0.17) < 1.0
    section[back_muscles & (rho < 0.97)] = muscle_hu

    # Spine: vertebral body (cortex and cancellous bone), canal, posterior arch and spinous process.
    vb = np.hypot(u / 0.14, (v + 0.42) / 0.17)
    canal = np.hypot(u / 0.07, (v + 0.66) / 0.08) < 1.0
    arch = (np.hypot(u / 0.15, (v + 0.68) / 0.12) < 1.0) & ~canal
    spinous = np.hypot(u / 0.035, (v + 0.84) / 0.1) < 1.0
    cortex_hu, cancellous_hu = rng.uniform(600.0, 700.0), rng.uniform(400.0, 480.0)
    section[vb < 1.0] = cortex_hu
    section[vb < 0.82] = cancellous_hu
    section[arch | spinous] = rng.uniform(500.0, 600.0)
    section[canal] = 15.0
    spine = (vb < 1.0) | arch | spinous | canal
    canvas.image[:] = section[:, :, None]

    # Intervertebral discs replace the vertebral body every ~32 mm.
    z = np.arange(nz) * sz
    period = 32.0 * canvas.scale
    discs = ((z + rng.uniform(0.0, period)) % period) < 7.0 * canvas.scale
    for k in np.flatnonzero(discs):
        canvas.image[:, :, k][vb < 1.0] = 90.0

    # Ribs in the upper half: helical bands inside the muscle wall, away from the front.
    band = (rho > inner_muscle) & (rho < outer_muscle) & (np.abs(theta - math.pi / 2) > math.radians(50))
    ii, jj = np.nonzero(band)
    w = z / max((nz - 1) * sz, 1e-6)
    phase = rng.uniform(0.0, 1.0)
    pattern = np.cos(2.0 * math.pi * (z[None, :] / (28.0 * canvas.scale) + 0.8 * theta[ii, jj][:, None] + phase)) > 0.75
    pattern &= (w > 0.5)[None, :]
    rib_i, rib_k = np.nonzero(pattern)
    canvas.image[ii[rib_i], jj[rib_i], rib_k] = rng.uniform(450.0, 650.0)

    if with_table:
        top = canvas.cy - canvas.b - 6.0
        yy = np.arange(ny) * sy
        rows = (yy < top) & (yy > top - 30.0)
        shell = rows & ((yy > top - 4.0) | (yy < top - 26.0))
        cols = np.abs(np.arange(nx) * sx - canvas.cx) < 1.15 * canvas.a
        canvas.image[np.ix_(cols, rows)] = -400.0
        canvas.image[np.ix_(cols, shell)] = 150.0

    canvas.cavity = (rho < inner_muscle - 0.01) & ~spine & ~back_muscles
    return body


def _draw_bowel_and_psoas(canvas: Canvas) -> None:
    """Background soft tissue of the lower abdomen (label 0): bowel loops, colon and psoas muscles."""
    rng = canvas.rng
    for _ in range(int(rng.integers(12, 18))):
        centre = (rng.uniform(-0.5, 0.5), rng.uniform(-0.15, 0.6), rng.uniform(0.02, 0.55))
        loop = canvas.ellipsoid(centre, rng.uniform(0.1, 0.17, 3) * np.array([1.0, 1.0, 0.45]), rng.uniform(0, 180))
        if loop is None:
            continue
        region, mask, depth = loop
        content = rng.choice([15.0, -850.0, -150.0], p=[0.5, 0.3, 0.2])
        canvas.paint((region, mask), np.where(depth < 0.7, content, 35.0).astype(np.float32), None)
    for side in (-1.0, 1.0):  # ascending (right) and descending (left) colon with gas and stool
        path = [(side * 0.62, 0.05, 0.08), (side * 0.64, 0.0, 0.35), (side * 0.6, -0.02, 0.6)]
        wall = canvas.tube(path, 22.0, jitter=0.02)
        canvas.paint(wall, 35.0, None)
        if wall is not None:
            region, mask = wall
            shrunk = gaussian_filter(mask.astype(np.float32), 1.0) > 0.85
            canvas.paint((region, shrunk), float(rng.choice([-800.0, -300.0])), None)
    for side in (-1.0, 1.0):  # psoas muscles widen towards the pelvis
        path = [(side * 0.15, -0.42, 0.55), (side * 0.2, -0.38, 0.3), (side * 0.26, -0.3, -0.02)]
        canvas.paint(canvas.tube(path, [6.0, 14.0, 22.0]), 45.0, None)


def _draw_organs(canvas: Canvas) -> None:
    """Draw the 13 BTCV organs, large ones first so that small ones are never erased."""
    rng = canvas.rng

    liver_hu = canvas.hu(LIVER)
    for part in (
        canvas.ellipsoid((0.42, 0.02, 0.72), (0.4, 0.6, 0.2), yaw_deg=10.0, tilt_deg=8.0),
        canvas.ellipsoid((0.02, 0.38, 0.76), (0.36, 0.24, 0.12), yaw_deg=-20.0),
    ):
        canvas.paint(None if part is None else part[:2], liver_hu, LIVER)

    stomach_hu = canvas.hu(STOMACH)
    body = canvas.ellipsoid((-0.22, 0.4, 0.64), (0.24, 0.2, 0.14), yaw_deg=-30.0)
    for part in (canvas.ellipsoid((-0.38, -0.02, 0.8), (0.2, 0.24, 0.11)), body):
        if part is not None:
            region, mask, depth = part
            canvas.paint((region, mask), np.where(depth > 0.85, stomach_hu + 20.0, stomach_hu - 10.0), STOMACH)
    if body is not None and rng.uniform() < 0.7:  # gas pocket at the front of the stomach (supine patient)
        region, mask, _ = body
        _, y, _ = canvas.coords(region)
        front = y > np.quantile(np.broadcast_to(y, mask.shape)[mask], 0.8) if mask.any() else np.zeros_like(mask)
        gas = mask & front & (canvas.label[region] == STOMACH)
        canvas.image[region][gas] = -750.0

    canvas.paint(
        _two(canvas.ellipsoid((-0.55, -0.28, 0.7), (0.16, 0.3, 0.13), yaw_deg=35.0)), canvas.hu(SPLEEN), SPLEEN
    )

    for organ, side in ((R_KIDNEY, 1.0), (L_KIDNEY, -1.0)):
        kidney = canvas.ellipsoid(
            (side * 0.4, -0.37, 0.36 if side > 0 else 0.41), (0.12, 0.17, 0.2), yaw_deg=side * 25.0, tilt_deg=-10.0
        )
        if kidney is not None:
            cortex = canvas.hu(organ)
            region, mask, depth = kidney
            hu = np.where(depth > 0.6, cortex, np.where(depth > 0.35, cortex - 50.0, 20.0)).astype(np.float32)
            canvas.paint((region, mask), hu, organ)

    canvas.paint(
        canvas.tube(
            [(-0.45, -0.1, 0.64), (-0.25, 0.07, 0.62), (0.0, 0.17, 0.6), (0.16, 0.13, 0.53)], [8.0, 9.0, 10.0, 14.0]
        ),
        canvas.hu(PANCREAS),
        PANCREAS,
    )
    canvas.paint(
        _two(canvas.ellipsoid((0.3, 0.38, 0.5), (0.07, 0.1, 0.09), yaw_deg=30.0)), canvas.hu(GALLBLADDER), GALLBLADDER
    )
    canvas.paint(
        canvas.tube(
            [(-0.48, -0.2, 0.66), (-0.25, -0.06, 0.62), (0.02, 0.05, 0.59), (0.18, 0.13, 0.64), (0.3, 0.16, 0.7)], 6.0
        ),
        canvas.hu(PORTAL_SPLENIC_VEIN),
        PORTAL_SPLENIC_VEIN,
    )
    canvas.paint(
        canvas.tube([(-0.08, -0.12, -0.02), (-0.08, -0.11, 0.3), (-0.09, -0.14, 0.6), (-0.07, -0.16, 1.02)], 12.0),
        canvas.hu(AORTA),
        AORTA,
    )
    canvas.paint(
        canvas.tube([(0.14, -0.1, 0.05), (0.15, -0.08, 0.4), (0.16, -0.11, 0.7), (0.12, -0.14, 0.95)], 11.0),
        canvas.hu(IVC),
        IVC,
    )
    canvas.paint(
        canvas.tube([(0.0, 0.07, 1.03), (-0.08, 0.1, 0.9), (-0.2, 0.1, 0.8)], 8.0, jitter=0.015),
        canvas.hu(ESOPHAGUS),
        ESOPHAGUS,
    )
    for organ, side in ((R_ADRENAL, 1.0), (L_ADRENAL, -1.0)):
        adrenal = canvas.ellipsoid(
            (side * 0.24, -0.24, 0.62), (0.045, 0.09, 0.05), yaw_deg=side * 30.0, jitter=0.015, bumps=0.08
        )
        canvas.paint(_two(adrenal), canvas.hu(organ), organ)


def _two(shape: tuple[Region, np.ndarray, np.ndarray] | None) -> tuple[Region, np.ndarray] | None:
    """Drop the depth of a :meth:`~shared_networks.synthetic.ct_canvas.Canvas.ellipsoid` result."""
    return None if shape is None else (shape[0], shape[1])


def make_ct_phantom(
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    seed: int = 0,
    *,
    with_table: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw a synthetic contrast-enhanced abdominal CT with the 13 BTCV organ labels.

    The volume holds an elliptical body (skin, fat ~-100 HU, muscle wall ~50 HU) in air (-1000 HU) on a table, a
    spine (400-700 HU, label 0), ribs, back and psoas muscles, bowel loops with gas, and the organs as smooth
    randomly perturbed ellipsoids and tubes: liver (right upper, ~60 HU), spleen (left, ~50), kidneys (posterior,
    cortex ~150), gallbladder (~10), stomach (left upper, ~20, with a gas pocket), pancreas (~40), aorta (~180),
    inferior vena cava (~120), portal/splenic vein (~140), oesophagus (~35) and adrenals (~30). Positions, sizes,
    shapes and intensities jitter with ``seed``; the image is slightly smoothed and carries ~15 HU Gaussian noise.
    Every label is present at the default geometry; much coarser grids may lose the smallest organs.

    Args:
        shape: array size ``(x, y, z)``, each at least 8.
        spacing: voxel size in mm ``(x, y, z)``.
        seed: random seed; the same seed gives the same case, different seeds different cases.
        with_table: draw the patient table behind the body.

    Returns:
        ``(image, label, affine)``: float32 HU image, uint8 label map (values 0..13, see
        :data:`shared_networks.data.btcv.BTCV_LABELS`) and a 4x4 RAS affine in mm (diagonal spacing, volume
        centred on the scanner origin). Array axes grow to the patient's right, anterior and superior.

    Raises:
        ValueError: if ``shape`` or ``spacing`` is malformed.
    """
    shape, spacing = check_geometry(shape, spacing)
    rng = np.random.default_rng(seed)
    extent = [n * s for n, s in zip(shape, spacing, strict=True)]
    canvas = Canvas(
        shape=shape,
        spacing=spacing,
        rng=rng,
        cx=(shape[0] - 1) * spacing[0] / 2 + rng.uniform(-0.02, 0.02) * extent[0],
        cy=0.53 * extent[1] + rng.uniform(-0.015, 0.015) * extent[1],
        a=0.45 * extent[0] * rng.uniform(0.92, 1.02),
        b=0.36 * extent[1] * rng.uniform(0.92, 1.04),
        image=np.full(shape, AIR_HU, dtype=np.float32),
        label=np.zeros(shape, dtype=np.uint8),
        cavity=np.zeros(shape[:2], dtype=bool),
    )
    body = _draw_body(canvas, with_table)
    _draw_bowel_and_psoas(canvas)
    _draw_organs(canvas)

    # Low-frequency tissue texture inside the body, partial-volume blur, then quantum noise.
    knots = rng.normal(0.0, 1.0, (6, 6, 5))
    texture = np.einsum(
        "ia,jb,kc,abc->ijk",
        *(interp_matrix(n, k) for n, k in zip(shape, knots.shape, strict=True)),
        knots,
        optimize=True,
    )
    image = canvas.image + (5.0 * texture * body[:, :, None]).astype(np.float32)
    image = gaussian_filter(image, sigma=0.45, mode="nearest")
    image += rng.standard_normal(shape, dtype=np.float32) * np.float32(15.0 * rng.uniform(0.85, 1.15))
    np.clip(image, -1024.0, 3071.0, out=image)

    present = set(np.unique(canvas.label).tolist())
    missing = [BTCV_LABELS[k] for k in ORGAN_HU if k not in present]
    if missing:
        logger.warning("Phantom (shape %s, spacing %s, seed %s) lacks %s.", shape, spacing, seed, ", ".join(missing))

    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-(n - 1) * s / 2 for n, s in zip(shape, spacing, strict=True)]
    return image.astype(np.float32, copy=False), canvas.label, affine


def write_btcv_phantom_dataset(
    output_dir: str | os.PathLike[str],
    num_cases: int = 6,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    seed: int = 0,
) -> Path:
    """Write synthetic abdominal CT cases in the BTCV tutorial layout.

    Writes ``imagesTr/img0001.nii.gz ...`` (float32 HU), ``labelsTr/label0001.nii.gz ...`` (uint8, BTCV labels,
    same affine) and ``dataset_0.json`` in the tutorial's format, whose ``validation`` list holds the last third
    of the cases (at least one when there are two or more) and ``training`` the others. Every file is written to a
    temporary name and renamed, so an interrupted run leaves no half-written file.

    Args:
        output_dir: folder to write (created when missing).
        num_cases: number of cases, at least 1.
        shape: array size of each case, see :func:`make_ct_phantom`.
        spacing: voxel size in mm.
        seed: seed of the data set; each case gets its own seed derived from it.

    Returns:
        The absolute path of ``output_dir``.

    Raises:
        ValueError: if ``num_cases``, ``shape`` or ``spacing`` is malformed, or ``output_dir`` is a file.
    """
    if isinstance(num_cases, bool) or not isinstance(num_cases, (int, np.integer)) or num_cases < 1:
        raise ValueError(f"num_cases must be a positive integer, got {num_cases!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    shape, spacing = check_geometry(shape, spacing)
    root = Path(output_dir).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ValueError(f"output_dir '{root}' exists and is not a folder.")
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)

    entries = []
    for case in range(1, int(num_cases) + 1):
        image, label, affine = make_ct_phantom(shape, spacing, seed=case_seed(int(seed), case))
        entry = {"image": f"imagesTr/img{case:04d}.nii.gz", "label": f"labelsTr/label{case:04d}.nii.gz"}
        save_nifti(image, affine, root / entry["image"])
        save_nifti(label, affine, root / entry["label"])
        entries.append(entry)
    stale = sorted(
        p.name
        for p in (root / "imagesTr").glob("img*.nii.gz")
        if p.name not in {Path(e["image"]).name for e in entries}
    )
    if stale:
        logger.warning(
            "'%s' holds images from an earlier run not listed in %s: %s", root / "imagesTr", DATASET_JSON_NAME, stale
        )

    num_val = max(1, round(num_cases / 3)) if num_cases >= 2 else 0
    content = {
        "description": "Synthetic contrast-enhanced abdominal CT phantoms with the 13 BTCV organ labels",
        "labels": {str(k): name for k, name in BTCV_LABELS.items()},
        "licence": "CC0-1.0 (synthetic data)",
        "modality": {"0": "CT"},
        "name": "btcv_phantom",
        "numTest": 0,
        "numTraining": int(num_cases),
        "reference": "shared_networks.synthetic.ct.write_btcv_phantom_dataset",
        "release": "1.0",
        "tensorImageSize": "3D",
        "phantom": {"seed": int(seed), "shape": list(shape), "spacing": list(spacing)},
        "test": [],
        "training": entries[: len(entries) - num_val],
        "validation": entries[len(entries) - num_val :],
    }
    write_json_atomic(content, root / DATASET_JSON_NAME)
    logger.info("Wrote %d BTCV phantom cases (%d validation) to '%s'.", num_cases, num_val, root)
    return root
