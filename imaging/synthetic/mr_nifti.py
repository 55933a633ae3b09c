"""Write a synthetic ``MRVolume`` as NIfTI-1, with the same stored values as its DICOM series."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imaging.synthetic.mr_dicom_modules import choose_rescale, validate_volume
from imaging.synthetic.records import MRVolume

# NIfTI xform code 1: scanner-based anatomical coordinates, as DICOM's are.
_SCANNER_ANAT = 1


def write_nifti(volume: MRVolume, path: Path) -> None:
    """Write ``volume`` to ``path`` (``.nii`` or ``.nii.gz``) as scaled int16 NIfTI-1.

    The data array is indexed ``[column, row, slice]``, the affine is
    ``volume.affine_ras()`` in both sform and qform, and the stored values and
    rescale are those of the DICOM writers, so both agree bit for bit after
    scaling.

    Raises:
        ValueError: ``volume`` is inconsistent.
    """
    import nibabel as nib

    validate_volume(volume)
    rescale = choose_rescale(volume.pixels)
    data = np.ascontiguousarray(rescale.stored_values(volume.pixels).transpose(2, 1, 0))
    affine = volume.affine_ras()
    image = nib.Nifti1Image(data, affine)
    image.set_sform(affine, code=_SCANNER_ANAT)
    image.set_qform(affine, code=_SCANNER_ANAT)
    image.header.set_xyzt_units(xyz="mm", t="sec")
    image.header.set_data_dtype(np.int16)
    # With scaling set in the header, nibabel writes the int16 values as they are
    # instead of choosing a scaling of its own.
    image.header.set_slope_inter(rescale.slope, rescale.intercept)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
