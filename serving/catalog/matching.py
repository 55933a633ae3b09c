"""C-FIND and QIDO-RS matching (PS3.4 C.2.2.2) translated to SQL over the catalog tables.

Supported per attribute kind:

- UIDs: one UID or a list (``,`` as QIDO-RS writes it, ``\\`` as C-FIND does).
- Dates: ``YYYYMMDD`` or a range ``YYYYMMDD-YYYYMMDD`` with either end open; times the same
  with ``HHMMSS[.FFFFFF]`` (an end ``HHMM`` includes that whole minute).
- Text: an exact value, or a pattern with ``*`` (any run) and ``?`` (one character),
  case-sensitive. Patient Name matches case-insensitively (ASCII letters), as most
  archives do, since senders rarely know the stored case.
- Codes (Modality, Modalities in Study): one value or a ``\\``/``,`` list.
- Numbers: one integer.

An empty value (or a lone ``*``) matches everything, as C-FIND's return keys do. A series
or instance search may also filter on the attributes of the levels above it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, select
from sqlalchemy.orm import Session, aliased

from serving.catalog.tables import Instance, Patient, Series, Study
from serving.study_access import INSTANCE_KEYWORDS, SERIES_KEYWORDS, STUDY_KEYWORDS

_DATE = r"\d{8}"
_TIME = r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"
_DATE_RANGE = re.compile(rf"^(?P<start>{_DATE})?-(?P<end>{_DATE})?$")
_TIME_RANGE = re.compile(rf"^(?P<start>{_TIME})?-(?P<end>{_TIME})?$")
# A signed 64-bit SQL integer: larger numbers cannot be bound as parameters.
_MIN_INTEGER, _MAX_INTEGER = -(2**63), 2**63 - 1

# keyword -> (column, kind); the counts and Modalities in Study are computed, not columns.
_COLUMNS: dict[str, tuple[Any, str]] = {
    "StudyInstanceUID": (Study.study_instance_uid, "uid"),
    "StudyDate": (Study.study_date, "date"),
    "StudyTime": (Study.study_time, "time"),
    "AccessionNumber": (Study.accession_number, "text"),
    "PatientName": (Patient.patient_name, "name"),
    "PatientID": (Patient.patient_id, "text"),
    "PatientBirthDate": (Patient.patient_birth_date, "date"),
    "PatientSex": (Patient.patient_sex, "code"),
    "StudyID": (Study.study_id, "text"),
    "StudyDescription": (Study.study_description, "text"),
    "SeriesInstanceUID": (Series.series_instance_uid, "uid"),
    "Modality": (Series.modality, "code"),
    "SeriesNumber": (Series.series_number, "int"),
    "SeriesDescription": (Series.series_description, "text"),
    "SOPClassUID": (Instance.sop_class_uid, "uid"),
    "SOPInstanceUID": (Instance.sop_instance_uid, "uid"),
    "InstanceNumber": (Instance.instance_number, "int"),
    "Rows": (Instance.rows, "int"),
    "Columns": (Instance.columns, "int"),
    "NumberOfFrames": (Instance.number_of_frames, "int"),
}
_COUNTS = {
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances",
}


def _values(value: str) -> list[str]:
    return [part.strip() for part in re.split(r"[,\\]", value) if part.strip()]


def _wildcard(column: Any, pattern: str, dialect: str) -> ColumnElement[bool]:
    """Case-sensitive ``*``/``?`` matching: GLOB on SQLite (its LIKE ignores case)."""
    if dialect == "sqlite":
        return column.op("GLOB")(pattern.replace("[", "[[]"))
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped.replace("*", "%").replace("?", "_"), escape="\\")


def _range(column: Any, value: str, keyword: str, kind: str) -> ColumnElement[bool]:
    pattern = _DATE_RANGE if kind == "date" else _TIME_RANGE
    single = _DATE if kind == "date" else _TIME
    if re.fullmatch(single, value):
        return column == value
    match = pattern.match(value)
    if match is None or not (match["start"] or match["end"]):
        form = "YYYYMMDD" if kind == "date" else "HHMMSS"
        raise ValueError(f"{keyword} {value!r} is not {form} or a {form}-{form} range")
    conditions = [column != ""]
    if match["start"]:
        conditions.append(column >= match["start"])
    if match["end"]:
        # "~" sorts after digits and ".", so every value starting with the end is included.
        conditions.append(column <= match["end"] + ("~" if kind == "time" else ""))
    return and_(*conditions)


def _condition(keyword: str, value: str, dialect: str) -> ColumnElement[bool] | None:
    """The SQL condition of one filter, or ``None`` for a universal match."""
    value = value.strip()
    if value in ("", "*"):
        return None
    if keyword in _COUNTS:
        raise ValueError(f"{keyword} is computed and cannot be matched")
    if keyword == "ModalitiesInStudy":
        # An alias: a series or instance search selects from Series itself, and the
        # subquery must range over every series of the study, not correlate with that one.
        other = aliased(Series)
        return exists(
            select(other.id).where(other.study_pk == Study.id, other.modality.in_(_values(value)))
        )
    column, kind = _COLUMNS[keyword]
    if kind == "uid":
        return column.in_(_values(value))
    if kind in ("date", "time"):
        return _range(column, value, keyword, kind)
    if kind == "int":
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"{keyword} {value!r} is not an integer") from None
        if not _MIN_INTEGER <= number <= _MAX_INTEGER:  # the database would overflow
            raise ValueError(f"{keyword} {value[:40]!r} is out of the integer range")
        return column == number
    if kind == "code":
        return column.in_(_values(value))
    if kind == "name":
        lowered = func.lower(column)
        if "*" in value or "?" in value:
            return _wildcard(lowered, value.lower(), dialect)
        return lowered == value.lower()
    if "*" in value or "?" in value:
        return _wildcard(column, value, dialect)
    return column == value


def _conditions(
    filters: Mapping[str, str], allowed: Sequence[str], dialect: str
) -> list[ColumnElement[bool]]:
    unknown = sorted(set(filters) - set(allowed))
    if unknown:
        raise ValueError(
            f"cannot match on {', '.join(unknown)}; known attributes: {', '.join(allowed)}"
        )
    conditions = [_condition(keyword, value, dialect) for keyword, value in filters.items()]
    return [condition for condition in conditions if condition is not None]


def _check_page(limit: int | None, offset: int) -> None:
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError(f"limit and offset must not be negative, got {limit} and {offset}")


def _row(pairs: Mapping[str, object]) -> dict[str, str]:
    """A result row: only attributes the catalog knows, every value a DICOM string."""
    return {key: str(value) for key, value in pairs.items() if value not in (None, "")}


def _study_pairs(study: Study, patient: Patient) -> dict[str, object]:
    return {
        "StudyInstanceUID": study.study_instance_uid,
        "StudyDate": study.study_date,
        "StudyTime": study.study_time,
        "AccessionNumber": study.accession_number,
        "PatientName": patient.patient_name,
        "PatientID": patient.patient_id,
        "PatientBirthDate": patient.patient_birth_date,
        "PatientSex": patient.patient_sex,
        "StudyID": study.study_id,
        "StudyDescription": study.study_description,
    }


def search_studies(
    session: Session, filters: Mapping[str, str], limit: int | None, offset: int
) -> list[dict[str, str]]:
    """Rows of ``STUDY_KEYWORDS`` for the matching studies (see the module docstring)."""
    _check_page(limit, offset)
    dialect = session.get_bind().dialect.name
    statement = (
        select(Study, Patient)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(*_conditions(filters, STUDY_KEYWORDS, dialect))
        .order_by(Study.study_date, Study.study_instance_uid)
    )
    matches = session.execute(statement.offset(offset).limit(limit)).all()
    ids = [study.id for study, _ in matches]
    counts = {
        study_pk: (series, instances)
        for study_pk, series, instances in session.execute(
            select(Series.study_pk, func.count(Series.id.distinct()), func.count(Instance.id))
            .outerjoin(Instance, Instance.series_pk == Series.id)
            .where(Series.study_pk.in_(ids))
            .group_by(Series.study_pk)
        )
    }
    modalities: dict[int, set[str]] = {}
    for study_pk, modality in session.execute(
        select(Series.study_pk, Series.modality).where(Series.study_pk.in_(ids)).distinct()
    ):
        if modality:
            modalities.setdefault(study_pk, set()).add(modality)
    rows = []
    for study, patient in matches:
        series, instances = counts.get(study.id, (0, 0))
        pairs = _study_pairs(study, patient)
        pairs["ModalitiesInStudy"] = "\\".join(sorted(modalities.get(study.id, ())))
        pairs["NumberOfStudyRelatedSeries"] = series
        pairs["NumberOfStudyRelatedInstances"] = instances
        rows.append(_row(pairs))
    return rows


def search_series(
    session: Session,
    filters: Mapping[str, str],
    study_instance_uid: str | None,
    limit: int | None,
    offset: int,
) -> list[dict[str, str]]:
    """Rows of ``SERIES_KEYWORDS`` for the matching series."""
    _check_page(limit, offset)
    dialect = session.get_bind().dialect.name
    allowed = (*SERIES_KEYWORDS, *STUDY_KEYWORDS)
    statement = (
        select(Series, Study.study_instance_uid)
        .join(Study, Series.study_pk == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(*_conditions(filters, allowed, dialect))
        .order_by(Study.study_date, Study.study_instance_uid, Series.series_instance_uid)
    )
    if study_instance_uid is not None:
        statement = statement.where(Study.study_instance_uid == study_instance_uid)
    matches = session.execute(statement.offset(offset).limit(limit)).all()
    counts = _instance_counts(session, [series.id for series, _ in matches])
    return [
        _row(
            {
                "StudyInstanceUID": study_uid,
                "SeriesInstanceUID": series.series_instance_uid,
                "Modality": series.modality,
                "SeriesNumber": series.series_number,
                "SeriesDescription": series.series_description,
                "NumberOfSeriesRelatedInstances": counts.get(series.id, 0),
            }
        )
        for series, study_uid in matches
    ]


def _instance_counts(session: Session, series_ids: list[int]) -> dict[int, int]:
    statement = (
        select(Instance.series_pk, func.count(Instance.id))
        .where(Instance.series_pk.in_(series_ids))
        .group_by(Instance.series_pk)
    )
    return {series_pk: count for series_pk, count in session.execute(statement)}


def search_instances(
    session: Session,
    filters: Mapping[str, str],
    study_instance_uid: str | None,
    series_instance_uid: str | None,
    limit: int | None,
    offset: int,
) -> list[dict[str, str]]:
    """Rows of ``INSTANCE_KEYWORDS`` for the matching instances."""
    _check_page(limit, offset)
    dialect = session.get_bind().dialect.name
    allowed = (*INSTANCE_KEYWORDS, *SERIES_KEYWORDS, *STUDY_KEYWORDS)
    statement = (
        select(Instance, Series.series_instance_uid, Study.study_instance_uid)
        .join(Series, Instance.series_pk == Series.id)
        .join(Study, Series.study_pk == Study.id)
        .join(Patient, Study.patient_pk == Patient.id)
        .where(*_conditions(filters, allowed, dialect))
        .order_by(
            Study.study_date,
            Study.study_instance_uid,
            Series.series_instance_uid,
            Instance.sop_instance_uid,
        )
    )
    if study_instance_uid is not None:
        statement = statement.where(Study.study_instance_uid == study_instance_uid)
    if series_instance_uid is not None:
        statement = statement.where(Series.series_instance_uid == series_instance_uid)
    return [
        _row(
            {
                "StudyInstanceUID": study_uid,
                "SeriesInstanceUID": series_uid,
                "SOPClassUID": instance.sop_class_uid,
                "SOPInstanceUID": instance.sop_instance_uid,
                "InstanceNumber": instance.instance_number,
                "Rows": instance.rows,
                "Columns": instance.columns,
                "NumberOfFrames": instance.number_of_frames,
            }
        )
        for instance, series_uid, study_uid in session.execute(
            statement.offset(offset).limit(limit)
        )
    ]
