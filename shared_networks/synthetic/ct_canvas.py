"""The drawing canvas of the synthetic abdominal CT (:mod:`shared_networks.synthetic.ct`): body coordinates, smooth
randomly perturbed ellipsoids and tubes, painting into the HU image and the BTCV label map, the organs' mean HU."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline

__all__ = [
    "AIR_HU",
    "AORTA",
    "ESOPHAGUS",
    "GALLBLADDER",
    "IVC",
    "LIVER",
    "L_ADRENAL",
    "L_KIDNEY",
    "ORGAN_HU",
    "PANCREAS",
    "PORTAL_SPLENIC_VEIN",
    "R_ADRENAL",
    "R_KIDNEY",
    "SPLEEN",
    "STOMACH",
    "Canvas",
    "Region",
]

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


def _rotation(yaw_deg: float, tilt_deg: float) -> np.ndarray:
    """Rotation about the z axis by ``yaw_deg`` followed by a tilt about the x axis by ``tilt_deg``."""
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    c, s = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    rx = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return rz @ rx


@dataclass
class Canvas:
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
