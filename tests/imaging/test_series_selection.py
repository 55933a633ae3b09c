"""Series selection on in-memory study records: 3D T1 MR over localizers, US cine by frames."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from imaging.dicom.series_selection import (
    DEFAULT_RULES_PATH,
    SelectionRules,
    explain_series_selection,
    load_selection_rules,
    select_series,
)
from imaging.dicom.study_index import InstanceRecord, SeriesRecord, StudyRecord

MR = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
US_SINGLE = "1.2.840.10008.5.1.4.1.1.6.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def make_series(
    number: int,
    description: str,
    *,
    sop_class: str = MR,
    modality: str = "MR",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    instances: int = 1,
    frames: int = 1,
    acquisition: str = "3D",
) -> SeriesRecord:
    uid = f"1.2.3.{number}"
    return SeriesRecord(
        series_instance_uid=uid,
        study_instance_uid="1.2.3",
        modality=modality,
        series_number=number,
        series_description=description,
        image_type=image_type,
        sop_class_uid=sop_class,
        rows=256,
        columns=256,
        mr_acquisition_type=acquisition,
        instances=tuple(
            InstanceRecord(f"{uid}.{k}", sop_class, k + 1, "1.2.840.10008.1.2.1", frames, Path("x"))
            for k in range(instances)
        ),
    )


def make_study(*series: SeriesRecord) -> StudyRecord:
    return StudyRecord("1.2.3", "PAT-A", "20240101", "ACC1", "MRI BRAIN", tuple(series))


@pytest.fixture(scope="module")
def rules() -> SelectionRules:
    return load_selection_rules()


def test_repository_rules_load_as_typed_data(rules: SelectionRules) -> None:
    assert DEFAULT_RULES_PATH.name == "series_selection.yaml"
    assert list(rules.rules) == ["MR", "US"]
    mr = rules.rules["MR"]
    assert (mr.min_slices, mr.preferred_acquisition_type) == (48, "3D")
    assert {MR, ENHANCED_MR} <= set(mr.sop_class_uids)
    assert rules.rules["US"].sop_class_uids == (US_MULTIFRAME,)
    assert rules.rules["US"].min_frames == 16


def test_3d_t1_is_chosen_over_localizers_derived_and_other_contrasts(
    rules: SelectionRules, caplog: pytest.LogCaptureFixture
) -> None:
    localizer = make_series(
        1, "AAHead_Scout", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), instances=3
    )
    t2 = make_series(2, "T2 FLAIR AX", instances=40, acquisition="2D")
    t1 = make_series(3, "T1 MPRAGE SAG", instances=176)
    mpr = make_series(
        4, "T1 MPRAGE COR MPR", image_type=("DERIVED", "SECONDARY", "MPR"), instances=176
    )
    calibration = make_series(5, "T1 calibration scan", instances=64)
    report = make_series(6, "Dose report", sop_class=SECONDARY_CAPTURE, modality="OT")
    study = make_study(localizer, t2, t1, mpr, calibration, report)

    with caplog.at_level(logging.INFO, logger="imaging.dicom.series_selection"):
        assert select_series(study, rules) is t1

    reasons = explain_series_selection(study, rules).rejections()
    assert set(reasons) == {"1.2.3.1", "1.2.3.2", "1.2.3.4", "1.2.3.5", "1.2.3.6"}
    assert reasons["1.2.3.1"] == (
        "ImageType ORIGINAL/PRIMARY/LOCALIZER has LOCALIZER; "
        "SeriesDescription 'AAHead_Scout' matches no include pattern; "
        "SeriesDescription 'AAHead_Scout' matches exclude pattern 'scout'; "
        "3 images, fewer than 48"
    )
    assert (
        reasons["1.2.3.2"]
        == "SeriesDescription 'T2 FLAIR AX' matches no include pattern; 40 images, fewer than 48"
    )
    assert reasons["1.2.3.4"].startswith("ImageType DERIVED/SECONDARY/MPR lacks ORIGINAL; ")
    assert (
        reasons["1.2.3.5"]
        == "SeriesDescription 'T1 calibration scan' matches exclude pattern 'calibration'"
    )
    assert reasons["1.2.3.6"] == "no selection rule for modality 'OT'"
    assert "series 1.2.3.1 not selected: ImageType" in caplog.text


def test_enhanced_mr_counts_frames_and_3d_is_preferred_over_more_slices(
    rules: SelectionRules,
) -> None:
    t1_2d = make_series(2, "T1 SE SAG", instances=120, acquisition="2D")
    enhanced = make_series(
        7, "3D T1 TFE", sop_class=ENHANCED_MR, image_type=("ORIGINAL", "PRIMARY", "VOLUME", "NONE"),
        frames=96,
    )  # fmt: skip
    assert select_series(make_study(t1_2d, enhanced), rules) is enhanced
    thin = make_series(8, "sag 3d bravo", instances=47)
    selection = explain_series_selection(make_study(thin), rules)
    assert selection.selected is None
    assert selection.rejections() == {"1.2.3.8": "47 images, fewer than 48"}


def test_ties_go_to_more_images_then_lower_series_number(rules: SelectionRules) -> None:
    first = make_series(3, "T1 MPRAGE", instances=160)
    repeat = make_series(9, "T1 MPRAGE repeat", instances=160)
    larger = make_series(12, "T1 SPGR", instances=176)
    assert select_series(make_study(repeat, first), rules) is first
    selection = explain_series_selection(make_study(first, larger), rules)
    assert selection.selected is larger
    assert selection.rejections() == {"1.2.3.3": "qualifies, but another series ranks higher"}


def test_us_cine_needs_the_multiframe_class_and_enough_frames(rules: SelectionRules) -> None:
    still = make_series(1, "Apical 4 chamber", sop_class=US_SINGLE, modality="US")
    short = make_series(2, "A4C", sop_class=US_MULTIFRAME, modality="US", frames=12)
    loop = make_series(3, "A4C", sop_class=US_MULTIFRAME, modality="US", frames=120,
                       image_type=("DERIVED", "PRIMARY", "EPICARDIAL", "0001"))  # fmt: skip
    study = make_study(still, short, loop)
    assert select_series(study, rules) is loop
    reasons = explain_series_selection(study, rules).rejections()
    assert reasons["1.2.3.1"].startswith(f"SOP class {US_SINGLE} is not one of")
    assert reasons["1.2.3.2"] == "longest instance has 12 frames, fewer than 16"


def test_modality_argument_restricts_the_choice(rules: SelectionRules) -> None:
    study = make_study(
        make_series(3, "T1 MPRAGE", instances=160),
        make_series(4, "A4C", sop_class=US_MULTIFRAME, modality="US", frames=60),
    )
    assert select_series(study, rules).series_instance_uid == "1.2.3.3"  # type: ignore[union-attr]
    us = select_series(study, rules, modality="US")
    assert us is not None and us.series_instance_uid == "1.2.3.4"
    with pytest.raises(ValueError, match=r"Argument \"modality\" must be one of \['MR', 'US'\]"):
        select_series(study, rules, modality="CT")


def test_bad_rule_files_are_refused_with_the_file_and_field(tmp_path: Path) -> None:
    bad_regex = tmp_path / "regex.yaml"
    bad_regex.write_text(
        "rules:\n  MR:\n    sop_class_uids: ['1.2']\n    include_description: ['t1(']\n"
    )
    with pytest.raises(
        ValueError, match=r"(?s)regex\.yaml: invalid series selection rules.*pattern 't1\(' is not"
    ):
        load_selection_rules(bad_regex)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("rules:\n  MR:\n    sop_class_uids: ['1.2']\n    min_slice: 3\n")
    with pytest.raises(ValueError, match="min_slice"):
        load_selection_rules(unknown)
