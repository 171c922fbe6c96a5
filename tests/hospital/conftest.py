"""Fixtures of the hospital path's tests: the real samples of ``../shared/data`` (skipping, saying why, where absent)
and a live Orthanc PACS per module (:mod:`hospital_helpers`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hospital_helpers import SHARED_DATA, Pacs, running_orthanc

ABSENT = "real sample data {} is absent (it exists in CI beside the checkout, not in a fresh clone)"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> Iterator[Pacs]:
    """A live Orthanc for the tests of one module."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture
def real_ct():
    """``real_ct(n)``: the path of BTCV ``img000n.nii.gz`` in ``../shared/data``, skipping where absent."""

    def get(n: int) -> Path:
        path = SHARED_DATA / "btcv" / "imagesTr" / f"img{n:04d}.nii.gz"
        if not path.is_file():
            pytest.skip(
                f"real sample data {path} is absent (it exists in CI beside the checkout, not in a fresh clone)"
            )
        return path

    return get


@pytest.fixture
def real_pngs():
    """``real_pngs(size)``: the grey ChestX-ray14 PNGs of ``../shared/data`` of that size, skipping where absent."""

    def get(size: int) -> list[Path]:
        from PIL import Image

        folder = SHARED_DATA / "chestxray14" / "images"
        if not folder.is_dir():
            pytest.skip(
                f"real sample data {folder} is absent (it exists in CI beside the checkout, not in a fresh clone)"
            )
        found = []
        for path in sorted(folder.glob("*.png")):
            with Image.open(path) as img:
                if img.mode == "L" and img.size == (size, size):
                    found.append(path)
        return found

    return get
