"""The only records the similar-case index accepts: de-identified cases, and its search hits.

A :class:`DeidentifiedCase` can be built only by :meth:`DeidentifiedCase.from_deidentified`,
from a data set that went through :func:`imaging.dicom.deid.deidentify_dataset` or from a
:class:`DeidentifiedArchiveStudy`, the manifest row of an archive study (NIfTI or AVI files
carry no identity of their own) with its identifiers replaced by the keyed hashes of
:mod:`imaging.dicom.deid.replacements`. Calling the class directly, or building a look-alike,
is refused: the index checks the type, so nothing else can enter it.

Identifiers map the same way on both routes under one secret: the case id is the keyed
Study Instance UID (what de-identified DICOM files carry) and the patient pseudonym is keyed
on (Patient ID, Issuer of Patient ID), so a study and its archive row give the same case.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from imaging.dicom.deid import DeidentifiedDataset
from imaging.dicom.deid.replacements import check_prefix, check_secret, keyed_uid, pseudonym

Modality = Literal["MR", "US"]
MODALITIES: tuple[Modality, ...] = ("MR", "US")
THUMBNAIL_SIZE = 128

# Held only by this module: a case or archive study built without it is refused.
_BUILDER_KEY = object()


@dataclass(frozen=True)
class DeidentifiedArchiveStudy:
    """An archive study's manifest row with every identifier replaced by a keyed pseudonym.

    File paths are left out: the archive's paths name the patient (``sub-<patient id>``).
    Load the image from the manifest row, then build the case from this record.

    Build it with :meth:`from_manifest_row`; direct construction is refused.

    Attributes:
        case_id: Keyed hash of the Study Instance UID (``2.25.``), as de-identification gives.
        patient_pseudonym: Keyed pseudonym of the patient, as de-identification gives.
        modality: ``"MR"`` or ``"US"``.
        site_id: The acquiring site's code in the archive (not an institution name).
        study_year: Year of the study, or ``None`` when the row has no date.
        label: The study's label (``"AD"``/``"CN"``, ``"reduced_ef"``/``"normal_ef"``) or ``None``.
        ef_percent: Ejection fraction in percent for echo, else ``None``.
        report_text: The report, with the row's accession number, patient id and UIDs removed.
    """

    case_id: str
    patient_pseudonym: str
    modality: Modality
    site_id: str
    study_year: int | None
    label: str | None
    ef_percent: float | None
    report_text: str
    _key: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._key is not _BUILDER_KEY:
            raise TypeError(
                "DeidentifiedArchiveStudy is built only by "
                "DeidentifiedArchiveStudy.from_manifest_row"
            )

    @classmethod
    def from_manifest_row(
        cls,
        row: Mapping[str, str],
        *,
        secret: bytes,
        archive_dir: Path | None = None,
        report_text: str | None = None,
        pseudonym_prefix: str = "MMDX-",
    ) -> DeidentifiedArchiveStudy:
        """Pseudonymise one row of the archive's ``manifest.csv``.

        Args:
            row: The manifest row (``study_instance_uid``, ``patient_id``, ``modality``, ...).
            secret: Key of the hashes, the same as for DICOM de-identification (>= 16 bytes).
            archive_dir: The archive; the report is read from ``row["report_path"]`` under it.
            report_text: The report, when not read from the archive.
            pseudonym_prefix: Prefix of the patient pseudonym, as in ``DeidOptions``.

        Raises:
            ValueError: A required column is missing or invalid, or the secret is too short.
        """
        check_secret(secret)
        check_prefix(pseudonym_prefix)
        study_uid = _required(row, "study_instance_uid")
        patient_id = _required(row, "patient_id")
        modality = _modality(_required(row, "modality"))
        if report_text is None:
            if archive_dir is None or not row.get("report_path"):
                raise ValueError('Argument "archive_dir" or "report_text" is needed for the report')
            report_text = (Path(archive_dir) / row["report_path"]).read_text(encoding="utf-8")
        identifiers = [study_uid, patient_id, row.get("accession_number", "")]
        return cls(
            case_id=keyed_uid(secret, study_uid),
            # The same key as imaging.dicom.deid: ("id", Patient ID, Issuer of Patient ID).
            patient_pseudonym=pseudonym(secret, ("id", patient_id, ""), pseudonym_prefix),
            modality=modality,
            site_id=_required(row, "site_id"),
            study_year=_year(row.get("study_date", "")),
            label=row.get("label") or None,
            ef_percent=float(row["ef"]) if row.get("ef") else None,
            report_text=scrub_identifiers(report_text, identifiers),
            _key=_BUILDER_KEY,
        )


@dataclass(frozen=True)
class DeidentifiedCase:
    """One de-identified case, the unit of the similar-case index.

    Build it with :meth:`from_deidentified`; direct construction is refused.

    Attributes:
        case_id: Pseudonymous case id (the keyed Study Instance UID).
        patient_pseudonym: Keyed patient pseudonym.
        modality: ``"MR"`` or ``"US"``.
        label: The case's label, or ``None`` when unknown.
        site_id: The acquiring site's code.
        study_year: Year of the study, or ``None``.
        report_text: The de-identified report.
        image_embedding: Float32, L2-normalised, read-only.
        text_embedding: Float32, L2-normalised, read-only, the report's embedding.
        thumbnail_png: PNG bytes rendered from de-identified pixels (may be empty).
        ef_percent: Ejection fraction in percent for echo, else ``None``.
    """

    case_id: str
    patient_pseudonym: str
    modality: Modality
    label: str | None
    site_id: str
    study_year: int | None
    report_text: str
    image_embedding: np.ndarray
    text_embedding: np.ndarray
    thumbnail_png: bytes
    ef_percent: float | None
    _key: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._key is not _BUILDER_KEY:
            raise TypeError("DeidentifiedCase is built only by DeidentifiedCase.from_deidentified")

    @classmethod
    def from_deidentified(
        cls,
        source: DeidentifiedDataset | DeidentifiedArchiveStudy,
        *,
        image_embedding: ArrayLike,
        text_embedding: ArrayLike,
        site_id: str | None = None,
        label: str | None = None,
        report_text: str | None = None,
        thumbnail_png: bytes | None = None,
        ef_percent: float | None = None,
    ) -> DeidentifiedCase:
        """Build a case from de-identified inputs only.

        From a :class:`DeidentifiedDataset`, ``site_id`` and ``report_text`` must be given
        (de-identification removes the institution; the report is not in the image) and the
        thumbnail is rendered from the de-identified pixels unless given. From a
        :class:`DeidentifiedArchiveStudy`, every field comes from the study unless given.

        Args:
            source: The de-identified data set or archive study.
            image_embedding: The image embedding (normalised here; must be finite, non-zero).
            text_embedding: The report embedding, same length as ``image_embedding``.
            site_id: The site's code (required for a data set).
            label: The label, overriding the archive study's.
            report_text: The de-identified report (required for a data set).
            thumbnail_png: PNG bytes; rendered from the source's pixels when ``None``.
            ef_percent: Ejection fraction, overriding the archive study's.

        Raises:
            TypeError: ``source`` is not de-identified.
            ValueError: A field is missing or an embedding is invalid.
        """
        image = normalised_embedding(image_embedding, "image_embedding")
        text = normalised_embedding(text_embedding, "text_embedding")
        if image.shape != text.shape:
            raise ValueError(
                f'Arguments "image_embedding" and "text_embedding" must have the same length, '
                f"got {image.shape[0]} and {text.shape[0]}"
            )
        if isinstance(source, DeidentifiedArchiveStudy):
            return cls(
                case_id=source.case_id,
                patient_pseudonym=source.patient_pseudonym,
                modality=source.modality,
                label=label if label is not None else source.label,
                site_id=site_id or source.site_id,
                study_year=source.study_year,
                report_text=report_text if report_text is not None else source.report_text,
                image_embedding=image,
                text_embedding=text,
                thumbnail_png=thumbnail_png if thumbnail_png is not None else b"",
                ef_percent=ef_percent if ef_percent is not None else source.ef_percent,
                _key=_BUILDER_KEY,
            )
        if isinstance(source, DeidentifiedDataset):
            if not site_id:
                raise ValueError('Argument "site_id" is required for a DeidentifiedDataset')
            if report_text is None:
                raise ValueError('Argument "report_text" is required for a DeidentifiedDataset')
            dataset = source.dataset
            return cls(
                case_id=source.study_instance_uid,
                patient_pseudonym=source.pseudonym,
                modality=_modality(str(dataset.get("Modality", ""))),
                label=label,
                site_id=site_id,
                study_year=_year(str(dataset.get("StudyDate") or "")),
                report_text=report_text,
                image_embedding=image,
                text_embedding=text,
                thumbnail_png=(
                    thumbnail_png if thumbnail_png is not None else _dataset_thumbnail(dataset)
                ),
                ef_percent=ef_percent,
                _key=_BUILDER_KEY,
            )
        raise TypeError(
            'Argument "source" must be a DeidentifiedDataset or DeidentifiedArchiveStudy, '
            f"got {type(source).__name__}"
        )


@dataclass(frozen=True)
class SearchHit:
    """One retrieved case.

    Attributes:
        case_id: The case's pseudonymous id.
        score: Cosine similarity, higher is better.
        rank: 1 for the best hit.
        modality: ``"MR"`` or ``"US"``.
        label: The case's label, or ``None``.
        site_id: The case's site.
        report_text: The case's de-identified report.
        why: Which embedding matched and how well, e.g. ``"image 0.91; report 0.74"``.
        matched_sentences: Report sentences that matched the query, if any.
    """

    case_id: str
    score: float
    rank: int
    modality: str
    label: str | None
    site_id: str
    report_text: str
    why: str
    matched_sentences: tuple[str, ...] = ()


def normalised_embedding(vector: ArrayLike, name: str) -> np.ndarray:
    """``vector`` as a read-only, L2-normalised float32 1-D array.

    Raises:
        ValueError: The vector is not 1-D, is empty, holds NaN/inf or has zero norm.
    """
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f'Argument "{name}" must be a non-empty 1-D vector, got {array.shape}')
    if not np.all(np.isfinite(array)):
        raise ValueError(f'Argument "{name}" must be finite')
    norm = float(np.linalg.norm(array))
    if norm == 0.0:
        raise ValueError(f'Argument "{name}" must not be the zero vector')
    out = (array / np.float32(norm)).astype(np.float32)
    out.setflags(write=False)
    return out


def make_thumbnail_png(image: np.ndarray, *, size: int = THUMBNAIL_SIZE) -> bytes:
    """A greyscale or RGB PNG of at most ``size`` pixels a side, windowed to 1st-99th percentile.

    Args:
        image: 2-D (rows, columns) or 3-D (rows, columns, 3) pixels of a de-identified image.
        size: Longest side of the thumbnail.
    """
    from PIL import Image

    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[-1] != 3):
        raise ValueError(f'Argument "image" must be (rows, columns[, 3]), got {pixels.shape}')
    low, high = np.percentile(pixels, [1.0, 99.0])
    scaled = np.clip((pixels - low) / max(float(high - low), 1e-6), 0.0, 1.0)
    picture = Image.fromarray((scaled * 255.0).astype(np.uint8))
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def scrub_identifiers(text: str, identifiers: list[str]) -> str:
    """``text`` with every non-empty identifier replaced by ``[REMOVED]``."""
    for identifier in sorted({i.strip() for i in identifiers if i and i.strip()}, key=len)[::-1]:
        text = text.replace(identifier, "[REMOVED]")
    return text


def _dataset_thumbnail(dataset: Any) -> bytes:
    """The middle frame of the de-identified pixels as a PNG, or empty bytes without pixels."""
    if "PixelData" not in dataset:
        return b""
    from imaging.dicom.pixels import decode_pixel_array
    from imaging.dicom.reading import DEFAULT_READ_LIMITS

    pixels = np.asarray(decode_pixel_array(dataset, "deidentified dataset", DEFAULT_READ_LIMITS))
    frames = int(dataset.get("NumberOfFrames") or 1)
    if frames > 1:
        pixels = pixels[frames // 2]
    return make_thumbnail_png(pixels)


def _required(row: Mapping[str, str], column: str) -> str:
    value = (row.get(column) or "").strip()
    if not value:
        raise ValueError(f'Manifest row must have a non-empty "{column}" column')
    return value


def _modality(value: str) -> Modality:
    if value == "MR":
        return "MR"
    if value == "US":
        return "US"
    raise ValueError(f'Modality must be one of {MODALITIES}, got "{value}"')


def _year(value: str) -> int | None:
    """The year of an ISO (``2020-12-12``) or DICOM (``20201212``) date, else ``None``."""
    digits = value.strip().replace("-", "")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:8])).year
    except ValueError:
        return None
