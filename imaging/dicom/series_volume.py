"""Assemble an MR series into one volume with a correct affine, as dcm2niix would.

Accepts single-frame MR Image Storage series and Enhanced (or Legacy Converted
Enhanced) MR multi-frame objects, whose per-frame geometry and rescale live in the
per-frame or shared functional groups. Slice order and spacing come from the
positions along the slice normal (see :mod:`imaging.dicom.slice_geometry`), the
rescale slope and intercept are applied per frame, and every inconsistency raises a
:class:`SeriesAssemblyError` naming the series.

Output axis convention: a channel-first ``MetaTensor`` of shape ``(1, X, Y, Z)`` where
X is the DICOM column index (it grows along the first ImageOrientationPatient
triplet), Y the row index (along the second triplet) and Z the slice index in
ascending position along the normal (row x column direction). The affine maps
``(X, Y, Z)`` to RAS millimetres, as nibabel and MONAI expect.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imaging.dicom.pixels import decode_pixel_array
from imaging.dicom.reading import DEFAULT_READ_LIMITS, ReadLimits, read_dicom, require, require_uid
from imaging.dicom.slice_geometry import LPS_TO_RAS, PlaneGeometry, stack_geometry
from imaging.errors import (
    DicomReadError,
    PixelDataError,
    ResourceLimitError,
    SeriesAssemblyError,
)

if TYPE_CHECKING:
    from monai.data import MetaTensor

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.4"
MULTI_FRAME_MR_STORAGE = (ENHANCED_MR_IMAGE_STORAGE, LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE)
MR_STORAGE = (MR_IMAGE_STORAGE, *MULTI_FRAME_MR_STORAGE)


@dataclass(frozen=True)
class _Frame:
    """One 2D frame of the series: where it lies and how its stored values scale."""

    plane: PlaneGeometry
    slope: float
    intercept: float
    dataset_index: int
    frame_index: int  # 0 for a single-frame object


def load_mr_series(
    paths: Sequence[Path], *, limits: ReadLimits = DEFAULT_READ_LIMITS
) -> MetaTensor:
    """Read the files of one MR series and assemble them into a volume.

    Args:
        paths: Every file of the series, in any order.
        limits: Size limits for each file and for the assembled volume.

    Returns:
        A float32 ``MetaTensor`` of shape ``(1, X, Y, Z)`` (see the module docstring)
        whose ``affine`` maps voxel indices to RAS mm; its meta holds
        ``original_affine``, ``spacing`` (mm along X, Y, Z), ``series_instance_uid``,
        ``filename_or_obj`` (the series folder) and ``space`` ("RAS").

    Raises:
        DicomReadError, ResourceLimitError, PixelDataError, UnsupportedTransferSyntaxError:
            A file cannot be read or decoded (the error names the file).
        SeriesAssemblyError: The files do not form one regular MR volume.
    """
    if not paths:
        raise SeriesAssemblyError("<no files>", "no DICOM files given")
    # Every file is held in memory until the volume is built, so bound the total first:
    # a series' files hold at most its stored pixels (half the float32 volume) plus headers.
    total_bytes = sum(_file_size(path) for path in paths)
    if len(paths) > limits.max_frames or total_bytes > limits.max_pixel_bytes:
        raise ResourceLimitError(
            _series_location([str(path) for path in paths]),
            f"{len(paths)} files of {total_bytes} bytes, over the {limits.max_frames}-file "
            f"or {limits.max_pixel_bytes}-byte limit",
        )
    datasets = [read_dicom(path, limits=limits) for path in paths]
    return mr_series_to_volume(datasets, limits=limits)


def mr_series_to_volume(
    datasets: Sequence[Any], *, limits: ReadLimits = DEFAULT_READ_LIMITS
) -> MetaTensor:
    """Assemble already-read data sets (with pixel data) of one MR series.

    The same as :func:`load_mr_series` for data sets read elsewhere (a zip, a
    C-STORE association); each one's ``filename`` names it in errors.
    """
    import torch
    from monai.data import MetaTensor

    if not datasets:
        raise SeriesAssemblyError("<no files>", "no DICOM data sets given")
    names = [_name(dataset) for dataset in datasets]
    series_uid = _series_instance_uid(datasets, names)
    frames = _frames(datasets, names, series_uid)
    geometry = stack_geometry([frame.plane for frame in frames], series_uid)
    columns, rows, slices = geometry.shape
    needed = columns * rows * slices * np.dtype(np.float32).itemsize
    if slices > limits.max_frames or needed > limits.max_pixel_bytes:
        raise ResourceLimitError(
            series_uid,
            f"{slices} slices of {rows}x{columns} need {needed} bytes, over the "
            f"{limits.max_frames}-frame or {limits.max_pixel_bytes}-byte limit",
        )

    stack = _scaled_stack(datasets, names, frames, geometry.order, limits)
    # (slice, row, column) -> (column, row, slice), then the channel axis in front.
    volume = np.ascontiguousarray(stack.transpose(2, 1, 0)[None])

    affine = geometry.affine_ras()
    meta = {
        "original_affine": affine.copy(),
        "spacing": np.asarray(geometry.spacing),
        "spatial_shape": np.asarray(geometry.shape),
        # Already channel-first: MONAI's EnsureChannelFirst leaves it as it is.
        "original_channel_dim": 0,
        "series_instance_uid": series_uid,
        "filename_or_obj": _series_location(names),
        "space": "RAS",
    }
    return MetaTensor(torch.from_numpy(volume), affine=torch.from_numpy(affine), meta=meta)


def write_nifti(volume: MetaTensor, path: Path) -> None:
    """Write a ``(1, X, Y, Z)`` volume as NIfTI-1 (``.nii`` or ``.nii.gz``).

    Voxels are stored as float32, so any per-slice rescale survives exactly; the
    sform and qform both hold the affine (code 1, scanner anatomical), units mm.

    Raises:
        ValueError: ``volume`` is not one channel of a 3D image, or ``path`` does not
            end in ``.nii`` or ``.nii.gz``.
    """
    import nibabel as nib

    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f'Argument "path" must end in .nii or .nii.gz, got {path.name!r}')
    if volume.ndim != 4 or volume.shape[0] != 1:
        raise ValueError(
            f'Argument "volume" must have shape (1, X, Y, Z), got {tuple(volume.shape)}'
        )
    affine = np.asarray(volume.affine.detach().cpu().numpy(), dtype=np.float64)
    if str(volume.meta.get("space", "RAS")) == "LPS":
        affine = LPS_TO_RAS @ affine
    array = volume.detach().cpu().numpy()[0].astype(np.float32, copy=False)
    image = nib.Nifti1Image(array, affine)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    image.header.set_xyzt_units(xyz="mm", t="sec")
    nib.save(image, path)


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # read_dicom reports the file with its reason


def _name(dataset: Any) -> str:
    filename = getattr(dataset, "filename", None)
    if isinstance(filename, str | os.PathLike) and str(filename):
        return str(filename)
    return f"instance {dataset.get('SOPInstanceUID', '?')}"


def _series_location(names: Sequence[str]) -> str:
    """The folder holding every file, or the first name when there is none."""
    try:
        return os.path.commonpath([os.path.dirname(name) for name in names]) or names[0]
    except ValueError:  # relative and absolute paths mixed, or no paths at all
        return names[0]


def _series_instance_uid(datasets: Sequence[Any], names: Sequence[str]) -> str:
    """The one SeriesInstanceUID, after checking every object is MR of that series."""
    uids: dict[str, list[str]] = {}
    for dataset, name in zip(datasets, names, strict=True):
        uids.setdefault(require_uid(dataset, "SeriesInstanceUID", name), []).append(name)
    if len(uids) > 1:
        found = ", ".join(f"{uid} ({len(files)} files)" for uid, files in uids.items())
        raise SeriesAssemblyError(
            _series_location(names), f"files of {len(uids)} series mixed: {found}"
        )
    (series_uid,) = uids
    for dataset, name in zip(datasets, names, strict=True):
        sop_class = str(dataset.get("SOPClassUID", ""))
        if sop_class not in MR_STORAGE:
            from pydicom.uid import UID

            kind = UID(sop_class).name if sop_class else "no SOP Class UID"
            raise SeriesAssemblyError(
                series_uid, f"{name} is {kind} ({sop_class}), not an MR image storage class"
            )
    return series_uid


def _frames(datasets: Sequence[Any], names: Sequence[str], series_uid: str) -> list[_Frame]:
    frames: list[_Frame] = []
    for index, (dataset, name) in enumerate(zip(datasets, names, strict=True)):
        if str(dataset.SOPClassUID) in MULTI_FRAME_MR_STORAGE:
            frames.extend(_multi_frame(dataset, name, index, series_uid))
        else:
            frames.append(_single_frame(dataset, name, index))
    return frames


def _single_frame(dataset: Any, name: str, index: int) -> _Frame:
    if int(dataset.get("NumberOfFrames") or 1) != 1:
        raise DicomReadError(name, f"MR Image Storage with {dataset.NumberOfFrames} frames")
    plane = _plane(
        name,
        rows=require(dataset, "Rows", name),
        columns=require(dataset, "Columns", name),
        position=require(dataset, "ImagePositionPatient", name),
        orientation=require(dataset, "ImageOrientationPatient", name),
        pixel_spacing=require(dataset, "PixelSpacing", name),
    )
    slope, intercept = _rescale(dataset, name)
    return _Frame(plane, slope, intercept, dataset_index=index, frame_index=0)


def _multi_frame(dataset: Any, name: str, index: int, series_uid: str) -> list[_Frame]:
    """Every frame of an Enhanced MR object, from its per-frame or shared groups."""
    count = int(require(dataset, "NumberOfFrames", name))
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != count:
        raise SeriesAssemblyError(
            series_uid,
            f"{name} has {count} frames but {len(per_frame)} per-frame functional groups",
        )
    shared = dataset.get("SharedFunctionalGroupsSequence") or []
    shared_groups = shared[0] if shared else None
    rows, columns = require(dataset, "Rows", name), require(dataset, "Columns", name)
    frames = []
    for frame_index, per_frame_groups in enumerate(per_frame):
        frame_name = f"{name} frame {frame_index + 1}"
        groups = (per_frame_groups, shared_groups)
        plane = _plane(
            frame_name,
            rows=rows,
            columns=columns,
            position=require(
                _macro(groups, "PlanePositionSequence", frame_name),
                "ImagePositionPatient",
                frame_name,
            ),
            orientation=require(
                _macro(groups, "PlaneOrientationSequence", frame_name),
                "ImageOrientationPatient",
                frame_name,
            ),
            pixel_spacing=require(
                _macro(groups, "PixelMeasuresSequence", frame_name), "PixelSpacing", frame_name
            ),
        )
        transformation = _macro(groups, "PixelValueTransformationSequence", frame_name, False)
        slope, intercept = (
            _rescale(transformation, frame_name) if transformation is not None else (1.0, 0.0)
        )
        frames.append(_Frame(plane, slope, intercept, index, frame_index))
    return frames


def _macro(groups: tuple[Any, Any], keyword: str, frame_name: str, required: bool = True) -> Any:
    """The item of functional group ``keyword``: per-frame first, then shared."""
    for source in groups:
        if source is not None and source.get(keyword):
            return source.get(keyword)[0]
    if required:
        raise DicomReadError(
            frame_name, f"no {keyword} in the per-frame or shared functional groups"
        )
    return None


def _plane(
    name: str, *, rows: Any, columns: Any, position: Any, orientation: Any, pixel_spacing: Any
) -> PlaneGeometry:
    spacing = _numbers(pixel_spacing, 2, "PixelSpacing", name)
    if min(spacing) <= 0.0:
        raise DicomReadError(name, f"PixelSpacing {spacing.tolist()} is not positive")
    if not isinstance(rows, int) or not isinstance(columns, int) or min(rows, columns) < 1:
        raise DicomReadError(name, f"Rows {rows!r} and Columns {columns!r} must be positive")
    return PlaneGeometry(
        name=name,
        position=_numbers(position, 3, "ImagePositionPatient", name),
        orientation=_numbers(orientation, 6, "ImageOrientationPatient", name),
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        rows=rows,
        columns=columns,
    )


def _numbers(value: Any, count: int, keyword: str, name: str) -> np.ndarray:
    """A multi-valued DS as ``count`` finite floats."""
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    try:
        numbers = np.array([float(item) for item in values], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DicomReadError(name, f"{keyword} {values!r} is not numeric") from exc
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise DicomReadError(name, f"{keyword} must be {count} finite numbers, got {values!r}")
    return numbers


def _rescale(item: Any, name: str) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept of a data set or functional group (default 1, 0)."""
    slope_value, intercept_value = item.get("RescaleSlope"), item.get("RescaleIntercept")
    slope = 1.0 if slope_value in (None, "") else float(slope_value)
    intercept = 0.0 if intercept_value in (None, "") else float(intercept_value)
    if slope == 0.0 or not np.isfinite(slope) or not np.isfinite(intercept):
        raise DicomReadError(name, f"unusable rescale: slope {slope}, intercept {intercept}")
    return slope, intercept


def _scaled_stack(
    datasets: Sequence[Any],
    names: Sequence[str],
    frames: Sequence[_Frame],
    order: np.ndarray,
    limits: ReadLimits,
) -> np.ndarray:
    """Rescaled float32 frames as ``(slice, row, column)``, ``stack[k]`` = frame ``order[k]``.

    Each object is decoded once and dropped before the next, so at most one object's
    stored values are held beside the stack.
    """
    first = frames[0].plane
    stack = np.empty((len(frames), first.rows, first.columns), dtype=np.float32)
    slot = np.empty(len(frames), dtype=np.intp)
    slot[order] = np.arange(len(frames))
    by_dataset: dict[int, list[int]] = {}
    for index, frame in enumerate(frames):
        by_dataset.setdefault(frame.dataset_index, []).append(index)
    for dataset_index, frame_indices in by_dataset.items():
        stored = _decode_frames(datasets[dataset_index], names[dataset_index], limits)
        for index in frame_indices:
            frame, target = frames[index], stack[slot[index]]
            target[...] = stored[frame.frame_index]
            # Per frame: Enhanced MR may rescale every frame differently.
            if frame.slope != 1.0 or frame.intercept != 0.0:
                target *= np.float32(frame.slope)
                target += np.float32(frame.intercept)
    return stack


def _decode_frames(dataset: Any, name: str, limits: ReadLimits) -> np.ndarray:
    """Stored values as ``(frames, rows, columns)``."""
    if int(dataset.get("SamplesPerPixel") or 1) != 1:
        raise PixelDataError(name, f"SamplesPerPixel is {dataset.SamplesPerPixel}; MR must be 1")
    array = decode_pixel_array(dataset, name, limits)
    return array.reshape(-1, int(dataset.Rows), int(dataset.Columns))
