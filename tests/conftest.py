from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Callable[[str], Path]:
    """Returns a folder of ``../shared/data`` (real samples beside the checkout), skipping the test where absent."""

    def get(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.is_dir():
            pytest.skip(
                f"real sample data {path} is absent (it exists in CI beside the checkout, not in a fresh clone)"
            )
        return path

    return get
