"""Synthetic MR volumes written as DICOM MR series and NIfTI, read back by pydicom and dcm2niix."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from imaging.synthetic.mr_dicom import (
    MR_IMAGE_STORAGE,
    FileOrder,
    write_mr_series,
)
from imaging.synthetic.mr_dicom_modules import choose_rescale
from imaging.synthetic.mr_enhanced_dicom import (
    ENHANCED_MR_IMAGE_STORAGE,
    FrameOrder,
    write_enhanced_mr_series,
)
from imaging.synthetic.mr_nifti import write_nifti
from imaging.synthetic.records import MRVolume, SyntheticStudy
from tests.dicom_validation import dciodvfy_errors
from tests.synthetic_cases import (
    AXIS_ALIGNED_PLANES,
    Plane,
    make_mr_volume,
    make_study,
    oblique_plane,
)

SHAPE = (16, 20, 24)  # slices, rows, columns
PIXEL_SPACING = (1.2, 1.0)
SLICE_THICKNESS = 1.5


ORIENTATIONS: dict[str, Plane] = {**AXIS_ALIGNED_PLANES, "oblique": oblique_plane(15.0, 12.0)}


def make_volume(orientation: str, shape: tuple[int, int, int] = SHAPE) -> MRVolume:
    """A smooth pattern that differs on every slice, with one bright voxel as structure."""
    slices, rows, columns = shape
    k, i, j = np.meshgrid(np.arange(slices), np.arange(rows), np.arange(columns), indexing="ij")
    pixels = 400.0 + 300.0 * np.sin(j / 5.0) * np.cos(i / 7.0) + 20.0 * k + 0.37 * i * j
    pixels[slices // 2, rows // 3, columns // 4] = 1500.25
    return make_mr_volume(
        pixels,
        plane=ORIENTATIONS[orientation],
        first_origin=(-12.3, 20.7, -30.1),
        pixel_spacing=PIXEL_SPACING,
        slice_spacing=SLICE_THICKNESS,
    )


@pytest.fixture(scope="module")
def study() -> SyntheticStudy:
    return make_study()


def dcm2niix_volume(series_dir: Path, out_dir: Path) -> nib.Nifti1Image:
    """Convert ``series_dir`` with dcm2niix and load the one NIfTI it writes."""
    if shutil.which("dcm2niix") is None:
        pytest.fail("dcm2niix is missing: run scripts/install-system-deps.sh")
    out_dir.mkdir()
    subprocess.run(
        ["dcm2niix", "-z", "n", "-b", "n", "-f", "out", "-o", str(out_dir), str(series_dir)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    (written,) = out_dir.glob("*.nii")
    return load_nifti(written)


def load_nifti(path: Path) -> nib.Nifti1Image:
    image = nib.load(path)
    assert isinstance(image, nib.Nifti1Image)
    return image


def stored_and_scaling(image: nib.Nifti1Image) -> tuple[np.ndarray, float, float]:
    """The on-disk values and the ``scl_slope``/``scl_inter`` that nibabel applies to them."""
    proxy = image.dataobj
    assert isinstance(proxy, nib.arrayproxy.ArrayProxy)
    return np.asarray(proxy.get_unscaled()), float(proxy.slope), float(proxy.inter)


def assert_same_lattice_and_values(image: nib.Nifti1Image, volume: MRVolume) -> None:
    """Same voxels at the same world positions, up to the stored-value rounding."""
    expected = nib.as_closest_canonical(
        nib.Nifti1Image(volume.pixels.transpose(2, 1, 0).astype(np.float64), volume.affine_ras())
    )
    actual = nib.as_closest_canonical(image)
    assert actual.shape == expected.shape
    assert np.abs(actual.affine - expected.affine).max() < 0.01
    half_step = choose_rescale(volume.pixels).slope / 2
    assert np.abs(actual.get_fdata() - expected.get_fdata()).max() <= half_step + 1e-9


def test_rescale_is_a_power_of_two_that_fits_int16() -> None:
    assert choose_rescale(np.array([0.0, 1500.25, -3.0])).slope == 0.0625
    assert choose_rescale(np.array([0.0, 32767.0])).slope == 1.0
    assert choose_rescale(np.array([0.0, 40000.0])).slope == 2.0
    assert choose_rescale(np.array([0.0, 1.0])).slope == 2.0**-14
    assert choose_rescale(np.zeros(4)).slope == 1.0
    assert choose_rescale(np.array([7.0])).intercept == 0.0
    with pytest.raises(ValueError, match='"pixels"'):
        choose_rescale(np.array([1.0, np.nan]))


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_single_frame_series_passes_dciodvfy(
    orientation: str, study: SyntheticStudy, tmp_path: Path
) -> None:
    paths = write_mr_series(
        make_volume(orientation), study, out_dir=tmp_path, series_number=3, uid_seed="dciodvfy"
    )
    for path in (paths[0], paths[len(paths) // 2], paths[-1]):
        assert dciodvfy_errors(path) == []


@pytest.mark.parametrize(
    ("orientation", "frame_order"),
    [
        ("axial", "reversed"),
        ("sagittal", "shuffled"),
        ("coronal", "slice"),
        ("oblique", "reversed"),
    ],
)
def test_enhanced_mr_passes_dciodvfy(
    orientation: str, frame_order: FrameOrder, study: SyntheticStudy, tmp_path: Path
) -> None:
    path = write_enhanced_mr_series(
        make_volume(orientation),
        study,
        out_dir=tmp_path,
        series_number=4,
        uid_seed="dciodvfy",
        frame_order=frame_order,
    )
    assert dciodvfy_errors(path) == []


def test_spoiled_gradient_echo_with_long_decimals_passes_dciodvfy(
    study: SyntheticStudy, tmp_path: Path
) -> None:
    volume = make_volume("coronal")
    # Values whose shortest float form is longer than a DS string allows.
    volume.pixel_spacing = (1.1, 1.1)
    volume.acquisition = {
        "inversion_time_ms": 0.0,
        "repetition_time_ms": 8.123456789012345,
        "echo_time_ms": 3.7000000000000006,
        "flip_angle_deg": 8.333333333333334,
        "magnetic_field_strength_t": 1.4940000000000001,
    }
    paths = write_mr_series(volume, study, out_dir=tmp_path / "s", series_number=5, uid_seed="gr")
    enhanced = write_enhanced_mr_series(
        volume, study, out_dir=tmp_path / "e", series_number=6, uid_seed="gr"
    )
    assert dciodvfy_errors(paths[0]) == []
    assert dciodvfy_errors(enhanced) == []
    assert pydicom.dcmread(paths[0]).ScanningSequence == "GR"
    assert "InversionTime" not in pydicom.dcmread(paths[0])


def test_single_frame_round_trip(study: SyntheticStudy, tmp_path: Path) -> None:
    volume = make_volume("oblique")
    volume.acquisition = {
        "repetition_time_ms": 2000.0,
        "echo_time_ms": 2.5,
        "inversion_time_ms": 1000.0,
        "flip_angle_deg": 8.0,
        "magnetic_field_strength_t": 1.5,
        "sequence_name": "*tfl3d1",
        "series_description": "T1 MPRAGE TRA",
    }
    paths = write_mr_series(volume, study, out_dir=tmp_path, series_number=7, uid_seed="rt")
    datasets = [pydicom.dcmread(path) for path in paths]

    first = datasets[0]
    assert first.SOPClassUID == MR_IMAGE_STORAGE
    assert first.Modality == "MR"
    assert first.PatientAge == "071Y"
    assert first.PatientID == "SYN0001"
    assert first.StationName == "MRC40123"
    assert first.SeriesDescription == "T1 MPRAGE TRA"
    assert first.MRAcquisitionType == "3D"
    assert list(first.ScanningSequence) == ["GR", "IR"]
    assert float(first.RepetitionTime) == 2000.0
    assert float(first.InversionTime) == 1000.0
    assert float(first.MagneticFieldStrength) == 1.5
    assert float(first.ImagingFrequency) == pytest.approx(63.866, abs=1e-3)
    assert [float(v) for v in first.PixelSpacing] == [1.2, 1.0]
    np.testing.assert_allclose(
        [float(v) for v in first.ImageOrientationPatient],
        np.concatenate([volume.row_direction, volume.column_direction]),
        atol=1e-9,
    )
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 1
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    assert len({(ds.RescaleSlope, ds.RescaleIntercept) for ds in datasets}) == 1

    slope = float(first.RescaleSlope)
    for index, dataset in enumerate(datasets):
        np.testing.assert_allclose(
            [float(v) for v in dataset.ImagePositionPatient], volume.slice_origins[index], atol=1e-9
        )
        scaled = dataset.pixel_array * slope + float(dataset.RescaleIntercept)
        assert np.abs(scaled - volume.pixels[index]).max() <= slope / 2


@pytest.mark.parametrize("file_order", ["hashed", "sop_instance_uid", "reversed_instance_numbers"])
def test_file_order_is_not_slice_order(
    file_order: FileOrder, study: SyntheticStudy, tmp_path: Path
) -> None:
    paths = write_mr_series(
        make_volume("axial"),
        study,
        out_dir=tmp_path,
        series_number=8,
        uid_seed="order",
        file_order=file_order,
    )
    assert sorted(paths) != paths
    assert sorted(tmp_path.iterdir()) == sorted(paths)
    datasets = [pydicom.dcmread(path) for path in paths]
    instance_numbers = [int(ds.InstanceNumber) for ds in datasets]
    count = len(paths)
    if file_order == "reversed_instance_numbers":
        assert instance_numbers == list(range(count, 0, -1))
    else:
        assert instance_numbers == list(range(1, count + 1))
    if file_order == "sop_instance_uid":
        assert [path.name for path in paths] == [f"{ds.SOPInstanceUID}.dcm" for ds in datasets]


def test_same_seed_reproduces_the_series(study: SyntheticStudy, tmp_path: Path) -> None:
    volume = make_volume("axial", shape=(3, 4, 5))
    first = write_mr_series(volume, study, out_dir=tmp_path / "a", series_number=1, uid_seed="s")
    again = write_mr_series(volume, study, out_dir=tmp_path / "b", series_number=1, uid_seed="s")
    other = write_mr_series(volume, study, out_dir=tmp_path / "c", series_number=1, uid_seed="t")
    assert [path.name for path in first] == [path.name for path in again]
    assert [path.read_bytes() for path in first] == [path.read_bytes() for path in again]
    assert not {path.name for path in first} & {path.name for path in other}


def test_enhanced_frames_carry_true_geometry(study: SyntheticStudy, tmp_path: Path) -> None:
    volume = make_volume("sagittal")
    path = write_enhanced_mr_series(
        volume, study, out_dir=tmp_path, series_number=9, uid_seed="enh", frame_order="shuffled"
    )
    dataset = pydicom.dcmread(path)
    assert dataset.SOPClassUID == ENHANCED_MR_IMAGE_STORAGE
    assert int(dataset.NumberOfFrames) == SHAPE[0]
    shared = dataset.SharedFunctionalGroupsSequence[0]
    transform = shared.PixelValueTransformationSequence[0]
    slope, intercept = float(transform.RescaleSlope), float(transform.RescaleIntercept)
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [1.2, 1.0]

    slice_of_frame = []
    for frame, groups in enumerate(dataset.PerFrameFunctionalGroupsSequence):
        position = [float(v) for v in groups.PlanePositionSequence[0].ImagePositionPatient]
        index = int(groups.FrameContentSequence[0].InStackPositionNumber) - 1
        np.testing.assert_allclose(position, volume.slice_origins[index], atol=1e-9)
        scaled = dataset.pixel_array[frame] * slope + intercept
        assert np.abs(scaled - volume.pixels[index]).max() <= slope / 2
        slice_of_frame.append(index)
    assert sorted(slice_of_frame) == list(range(SHAPE[0]))
    assert slice_of_frame != sorted(slice_of_frame)


@pytest.mark.parametrize(
    ("orientation", "file_order"),
    [
        ("axial", "hashed"),
        ("sagittal", "reversed_instance_numbers"),
        ("coronal", "sop_instance_uid"),
        ("oblique", "reversed_instance_numbers"),
    ],
)
def test_dcm2niix_recovers_single_frame_volume(
    orientation: str, file_order: FileOrder, study: SyntheticStudy, tmp_path: Path
) -> None:
    volume = make_volume(orientation)
    write_mr_series(
        volume,
        study,
        out_dir=tmp_path / "dicom",
        series_number=10,
        uid_seed="dcm2niix",
        file_order=file_order,
    )
    assert_same_lattice_and_values(dcm2niix_volume(tmp_path / "dicom", tmp_path / "nii"), volume)


@pytest.mark.parametrize(
    ("orientation", "frame_order"), [("oblique", "shuffled"), ("sagittal", "reversed")]
)
def test_dcm2niix_recovers_enhanced_volume(
    orientation: str, frame_order: FrameOrder, study: SyntheticStudy, tmp_path: Path
) -> None:
    volume = make_volume(orientation)
    write_enhanced_mr_series(
        volume,
        study,
        out_dir=tmp_path / "dicom",
        series_number=11,
        uid_seed="dcm2niix",
        frame_order=frame_order,
    )
    assert_same_lattice_and_values(dcm2niix_volume(tmp_path / "dicom", tmp_path / "nii"), volume)


def test_nifti_agrees_bit_for_bit_with_dcm2niix(study: SyntheticStudy, tmp_path: Path) -> None:
    volume = make_volume("oblique")
    write_nifti(volume, tmp_path / "volume.nii.gz")
    write_mr_series(volume, study, out_dir=tmp_path / "dicom", series_number=12, uid_seed="nii")
    ours = load_nifti(tmp_path / "volume.nii.gz")
    theirs = dcm2niix_volume(tmp_path / "dicom", tmp_path / "nii")

    ours_stored, ours_slope, ours_inter = stored_and_scaling(ours)
    _, theirs_slope, theirs_inter = stored_and_scaling(theirs)
    assert ours.get_data_dtype() == np.int16
    assert ours_slope == theirs_slope == choose_rescale(volume.pixels).slope
    assert ours_inter == theirs_inter == 0.0
    assert ours.header["sform_code"] == ours.header["qform_code"] == 1
    assert ours.header.get_xyzt_units()[0] == "mm"
    assert np.abs(ours.affine - volume.affine_ras()).max() < 1e-4
    assert np.abs(ours.header.get_qform() - volume.affine_ras()).max() < 1e-4
    stored = choose_rescale(volume.pixels).stored_values(volume.pixels)
    np.testing.assert_array_equal(ours_stored, stored.transpose(2, 1, 0))
    ours_canonical = nib.as_closest_canonical(ours)
    theirs_canonical = nib.as_closest_canonical(theirs)
    np.testing.assert_array_equal(ours_canonical.get_fdata(), theirs_canonical.get_fdata())
    assert np.abs(ours_canonical.affine - theirs_canonical.affine).max() < 0.01


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        ({"row_direction": np.array([1.0, 0.1, 0.0])}, "volume.row_direction"),
        ({"slice_origins": np.zeros((SHAPE[0], 3))}, "volume.slice_origins"),
        ({"pixel_spacing": (0.0, 1.0)}, "volume.pixel_spacing"),
        ({"acquisition": {"echo_time_ms": "short"}}, "volume.acquisition['echo_time_ms']"),
    ],
)
def test_inconsistent_volume_is_rejected_naming_the_field(
    change: dict[str, object], argument: str, study: SyntheticStudy, tmp_path: Path
) -> None:
    volume = make_volume("axial")
    for name, value in change.items():
        setattr(volume, name, value)
    with pytest.raises(ValueError, match=re.escape(f'"{argument}"')):
        write_mr_series(volume, study, out_dir=tmp_path, series_number=1, uid_seed="bad")
    assert not any(tmp_path.iterdir())


def test_unknown_file_order_is_rejected(study: SyntheticStudy, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='"file_order"'):
        write_mr_series(
            make_volume("axial"),
            study,
            out_dir=tmp_path,
            series_number=1,
            uid_seed="bad",
            file_order="alphabetical",  # type: ignore[arg-type]
        )
