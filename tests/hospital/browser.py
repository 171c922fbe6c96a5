"""A real browser for the viewer tests: headless Chromium (``chromium-headless-shell``, installed by
``scripts/setup_orthanc.sh``), run as a command that loads a page, lets its scripts run for a budget of virtual time,
then prints the page's DOM or writes a screenshot. WebGL (OHIF's cornerstone3D) runs on SwiftShader, in software."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM = shutil.which("chromium-headless-shell") or shutil.which("chromium")
WINDOW = (1400, 900)
VIRTUAL_TIME_MS = 60000  # the page's scripts get this much virtual time: enough for OHIF to list and draw
TIMEOUT_S = 240


def chromium_missing() -> str | None:
    """Why the viewer tests cannot run here, or ``None``."""
    return None if CHROMIUM else "headless Chromium is not installed (run: bash scripts/setup_orthanc.sh; .ci/run does)"


def _chromium(url: str, profile: Path, *what: str) -> subprocess.CompletedProcess:
    argv = [
        CHROMIUM,
        *(["--no-sandbox"] if os.geteuid() == 0 else []),  # Chromium's sandbox refuses to run as root
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",  # software WebGL: the page is this test's own server
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        f"--virtual-time-budget={VIRTUAL_TIME_MS}",
        f"--user-data-dir={profile}",
        *what,
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}"
    return done


def page_dom(url: str, profile: Path) -> str:
    """The DOM of ``url`` once its scripts have run."""
    return _chromium(url, profile, "--dump-dom").stdout


def screenshot(url: str, path: Path, profile: Path) -> np.ndarray:
    """A screenshot of ``url`` written to ``path``; its RGB pixels."""
    _chromium(url, profile, f"--screenshot={path}")
    return np.asarray(Image.open(path).convert("RGB"))
