"""MR series to volume: slice order, affine, rescale, Enhanced MR, and every assembly error."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset

from imaging.dicom.reading import ReadLimits, read_dicom
from imaging.dicom.series_volume import load_mr_series, mr_series_to_volume, write_nifti
from imaging.errors import DicomReadError, ResourceLimitError, SeriesAssemblyError
from imaging.synthetic.mr_dicom import FileOrder, write_mr_series
from imaging.synthetic.mr_enhanced_dicom import write_enhanced_mr_series
from imaging.synthetic.records import MRVolume, SyntheticStudy, deterministic_uid
from tests.synthetic_cases import (
    AXIS_ALIGNED_PLANES,
    Plane,
    make_mr_volume,
    make_study,
    oblique_plane,
    rotation_matrix,
)

SHAPE = (8, 10, 12)  # slices, rows, columns
PIXEL_SPACING = (1.2, 1.0)  # between rows, between columns
SLICE_SPACING = 1.5
FIRST_ORIGIN = np.array([-12.3, 20.7, -30.1])
ORIENTATIONS: dict[str, Plane] = {
    **AXIS_ALIGNED_PLANES,
    "double_oblique": oblique_plane(15.0, 12.0),
}


def make_volume(orientation: str) -> MRVolume:
    """Every voxel a distinct multiple of 1/4, so any flip or transpose changes values.

    The writers store it with slope 2**-5 (peak 821.75), which keeps every value exact.
    """
    k, i, j = np.meshgrid(*(np.arange(size) for size in SHAPE), indexing="ij")
    pixels = 100.0 * k + 10.0 * i + j + 0.25 * (k % 2) + 0.5
    return make_mr_volume(
        pixels,
        plane=ORIENTATIONS[orientation],
        first_origin=FIRST_ORIGIN,
        pixel_spacing=PIXEL_SPACING,
        slice_spacing=SLICE_SPACING,
        slice_thickness=1.0,  # deliberately not the spacing: spacing comes from positions
    )


def expected_array(volume: MRVolume) -> np.ndarray:
    """The volume in the reader's (column, row, slice) axis order."""
    return volume.pixels.transpose(2, 1, 0)


@pytest.fixture(scope="module")
def study() -> SyntheticStudy:
    return make_study()


def write_series(
    orientation: str, study: SyntheticStudy, out_dir: Path, file_order: FileOrder = "hashed"
) -> tuple[MRVolume, list[Path]]:
    volume = make_volume(orientation)
    paths = write_mr_series(
        volume, study, out_dir=out_dir, series_number=7, uid_seed="sv", file_order=file_order
    )
    return volume, paths


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_single_frame_series_gives_the_written_volume(
    orientation: str, study: SyntheticStudy, tmp_path: Path
) -> None:
    volume, paths = write_series(orientation, study, tmp_path)
    assert sorted(paths) != paths  # file names are not in slice order
    loaded = load_mr_series(paths)

    assert tuple(loaded.shape) == (1, 12, 10, 8)
    assert loaded.dtype.is_floating_point
    np.testing.assert_array_equal(loaded[0].numpy(), expected_array(volume))
    np.testing.assert_allclose(loaded.affine.numpy(), volume.affine_ras(), atol=1e-5)
    np.testing.assert_allclose(loaded.meta["spacing"], [1.0, 1.2, 1.5], atol=1e-6)
    np.testing.assert_allclose(loaded.meta["original_affine"], volume.affine_ras(), atol=1e-5)
    assert loaded.meta["space"] == "RAS"
    assert loaded.meta["filename_or_obj"] == str(tmp_path)
    assert loaded.meta["series_instance_uid"] == deterministic_uid("sv", "mr-series", 7)


def test_axial_affine_in_numbers(study: SyntheticStudy, tmp_path: Path) -> None:
    _, paths = write_series("axial", study, tmp_path)
    affine = load_mr_series(paths).affine.numpy()
    # LPS -> RAS negates x and y; the first voxel is the first slice's first pixel.
    expected = [
        [-1.0, 0.0, 0.0, 12.3],
        [0.0, -1.2, 0.0, -20.7],
        [0.0, 0.0, 1.5, -30.1],
        [0.0, 0.0, 0.0, 1.0],
    ]
    np.testing.assert_allclose(affine, expected, atol=1e-6)


def test_monai_orientation_reads_the_affine(study: SyntheticStudy, tmp_path: Path) -> None:
    from monai.data import MetaTensor
    from monai.transforms import Orientation

    volume, paths = write_series("axial", study, tmp_path)
    loaded = load_mr_series(paths)
    oriented = Orientation(axcodes="RAS", labels=None)(loaded)
    assert isinstance(oriented, MetaTensor)
    # DICOM columns run right to left and rows anterior to posterior: RAS flips both.
    np.testing.assert_allclose(
        np.diag(oriented.affine.numpy())[:3], np.array([1.0, 1.2, 1.5]), atol=1e-6
    )
    np.testing.assert_array_equal(oriented[0].numpy(), expected_array(volume)[::-1, ::-1, :])


@pytest.mark.parametrize("file_order", ["reversed_instance_numbers", "sop_instance_uid"])
def test_order_comes_from_positions_not_names_or_instance_numbers(
    file_order: FileOrder, study: SyntheticStudy, tmp_path: Path
) -> None:
    volume, paths = write_series("double_oblique", study, tmp_path, file_order)
    shuffled = list(paths)
    random.Random(3).shuffle(shuffled)
    loaded = load_mr_series(shuffled)
    np.testing.assert_array_equal(loaded[0].numpy(), expected_array(volume))
    np.testing.assert_allclose(loaded.affine.numpy(), volume.affine_ras(), atol=1e-5)


def read_all(paths: list[Path]) -> list[Any]:
    return [read_dicom(path) for path in paths]


def test_rescale_is_applied_per_slice(study: SyntheticStudy, tmp_path: Path) -> None:
    volume, paths = write_series("coronal", study, tmp_path)
    datasets = read_all(paths)
    stored = datasets[2].pixel_array.astype(np.float64)
    datasets[2].RescaleSlope = "0.5"
    datasets[2].RescaleIntercept = "-7.25"
    loaded = mr_series_to_volume(datasets)[0].numpy()
    np.testing.assert_array_equal(loaded[:, :, 2], (stored * 0.5 - 7.25).T)
    # The other slices keep the series rescale (slope 2**-5): stored 16 -> 0.5.
    np.testing.assert_array_equal(loaded[:, :, 3], expected_array(volume)[:, :, 3])
    assert loaded[0, 0, 0] == 0.5


def test_slice_thickness_does_not_set_the_spacing(study: SyntheticStudy, tmp_path: Path) -> None:
    _, paths = write_series("sagittal", study, tmp_path)
    datasets = read_all(paths)
    for dataset in datasets:
        dataset.SliceThickness = "5"
        del dataset.SpacingBetweenSlices
    assert mr_series_to_volume(datasets).meta["spacing"][2] == pytest.approx(1.5, abs=1e-6)


@pytest.mark.parametrize(
    ("orientation", "frame_order"),
    [("axial", "shuffled"), ("double_oblique", "reversed"), ("sagittal", "slice")],
)
def test_enhanced_mr_gives_the_written_volume(
    orientation: str, frame_order: Any, study: SyntheticStudy, tmp_path: Path
) -> None:
    volume = make_volume(orientation)
    path = write_enhanced_mr_series(
        volume, study, out_dir=tmp_path, series_number=8, uid_seed="sv", frame_order=frame_order
    )
    loaded = load_mr_series([path])
    np.testing.assert_array_equal(loaded[0].numpy(), expected_array(volume))
    np.testing.assert_allclose(loaded.affine.numpy(), volume.affine_ras(), atol=1e-5)
    assert loaded.meta["series_instance_uid"] == deterministic_uid("sv", "mr-enhanced-series", 8)


def test_enhanced_mr_per_frame_groups_override_shared(
    study: SyntheticStudy, tmp_path: Path
) -> None:
    volume = make_volume("axial")
    path = write_enhanced_mr_series(
        volume, study, out_dir=tmp_path, series_number=8, uid_seed="sv", frame_order="reversed"
    )
    dataset = read_dicom(path)
    # Frame 1 holds the last slice ("reversed"); give it its own rescale and move the
    # orientation from the shared groups into every frame.
    transformation = Dataset()
    transformation.RescaleSlope = "2"
    transformation.RescaleIntercept = "100"
    transformation.RescaleType = "US"
    dataset.PerFrameFunctionalGroupsSequence[0].PixelValueTransformationSequence = [transformation]
    shared = dataset.SharedFunctionalGroupsSequence[0]
    orientation = shared.PlaneOrientationSequence
    del shared.PlaneOrientationSequence
    for groups in dataset.PerFrameFunctionalGroupsSequence:
        groups.PlaneOrientationSequence = orientation
    stored_first_frame = dataset.pixel_array[0].astype(np.float64)

    loaded = mr_series_to_volume([dataset])[0].numpy()
    np.testing.assert_array_equal(loaded[:, :, 7], (stored_first_frame * 2 + 100).T)
    np.testing.assert_array_equal(loaded[:, :, :7], expected_array(volume)[:, :, :7])


def test_enhanced_mr_without_plane_position_names_the_frame(
    study: SyntheticStudy, tmp_path: Path
) -> None:
    path = write_enhanced_mr_series(
        make_volume("axial"), study, out_dir=tmp_path, series_number=8, uid_seed="sv"
    )
    dataset = read_dicom(path)
    del dataset.PerFrameFunctionalGroupsSequence[4].PlanePositionSequence
    with pytest.raises(DicomReadError, match="frame 5: no PlanePositionSequence") as caught:
        mr_series_to_volume([dataset])
    assert caught.value.source == f"{path} frame 5"


def _shift(dataset: Any, offset: np.ndarray) -> None:
    dataset.ImagePositionPatient = [
        f"{value:.6f}" for value in np.asarray(dataset.ImagePositionPatient, float) + offset
    ]


def _tilt(datasets: list[Any]) -> list[Any]:
    # A 10-degree gantry tilt: each slice moves 1.5 * tan(10°) = 0.26 mm posterior.
    for index, dataset in enumerate(datasets):
        _shift(dataset, np.array([0.0, index * SLICE_SPACING * np.tan(np.radians(10)), 0.0]))
    return datasets


def _stretch(datasets: list[Any]) -> list[Any]:
    # The last three steps are 1.514 mm: each within 1% of 1.5 mm, together off the grid.
    for index, dataset in enumerate(datasets[5:], start=1):
        _shift(dataset, np.array([0.0, 0.0, index * 0.014]))
    return datasets


def _rotate_one(datasets: list[Any]) -> list[Any]:
    rotation = rotation_matrix((0.0, 0.0, 1.0), 3.0)
    row, column = ORIENTATIONS["axial"]
    datasets[3].ImageOrientationPatient = [
        f"{value:.8f}" for value in np.concatenate([rotation @ row, rotation @ column])
    ]
    return datasets


def _resize_one(datasets: list[Any]) -> list[Any]:
    dataset = datasets[5]
    dataset.Rows, dataset.Columns = 12, 10
    return datasets


def _respace_one(datasets: list[Any]) -> list[Any]:
    datasets[1].PixelSpacing = ["1.2", "1.1"]
    return datasets


def _duplicate(datasets: list[Any]) -> list[Any]:
    datasets[6].ImagePositionPatient = datasets[2].ImagePositionPatient
    return datasets


def _other_series(datasets: list[Any]) -> list[Any]:
    datasets[4].SeriesInstanceUID = "1.2.3.4"
    return datasets


def _ct(datasets: list[Any]) -> list[Any]:
    datasets[0].SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    return datasets


# Each case: how to break an axial series, and the reason the error must give.
BROKEN_SERIES: dict[str, tuple[Callable[[list[Any]], list[Any]], str]] = {
    "gap": (
        lambda d: d[:4] + d[5:],
        r"non-uniform slice spacing: 3\.000 mm .* 1\.500 mm between most",
    ),
    "varying_spacing": (_stretch, r"spacing varies: .* lies 0\.024 mm from a regular grid"),
    "duplicate": (_duplicate, r"duplicate slice position -27\.100 mm along the normal"),
    "mixed_orientation": (_rotate_one, "mixed orientations"),
    "mixed_size": (_resize_one, r"mixed image sizes: .* is 10x12, .* is 12x10"),
    "mixed_pixel_spacing": (_respace_one, r"mixed pixel spacing: .* \[1\.2, 1\.1\] mm"),
    "gantry_tilt": (_tilt, r"drift 1\.851 mm off the slice normal .*gantry tilt"),
    "one_slice": (lambda d: d[:1], "1 slice"),
    "not_mr": (_ct, r"is CT Image Storage \(1\.2\.840\.10008\.5\.1\.4\.1\.1\.2\)"),
}


@pytest.mark.parametrize("case", list(BROKEN_SERIES))
def test_broken_series_raise_an_error_naming_the_series(
    case: str, study: SyntheticStudy, tmp_path: Path
) -> None:
    _, paths = write_series("axial", study, tmp_path, "sop_instance_uid")
    # In slice order, so the cases can say which slice they break.
    break_series, reason = BROKEN_SERIES[case]
    datasets = break_series(read_all(paths))
    with pytest.raises(SeriesAssemblyError, match=reason) as caught:
        mr_series_to_volume(datasets)
    assert caught.value.source == deterministic_uid("sv", "mr-series", 7)


def test_mixed_series_name_the_folder_and_both_uids(study: SyntheticStudy, tmp_path: Path) -> None:
    _, paths = write_series("axial", study, tmp_path)
    datasets = _other_series(read_all(paths))
    with pytest.raises(SeriesAssemblyError, match=r"2 series mixed: .*1\.2\.3\.4 \(1 files\)") as e:
        mr_series_to_volume(datasets)
    assert e.value.source == str(tmp_path)


def test_size_limits_hold_before_pixels_are_decoded(study: SyntheticStudy, tmp_path: Path) -> None:
    _, paths = write_series("axial", study, tmp_path)
    with pytest.raises(ResourceLimitError, match=r"8 files of \d+ bytes, over the 10-file or 4096"):
        load_mr_series(paths, limits=ReadLimits(max_frames=10, max_pixel_bytes=4096))
    # 8 x 10 x 12 float32 voxels need 3840 bytes.
    with pytest.raises(ResourceLimitError, match="8 slices of 10x12 need 3840 bytes"):
        mr_series_to_volume(read_all(paths), limits=ReadLimits(max_pixel_bytes=3839))


def test_rle_compressed_series_gives_the_same_volume(study: SyntheticStudy, tmp_path: Path) -> None:
    from pydicom.uid import RLELossless

    volume, paths = write_series("sagittal", study, tmp_path)
    for path in paths:
        dataset = read_dicom(path)
        dataset.compress(RLELossless)
        dataset.save_as(path)
    loaded = load_mr_series(paths)
    np.testing.assert_array_equal(loaded[0].numpy(), expected_array(volume))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("MR_small.dcm", "1 slice"),
        ("emri_small.dcm", "10 frames but 0 per-frame functional groups"),
    ],
)
def test_real_single_objects_are_not_volumes(name: str, reason: str) -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    assert isinstance(path, str)
    with pytest.raises(SeriesAssemblyError, match=reason):
        load_mr_series([Path(path)])


def test_no_files_is_an_assembly_error() -> None:
    with pytest.raises(SeriesAssemblyError, match="no DICOM files"):
        load_mr_series([])


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_write_nifti_keeps_values_affine_and_units(
    suffix: str, study: SyntheticStudy, tmp_path: Path
) -> None:
    volume, paths = write_series("double_oblique", study, tmp_path / "dicom")
    loaded = load_mr_series(paths)
    out = tmp_path / f"volume{suffix}"
    write_nifti(loaded, out)

    image = nib.load(out)
    assert isinstance(image, nib.Nifti1Image)
    np.testing.assert_array_equal(image.get_fdata(dtype=np.float32), expected_array(volume))
    np.testing.assert_allclose(image.affine, volume.affine_ras(), atol=1e-4)
    np.testing.assert_allclose(image.get_qform(), volume.affine_ras(), atol=1e-4)
    assert int(image.header["sform_code"]) == 1
    assert int(image.header["qform_code"]) == 1
    assert image.header.get_xyzt_units()[0] == "mm"


def test_write_nifti_refuses_other_suffixes(study: SyntheticStudy, tmp_path: Path) -> None:
    _, paths = write_series("axial", study, tmp_path)
    with pytest.raises(ValueError, match=r'"path" must end in \.nii or \.nii\.gz'):
        write_nifti(load_mr_series(paths), tmp_path / "volume.nrrd")
