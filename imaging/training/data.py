"""From a sample archive's ``manifest.csv`` to MONAI datasets of preprocessed tensors.

A training record is a plain dict: ``image`` (the file or series folder to decode),
``target`` (class index or value), ``reduced_ef`` for the EF multi-task, and the
identifiers ``study_instance_uid``, ``patient_id``, ``site_id``. Datasets decode and
preprocess records with :mod:`imaging`'s readers and presets; out come
``{"image": float32 tensor, "target": ..., ids...}`` items.

Caching keeps everything up to the first random transform: ``"memory"``
(``CacheDataset``, decoded once per run) or ``"disk"`` (``PersistentDataset``: one file
per record under a folder named after the preprocessing settings, so a second run, and
every epoch after the first, skips decoding; changing a setting starts a new folder).
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monai.data import Dataset

from imaging.training.recipe import TrainingRecipe
from imaging.transforms.pipelines import (
    ECHO_DEFAULTS,
    ID_KEYS,
    MRI_DEFAULT_SIZE,
    MRI_DEFAULT_SPACING,
    EchoPreprocessing,
    MRIPreprocessing,
    create_transform,
)

if TYPE_CHECKING:
    from imaging.models.config import InputSpec

Record = dict[str, Any]


def read_manifest(path: str | Path, modality: str) -> list[dict[str, str]]:
    """The rows of ``manifest.csv`` for ``modality`` ("MR" or "US"), in file order.

    Raises:
        FileNotFoundError: No such manifest.
        ValueError: The file has no ``modality`` column.
    """
    path = Path(path)
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "modality" not in rows[0]:
        raise ValueError(f"{path}: not an archive manifest (no 'modality' column)")
    return [row for row in rows if row["modality"] == modality]


def training_records(
    rows: Sequence[Mapping[str, str]], archive_root: str | Path, recipe: TrainingRecipe
) -> list[Record]:
    """Turn manifest rows into training records for ``recipe``'s modality, source and target.

    Raises:
        ValueError: A row lacks its image or target, or holds a class not in
            ``recipe.class_names``; the message names the study.
    """
    root = Path(archive_root)
    records = []
    for row in rows:
        study = row.get("study_instance_uid") or "<no study uid>"
        record: Record = {key: row.get(key, "") for key in ID_KEYS}
        record["image"] = str(_image_path(row, root, recipe, study))
        record["target"] = _target(row, recipe, study)
        if recipe.task == "ef_multitask":
            record["reduced_ef"] = _number(row, "reduced_ef", study)
        records.append(record)
    return records


def _image_path(row: Mapping[str, str], root: Path, recipe: TrainingRecipe, study: str) -> Path:
    if recipe.modality == "MR" and recipe.mri.source == "nifti":
        return root / _cell(row, "nifti_path", study)
    if recipe.modality == "US" and recipe.echo.source == "echonet":
        return root / _cell(row, "video_path", study)
    study_dir = root / _cell(row, "dicom_path", study)
    # A study folder holds one folder per series; training uses studies with one series.
    found = sorted({path.parent for path in study_dir.rglob("*.dcm")})
    if len(found) != 1:
        raise ValueError(f"study {study}: expected one DICOM series in {study_dir}, found {found}")
    if recipe.modality == "MR":
        return found[0]
    files = sorted(found[0].glob("*.dcm"))
    if len(files) != 1:
        raise ValueError(f"study {study}: expected one ultrasound object, found {len(files)}")
    return files[0]


def _target(row: Mapping[str, str], recipe: TrainingRecipe, study: str) -> int | float:
    if recipe.task != "classification":
        return _number(row, recipe.target, study)
    value = _cell(row, recipe.target, study)
    names = recipe.class_names or ()
    if value not in names:
        raise ValueError(f"study {study}: {recipe.target} {value!r} is not one of {list(names)}")
    return names.index(value)


def _cell(row: Mapping[str, str], column: str, study: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise ValueError(f"study {study}: no {column} in the manifest")
    return value


def _number(row: Mapping[str, str], column: str, study: str) -> float:
    value = _cell(row, column, study)
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"study {study}: {column} {value!r} is not a number") from None


def resolve_preprocessing(
    recipe: TrainingRecipe, model_input: InputSpec | None = None
) -> MRIPreprocessing | EchoPreprocessing:
    """The recipe's preprocessing with every None filled: from the model's input, then defaults."""
    if recipe.modality == "MR":
        mri = recipe.mri
        spacing = mri.spacing or _spec(model_input, "spacing", 3) or MRI_DEFAULT_SPACING
        size = mri.spatial_size or _spec(model_input, "spatial_size", 3)
        return mri.model_copy(update={"spacing": spacing, "spatial_size": size or MRI_DEFAULT_SIZE})
    echo = recipe.echo
    side = _spec(model_input, "spatial_size", 2)
    filled = {
        "spatial_size": echo.spatial_size or (side[0] if side else None),
        "clip_length": echo.clip_length or (model_input.frames if model_input else None),
        "period": echo.period or (model_input.period if model_input else None),
        # Grey stays one channel: the echo networks repeat it over their RGB stem.
        "channels": echo.channels,
    }
    return echo.model_copy(
        update={key: value or ECHO_DEFAULTS[key] for key, value in filled.items()}
    )


def _spec(model_input: InputSpec | None, field: str, length: int) -> tuple[Any, ...] | None:
    value = getattr(model_input, field, None) if model_input is not None else None
    return tuple(value) if value is not None and len(value) == length else None


def create_dataset(
    records: Sequence[Record],
    preprocessing: MRIPreprocessing | EchoPreprocessing,
    *,
    train: bool,
    cache: str = "memory",
    cache_dir: str | Path | None = None,
    num_workers: int = 0,
) -> Dataset:
    """A MONAI dataset over ``records`` with :func:`create_transform`'s pipeline.

    Args:
        records: From :func:`training_records`.
        preprocessing: Resolved settings (:func:`resolve_preprocessing`).
        train: Training pipeline (augmentation) or evaluation pipeline.
        cache: ``"memory"``, ``"disk"`` or ``"none"``.
        cache_dir: Root of the disk cache (required for ``"disk"``).
        num_workers: Threads that fill a memory cache.

    Raises:
        ValueError: Unknown ``cache``, or ``"disk"`` without ``cache_dir``.
    """
    from monai.data import CacheDataset, PersistentDataset

    transform = create_transform(preprocessing, train=train)
    if cache == "memory":
        return CacheDataset(
            list(records), transform, num_workers=max(1, num_workers), progress=False
        )
    if cache == "disk":
        if cache_dir is None:
            raise ValueError('Argument "cache_dir" is required when cache is "disk"')
        folder = Path(cache_dir) / cache_folder_name(preprocessing, train=train)
        folder.mkdir(parents=True, exist_ok=True)
        return PersistentDataset(list(records), transform, cache_dir=folder)
    if cache == "none":
        return Dataset(list(records), transform)
    raise ValueError(f'Argument "cache" must be "memory", "disk" or "none", got {cache!r}')


def cache_folder_name(preprocessing: MRIPreprocessing | EchoPreprocessing, *, train: bool) -> str:
    """A folder name that changes whenever a setting that shapes the cached tensors does."""
    kind = "mri" if isinstance(preprocessing, MRIPreprocessing) else "echo"
    # The training and evaluation pipelines cache at different points (before and after
    # the random part), so they never share files.
    settings = {"kind": kind, "train": train, **preprocessing.model_dump(mode="json")}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return f"{kind}-{'train' if train else 'eval'}-{digest[:16]}"


def create_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, num_workers: int = 0) -> Any:
    """A MONAI ``DataLoader`` (seeds each worker's random transforms) over ``dataset``."""
    from monai.data import DataLoader

    # A training batch of one study breaks BatchNorm ("expected more than 1 value per
    # channel"): drop it; the shuffle puts that study in a full batch in other epochs.
    size = len(dataset)
    drop_last = shuffle and size > batch_size and size % batch_size == 1
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        persistent_workers=False,
        drop_last=drop_last,
    )
