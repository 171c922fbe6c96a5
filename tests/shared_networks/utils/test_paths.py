"""The one folder check (:func:`shared_networks.utils.paths.as_dir`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared_networks.utils.paths import as_dir


def test_an_existing_folder_comes_back_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    assert as_dir("data", "BTCV dataset folder") == (tmp_path / "data").resolve()


def test_a_missing_folder_names_the_path_and_its_use(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"BTCV dataset folder '.*absent' does not exist\. Expected"):
        as_dir(tmp_path / "absent", "BTCV dataset folder", "Expected imagesTr/.")


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"ChestX-ray14 dataset folder '.*file\.txt' is not a folder\.$"):
        as_dir(tmp_path / "file.txt", "ChestX-ray14 dataset folder")
