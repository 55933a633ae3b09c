"""Splits keep every patient in one part, hold one site per test set and stay stratified."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imaging.evaluation.splits import (
    Split,
    leave_sites_out,
    patient_kfold,
    pooled_random_split,
)

Records = list[dict[str, Any]]


def make_records(patients: Sequence[tuple[str, str, int]]) -> Records:
    """Records for ``(site, label, visits)`` per patient, visits interleaved across patients."""
    records = [
        {"patient_id": f"P{p:03d}", "site_id": site, "label": label, "visit": visit}
        for p, (site, label, visits) in enumerate(patients)
        for visit in range(1, visits + 1)
    ]
    return sorted(records, key=lambda r: (r["visit"], r["patient_id"]))


def patients_of(records: Records, indices: Sequence[int]) -> set[str]:
    return {records[i]["patient_id"] for i in indices}


def assert_partition(records: Records, split: Split, expected: set[int]) -> None:
    """Parts are disjoint in records and in patients, and together cover ``expected``."""
    parts = [split.train, split.val, split.test]
    assert sorted(i for part in parts for i in part) == sorted(expected)
    patient_sets = [patients_of(records, part) for part in parts]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not patient_sets[a] & patient_sets[b], split.name


patient_rows = st.lists(
    st.tuples(st.sampled_from(["S01", "S02", "S03"]), st.sampled_from(["AD", "CN"]),
              st.integers(1, 3)),
    min_size=4, max_size=40,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(patients=patient_rows, k=st.integers(2, 4), seed=st.integers(0, 2**16))
def test_no_split_ever_puts_a_patient_in_two_parts(
    patients: list[tuple[str, str, int]], k: int, seed: int
) -> None:
    records = make_records(patients)
    every = set(range(len(records)))

    folds = patient_kfold(records, k, seed=seed)
    for split in folds:
        assert_partition(records, split, every)
    assert Counter(i for split in folds for i in split.test) == Counter(every)

    assert_partition(records, pooled_random_split(records, seed=seed), every)

    sites = sorted({r["site_id"] for r in records})
    if len(sites) >= 2:
        for split, site in zip(leave_sites_out(records, seed=seed), sites, strict=True):
            assert {records[i]["site_id"] for i in split.test} == {site}
            assert set(split.test) == {i for i in every if records[i]["site_id"] == site}
            assert_partition(records, split, every)


def test_leave_sites_out_test_sets_each_hold_exactly_one_site() -> None:
    records = make_records([(f"S0{i % 4 + 1}", "AD" if i % 3 else "CN", 1 + i % 2)
                            for i in range(40)])  # fmt: skip
    splits = leave_sites_out(records, val_fraction=0.25, seed=1)
    assert [s.name for s in splits] == ["site S01", "site S02", "site S03", "site S04"]
    for split, site in zip(splits, ["S01", "S02", "S03", "S04"], strict=True):
        assert split.kind == "leave-sites-out"
        assert {records[i]["site_id"] for i in split.test} == {site}
        assert site not in {records[i]["site_id"] for i in split.train + split.val}
        # 30 patients at the other three sites, a quarter of them (rounded) validate.
        assert len(patients_of(records, split.val)) == round(0.25 * 30)


def test_a_patient_seen_at_the_test_site_is_kept_out_of_training() -> None:
    records = make_records([("S01", "AD", 1), ("S02", "CN", 1), ("S02", "AD", 1),
                            ("S01", "CN", 1)])  # fmt: skip
    records.append({"patient_id": "P000", "site_id": "S02", "label": "AD", "visit": 2})
    for split in leave_sites_out(records, val_fraction=0.0):
        assert "P000" in patients_of(records, split.test)
        assert "P000" not in patients_of(records, split.train + split.val)


def test_kfold_is_stratified_by_patient_label() -> None:
    # 100 patients, 30 AD; follow-up visits must not tilt the balance.
    records = make_records([("S01", "AD" if i < 30 else "CN", 1 + i % 3) for i in range(100)])
    folds = patient_kfold(records, 5, seed=7, val_fraction=0.2)
    for split in folds:
        test_patients = patients_of(records, split.test)
        assert len(test_patients) == 20
        ad = {records[i]["patient_id"] for i in split.test if records[i]["label"] == "AD"}
        assert len(ad) == 6
        assert len(patients_of(records, split.val)) == 16  # 20% of the 80 training patients
        val_ad = {records[i]["patient_id"] for i in split.val if records[i]["label"] == "AD"}
        assert 4 <= len(val_ad) <= 6


def test_pooled_random_split_sizes_mix_sites_and_stratify() -> None:
    records = make_records([(f"S0{i % 4 + 1}", "AD" if i % 2 else "CN", 1 + i % 2)
                            for i in range(80)])  # fmt: skip
    split = pooled_random_split(records, test_fraction=0.25, val_fraction=0.25, seed=3)
    assert (split.name, split.kind) == ("pooled random", "pooled random")
    test_patients = patients_of(records, split.test)
    assert len(test_patients) == 20
    assert len(patients_of(records, split.val)) == 20
    assert len({records[i]["site_id"] for i in split.test}) == 4
    assert Counter(records[i]["label"] for i in split.test if records[i]["visit"] == 1) == {
        "AD": 10,
        "CN": 10,
    }


def test_splits_are_reproducible_and_depend_on_the_seed() -> None:
    records = make_records([("S01", "AD" if i % 2 else "CN", 1) for i in range(30)])
    assert patient_kfold(records, 3, seed=5) == patient_kfold(records, 3, seed=5)
    assert patient_kfold(records, 3, seed=5) != patient_kfold(records, 3, seed=6)


def test_check_no_patient_leak_names_the_patient() -> None:
    records = make_records([("S01", "AD", 2), ("S01", "CN", 1)])
    by_patient = {r["patient_id"]: i for i, r in enumerate(records) if r["visit"] == 2}
    first_visit = next(i for i, r in enumerate(records) if r["patient_id"] == "P000")
    leaky = Split(name="bad", kind="pooled random", train=(first_visit,), val=(),
                  test=(by_patient["P000"],))  # fmt: skip
    with pytest.raises(ValueError, match="patient P000 leaks between train and test"):
        leaky.check_no_patient_leak(records)
    with pytest.raises(ValueError, match="outside the 3 records"):
        Split(name="bad", kind="pooled random", train=(5,), val=(), test=()).check_no_patient_leak(
            records
        )


def test_split_kind_must_be_a_known_kind() -> None:
    with pytest.raises(ValueError, match='"kind" must be one of'):
        Split(name="x", kind="random", train=(), val=(), test=())


def test_counts_report_records_patients_sites_and_labels() -> None:
    records = make_records([("S01", "AD", 2), ("S02", "CN", 1), ("S02", "CN", 1)])
    split = pooled_random_split(records, test_fraction=0.3, val_fraction=0.0, seed=0)
    counts = split.counts(records)
    assert counts["train"]["records"] + counts["test"]["records"] == 4
    assert counts["train"]["patients"] + counts["test"]["patients"] == 3
    assert counts["val"] == {"records": 0, "patients": 0, "sites": [], "labels": {}}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: patient_kfold(r, 1, seed=0), '"k" must be between 2 and 4'),
        (lambda r: patient_kfold(r, 5, seed=0), '"k" must be between 2 and 4'),
        (lambda r: patient_kfold(r, 2, seed=0, val_fraction=1.0), '"val_fraction"'),
        (lambda r: leave_sites_out([x for x in r if x["site_id"] == "S01"]), "two sites"),
        (lambda r: pooled_random_split(r, test_fraction=0.6, val_fraction=0.4), "sum to less"),
        (lambda r: leave_sites_out([{"patient_id": "A", "label": "AD"}]), "site_id"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(call: Any, message: str) -> None:
    records = make_records([("S01", "AD", 1), ("S01", "CN", 1), ("S02", "AD", 1), ("S02", "CN", 1)])
    with pytest.raises(ValueError, match=message):
        call(records)
