"""NIfTI CT -> DICOM CT series (:func:`shared_networks.dicom.write_ct_series`): the series read back with MONAI's
``LoadImage(reader="ITKReader")`` (a folder: GDCM sorts the slices by position) gives the NIfTI's voxels (HU exact) and
affine, both in MONAI's RAS convention; bad input is refused by name and leaves nothing behind."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hospital_helpers import write_nifti
from monai.transforms import LoadImage

from shared_networks.dicom import modules as dicom_modules
from shared_networks.dicom import write_ct_series
from shared_networks.dicom.ct import hu_to_stored, slice_geometry

AFFINE_TOLERANCE_MM = 1e-4


def load_both(nifti: Path, series: Path):
    """The NIfTI (nibabel) and the DICOM folder (ITK), both through MONAI's LoadImage: RAS affines, (I, J, K)."""
    reference = LoadImage(image_only=True)(str(nifti))
    dicom = LoadImage(image_only=True, reader="ITKReader")(str(series))
    return reference, dicom


def assert_same_image(reference, dicom) -> None:
    assert tuple(dicom.shape) == tuple(reference.shape)
    np.testing.assert_array_equal(np.asarray(dicom), np.asarray(reference))  # HU exact
    np.testing.assert_allclose(np.asarray(dicom.affine), np.asarray(reference.affine), rtol=0, atol=AFFINE_TOLERANCE_MM)


@pytest.mark.parametrize("case", [1, 2])
def test_real_ct_round_trip(real_ct, tmp_path: Path, case: int) -> None:
    nifti = real_ct(case)
    files = write_ct_series(nifti, tmp_path / "series", patient_id=f"BTCV-{case:04d}", study_date="20240102")
    reference, dicom = load_both(nifti, tmp_path / "series")
    assert len(files) == reference.shape[-1]
    assert_same_image(reference, dicom)
    first = pydicom.dcmread(files[0])
    assert first.SOPClassUID == pydicom.uid.CTImageStorage and first.Modality == "CT"
    assert first.PatientID == f"BTCV-{case:04d}" and first.StudyDate == "20240102"
    assert first.RescaleType == "HU" and float(first.RescaleSlope) == 1.0
    uids = {(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID) for ds in map(pydicom.dcmread, files)}
    assert len(uids) == 1  # one study, one series, one frame of reference


def test_slices_are_sorted_by_position_not_by_file_name(tmp_path: Path) -> None:
    """File names in a shuffled order (the reader must sort by Image Position), an oblique right-handed affine."""
    rng = np.random.default_rng(0)
    volume = rng.integers(-1024, 3000, size=(12, 10, 7)).astype(np.int16)
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.8, 2.5])
    affine[:3, 3] = [-40.25, 12.5, 300.125]
    nifti = write_nifti(tmp_path / "oblique.nii.gz", volume, affine)
    files = write_ct_series(nifti, tmp_path / "written", patient_id="P")
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    order = list(range(len(files)))
    random.Random(1).shuffle(order)
    for name_index, k in enumerate(order):  # slice k gets the name of another slice
        (shuffled / f"slice{name_index:03d}.dcm").write_bytes(files[k].read_bytes())
    assert_same_image(*load_both(nifti, shuffled))


def test_geometry_attributes(tmp_path: Path) -> None:
    """RAS -> LPS: the first two axes change sign; pixel spacing is (between rows, between columns)."""
    affine = np.diag([-0.5, 0.75, 3.0, 1.0])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    nifti = write_nifti(tmp_path / "v.nii.gz", np.zeros((4, 3, 2), np.int16), affine)
    first, second = (pydicom.dcmread(f) for f in write_ct_series(nifti, tmp_path / "s", patient_id="P"))
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, -1, 0]
    assert [float(v) for v in first.PixelSpacing] == [0.75, 0.5]
    assert [float(v) for v in first.ImagePositionPatient] == [-10.0, 20.0, 30.0]
    assert [float(v) for v in second.ImagePositionPatient] == [-10.0, 20.0, 33.0]
    assert float(first.SliceThickness) == float(first.SpacingBetweenSlices) == 3.0
    assert (first.Rows, first.Columns) == (3, 4) and [first.InstanceNumber, second.InstanceNumber] == [1, 2]


def test_left_handed_volume_reads_back_as_the_same_physical_image(tmp_path: Path) -> None:
    """A left-handed affine: ITK returns the slices in reverse order with a matching affine (same world samples)."""
    volume = np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3)
    nifti = write_nifti(tmp_path / "left.nii.gz", volume, np.diag([1.0, 1.0, -2.0, 1.0]))
    write_ct_series(nifti, tmp_path / "s", patient_id="P")
    reference, dicom = load_both(nifti, tmp_path / "s")
    np.testing.assert_array_equal(np.asarray(dicom), np.asarray(reference)[..., ::-1])
    last_slice = np.asarray(reference.affine) @ [0, 0, volume.shape[2] - 1, 1]
    np.testing.assert_allclose(np.asarray(dicom.affine)[:3, 3], last_slice[:3], atol=AFFINE_TOLERANCE_MM)


@pytest.mark.parametrize(
    ("values", "dtype", "intercept"),
    [((-1024, 3071), np.int16, 0.0), ((-1024, 40000), np.uint16, -1024.0), ((-2000.0, 1500.0), np.int16, 0.0)],
)
def test_hu_are_stored_exactly(values, dtype, intercept) -> None:
    volume = np.linspace(*values, num=24).round().reshape(2, 3, 4)
    stored, got_intercept = hu_to_stored(volume)
    assert stored.dtype == dtype and got_intercept == intercept
    np.testing.assert_array_equal(stored.astype(np.float64) + got_intercept, volume)


def test_uint16_series_reads_back_exactly(tmp_path: Path) -> None:
    volume = np.array([-1024, 0, 35000, 40000] * 6, dtype=np.int32).reshape(2, 3, 4)
    nifti = write_nifti(tmp_path / "wide.nii.gz", volume, np.eye(4))
    files = write_ct_series(nifti, tmp_path / "s", patient_id="P")
    assert float(pydicom.dcmread(files[0]).RescaleIntercept) == -1024.0
    assert_same_image(*load_both(nifti, tmp_path / "s"))


def test_non_integer_hu_are_refused_unless_rounding(tmp_path: Path) -> None:
    nifti = write_nifti(tmp_path / "resampled.nii.gz", np.full((3, 3, 2), 10.4, np.float32), np.eye(4))
    with pytest.raises(ValueError, match=r"resampled\.nii\.gz.*not whole Hounsfield units"):
        write_ct_series(nifti, tmp_path / "s", patient_id="P")
    assert not (tmp_path / "s").exists()
    files = write_ct_series(nifti, tmp_path / "s", patient_id="P", rounding=True)
    assert int(pydicom.dcmread(files[0]).pixel_array.max()) == 10


@pytest.mark.parametrize(
    ("shape", "affine", "message"),
    [
        ((4, 4), np.eye(4), "not a 3D volume"),
        ((4, 4, 3, 2), np.eye(4), "not a 3D volume"),
        ((4, 4, 3), np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "not perpendicular"),
        ((4, 4, 3), np.array([[1, 0, 0.3, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "gantry tilt"),
    ],
)
def test_bad_volumes_are_refused_by_name(tmp_path: Path, shape, affine, message: str) -> None:
    nifti = write_nifti(tmp_path / "bad.nii.gz", np.zeros(shape, np.int16), affine)
    with pytest.raises(ValueError, match=rf"bad\.nii\.gz.*{message}"):
        write_ct_series(nifti, tmp_path / "s", patient_id="P")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nii.gz"]


def test_unreadable_file_and_bad_fields_are_refused(tmp_path: Path) -> None:
    (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match=r"broken\.nii\.gz cannot be read"):
        write_ct_series(tmp_path / "broken.nii.gz", tmp_path / "s", patient_id="P")
    nifti = write_nifti(tmp_path / "v.nii.gz", np.zeros((2, 2, 2), np.int16), np.eye(4))
    for kwargs, message in [
        ({"patient_id": ""}, "patient_id is required"),
        ({"patient_id": "P", "study_uid": "1.2.abc"}, "study_uid '1.2.abc' is not a valid DICOM UID"),
        ({"patient_id": "P", "study_date": "2024-01-02"}, "study_date"),
        ({"patient_id": "a\\b"}, "backslash"),
    ]:
        with pytest.raises(ValueError, match=message):
            write_ct_series(nifti, tmp_path / "s", **kwargs)
    assert not (tmp_path / "s").exists()


def test_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure on the third slice leaves no series folder and no temporary folder; a non-empty folder is refused."""
    nifti = write_nifti(tmp_path / "v.nii.gz", np.zeros((2, 2, 5), np.int16), np.eye(4))
    save, calls = dicom_modules._save, []

    def failing_save(ds, target) -> None:
        calls.append(target)
        if len(calls) == 3:
            raise OSError("disk full")
        save(ds, target)

    monkeypatch.setattr(dicom_modules, "_save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_ct_series(nifti, tmp_path / "s", patient_id="P")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nii.gz"]
    monkeypatch.setattr(dicom_modules, "_save", save)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "other.dcm").write_bytes(b"")
    with pytest.raises(ValueError, match="exists and is not an empty folder"):
        write_ct_series(nifti, tmp_path / "s", patient_id="P")
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["other.dcm"]
    (tmp_path / "empty").mkdir()
    files = write_ct_series(nifti, tmp_path / "empty", patient_id="P")  # an empty folder is taken
    assert [f.parent for f in files] == [tmp_path / "empty"] * 5 and all(f.is_file() for f in files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "s", "v.nii.gz"]  # no temporary folder left


def test_slice_geometry_refuses_a_degenerate_affine() -> None:
    with pytest.raises(ValueError, match="x.nii: the affine is degenerate"):
        slice_geometry(np.diag([1.0, 0.0, 1.0, 1.0]), 3, "x.nii")
