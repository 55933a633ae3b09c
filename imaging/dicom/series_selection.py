"""Pick the series of a study a classifier reads (3D T1 MR, US cine), with reasons for the rest.

The rules are data (``configs/series_selection.yaml``), one per DICOM Modality, and the
selection is pure: it reads a :class:`StudyRecord` built by the study index, never files.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from imaging.config_files import REPOSITORY_CONFIGS, load_yaml_model
from imaging.dicom.study_index import SeriesRecord, StudyRecord

DEFAULT_RULES_PATH = REPOSITORY_CONFIGS / "series_selection.yaml"
_log = logging.getLogger(__name__)


class SeriesRule(BaseModel):
    """What a usable series of one modality looks like; see the YAML for each field's use."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sop_class_uids: tuple[str, ...] = Field(min_length=1)
    required_image_type: tuple[str, ...] = ()
    rejected_image_type: tuple[str, ...] = ()
    include_description: tuple[str, ...] = ()
    exclude_description: tuple[str, ...] = ()
    min_slices: int = Field(default=1, ge=1)  # images in the series, all instances together
    min_frames: int = Field(default=1, ge=1)  # frames of its longest single instance
    preferred_acquisition_type: str | None = None

    @field_validator("include_description", "exclude_description")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"pattern {pattern!r} is not a valid regular expression: {exc}"
                ) from exc
        return patterns

    @field_validator("required_image_type", "rejected_image_type")
    @classmethod
    def _upper(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(value.strip().upper() for value in values)


class SelectionRules(BaseModel):
    """The rules by DICOM Modality (``"MR"``, ``"US"``), in order of preference."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: dict[str, SeriesRule]


@dataclass(frozen=True)
class SeriesVerdict:
    """One series and why it was rejected (``reasons`` empty when it qualifies)."""

    series: SeriesRecord
    reasons: tuple[str, ...]

    @property
    def accepted(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class SeriesSelection:
    """The chosen series (or none) and a verdict for every series of the study."""

    selected: SeriesRecord | None
    verdicts: tuple[SeriesVerdict, ...]

    def rejections(self) -> dict[str, str]:
        """Series Instance UID -> why it was not chosen, for every other series."""
        chosen = self.selected.series_instance_uid if self.selected else None
        return {
            verdict.series.series_instance_uid: "; ".join(verdict.reasons)
            or "qualifies, but another series ranks higher"
            for verdict in self.verdicts
            if verdict.series.series_instance_uid != chosen
        }


def load_selection_rules(path: Path | None = None) -> SelectionRules:
    """Read the rules from ``path`` (default: the repository's ``configs/series_selection.yaml``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The YAML is not valid rules; the message names the file and field.
    """
    return load_yaml_model(
        DEFAULT_RULES_PATH if path is None else Path(path),
        SelectionRules,
        what="series selection rules",
    )


def judge_series(series: SeriesRecord, rule: SeriesRule) -> tuple[str, ...]:
    """Every reason ``series`` fails ``rule``; empty when it qualifies."""
    reasons: list[str] = []
    if series.sop_class_uid not in rule.sop_class_uids:
        reasons.append(
            f"SOP class {series.sop_class_uid} is not one of {list(rule.sop_class_uids)}"
        )
    missing = [value for value in rule.required_image_type if value not in series.image_type]
    if missing:
        reasons.append(f"ImageType {'/'.join(series.image_type)} lacks {'/'.join(missing)}")
    rejected = [value for value in series.image_type if value in rule.rejected_image_type]
    if rejected:
        reasons.append(f"ImageType {'/'.join(series.image_type)} has {'/'.join(rejected)}")
    description = series.series_description
    if rule.include_description and not any(
        re.search(pattern, description, re.IGNORECASE) for pattern in rule.include_description
    ):
        reasons.append(f"SeriesDescription {description!r} matches no include pattern")
    excluded = [p for p in rule.exclude_description if re.search(p, description, re.IGNORECASE)]
    if excluded:
        reasons.append(f"SeriesDescription {description!r} matches exclude pattern {excluded[0]!r}")
    if series.number_of_frames < rule.min_slices:
        reasons.append(f"{series.number_of_frames} images, fewer than {rule.min_slices}")
    longest = max((instance.number_of_frames for instance in series.instances), default=0)
    if longest < rule.min_frames:
        reasons.append(f"longest instance has {longest} frames, fewer than {rule.min_frames}")
    return tuple(reasons)


def explain_series_selection(
    study: StudyRecord, rules: SelectionRules, *, modality: str | None = None
) -> SeriesSelection:
    """Judge every series of ``study`` and choose the best qualifying one.

    Args:
        study: The study, as the index built it.
        rules: The selection rules.
        modality: Only consider this modality's rule (``"MR"``); by default every rule,
            the first rule in ``rules`` with a qualifying series winning.

    Raises:
        ValueError: ``modality`` has no rule.
    """
    if modality is not None and modality not in rules.rules:
        raise ValueError(
            f'Argument "modality" must be one of {sorted(rules.rules)}, got {modality!r}'
        )
    verdicts = []
    for series in study.series:
        rule = rules.rules.get(series.modality)
        if modality is not None and series.modality != modality:
            reasons: tuple[str, ...] = (f"modality {series.modality!r} is not {modality!r}",)
        elif rule is None:
            reasons = (f"no selection rule for modality {series.modality!r}",)
        else:
            reasons = judge_series(series, rule)
        verdicts.append(SeriesVerdict(series, reasons))
    candidates = [verdict.series for verdict in verdicts if verdict.accepted]
    order = list(rules.rules)
    selected = min(candidates, key=lambda s: _rank(s, rules, order), default=None)
    return SeriesSelection(selected=selected, verdicts=tuple(verdicts))


def _rank(series: SeriesRecord, rules: SelectionRules, order: list[str]) -> tuple[object, ...]:
    preferred = rules.rules[series.modality].preferred_acquisition_type
    return (
        order.index(series.modality),
        preferred is not None and series.mr_acquisition_type != preferred.upper(),
        -series.number_of_frames,
        series.series_number is None,
        series.series_number or 0,
        series.series_instance_uid,
    )


def select_series(
    study: StudyRecord, rules: SelectionRules, *, modality: str | None = None
) -> SeriesRecord | None:
    """The series of ``study`` a classifier should read, or ``None``; logs why others lost.

    See :func:`explain_series_selection` for the arguments and the reasons as data.
    """
    selection = explain_series_selection(study, rules, modality=modality)
    for series_uid, reason in selection.rejections().items():
        _log.info(
            "study %s: series %s not selected: %s", study.study_instance_uid, series_uid, reason
        )
    return selection.selected
