"""Our series-to-volume against dcm2niix, on real anatomy and on the sample archive.

Series are cut from two real head templates (nilearn's MNI152 T1 and Debian
mricron-data's Colin27) on small grids in axial, sagittal, coronal and
double-oblique planes, written as single-frame MR with file names out of slice
order and as Enhanced MR with shuffled frames. Both converters must give the same
voxels at the same world positions (within 0.01 mm), whatever axis flips each
chose; the affines account for those.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from imaging.dicom.series_volume import load_mr_series
from imaging.synthetic.archive import ArchiveSpec, generate_archive
from imaging.synthetic.mr_dicom import FileOrder, write_mr_series
from imaging.synthetic.mr_enhanced_dicom import write_enhanced_mr_series
from imaging.synthetic.records import MRVolume, SyntheticStudy
from serving.cli import app
from tests.synthetic_cases import (
    AXIS_ALIGNED_PLANES,
    Plane,
    make_mr_volume,
    make_study,
    oblique_plane,
)

pytestmark = pytest.mark.skipif(
    shutil.which("dcm2niix") is None, reason="dcm2niix is not on PATH (Debian package dcm2niix)"
)

COLIN27 = Path("/usr/share/mricron/templates/ch2.nii.gz")
# (slices, rows, columns): 63k voxels, every axis a different length, non-square pixels.
GRID = (36, 44, 40)
PIXEL_SPACING = (4.0, 3.6)  # between rows, between columns
SLICE_SPACING = 4.5
HEAD_CENTRE_LPS = np.array([0.0, 18.0, 18.0])
WORLD_TOLERANCE_MM = 0.01


# DICOM (LPS) row and column directions.
PLANES: dict[str, Plane] = {**AXIS_ALIGNED_PLANES, "double_oblique": oblique_plane(14.0, -18.0)}


def load_template(name: str) -> nib.Nifti1Image:
    if name == "mni152":
        from nilearn.datasets import load_mni152_template

        return load_mni152_template(resolution=2)
    if not COLIN27.is_file():
        pytest.skip(f"{COLIN27} is missing (Debian package mricron-data)")
    image = nib.load(COLIN27)
    assert isinstance(image, nib.Nifti1Image)
    return image


def cut_series(template: nib.Nifti1Image, plane: str) -> MRVolume:
    """Sample ``template`` (trilinear, peak 1000) on a grid centred on the head in ``plane``."""
    row_direction, column_direction = PLANES[plane]
    normal = np.cross(row_direction, column_direction)
    slices, rows, columns = GRID
    first = (
        HEAD_CENTRE_LPS
        - row_direction * PIXEL_SPACING[1] * (columns - 1) / 2
        - column_direction * PIXEL_SPACING[0] * (rows - 1) / 2
        - normal * SLICE_SPACING * (slices - 1) / 2
    )
    k, i, j = np.meshgrid(*(np.arange(size) for size in GRID), indexing="ij")
    lps = (
        first
        + k[..., None] * normal * SLICE_SPACING
        + i[..., None] * column_direction * PIXEL_SPACING[0]
        + j[..., None] * row_direction * PIXEL_SPACING[1]
    )
    ras = lps * np.array([-1.0, -1.0, 1.0])
    to_voxel = np.linalg.inv(template.affine)
    voxel = ras @ to_voxel[:3, :3].T + to_voxel[:3, 3]
    data = np.asarray(template.dataobj, dtype=np.float32)
    # Scanner-like units: MNI152 holds 0..1, Colin27 0..254.
    data *= 1000.0 / float(data.max())
    pixels = ndimage.map_coordinates(data, np.moveaxis(voxel, -1, 0), order=1, cval=0.0)
    return make_mr_volume(
        pixels,
        plane=PLANES[plane],
        first_origin=first,
        pixel_spacing=PIXEL_SPACING,
        slice_spacing=SLICE_SPACING,
    )


@pytest.fixture(scope="module")
def study() -> SyntheticStudy:
    return make_study()


def dcm2niix(series_dir: Path, out_dir: Path) -> nib.Nifti1Image:
    """Convert ``series_dir`` with dcm2niix and load the one NIfTI it writes."""
    out_dir.mkdir(parents=True)
    subprocess.run(
        ["dcm2niix", "-z", "n", "-b", "n", "-f", "reference", "-o", str(out_dir), str(series_dir)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    written = sorted(out_dir.glob("*.nii"))
    assert [path.name for path in written] == ["reference.nii"], written
    image = nib.load(written[0])
    assert isinstance(image, nib.Nifti1Image)
    return image


def assert_same_as_dcm2niix(series_dir: Path, scratch: Path) -> None:
    """``mmdx convert`` writes the same voxel values at the same world positions as
    dcm2niix, after both are put in RAS+ order."""
    ours = scratch / "mmdx" / "converted.nii.gz"
    result = CliRunner().invoke(app, ["convert", str(series_dir), "--out", str(ours)])
    assert result.exit_code == 0, result.output
    reference = nib.as_closest_canonical(dcm2niix(series_dir, scratch / "dcm2niix"))
    mine = nib.as_closest_canonical(nib.load(ours))

    assert mine.shape == reference.shape, series_dir
    expected = reference.get_fdata()
    assert expected.std() > 1.0, "dcm2niix wrote a flat image"
    # dcm2niix keeps int16 with the series' power-of-two scl_slope: scaling is exact.
    np.testing.assert_array_equal(np.asarray(mine.dataobj, dtype=np.float64), expected)
    # An affine map differs most at a corner of the lattice: check all eight.
    last = np.array(mine.shape) - 1
    corners = np.array(
        [[x, y, z, 1.0] for x in (0, last[0]) for y in (0, last[1]) for z in (0, last[2])]
    )
    offsets = np.linalg.norm(
        (corners @ mine.affine.T - corners @ reference.affine.T)[:, :3], axis=1
    )
    assert offsets.max() < WORLD_TOLERANCE_MM, (series_dir, offsets.max())


@pytest.mark.parametrize("template_name", ["mni152", "colin27"])
@pytest.mark.parametrize("plane", list(PLANES))
def test_single_frame_series_of_real_anatomy_matches_dcm2niix(
    template_name: str, plane: str, study: SyntheticStudy, tmp_path: Path
) -> None:
    volume = cut_series(load_template(template_name), plane)
    # Half the cases also number instances against the slice direction.
    file_order: FileOrder = "hashed" if template_name == "mni152" else "reversed_instance_numbers"
    paths = write_mr_series(
        volume, study, out_dir=tmp_path / "dicom", series_number=2, uid_seed=template_name,
        file_order=file_order,
    )  # fmt: skip
    assert sorted(paths) != paths
    assert_same_as_dcm2niix(tmp_path / "dicom", tmp_path)


@pytest.mark.parametrize("template_name", ["mni152", "colin27"])
@pytest.mark.parametrize("plane", ["double_oblique", "coronal"])
def test_enhanced_mr_of_real_anatomy_matches_dcm2niix(
    template_name: str, plane: str, study: SyntheticStudy, tmp_path: Path
) -> None:
    volume = cut_series(load_template(template_name), plane)
    write_enhanced_mr_series(
        volume, study, out_dir=tmp_path / "dicom", series_number=3, uid_seed=template_name,
        frame_order="shuffled",
    )  # fmt: skip
    assert_same_as_dcm2niix(tmp_path / "dicom", tmp_path)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six MR studies over three sites; seed 9 gives axial, sagittal and oblique Enhanced MR."""
    out = tmp_path_factory.mktemp("archive")
    generate_archive(ArchiveSpec(out_dir=out, mri_studies=6, echo_studies=0, sites=3, seed=9))
    return out


@pytest.mark.slow
def test_every_mr_series_of_the_sample_archive_matches_dcm2niix(
    archive: Path, tmp_path: Path
) -> None:
    series_dirs = sorted({path.parent for path in (archive / "dicom").rglob("*.dcm")})
    assert len(series_dirs) == 6
    kinds: set[tuple[Any, ...]] = set()
    for index, series_dir in enumerate(series_dirs):
        assert_same_as_dcm2niix(series_dir, tmp_path / str(index))
        volume = load_mr_series(sorted(series_dir.iterdir()))
        kinds.add(
            (len(list(series_dir.iterdir())) == 1, tuple(np.round(volume.meta["spacing"], 2)))
        )
    # Single-frame and Enhanced MR, and three voxel sizes, were all compared.
    assert {multi_frame for multi_frame, _ in kinds} == {True, False}
    assert len({spacing for _, spacing in kinds}) == 3
