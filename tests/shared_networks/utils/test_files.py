"""Atomic file writes (:mod:`shared_networks.utils.files`)."""

from __future__ import annotations

import json

import pytest

from shared_networks.utils.files import atomic_write_text, write_json_atomic


def test_atomic_writers(tmp_path):
    path = write_json_atomic({"a": [1, 2]}, tmp_path / "sub" / "x.json")
    assert json.loads(path.read_text()) == {"a": [1, 2]} and oct(path.stat().st_mode & 0o777) == oct(0o644)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in path.parent.iterdir()) == ["x.json"]
    with pytest.raises(ValueError, match="folder"):
        atomic_write_text(tmp_path, "x")
