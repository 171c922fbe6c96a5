from __future__ import annotations

import locale

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage

from shared_networks.data.readers import (
    is_dicom_series,
    list_image_inputs,
    nifti_to_dicom_series,
    require_split,
)


def _nifti(path, shape=(6, 5, 4), spacing=(0.8, 0.9, 2.5)):
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    nib.save(nib.Nifti1Image(np.arange(np.prod(shape), dtype=np.int16).reshape(shape), affine), path)
    return path


def test_dicom_series_round_trip(tmp_path):
    src = _nifti(tmp_path / "ct.nii.gz")
    before = locale.setlocale(locale.LC_ALL)
    series = nifti_to_dicom_series(src, tmp_path / "series")
    assert locale.setlocale(locale.LC_ALL) == before  # GDCM's writer must not leave the process in the C locale
    assert is_dicom_series(series) and len(list(series.iterdir())) == 4
    a, b = LoadImage(image_only=True)(str(series)), LoadImage(image_only=True)(str(src))
    assert a.shape == b.shape
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_list_image_inputs(tmp_path):
    _nifti(tmp_path / "b.nii.gz")
    _nifti(tmp_path / "a.nii")
    (tmp_path / "notes.txt").write_text("x")
    nifti_to_dicom_series(tmp_path / "b.nii.gz", tmp_path / "series1")
    found = list_image_inputs(tmp_path)
    assert [p.split("/")[-1] for p in found] == ["a.nii", "b.nii.gz", "series1"]
    assert list_image_inputs(tmp_path / "series1") == [str(tmp_path / "series1")]
    assert list_image_inputs(tmp_path / "a.nii") == [str(tmp_path / "a.nii")]
    with pytest.raises(FileNotFoundError, match="missing"):
        list_image_inputs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        list_image_inputs(tmp_path / "empty")
    with pytest.raises(ValueError, match="notes.txt"):
        list_image_inputs(tmp_path / "notes.txt")


def test_require_split():
    require_split({"validation": [{"image": "a"}]}, "validation", "/data")
    with pytest.raises(ValueError, match="'test' split of the dataset in /data is empty"):
        require_split({"test": []}, "test", "/data")
