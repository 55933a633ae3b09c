"""Every MR series of an archive: ``load_mr_series`` + ``write_nifti`` against dcm2niix.

For each series folder under ``ARCHIVE/dicom`` whose name starts with ``MR``, both
NIfTI files are put in closest-canonical (RAS+) order; the voxel arrays must be equal
and the world positions of the eight corner voxel centres are compared. Prints the
number of series, voxel mismatches, the worst corner offset and both total times
(dcm2niix's includes its process start). Usage:

    python -m bench.dcm2niix_agreement ARCHIVE
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from imaging.dicom.series_volume import load_mr_series, write_nifti


def main(argv: list[str] | None = None) -> None:
    """Compare every MR series of the archive and print the agreement figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("archive", type=Path, help="A sample archive (with a dicom/ folder).")
    args = parser.parse_args(argv)
    series_dirs = sorted(
        {path.parent for path in (args.archive / "dicom").rglob("*.dcm")
         if path.parent.name.startswith("MR")}
    )  # fmt: skip
    worst_mm, mismatches, ours_s, reference_s = 0.0, 0, 0.0, 0.0
    for series_dir in series_dirs:
        with tempfile.TemporaryDirectory() as scratch_name:
            scratch = Path(scratch_name)
            started = time.perf_counter()
            write_nifti(load_mr_series(sorted(series_dir.iterdir())), scratch / "ours.nii")
            ours_s += time.perf_counter() - started
            started = time.perf_counter()
            subprocess.run(
                ["dcm2niix", "-z", "n", "-b", "n", "-f", "reference", "-o", str(scratch),
                 str(series_dir)],
                check=True, capture_output=True, timeout=300,
            )  # fmt: skip
            reference_s += time.perf_counter() - started
            ours = nib.as_closest_canonical(nib.load(scratch / "ours.nii"))
            reference = nib.as_closest_canonical(nib.load(scratch / "reference.nii"))
            same = ours.shape == reference.shape and np.array_equal(
                np.asarray(ours.dataobj, dtype=np.float64), reference.get_fdata()
            )
            last = np.array(ours.shape[:3]) - 1
            corners = np.array(
                [[x, y, z, 1.0] for x in (0, last[0]) for y in (0, last[1]) for z in (0, last[2])]
            )
            offsets = (corners @ ours.affine.T - corners @ reference.affine.T)[:, :3]
            worst_mm = max(worst_mm, float(np.linalg.norm(offsets, axis=1).max()))
            mismatches += not same
    print(f"MR series compared with dcm2niix: {len(series_dirs)}")
    print(f"  voxel arrays differing: {mismatches}")
    print(f"  worst corner voxel-centre offset: {worst_mm:.2e} mm")
    ratio = ours_s / reference_s if reference_s else float("nan")
    print(f"  time: ours {ours_s:.1f} s, dcm2niix {reference_s:.1f} s (ratio {ratio:.2f})")


if __name__ == "__main__":
    main()
