"""Synthetic chest radiographs in the NIH ChestX-ray14 layout.

:func:`make_cxr_phantom` draws a frontal (PA) chest radiograph in [0, 1]: dark lungs with vascular markings, a
bright mediastinum, spine and heart, ribs, clavicles, diaphragm and gastric bubble, and any of the 14 ChestX-ray14
findings drawn so that each changes the image in its own learnable way. :func:`write_cxr14_phantom_dataset` writes
such images in the NIH ChestX-ray14 layout (``images/*.png``, ``Data_Entry_2017.csv``, ``train_val_list.txt``,
``test_list.txt``), which :func:`shared_networks.data.cxr14.cxr14_datalist` reads like the real data set.

Command line::

    python -m shared_networks.cli.phantoms cxr OUTPUT_DIR --num_patients 60 [--size 256] [--seed 0]
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from shared_networks.data.cxr14 import CXR14_FINDINGS, TEST_LIST, TRAIN_VAL_LIST
from shared_networks.utils.files import atomic_write_text, new_file_mode

__all__ = ["CXR_CSV_COLUMNS", "make_cxr_phantom", "write_cxr14_phantom_dataset"]

logger = logging.getLogger(__name__)


CXR_MIN_SIZE = 32  # smallest image side
_NIH_HEADER = "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
CXR_CSV_COLUMNS: tuple[str, ...] = tuple(
    (_NIH_HEADER + "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]").split(",")
)
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
    body_w: float  # half width of the body at the level of the hila
    rib_gap: float  # spacing of the posterior ribs

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
        outside = np.maximum(
            self.radius(cu, self.lung_cy, self.lung_rx, self.lung_ry) - 1.0, (self.v - floor) / self.lung_ry
        )
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
        r = c.radius(
            s * (c.lung_cx - 0.6 * (1 - k) * c.lung_rx),
            c.lung_cy + 0.5 * (1 - k) * c.lung_ry,
            k * c.lung_rx,
            k * c.lung_ry,
        )
        image = _blend(image, 0.06, lungs[side] * (1.0 - _soft(r - 1.0, 0.01)))
        image = image + 0.12 * lungs[side] * np.exp(-(((r - 1.0) / 0.03) ** 2))  # the visceral pleural line
    if "Pleural_Thickening" in findings:  # a bright band along the lateral chest wall
        side = int(rng.integers(2))
        s = 2 * side - 1
        r = c.radius(s * c.lung_cx, c.lung_cy, c.lung_rx, c.lung_ry)
        lateral = np.clip(s * (u - s * c.lung_cx) / c.lung_rx + 0.2, 0, 1)
        image = image + 0.3 * lungs[side] * _soft(0.86 - r, 0.01) * lateral
    return image


def _chest(wanted: set[str], size: int, build: np.random.Generator, rng: np.random.Generator) -> _Chest:
    """The patient's build (``build``: lung, heart and body sizes) as the findings change it, and this exposure's
    position (``rng``: ±4 % shift, ±3° rotation) as the (size, size) coordinates ``u``, ``v``."""
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
    return _Chest(u, v, rng, lung_cx, lung_cy, lung_rx, lung_ry, domes, dome_depth, heart, body_w, rib_gap)


def _draw_trunk(c: _Chest, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(image, body)``: the soft-tissue body in air with the mediastinum and spine, and the body's soft mask."""
    u, v = c.u, c.v
    body = _soft(np.abs(u) - c.body_w * (1.0 - 0.08 * (v - 0.1) ** 2), 0.01)
    image = _blend(np.full((size, size), 0.04), 0.5, body)
    image = _blend(image, 0.68, _soft(np.abs(u) - (0.09 + 0.025 * (v + 1.0)), 0.015) * body)
    image = image + 0.08 * _soft(np.abs(u) - 0.045, 0.01) * body * (0.7 + 0.3 * np.cos(v * 40.0) ** 2)
    return image, body


def _draw_lungs(c: _Chest, image: np.ndarray, wanted: set[str]) -> np.ndarray:
    """The lungs with vascular markings fading from the hila, then the findings inside them."""
    lungs = [c.lung(0), c.lung(1)]
    hila = np.minimum(c.radius(-0.14, c.lung_cy + 0.1, 1, 1), c.radius(0.14, c.lung_cy + 0.1, 1, 1))
    markings = (
        (0.035 if "Emphysema" in wanted else 0.1)
        * _lines(_texture(c.rng, image.shape[0], 1 / 90), 0.35)
        * np.exp(-hila / 0.45)
    )
    lung_value = 0.1 if "Emphysema" in wanted else 0.17
    image = _blend(image, lung_value + markings, np.clip(lungs[0] + lungs[1], 0.0, 1.0))
    return _draw_lung_findings(c, image, lungs, wanted)


def _draw_heart_and_stomach(c: _Chest, image: np.ndarray, body: np.ndarray, wanted: set[str]) -> np.ndarray:
    """The heart over the lungs, a hiatal hernia behind it, the gastric bubble under the left hemidiaphragm."""
    rng, u, v = c.rng, c.u, c.v
    hu, hv, hru, hrv = c.heart
    image = _blend(image, 0.66, _soft(c.radius(hu, hv, hru, hrv) - 1.0, 0.012) * body)
    if "Hernia" in wanted:
        cv, r = hv + hrv * rng.uniform(0.5, 0.8), rng.uniform(0.08, 0.11)
        sac = _soft(np.hypot(u - 0.4 * hu, v - cv) - r, 0.008)
        image = _blend(image, 0.78, sac)
        image = _blend(image, 0.2, sac * _soft(v - cv + rng.uniform(0.0, 0.03), 0.004))  # gas over the fluid level
    return _blend(image, 0.25, _soft(c.radius(0.75 * c.lung_cx, c.domes[1] + 0.08, 0.08, 0.05) - 1, 0.02) * body)


def _draw_bones(c: _Chest, image: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Posterior ribs within the thoracic cage, and the clavicles."""
    u, v = c.u, c.v
    bones = np.zeros_like(image)
    au = np.abs(u)
    cage = _soft(0.08 - au, 0.01) * _soft(au - 0.9 * c.body_w, 0.01) * _soft(v - max(c.domes) - 0.05, 0.02)
    for k in range(10):
        centre = -0.94 + k * c.rib_gap + 0.7 * (au - 0.4) ** 2 + 0.1 * au
        bones += _soft(np.abs(v - centre) - 0.016, 0.006) * cage
    for s in (-1, 1):
        t = np.clip((s * u - 0.06) / 0.5, 0, 1)
        bones += _soft(np.abs(v + 0.72 + 0.06 * t - 0.02 * t**2) - 0.022, 0.006) * _soft(
            np.abs(s * u - 0.31) - 0.25, 0.01
        )
    return image + 0.08 * np.clip(bones, 0, 1.5) * body


def _expose(image: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Detector blur, exposure and quantum noise; the float32 image in [0, 1]."""
    image = gaussian_filter(image, sigma=max(size / 384, 0.3))
    image = image * rng.uniform(0.92, 1.08) + rng.uniform(-0.03, 0.03)
    image = image + rng.normal(0.0, rng.uniform(0.008, 0.016), image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


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
    c = _chest(wanted, size, build, rng)
    image, body = _draw_trunk(c, size)
    image = _draw_lungs(c, image, wanted)
    image = _draw_heart_and_stomach(c, image, body, wanted)
    image = _draw_bones(c, image, body)
    return _expose(image, rng, size)


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
        os.chmod(tmp_name, new_file_mode())  # mkstemp's 0600 -> what open() gives under the umask
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


def _check_dataset_arguments(
    num_patients: int, size: int, seed: int, prevalence: float, test_fraction: float, max_followups: int
) -> None:
    """Raise ``ValueError`` naming a bad argument of :func:`write_cxr14_phantom_dataset`."""
    for name, value, low in (("num_patients", num_patients, 3), ("max_followups", max_followups, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}.")
    if not 0.0 <= float(prevalence) <= 1.0 or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(
            f"prevalence must be in [0, 1] and test_fraction in (0, 1), got {prevalence}, {test_fraction}."
        )
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < CXR_MIN_SIZE:
        raise ValueError(f"size must be an integer of at least {CXR_MIN_SIZE}, got {size!r}.")


def _write_patients(
    root: Path,
    rng: np.random.Generator,
    num_patients: int,
    size: int,
    seed: int,
    prevalence: float,
    max_followups: int,
) -> tuple[list[list], dict[int, list[str]]]:
    """Draw and save every patient's images in ``root/images`` (see :func:`write_cxr14_phantom_dataset`).

    Returns:
        ``(rows, names_of)``: the rows of ``Data_Entry_2017.csv`` and each patient's image names.
    """
    rows, names_of = [], {}
    index = 0
    for patient in range(1, num_patients + 1):
        base = rng.random(len(CXR14_FINDINGS)) < prevalence
        age, sex = int(rng.integers(18, 90)), str(rng.choice(["M", "F"]))
        names_of[patient] = []
        for follow_up in range(int(rng.integers(1, max_followups + 1))):
            present = (base & (rng.random(len(base)) < 0.8)) | (rng.random(len(base)) < prevalence / 4)
            findings = [f for f, p in zip(CXR14_FINDINGS, present, strict=True) if p]
            name = f"{patient:08d}_{follow_up:03d}.png"
            image = make_cxr_phantom(
                findings, size, seed=_seed_of(seed, patient, follow_up + 1), anatomy_seed=_seed_of(seed, patient, 0)
            )
            _save_png(image, root / "images" / name, _png_mode(index))
            index += 1
            view = "AP" if rng.random() < 0.2 else "PA"
            rows.append(
                [
                    name,
                    "|".join(findings) or "No Finding",
                    follow_up,
                    patient,
                    age + follow_up,
                    sex,
                    view,
                    2500,
                    2048,
                    0.143,
                    0.143,
                ]
            )
            names_of[patient].append(name)
    return rows, names_of


def _write_tables(root: Path, rows: list[list], names_of: dict[int, list[str]], test_patients: set[int]) -> list[str]:
    """Write ``Data_Entry_2017.csv``, ``train_val_list.txt`` and ``test_list.txt`` (the images of ``test_patients``);
    warn of images of an earlier run that they do not list. Returns the test images."""
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
        logger.warning(
            "'%s' holds %d images from an earlier run not listed in Data_Entry_2017.csv: %s",
            root / "images",
            len(stale),
            stale[:5],
        )
    return test


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
    _check_dataset_arguments(num_patients, size, seed, prevalence, test_fraction, max_followups)
    root = Path(output_dir).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ValueError(f"output_dir '{root}' exists and is not a folder.")
    (root / "images").mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    rows, names_of = _write_patients(root, rng, int(num_patients), int(size), int(seed), prevalence, int(max_followups))
    order = rng.permutation(np.arange(1, int(num_patients) + 1))
    test_patients = set(order[: max(1, round(float(test_fraction) * int(num_patients)))].tolist())
    test = _write_tables(root, rows, names_of, test_patients)
    logger.info(
        "Wrote %d synthetic chest radiographs of %d patients (%d test images) to '%s'.",
        len(rows),
        num_patients,
        len(test),
        root,
    )
    return root
