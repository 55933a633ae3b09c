"""Series-to-volume time: ``load_mr_series`` against dcm2niix on the same MR series.

The series: 176 sagittal slices of 256x256 at 1 mm, cut from nilearn's 1 mm MNI152
T1 template and written as single-frame MR Image Storage files named out of slice
order. Baseline: ``dcm2niix -z n -b n`` (reads the folder, writes an uncompressed
NIfTI). Candidate: ``load_mr_series`` alone, and with ``write_nifti`` to ``.nii`` (what
``mmdx convert`` does, the like-for-like figure). Each arm runs once to warm up
(imports, page cache), then ``--repeats`` times; medians are printed. Usage:

    python -m bench.series_to_volume [--repeats N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

from bench.timing import median_seconds
from imaging.dicom.series_volume import load_mr_series, write_nifti
from imaging.synthetic.mr_dicom import write_mr_series
from imaging.synthetic.records import (
    MRVolume,
    Site,
    SyntheticPatient,
    SyntheticStudy,
    deterministic_uid,
)

SLICES, MATRIX = 176, 256


def _mni_sagittal_volume() -> MRVolume:
    """176 sagittal 256x256 slices at 1 mm through the 1 mm MNI152 template."""
    from nilearn.datasets import load_mni152_template
    from scipy import ndimage

    template = load_mni152_template(resolution=1)
    data = np.asarray(template.dataobj, dtype=np.float32)
    data *= 1000.0 / float(data.max())
    row_direction, column_direction = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    normal = np.cross(row_direction, column_direction)
    centre = np.array([0.0, 18.0, 18.0])  # LPS mm, near the middle of the head
    first = centre - (row_direction + column_direction) * (MATRIX - 1) / 2
    first -= normal * (SLICES - 1) / 2
    k, i, j = np.meshgrid(np.arange(SLICES), np.arange(MATRIX), np.arange(MATRIX), indexing="ij")
    ras = (
        first
        + k[..., None] * normal
        + i[..., None] * column_direction
        + j[..., None] * row_direction
    ) * np.array([-1.0, -1.0, 1.0])
    to_voxel = np.linalg.inv(template.affine)
    voxel = ras @ to_voxel[:3, :3].T + to_voxel[:3, 3]
    pixels = ndimage.map_coordinates(data, np.moveaxis(voxel, -1, 0), order=1, cval=0.0)
    return MRVolume(
        pixels=pixels.astype(np.float32),
        row_direction=row_direction,
        column_direction=column_direction,
        slice_origins=first + np.outer(np.arange(SLICES), normal),
        pixel_spacing=(1.0, 1.0),
        slice_thickness=1.0,
    )


def _study() -> SyntheticStudy:
    return SyntheticStudy(
        patient=SyntheticPatient("BENCH0001", "Bench^Mark", date(1950, 1, 1), "F"),
        site=Site("bench", "Synthetic General", "SIEMENS", "Prisma", "MRC40123"),
        study_instance_uid=deterministic_uid("bench-series-to-volume"),
        accession_number="BENCH1",
        study_date=date(2024, 1, 1),
        study_time="090000",
        referring_physician_name="Referrer^Rita",
        study_description="MRI BRAIN",
    )


def main(argv: list[str] | None = None) -> None:
    """Print the median time of each arm and the ratios to dcm2niix."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if shutil.which("dcm2niix") is None:
        raise SystemExit("dcm2niix is not on PATH (Debian package dcm2niix)")
    with tempfile.TemporaryDirectory() as scratch:
        series_dir, out_dir = Path(scratch, "series"), Path(scratch, "out")
        out_dir.mkdir()
        paths = write_mr_series(
            _mni_sagittal_volume(), _study(), out_dir=series_dir, series_number=1, uid_seed="bench"
        )
        command = ["dcm2niix", "-z", "n", "-b", "n", "-f", "reference", "-o", str(out_dir)]

        def baseline() -> None:
            subprocess.run([*command, str(series_dir)], check=True, capture_output=True)

        def convert() -> None:
            write_nifti(load_mr_series(paths), out_dir / "ours.nii")

        dcm2niix_s = median_seconds(baseline, args.repeats)
        load_s = median_seconds(lambda: load_mr_series(paths), args.repeats)
        convert_s = median_seconds(convert, args.repeats)
    print(f"series to volume: {SLICES} slices of {MATRIX}x{MATRIX}, median of {args.repeats}")
    print(f"  baseline  dcm2niix -z n (read + write .nii): {dcm2niix_s * 1000:8.1f} ms")
    print(f"  candidate load_mr_series:                    {load_s * 1000:8.1f} ms")
    print(f"  candidate load_mr_series + write_nifti .nii: {convert_s * 1000:8.1f} ms")
    print(f"  ratio load / dcm2niix:              {load_s / dcm2niix_s:.2f}x")
    print(f"  ratio load + write .nii / dcm2niix: {convert_s / dcm2niix_s:.2f}x")


if __name__ == "__main__":
    main()
