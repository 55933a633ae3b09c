"""Read BIDS-like NIfTI folders (``sub-*/[ses-*/]anat/*_T1w.nii[.gz]`` + ``participants.tsv``).

Records carry the participant's row of ``participants.tsv`` and, where the subject has
one, the session's row of ``sub-<label>_sessions.tsv`` (the sample archive writes both;
a session's age and diagnosis win over the participant's, which describe one visit).
Volumes load through MONAI's ``LoadImage`` with nibabel, so they arrive as a
channel-first ``MetaTensor`` whose ``affine`` maps voxel indices to RAS millimetres.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imaging.errors import NiftiReadError

if TYPE_CHECKING:
    from monai.data import MetaTensor

GIB = 1024**3
LABEL_COLUMNS = ("diagnosis", "label", "group", "dx")
_T1W_NAME = re.compile(
    r"^(sub-[A-Za-z0-9]+)(?:_(ses-[A-Za-z0-9]+))?(?:_[a-z]+-[A-Za-z0-9]+)*_T1w\.nii(?:\.gz)?$"
)


@dataclass(frozen=True)
class NiftiRecord:
    """One T1-weighted image of a BIDS-like folder and what the tables say about it."""

    subject: str  # "sub-<label>"
    session: str | None  # "ses-<label>", None in a folder without sessions
    path: Path
    participant: Mapping[str, str] = field(default_factory=dict, hash=False)
    session_columns: Mapping[str, str] = field(default_factory=dict, hash=False)

    def column(self, name: str) -> str | None:
        """The session's value of ``name`` if it has one, else the participant's."""
        for row in (self.session_columns, self.participant):
            value = row.get(name, "").strip()
            if value and value.lower() != "n/a":  # BIDS writes missing values as n/a
                return value
        return None

    @property
    def age(self) -> float | None:
        value = self.column("age")
        try:
            return None if value is None else float(value)
        except ValueError:
            return None

    @property
    def sex(self) -> str | None:
        return self.column("sex")

    @property
    def label(self) -> str | None:
        """The diagnosis: the first of ``diagnosis``, ``label``, ``group``, ``dx`` present."""
        for name in LABEL_COLUMNS:
            value = self.column(name)
            if value is not None:
                return value
        return None


def read_bids_t1w(root: str | Path) -> list[NiftiRecord]:
    """Every ``*_T1w.nii[.gz]`` under ``root`` with its participant and session rows.

    Raises:
        NiftiReadError: ``root`` is not a folder, a table is malformed, or a file name
            and its folders disagree about the subject or session.
    """
    root = Path(root)
    if not root.is_dir():
        raise NiftiReadError(root, "not a folder")
    participants_path = root / "participants.tsv"
    participants = (
        _read_table(participants_path, "participant_id") if participants_path.is_file() else {}
    )
    records = []
    paths = sorted([*root.glob("sub-*/anat/*_T1w.nii*"), *root.glob("sub-*/ses-*/anat/*_T1w.nii*")])
    for path in paths:
        match = _T1W_NAME.match(path.name)
        if match is None:
            continue  # e.g. a .nii.gz.json sidecar
        subject, session = match.group(1), match.group(2)
        folders = path.relative_to(root).parts[:-2]  # ("sub-x",) or ("sub-x", "ses-y")
        if folders != ((subject,) if session is None else (subject, session)):
            raise NiftiReadError(
                path, f"file name says {subject} {session or ''} but it is in {'/'.join(folders)}"
            )
        sessions_path = root / subject / f"{subject}_sessions.tsv"
        sessions = _read_table(sessions_path, "session_id") if sessions_path.is_file() else {}
        records.append(
            NiftiRecord(
                subject=subject,
                session=session,
                path=path,
                participant=participants.get(subject, {}),
                session_columns=sessions.get(session, {}) if session else {},
            )
        )
    return records


def _read_table(path: Path, key: str) -> dict[str, dict[str, str]]:
    """A BIDS TSV as rows keyed by its ``key`` column."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise NiftiReadError(path, f"unreadable table: {exc}") from exc
    table: dict[str, dict[str, str]] = {}
    for number, row in enumerate(rows, start=2):
        value = (row.get(key) or "").strip()
        if not value:
            raise NiftiReadError(path, f"line {number} has no {key}")
        if value in table:
            raise NiftiReadError(path, f"{key} {value!r} appears twice")
        table[value] = {name: (cell or "").strip() for name, cell in row.items() if name}
    return table


def load_nifti_volume(path: str | Path, *, max_bytes: int = 2 * GIB) -> MetaTensor:
    """Load a 3D NIfTI image as a ``(1, x, y, z)`` float ``MetaTensor`` with its RAS affine.

    The header is checked first, so a file whose dimensions promise more than
    ``max_bytes`` of data is refused before anything is allocated.

    Raises:
        NiftiReadError: Missing, not NIfTI, corrupt or truncated, or not a 3D volume.
        ResourceLimitError: The data would exceed ``max_bytes``.
    """
    import nibabel as nib
    import numpy as np

    from imaging.errors import ResourceLimitError

    path = Path(path)
    if not path.is_file():
        raise NiftiReadError(path, "no such file")
    try:
        header: Any = nib.load(path).header  # reads the header only
        shape = tuple(int(n) for n in header.get_data_shape())
        itemsize = np.dtype(header.get_data_dtype()).itemsize
    except Exception as exc:  # nibabel raises several types for a bad header
        raise NiftiReadError(path, f"not a readable NIfTI file: {exc}") from exc
    spatial = shape[:3] if len(shape) > 3 and all(n == 1 for n in shape[3:]) else shape
    if len(spatial) != 3 or min(spatial) < 1:
        raise NiftiReadError(path, f"not a 3D volume: data shape {shape}")
    size = int(np.prod(shape, dtype=np.int64)) * itemsize
    if size > max_bytes:
        raise ResourceLimitError(path, f"data would be {size} bytes, over the {max_bytes} limit")
    return _load_with_monai(path)


@functools.cache
def _loader() -> Any:
    import warnings

    from monai.transforms import LoadImage

    with warnings.catch_warnings():
        # LoadImage also builds its default readers; the GPU DICOM one warns on a machine
        # without nvImageCodec although only nibabel is used here.
        warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
        return LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True)


def _load_with_monai(path: Path) -> MetaTensor:
    try:
        image = _loader()(str(path))
    except Exception as exc:  # MONAI wraps nibabel's, gzip's and zlib's errors in its own
        raise NiftiReadError(path, f"corrupt or truncated NIfTI data: {_root_cause(exc)}") from exc
    if image.ndim != 4 or image.shape[0] != 1:
        raise NiftiReadError(path, f"not a single-channel 3D volume: shape {tuple(image.shape)}")
    return image


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}"
