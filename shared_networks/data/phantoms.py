"""Synthetic data sets for tests, demos and smoke runs of the bundles.

:func:`make_ct_phantom` draws a contrast-enhanced abdominal CT volume (in HU) with the 13 BTCV organ labels:
an elliptical body (skin, subcutaneous fat, muscle wall, visceral fat) in air on a table, a spine, ribs, psoas and
paraspinal muscles, bowel loops with gas, and smooth randomly perturbed organs at anatomically plausible places.
:func:`write_btcv_phantom_dataset` writes such cases in the BTCV tutorial layout (``imagesTr``, ``labelsTr``,
``dataset_0.json``), which :func:`shared_networks.data.btcv.btcv_datalist` reads like the real data set.

:func:`make_cxr_phantom` draws a frontal (PA) chest radiograph in [0, 1]: dark lungs with vascular markings, a
bright mediastinum, spine and heart, ribs, clavicles, diaphragm and gastric bubble, and any of the 14 ChestX-ray14
findings drawn so that each changes the image in its own learnable way. :func:`write_cxr14_phantom_dataset` writes
such images in the NIH ChestX-ray14 layout (``images/*.png``, ``Data_Entry_2017.csv``, ``train_val_list.txt``,
``test_list.txt``), which :func:`shared_networks.data.cxr14.cxr14_datalist` reads like the real data set.

Command line::

    python -m shared_networks.data.phantoms btcv OUTPUT_DIR --num_cases 6 [--shape 96,96,64] [--seed 0]
    python -m shared_networks.data.phantoms cxr OUTPUT_DIR --num_patients 60 [--size 256] [--seed 0]
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.interpolate import CubicSpline
from scipy.ndimage import gaussian_filter

from shared_networks.cli import run_fire
from shared_networks.data.btcv import BTCV_LABELS, DATASET_JSON_NAME
from shared_networks.data.cxr14 import CXR14_FINDINGS, TEST_LIST, TRAIN_VAL_LIST
from shared_networks.data.files import save_nifti
from shared_networks.io import atomic_write_text, write_json_atomic

__all__ = [
    "CXR_CSV_COLUMNS", "DEFAULT_SHAPE", "DEFAULT_SPACING", "PhantomCommands", "make_ct_phantom", "make_cxr_phantom",
    "write_btcv_phantom_dataset", "write_cxr14_phantom_dataset",
]  # fmt: skip

logger = logging.getLogger(__name__)

DEFAULT_SHAPE: tuple[int, int, int] = (96, 96, 64)
DEFAULT_SPACING: tuple[float, float, float] = (3.0, 3.0, 4.0)
MIN_SIZE = 8  # smallest accepted size of each axis

AIR_HU = -1000.0
# Nominal half width (left-right) and half depth (antero-posterior) of an adult abdomen in mm; organ and vessel sizes
# given in mm below are scaled by the ratio of the drawn body to this nominal one.
_NOMINAL_A_MM = 160.0
_NOMINAL_B_MM = 115.0

# BTCV label values (see shared_networks.data.btcv.BTCV_LABELS).
SPLEEN, R_KIDNEY, L_KIDNEY, GALLBLADDER, ESOPHAGUS, LIVER, STOMACH = 1, 2, 3, 4, 5, 6, 7
AORTA, IVC, PORTAL_SPLENIC_VEIN, PANCREAS, R_ADRENAL, L_ADRENAL = 8, 9, 10, 11, 12, 13

# Mean contrast-enhanced (portal venous phase) HU of each organ.
ORGAN_HU: dict[int, float] = {
    SPLEEN: 50.0,
    R_KIDNEY: 150.0,
    L_KIDNEY: 150.0,
    GALLBLADDER: 10.0,
    ESOPHAGUS: 35.0,
    LIVER: 60.0,
    STOMACH: 20.0,
    AORTA: 180.0,
    IVC: 120.0,
    PORTAL_SPLENIC_VEIN: 140.0,
    PANCREAS: 40.0,
    R_ADRENAL: 30.0,
    L_ADRENAL: 30.0,
}

Region = tuple[slice, slice, slice]


def check_geometry(
    shape: Sequence[int], spacing: Sequence[float]
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Validate and normalise ``shape`` and ``spacing``.

    Raises:
        ValueError: if ``shape`` is not 3 integers >= ``MIN_SIZE`` or ``spacing`` not 3 positive finite numbers.
    """
    try:
        values = [int(v) for v in shape]
        ok = len(values) == 3 and all(v == s and v >= MIN_SIZE for v, s in zip(values, shape, strict=True))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"shape must be 3 integers of at least {MIN_SIZE}, got {shape!r}.")
    try:
        steps = [float(v) for v in spacing]
        ok = len(steps) == 3 and all(math.isfinite(v) and v > 0 for v in steps)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing!r}.")
    return (values[0], values[1], values[2]), (steps[0], steps[1], steps[2])


def _rotation(yaw_deg: float, tilt_deg: float) -> np.ndarray:
    """Rotation about the z axis by ``yaw_deg`` followed by a tilt about the x axis by ``tilt_deg``."""
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    c, s = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    rx = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return rz @ rx


def interp_matrix(n: int, k: int) -> np.ndarray:
    """``(n, k)`` matrix interpolating ``k`` evenly spread knots linearly onto ``n`` points."""
    positions = np.linspace(0.0, k - 1.0, n)
    knots = np.arange(k, dtype=float)
    return np.stack([np.interp(positions, knots, column) for column in np.eye(k)], axis=1)


@dataclass
class _Canvas:
    """Volume being drawn with its geometry in body coordinates.

    Body coordinates: ``u`` runs from the body centre to the patient's right (+1 at the body edge), ``v`` to the
    anterior (+1 at the body edge), ``w`` from the inferior (0) to the superior (1) end of the volume. The array
    axes follow RAS: index ``i`` grows to the right, ``j`` anterior, ``k`` superior.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    rng: np.random.Generator
    cx: float
    cy: float
    a: float
    b: float
    image: np.ndarray
    label: np.ndarray
    cavity: np.ndarray  # (nx, ny) where organs may be drawn: inside the muscle wall, outside spine and back muscles

    @property
    def length_z(self) -> float:
        """Extent of the volume along z in mm."""
        return self.shape[2] * self.spacing[2]

    @property
    def scale(self) -> float:
        """Size of the drawn body relative to the nominal adult abdomen."""
        return math.sqrt(self.a * self.b / (_NOMINAL_A_MM * _NOMINAL_B_MM))

    def to_mm(self, uvw: Sequence[float] | np.ndarray) -> np.ndarray:
        """Body coordinates ``(..., 3)`` to positions in mm from the centre of voxel 0."""
        uvw = np.asarray(uvw, dtype=float)
        return np.stack(
            [
                self.cx + uvw[..., 0] * self.a,
                self.cy + uvw[..., 1] * self.b,
                uvw[..., 2] * (self.shape[2] - 1) * self.spacing[2],
            ],
            axis=-1,
        )

    def region(self, center: np.ndarray, half: np.ndarray) -> Region | None:
        """Index box covering ``center +- half`` (mm), clipped to the volume; ``None`` when empty."""
        slices = []
        for c, h, s, n in zip(center, half, self.spacing, self.shape, strict=True):
            lo = max(int(math.floor((c - h) / s)), 0)
            hi = min(int(math.ceil((c + h) / s)) + 1, n)
            if hi <= lo:
                return None
            slices.append(slice(lo, hi))
        return slices[0], slices[1], slices[2]

    def coords(self, region: Region) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable mm coordinates ``(X,1,1)``, ``(1,Y,1)``, ``(1,1,Z)`` of the voxels of ``region``."""
        axes = [np.arange(sl.start, sl.stop, dtype=np.float32) * s for sl, s in zip(region, self.spacing, strict=True)]
        return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]

    def ellipsoid(
        self,
        center_uvw: Sequence[float],
        radii_uvw: Sequence[float],
        yaw_deg: float = 0.0,
        tilt_deg: float = 0.0,
        jitter: float = 0.03,
        bumps: float = 0.12,
    ) -> tuple[Region, np.ndarray, np.ndarray] | None:
        """Smooth randomly perturbed ellipsoid.

        Args:
            center_uvw: centre in body coordinates.
            radii_uvw: semi-axes as fractions of the body half width, half depth and volume length.
            yaw_deg: rotation about z in degrees.
            tilt_deg: tilt about the left-right axis in degrees.
            jitter: uniform jitter of the centre in body coordinates.
            bumps: amplitude of the smooth perturbation of the surface, relative to the radius.

        Returns:
            ``(region, mask, depth)`` where ``depth`` is the normalised radial coordinate (0 at the centre, 1 on
            the surface), or ``None`` when the ellipsoid lies outside the volume.
        """
        rng = self.rng
        center = self.to_mm(np.asarray(center_uvw) + rng.uniform(-jitter, jitter, 3))
        radii = np.asarray(radii_uvw, dtype=float) * np.array([self.a, self.b, self.length_z])
        radii = np.maximum(radii * rng.uniform(0.88, 1.12, 3), np.asarray(self.spacing))
        rotation = _rotation(yaw_deg + rng.uniform(-12.0, 12.0), tilt_deg + rng.uniform(-6.0, 6.0))
        frequencies = rng.normal(0.0, 2.2, (3, 3))
        phases = rng.uniform(0.0, 2.0 * math.pi, 3)
        amplitudes = bumps * rng.uniform(0.3, 1.0, 3) / 2.0
        region = self.region(center, np.full(3, radii.max() * (1.0 + amplitudes.sum())))
        if region is None:
            return None
        x, y, z = self.coords(region)
        d = (x - center[0], y - center[1], z - center[2])
        # local coordinates p = R^T d, normalised by the radii
        q = [sum(rotation[j, k] * d[j] for j in range(3)) / radii[k] for k in range(3)]
        dist = np.sqrt(q[0] ** 2 + q[1] ** 2 + q[2] ** 2)
        inv = 1.0 / np.maximum(dist, 1e-6)
        wobble = sum(
            amplitudes[t]
            * np.sin((frequencies[t, 0] * q[0] + frequencies[t, 1] * q[1] + frequencies[t, 2] * q[2]) * inv + phases[t])
            for t in range(3)
        )
        depth = dist / (1.0 + wobble)
        return region, depth < 1.0, depth

    def tube(
        self, points_uvw: Sequence[Sequence[float]], radii_mm: Sequence[float] | float, jitter: float = 0.025
    ) -> tuple[Region, np.ndarray] | None:
        """Tube of varying radius along a smooth curve through jittered control points.

        Args:
            points_uvw: control points of the centre line in body coordinates.
            radii_mm: radius at each control point (or one radius) in nominal adult mm; scaled with the body.
            jitter: uniform jitter of the control points in body coordinates.

        Returns:
            ``(region, mask)``, or ``None`` when the tube lies outside the volume.
        """
        rng = self.rng
        controls = np.asarray(points_uvw, dtype=float)
        controls = self.to_mm(controls + rng.uniform(-jitter, jitter, controls.shape))
        radii = np.broadcast_to(np.asarray(radii_mm, dtype=float), (len(controls),)) * self.scale
        radii = np.maximum(radii * rng.uniform(0.85, 1.15), 0.6 * max(self.spacing[:2]))
        chord = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(controls, axis=0), axis=1))]
        step = 0.5 * min(radii.min(), min(self.spacing))
        t = np.linspace(0.0, chord[-1], max(int(math.ceil(chord[-1] / step)) + 1, 2))
        centres = CubicSpline(chord, controls, axis=0, bc_type="natural")(t) if len(controls) > 2 else None
        if centres is None:
            centres = np.stack([np.interp(t, chord, controls[:, k]) for k in range(3)], axis=1)
        r = np.interp(t, chord, radii)
        region = self.region((centres.min(0) + centres.max(0)) / 2, (centres.max(0) - centres.min(0)) / 2 + r.max())
        if region is None:
            return None
        mask = np.zeros(tuple(sl.stop - sl.start for sl in region), dtype=bool)
        offset = np.array([sl.start for sl in region])
        for centre, radius in zip(centres, r, strict=True):
            box = self.region(centre, np.full(3, radius))
            if box is None:
                continue
            x, y, z = self.coords(box)
            inside = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= radius**2
            local = tuple(slice(sl.start - o, sl.stop - o) for sl, o in zip(box, offset, strict=True))
            mask[local] |= inside
        return region, mask

    def paint(self, shape: tuple[Region, np.ndarray] | None, hu: float | np.ndarray, value: int | None) -> np.ndarray:
        """Paint a mask into the image (HU) and, when ``value`` is given, into the label map, inside the cavity.

        Args:
            shape: ``(region, mask)`` from :meth:`ellipsoid`/:meth:`tube` (``None`` paints nothing).
            hu: HU value, or an array of the region's shape.
            value: label value, or ``None`` to leave the labels (background structures).

        Returns:
            The painted mask of the region (empty when nothing was painted).
        """
        if shape is None:
            return np.zeros((0, 0, 0), dtype=bool)
        region, mask = shape[0], shape[1]
        mask = mask & self.cavity[region[0], region[1], None]
        self.image[region][mask] = hu[mask] if isinstance(hu, np.ndarray) else hu
        if value is not None:
            self.label[region][mask] = value
        return mask

    def hu(self, organ: int) -> float:
        """Jittered mean HU of ``organ`` (contrast and patient variation)."""
        base = ORGAN_HU[organ]
        return base * float(self.rng.uniform(0.9, 1.1)) + float(self.rng.uniform(-3.0, 3.0))


def _draw_body(canvas: _Canvas, with_table: bool) -> np.ndarray:
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


def _draw_bowel_and_psoas(canvas: _Canvas) -> None:
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


def _draw_organs(canvas: _Canvas) -> None:
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
    """Drop the depth of an :meth:`_Canvas.ellipsoid` result."""
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
    canvas = _Canvas(
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


def case_seed(seed: int, case: int) -> int:
    """Independent seed of case ``case`` of a data set generated with ``seed``."""
    return int(np.random.SeedSequence([seed, case]).generate_state(1)[0])


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
        "reference": "shared_networks.data.phantoms.write_btcv_phantom_dataset",
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


# ---- chest radiographs (ChestX-ray14 layout) ----

CXR_MIN_SIZE = 32  # smallest image side
CXR_CSV_COLUMNS: tuple[str, ...] = (
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender", "View Position",
    "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]",
)  # fmt: skip
"""Header fields of the NIH ``Data_Entry_2017.csv`` (its two bracketed pairs hold a comma, hence 11 fields)."""


def _soft(signed: np.ndarray, edge: float) -> np.ndarray:
    """Soft indicator of ``signed < 0``: 1 inside, 0 outside, a logistic edge ``edge`` wide."""
    return 0.5 * (1.0 - np.tanh(signed / (2.0 * edge)))


def _blend(image: np.ndarray, value: float | np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``image`` replaced by ``value`` where ``weight`` is 1, linearly blended where it is between 0 and 1."""
    return image * (1.0 - weight) + value * weight


def _texture(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """(size, size) band-limited noise of unit standard deviation, features about ``scale`` of the image wide."""
    t = gaussian_filter(rng.standard_normal((size, size)), sigma=max(scale * size, 0.5), mode="wrap")
    return t / max(float(t.std()), 1e-6)


def _lines(texture: np.ndarray, width: float) -> np.ndarray:
    """Thin curvilinear lines along the zero crossings of a texture (vessels, septa, reticulation)."""
    return np.exp(-((texture / width) ** 2))


@dataclass
class _Chest:
    """Coordinates and anatomy of one radiograph.

    ``u`` runs from the image's left to its right and ``v`` from top to bottom, both in [-1, 1] at the image edges
    (before the exposure's small shift and rotation). PA view: the patient's right lung is on the image's left
    (side 0), the heart bulges to the image's right.
    """

    u: np.ndarray
    v: np.ndarray
    rng: np.random.Generator
    lung_cx: float
    lung_cy: float
    lung_rx: float
    lung_ry: float
    domes: list[float]  # apex height of each hemidiaphragm, image left (patient right) first
    dome_depth: float  # how far the costophrenic angles lie below the apex
    heart: list[float]  # centre u, centre v, half width, half height

    def radius(self, cu: float, cv: float, ru: float, rv: float) -> np.ndarray:
        """Normalised elliptical radius about ``(cu, cv)``: below 1 inside the ellipse."""
        return np.sqrt(((self.u - cu) / ru) ** 2 + ((self.v - cv) / rv) ** 2)

    def lung(self, side: int) -> np.ndarray:
        """Soft mask of the lung on image side ``side`` (0 left, 1 right): an ellipse cut by its hemidiaphragm
        and by the mediastinum."""
        s = 2 * side - 1
        cu = s * self.lung_cx
        t = np.clip((self.u - cu) / self.lung_rx, -1.0, 1.0)
        floor = self.domes[side] + self.dome_depth * t**2
        outside = np.maximum(self.radius(cu, self.lung_cy, self.lung_rx, self.lung_ry) - 1.0,
                             (self.v - floor) / self.lung_ry)  # fmt: skip
        outside = np.maximum(outside, (0.07 - s * self.u) / self.lung_rx)
        return _soft(outside, 0.02)

    def point_in_lung(self, side: int, zone: tuple[float, float] = (-0.7, 0.6)) -> tuple[float, float]:
        """A random point well inside a lung, its height within ``zone`` (fractions of the lung's half height)."""
        s = 2 * side - 1
        for _ in range(100):
            t, h = self.rng.uniform(-0.65, 0.65), self.rng.uniform(*zone)
            u, v = s * self.lung_cx + t * self.lung_rx, self.lung_cy + h * self.lung_ry
            if v < self.domes[side] - 0.05 and s * u > 0.14:
                return u, v
        return s * self.lung_cx, self.lung_cy


def _draw_lung_findings(c: _Chest, image: np.ndarray, lungs: list[np.ndarray], findings: set[str]) -> np.ndarray:
    """Findings inside the lungs and pleura (all but cardiomegaly, emphysema and hernia); returns the image."""
    rng, u, v, size = c.rng, c.u, c.v, image.shape[0]
    lung_all = np.clip(lungs[0] + lungs[1], 0.0, 1.0)
    if "Infiltration" in findings:  # patchy ill-defined opacities in both lungs
        blobs = np.zeros_like(image)
        for _ in range(int(rng.integers(3, 7))):
            pu, pv = c.point_in_lung(int(rng.integers(2)))
            s = rng.uniform(0.035, 0.06)
            blobs += np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * s * s))
        image = image + 0.14 * np.clip(blobs, 0, 1) * (0.7 + 0.3 * _texture(rng, size, 1 / 64).clip(-1, 1)) * lung_all
    if "Pneumonia" in findings:  # one large mottled cloud, mid or lower zone
        pu, pv = c.point_in_lung(int(rng.integers(2)), (-0.1, 0.5))
        s = rng.uniform(0.09, 0.12)
        cloud = np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * s * s))
        image = image + 0.24 * cloud * (0.75 + 0.25 * _texture(rng, size, 1 / 50).clip(-1, 1)) * lung_all
    if "Consolidation" in findings:  # a lobe of homogeneous density with a sharp fissure and air bronchograms
        side, lower = int(rng.integers(2)), bool(rng.random() < 0.6)
        cut = c.lung_cy + (rng.uniform(0.1, 0.3) if lower else -rng.uniform(0.15, 0.3)) * c.lung_ry
        region = lungs[side] * _soft((cut - v) if lower else (v - cut), 0.01)
        image = _blend(image, 0.5 - 0.08 * _lines(_texture(rng, size, 1 / 60), 0.25), region)
    if "Edema" in findings:  # bilateral perihilar haze and Kerley B lines at the lateral bases
        hila = np.minimum(c.radius(-0.18, c.lung_cy + 0.1, 1, 1.3), c.radius(0.18, c.lung_cy + 0.1, 1, 1.3))
        kerley = np.zeros_like(image)
        for side in (0, 1):
            edge = (2 * side - 1) * (c.lung_cx + 0.8 * c.lung_rx)
            for _ in range(5):
                pv = c.domes[side] - rng.uniform(0.04, 0.22)
                kerley += _soft(np.abs(v - pv) - 0.006, 0.004) * _soft(np.abs(u - edge) - 0.06, 0.01)
        image = image + (0.2 * np.exp(-(hila**2) / 0.06) + 0.14 * np.clip(kerley, 0, 1)) * lung_all
    if "Fibrosis" in findings:  # reticular net, basal predominance
        net = np.maximum(_lines(_texture(rng, size, 1 / 120), 0.3), _lines(_texture(rng, size, 1 / 120), 0.3))
        image = image + 0.14 * net * np.clip((v - c.lung_cy + 0.2) / 0.6, 0, 1) * lung_all
    if "Atelectasis" in findings:  # plate-like band above the raised hemidiaphragm (see make_cxr_phantom)
        side = int(np.argmin(c.domes))
        pv, tilt = c.domes[side] - rng.uniform(0.1, 0.2), rng.uniform(-0.25, 0.25)
        plate = _soft(np.abs(v - pv - tilt * (u - (2 * side - 1) * c.lung_cx)) - 0.018, 0.008)
        image = image + 0.26 * plate * lungs[side]
    if "Mass" in findings:  # one lobulated opacity, 7-10 % of the image wide
        pu, pv = c.point_in_lung(int(rng.integers(2)))
        r = rng.uniform(0.07, 0.1) * (1.0 + 0.12 * np.sin(3 * np.arctan2(v - pv, u - pu) + rng.uniform(0, 2 * np.pi)))
        image = image + 0.32 * _soft(np.hypot(u - pu, v - pv) - r, 0.008) * lung_all
    if "Nodule" in findings:  # one to three small round opacities
        for _ in range(int(rng.integers(1, 4))):
            pu, pv = c.point_in_lung(int(rng.integers(2)))
            image = image + 0.3 * _soft(np.hypot(u - pu, v - pv) - rng.uniform(0.02, 0.035), 0.005) * lung_all
    if "Effusion" in findings:  # fluid filling the lung base, meniscus rising to the chest wall
        for side in [0, 1] if rng.random() < 0.3 else [int(rng.integers(2))]:
            s = 2 * side - 1
            lateral = np.clip(s * (u - s * c.lung_cx) / c.lung_rx, -1, 1)  # +1 at the chest wall
            meniscus = c.domes[side] - rng.uniform(0.12, 0.25) - 0.1 * (lateral + 1.0)
            image = _blend(image, 0.6, lungs[side] * _soft(meniscus - v, 0.015))
    if "Pneumothorax" in findings:  # dark pleural air without markings around the collapsed lung
        side, k = int(rng.integers(2)), rng.uniform(0.62, 0.8)
        s = 2 * side - 1
        r = c.radius(s * (c.lung_cx - 0.6 * (1 - k) * c.lung_rx), c.lung_cy + 0.5 * (1 - k) * c.lung_ry,
                     k * c.lung_rx, k * c.lung_ry)  # fmt: skip
        image = _blend(image, 0.06, lungs[side] * (1.0 - _soft(r - 1.0, 0.01)))
        image = image + 0.12 * lungs[side] * np.exp(-(((r - 1.0) / 0.03) ** 2))  # the visceral pleural line
    if "Pleural_Thickening" in findings:  # a bright band along the lateral chest wall
        side = int(rng.integers(2))
        s = 2 * side - 1
        r = c.radius(s * c.lung_cx, c.lung_cy, c.lung_rx, c.lung_ry)
        lateral = np.clip(s * (u - s * c.lung_cx) / c.lung_rx + 0.2, 0, 1)
        image = image + 0.3 * lungs[side] * _soft(0.86 - r, 0.01) * lateral
    return image


def make_cxr_phantom(
    findings: Iterable[str] = (), size: int = 256, seed: int = 0, anatomy_seed: int | None = None
) -> np.ndarray:
    """Draw a synthetic frontal (PA) chest radiograph with the given ChestX-ray14 findings.

    Normal anatomy: a soft-tissue body in air, dark lungs with vascular markings fading from the hila, a bright
    mediastinum and spine, the heart (cardiothoracic ratio about 0.35), domed hemidiaphragms (the right higher),
    a gastric bubble, posterior ribs and clavicles; exposure, position (±4 % shift, ±3° rotation), blur and quantum
    noise vary. Findings, several per image possible:

    ========================  ===================================================================================
    Atelectasis               plate-like band above a raised hemidiaphragm (volume loss)
    Cardiomegaly              heart 1.35-1.5 times wider (cardiothoracic ratio above 0.5)
    Effusion                  fluid (bright) filling a lung base with a meniscus rising laterally; 30 % bilateral
    Infiltration              3-6 patchy ill-defined opacities
    Mass                      one lobulated opacity 7-10 % of the image wide
    Nodule                    1-3 small round opacities 2-3.5 % wide
    Pneumonia                 one large mottled cloud in a mid or lower zone
    Pneumothorax              very dark pleural air without markings around a collapsed lung, a thin pleural line
    Consolidation             a lobe of homogeneous density with a sharp border and air bronchograms
    Edema                     bilateral perihilar haze and Kerley B lines at the lateral bases
    Emphysema                 hyperlucent, taller lungs with few markings, low flat diaphragm, narrow heart
    Fibrosis                  reticular net with basal predominance
    Pleural_Thickening        bright band along the lateral chest wall
    Hernia                    retrocardiac round opacity with a gas bubble above an air-fluid level
    ========================  ===================================================================================

    Args:
        findings: names from :data:`shared_networks.data.cxr14.CXR14_FINDINGS`; empty for a normal image.
        size: image side in pixels, at least 32.
        seed: seed of this image (exposure, position, findings' places).
        anatomy_seed: seed of the patient's build (lung, heart and body sizes), shared by a patient's follow-up
            images; ``seed`` when None.

    Returns:
        (size, size) float32 image in [0, 1], rows from the top (head) down, columns from the image's left.

    Raises:
        ValueError: for an unknown finding or a bad ``size``.
    """
    wanted = set(findings)
    unknown = sorted(wanted - set(CXR14_FINDINGS))
    if unknown:
        raise ValueError(f"unknown finding(s) {unknown}; expected names from {list(CXR14_FINDINGS)}.")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < CXR_MIN_SIZE:
        raise ValueError(f"size must be an integer of at least {CXR_MIN_SIZE}, got {size!r}.")
    size = int(size)
    build = np.random.default_rng(seed if anatomy_seed is None else anatomy_seed)
    rng = np.random.default_rng(seed)

    lung_cx, lung_cy = build.uniform(0.42, 0.46), build.uniform(-0.14, -0.08)
    lung_rx, lung_ry = build.uniform(0.33, 0.37), build.uniform(0.6, 0.68)
    heart = [build.uniform(0.08, 0.12), build.uniform(0.22, 0.28), build.uniform(0.28, 0.32), 0.0]
    heart[3] = heart[2] * build.uniform(0.68, 0.78)
    body_w, rib_gap = build.uniform(0.86, 0.95), build.uniform(0.105, 0.125)
    dome_depth = 0.14
    if "Emphysema" in wanted:
        lung_ry *= 1.12
        dome_depth = 0.06
        heart[2] *= 0.85
    if "Cardiomegaly" in wanted:
        heart[2] *= rng.uniform(1.35, 1.5)
        heart[3] *= rng.uniform(1.1, 1.25)
        heart[0] += 0.04
    domes = [
        lung_cy + 0.82 * lung_ry + rng.uniform(-0.02, 0.02) - 0.03,
        lung_cy + 0.82 * lung_ry + rng.uniform(-0.02, 0.02),
    ]
    if "Emphysema" in wanted:
        domes = [d + 0.06 for d in domes]
    if "Atelectasis" in wanted:
        domes[int(rng.integers(2))] -= 0.09  # volume loss pulls one hemidiaphragm up

    angle = math.radians(rng.uniform(-3.0, 3.0))
    grid = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    vv, uu = np.meshgrid(grid, grid, indexing="ij")  # (H, W): rows v, columns u
    du, dv = rng.uniform(-0.04, 0.04, 2)
    u = math.cos(angle) * uu - math.sin(angle) * vv + du
    v = math.sin(angle) * uu + math.cos(angle) * vv + dv
    c = _Chest(u, v, rng, lung_cx, lung_cy, lung_rx, lung_ry, domes, dome_depth, heart)

    # body, mediastinum, spine
    body = _soft(np.abs(u) - body_w * (1.0 - 0.08 * (v - 0.1) ** 2), 0.01)
    image = _blend(np.full((size, size), 0.04), 0.5, body)
    image = _blend(image, 0.68, _soft(np.abs(u) - (0.09 + 0.025 * (v + 1.0)), 0.015) * body)
    image = image + 0.08 * _soft(np.abs(u) - 0.045, 0.01) * body * (0.7 + 0.3 * np.cos(v * 40.0) ** 2)

    # lungs with vascular markings, then the findings inside them
    lungs = [c.lung(0), c.lung(1)]
    hila = np.minimum(c.radius(-0.14, lung_cy + 0.1, 1, 1), c.radius(0.14, lung_cy + 0.1, 1, 1))
    markings = (
        (0.035 if "Emphysema" in wanted else 0.1) * _lines(_texture(rng, size, 1 / 90), 0.35) * np.exp(-hila / 0.45)
    )
    lung_value = 0.1 if "Emphysema" in wanted else 0.17
    image = _blend(image, lung_value + markings, np.clip(lungs[0] + lungs[1], 0.0, 1.0))
    image = _draw_lung_findings(c, image, lungs, wanted)

    # heart over the lungs, a hiatal hernia behind it, the gastric bubble under the left hemidiaphragm
    hu, hv, hru, hrv = c.heart
    image = _blend(image, 0.66, _soft(c.radius(hu, hv, hru, hrv) - 1.0, 0.012) * body)
    if "Hernia" in wanted:
        cv, r = hv + hrv * rng.uniform(0.5, 0.8), rng.uniform(0.08, 0.11)
        sac = _soft(np.hypot(u - 0.4 * hu, v - cv) - r, 0.008)
        image = _blend(image, 0.78, sac)
        image = _blend(image, 0.2, sac * _soft(v - cv + rng.uniform(0.0, 0.03), 0.004))  # gas over the fluid level
    image = _blend(image, 0.25, _soft(c.radius(0.75 * lung_cx, domes[1] + 0.08, 0.08, 0.05) - 1, 0.02) * body)

    # posterior ribs within the thoracic cage, clavicles
    bones = np.zeros_like(image)
    au = np.abs(u)
    cage = _soft(0.08 - au, 0.01) * _soft(au - 0.9 * body_w, 0.01) * _soft(v - max(domes) - 0.05, 0.02)
    for k in range(10):
        centre = -0.94 + k * rib_gap + 0.7 * (au - 0.4) ** 2 + 0.1 * au
        bones += _soft(np.abs(v - centre) - 0.016, 0.006) * cage
    for s in (-1, 1):
        t = np.clip((s * u - 0.06) / 0.5, 0, 1)
        bones += _soft(np.abs(v + 0.72 + 0.06 * t - 0.02 * t**2) - 0.022, 0.006) * _soft(
            np.abs(s * u - 0.31) - 0.25, 0.01
        )
    image = image + 0.08 * np.clip(bones, 0, 1.5) * body

    # detector blur, exposure, quantum noise
    image = gaussian_filter(image, sigma=max(size / 384, 0.3))
    image = image * rng.uniform(0.92, 1.08) + rng.uniform(-0.03, 0.03)
    image = image + rng.normal(0.0, rng.uniform(0.008, 0.016), image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _save_png(image: np.ndarray, path: Path, mode: str) -> None:
    """Save a [0, 1] image as an 8-bit grey (``"L"``), 16-bit grey (``"I;16"``) or RGBA PNG, atomically."""
    from PIL import Image

    if mode == "I;16":
        pil = Image.fromarray(np.round(image * 65535.0).astype(np.uint16))
    else:
        grey = np.round(image * 255.0).astype(np.uint8)
        if mode == "RGBA":  # grey in R, G and B, opaque alpha: the quirk of a few NIH images
            grey = np.stack([grey, grey, grey, np.full_like(grey, 255)], axis=-1)
        pil = Image.fromarray(grey, mode=mode)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(handle)
    try:
        pil.save(tmp_name, format="PNG")
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _seed_of(*keys: int) -> int:
    """Independent seed for a tuple of non-negative integers (data set seed, patient, image)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def _png_mode(index: int) -> str:
    """PNG storage of the ``index``-th image: mostly 8-bit grey, one in 20 RGBA and one in 20 16-bit grey."""
    return {7: "RGBA", 13: "I;16"}.get(index % 20, "L")


def write_cxr14_phantom_dataset(
    output_dir: str | os.PathLike[str],
    num_patients: int = 60,
    size: int = 256,
    seed: int = 0,
    prevalence: float = 0.15,
    test_fraction: float = 0.2,
    max_followups: int = 3,
) -> Path:
    """Write synthetic chest radiographs in the NIH ChestX-ray14 layout.

    Each patient gets 1..``max_followups`` images (``{patient:08d}_{follow-up:03d}.png``) sharing one build; each
    finding is present in a patient with probability ``prevalence`` and persists into a follow-up with
    probability 0.8, and any finding may newly appear in a follow-up (probability ``prevalence / 4``). Images are
    8-bit grey PNGs, with one in 20 stored as RGBA and one in 20 as 16-bit grey (as in the real download).
    ``Data_Entry_2017.csv`` has the original columns; ``test_list.txt`` holds the images of ``test_fraction`` of
    the patients (at least one), ``train_val_list.txt`` the others. Every file is written atomically.

    Args:
        output_dir: folder to write (created when missing).
        num_patients: number of patients, at least 3 (test, training and validation need one each).
        size: image side in pixels, see :func:`make_cxr_phantom`.
        seed: seed of the data set.
        prevalence: probability of each finding per patient, in [0, 1].
        test_fraction: fraction of patients in the test list, in (0, 1).
        max_followups: most images per patient, at least 1.

    Returns:
        The absolute path of ``output_dir``.

    Raises:
        ValueError: for bad arguments or an ``output_dir`` that is a file.
    """
    for name, value, low in (("num_patients", num_patients, 3), ("max_followups", max_followups, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}.")
    if not 0.0 <= float(prevalence) <= 1.0 or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(
            f"prevalence must be in [0, 1] and test_fraction in (0, 1), got {prevalence}, {test_fraction}."
        )
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < CXR_MIN_SIZE:
        raise ValueError(f"size must be an integer of at least {CXR_MIN_SIZE}, got {size!r}.")
    root = Path(output_dir).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ValueError(f"output_dir '{root}' exists and is not a folder.")
    (root / "images").mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    rows, names_of = [], {}
    index = 0
    for patient in range(1, int(num_patients) + 1):
        base = rng.random(len(CXR14_FINDINGS)) < prevalence
        age, sex = int(rng.integers(18, 90)), str(rng.choice(["M", "F"]))
        names_of[patient] = []
        for follow_up in range(int(rng.integers(1, int(max_followups) + 1))):
            present = (base & (rng.random(len(base)) < 0.8)) | (rng.random(len(base)) < prevalence / 4)
            findings = [f for f, p in zip(CXR14_FINDINGS, present, strict=True) if p]
            name = f"{patient:08d}_{follow_up:03d}.png"
            image = make_cxr_phantom(findings, int(size), seed=_seed_of(int(seed), patient, follow_up + 1),
                                     anatomy_seed=_seed_of(int(seed), patient, 0))  # fmt: skip
            _save_png(image, root / "images" / name, _png_mode(index))
            index += 1
            view = "AP" if rng.random() < 0.2 else "PA"
            rows.append([name, "|".join(findings) or "No Finding", follow_up, patient, age + follow_up, sex, view,
                         2500, 2048, 0.143, 0.143])  # fmt: skip
            names_of[patient].append(name)

    order = rng.permutation(np.arange(1, int(num_patients) + 1))
    test_patients = set(order[: max(1, round(float(test_fraction) * int(num_patients)))].tolist())
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CXR_CSV_COLUMNS)
    writer.writerows(rows)
    atomic_write_text(root / "Data_Entry_2017.csv", text.getvalue())
    test = [n for p in sorted(names_of) if p in test_patients for n in names_of[p]]
    train_val = [n for p in sorted(names_of) if p not in test_patients for n in names_of[p]]
    atomic_write_text(root / TRAIN_VAL_LIST, "".join(f"{n}\n" for n in train_val))
    atomic_write_text(root / TEST_LIST, "".join(f"{n}\n" for n in test))
    stale = sorted(p.name for p in (root / "images").glob("*.png") if p.name not in {r[0] for r in rows})
    if stale:
        logger.warning("'%s' holds %d images from an earlier run not listed in Data_Entry_2017.csv: %s",
                       root / "images", len(stale), stale[:5])  # fmt: skip
    logger.info("Wrote %d synthetic chest radiographs of %d patients (%d test images) to '%s'.",
                len(rows), num_patients, len(test), root)  # fmt: skip
    return root


class PhantomCommands:
    """Write synthetic data sets (``btcv``: abdominal CT in the BTCV tutorial layout; ``cxr``: chest radiographs in
    the NIH ChestX-ray14 layout)."""

    def btcv(
        self,
        output_dir: str,
        num_cases: int = 6,
        shape: Sequence[int] = DEFAULT_SHAPE,
        spacing: Sequence[float] = DEFAULT_SPACING,
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
            )  # fmt: skip
        )


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point: ``python -m shared_networks.data.phantoms {btcv,cxr} OUTPUT_DIR``.

    Args:
        argv: command line arguments; ``None`` reads ``sys.argv``.
    """
    run_fire(PhantomCommands, "shared_networks.data.phantoms", argv)


if __name__ == "__main__":
    main()
