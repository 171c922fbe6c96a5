"""NIfTI intensities as the bundles' loaders read them (:mod:`shared_networks.validation.volumes`): ``scl_slope`` and
``scl_inter`` applied, cast to float32; voxel types the loaders cannot read (complex, RGB) are named."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage

from shared_networks.validation.datasets import validate_btcv
from shared_networks.validation.problems import ValidationReport
from shared_networks.validation.volumes import VolumeSpec, check_volume_item
from shared_networks.validation.workflow import check_split

SHAPE = (6, 5, 4)
SPEC = VolumeSpec("BTCV", label_values=tuple(range(14)))
RGB = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])


def _save(path: Path, data: np.ndarray, slope: float | None = None, inter: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]))
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    nib.save(img, path)
    return path


def _ct(dtype: str = "int16") -> np.ndarray:
    return (np.arange(np.prod(SHAPE)).reshape(SHAPE) * 100 - 1000).astype(dtype)


def _label() -> np.ndarray:
    return (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 14).astype(np.uint8)


def _errors(path: Path, label: Path | None = None) -> list[str]:
    item = {"image": str(path)} if label is None else {"image": str(path), "label": str(label)}
    problems, _ = check_volume_item(item, SPEC)
    return [p.message for p in problems if p.severity == "error"]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # MONAI's cast, shown on purpose
def test_scl_slope_overflowing_float32_is_named(tmp_path: Path) -> None:
    path = _save(tmp_path / "img0001.nii.gz", _ct(), slope=1e36)
    assert np.isfinite(np.asanyarray(nib.load(path).dataobj)).all()  # nibabel scales into float64: finite
    assert not np.isfinite(LoadImage(image_only=True)(str(path))).all()  # what the bundles read: inf
    (message,) = _errors(path)
    assert "voxels are not finite (0 NaN," in message and "scl_slope 1e+36" in message, message
    assert "int16" in message and "float32" in message
    assert not _errors(_save(tmp_path / "fine.nii.gz", _ct(), slope=2.0, inter=-1024.0))


def test_float64_values_beyond_float32_are_named(tmp_path: Path) -> None:
    data = _ct("float64")
    data[0, 0, 0] = 1e39
    (message,) = _errors(_save(tmp_path / "big.nii.gz", data))
    assert message.startswith("1 of 120 voxels are not finite (0 NaN, 1 inf)") and "1 stored float64 values" in message


def test_values_equal_in_float32_are_a_constant_image(tmp_path: Path) -> None:
    data = np.full(SHAPE, 1.0)
    data[0, 0, 0] = 1.0 + 1e-12  # differs in float64 only
    assert any("constant image" in m for m in _errors(_save(tmp_path / "flat.nii.gz", data)))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_ct().astype(np.complex64) * (1 + 1j), "has data type complex64 (NIfTI datatype code 32, numpy complex64)"),
        (np.zeros(SHAPE, RGB), "has data type RGB (NIfTI datatype code 128"),
    ],
)
def test_unsupported_voxel_types_are_named(tmp_path: Path, data: np.ndarray, expected: str) -> None:
    image = _save(tmp_path / "img.nii.gz", data)
    (message,) = _errors(image)
    assert message.startswith(expected) and "not supported" in message, message
    label = _save(tmp_path / "label.nii.gz", data)
    assert any(m.startswith(expected) for m in _errors(_save(tmp_path / "ok.nii.gz", _ct()), label))


def test_data_set_and_workflow_checks_name_the_file(tmp_path: Path) -> None:
    root = tmp_path / "btcv"
    for n in (1, 2, 3):
        _save(root / "labelsTr" / f"label000{n}.nii.gz", _label())
    _save(root / "imagesTr" / "img0001.nii.gz", _ct())
    _save(root / "imagesTr" / "img0002.nii.gz", _ct(), slope=1e36)
    _save(root / "imagesTr" / "img0003.nii.gz", _ct().astype(np.complex64))
    report: ValidationReport = validate_btcv(root)
    named = {Path(p.path).name: p.message for p in report.errors}
    assert set(named) == {"img0002.nii.gz", "img0003.nii.gz"}, report.format()
    assert "scl_slope" in named["img0002.nii.gz"] and "complex64" in named["img0003.nii.gz"]
    items = [{"image": str(root / "imagesTr" / "img0002.nii.gz"), "label": str(root / "labelsTr" / "label0002.nii.gz")}]
    with pytest.raises(ValueError, match=r"img0002\.nii\.gz: 113 of 120 voxels are not finite \(0 NaN, 113 inf\)"):
        check_split(items, "btcv")
