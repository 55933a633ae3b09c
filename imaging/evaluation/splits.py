"""Patient-level and site-level splits of manifest records, checked for patient leakage.

A record is a mapping with at least ``patient_id``, ``site_id`` and ``label`` (a row of a
sample archive's ``manifest.csv``). Several records can share a patient (follow-up
visits), so every split assigns whole patients to one part: Wen et al. 2020 found that
over half of published Alzheimer CNN papers leaked subjects between splits.

Stratification works on patients: each patient's stratum is the most common value of the
``stratify_by`` field over its records. k-fold deals each stratum's shuffled patients
round the folds; validation and test parts are drawn by systematic sampling within
strata. Either way every stratum is represented in proportion, to within one patient.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SPLIT_KINDS = ("leave-sites-out", "patient-level k-fold", "pooled random")
PARTS = ("train", "val", "test")
Record = Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class Split:
    """One train/validation/test partition of a record list, as indices into it.

    Attributes:
        name: Which fold, e.g. ``"site S01"`` or ``"fold 2/5"``.
        kind: One of ``SPLIT_KINDS``.
        train: Record indices to train on.
        val: Record indices for early stopping and temperature fitting (may be empty).
        test: Record indices held out for evaluation.
    """

    name: str
    kind: str
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise ValueError(f'Argument "kind" must be one of {SPLIT_KINDS}, got {self.kind!r}')

    def parts(self) -> dict[str, tuple[int, ...]]:
        """The three parts by name, in ``PARTS`` order."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def check_no_patient_leak(self, records: Sequence[Record]) -> None:
        """Check that no record index and no patient appears in two parts.

        Raises:
            ValueError: An index is out of range or repeated across parts, or a patient has
                records in two parts; the message names the index or patient and the parts.
        """
        owner_of_index: dict[int, str] = {}
        owner_of_patient: dict[str, str] = {}
        for part, indices in self.parts().items():
            for index in indices:
                if not 0 <= index < len(records):
                    raise ValueError(
                        f"{self.name}: {part} index {index} is outside the {len(records)} records"
                    )
                if owner_of_index.get(index, part) != part:
                    raise ValueError(
                        f"{self.name}: record {index} is in both {owner_of_index[index]} and {part}"
                    )
                owner_of_index[index] = part
                patient = _field(records, index, "patient_id")
                if owner_of_patient.get(patient, part) != part:
                    raise ValueError(
                        f"{self.name}: patient {patient} leaks between "
                        f"{owner_of_patient[patient]} and {part}"
                    )
                owner_of_patient[patient] = part

    def counts(self, records: Sequence[Record]) -> dict[str, dict[str, Any]]:
        """Per part: number of records and patients, the sites and the label counts."""
        summary: dict[str, dict[str, Any]] = {}
        for part, indices in self.parts().items():
            labels = Counter(str(records[i].get("label", "")) for i in indices)
            summary[part] = {
                "records": len(indices),
                "patients": len({_field(records, i, "patient_id") for i in indices}),
                "sites": sorted({_field(records, i, "site_id") for i in indices}),
                "labels": dict(sorted(labels.items())),
            }
        return summary


def patient_kfold(
    records: Sequence[Record],
    k: int,
    *,
    seed: int,
    stratify_by: str | None = "label",
    val_fraction: float = 0.2,
) -> list[Split]:
    """Patient-level k-fold cross-validation, stratified by ``stratify_by`` where possible.

    Every patient is in exactly one test fold; fold sizes in patients differ by at most
    one. Within each fold, ``val_fraction`` of the training patients (stratified the same
    way) are held out as the validation part.

    Args:
        records: Manifest rows.
        k: Number of folds, at least 2 and at most the number of patients.
        seed: Seeds the patient shuffle.
        stratify_by: Record field to stratify on; ``None`` for no stratification.
        val_fraction: Fraction of each fold's training patients used for validation.

    Returns:
        ``k`` splits named ``"fold i/k"``.

    Raises:
        ValueError: ``k`` or ``val_fraction`` is out of range, or a record lacks a field.
    """
    _check_fraction("val_fraction", val_fraction, allow_zero=True)
    strata = _patient_strata(records, range(len(records)), stratify_by)
    if not 2 <= k <= len(strata):
        raise ValueError(f'Argument "k" must be between 2 and {len(strata)} patients, got {k}')
    rng = np.random.default_rng(seed)
    folds = _deal(strata, k, rng)
    members = _records_by_patient(records)
    splits = []
    for i, test_patients in enumerate(folds):
        rest = {p: s for p, s in strata.items() if p not in test_patients}
        val_patients = set(_systematic_order(rest, rng)[: round(val_fraction * len(rest))])
        train_patients = set(rest) - val_patients
        split = Split(
            name=f"fold {i + 1}/{k}",
            kind="patient-level k-fold",
            train=_indices(members, train_patients),
            val=_indices(members, val_patients),
            test=_indices(members, test_patients),
        )
        split.check_no_patient_leak(records)
        splits.append(split)
    return splits


def leave_sites_out(
    records: Sequence[Record],
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    stratify_by: str | None = "label",
) -> list[Split]:
    """One fold per site: test on that site, train and validate on the others.

    The validation part is ``val_fraction`` of the other sites' patients, stratified by
    ``stratify_by`` (the label matters more than the site mix there: early stopping and
    temperature fitting need both classes). A patient with records at the test site is
    left out of training and validation entirely.

    Args:
        records: Manifest rows.
        val_fraction: Fraction of the other sites' patients used for validation.
        seed: Seeds the validation draw.
        stratify_by: Record field to stratify the validation draw on, or ``None``.

    Returns:
        One split per site, in sorted site order, named ``"site <site_id>"``.

    Raises:
        ValueError: Fewer than two sites, ``val_fraction`` out of range, or a record lacks
            a field.
    """
    _check_fraction("val_fraction", val_fraction, allow_zero=True)
    sites = sorted({_field(records, i, "site_id") for i in range(len(records))})
    if len(sites) < 2:
        raise ValueError(f"leave-sites-out needs at least two sites, got {sites}")
    rng = np.random.default_rng(seed)
    members = _records_by_patient(records)
    splits = []
    for site in sites:
        test = tuple(i for i in range(len(records)) if _field(records, i, "site_id") == site)
        test_patients = {_field(records, i, "patient_id") for i in test}
        rest = [
            i for i in range(len(records)) if _field(records, i, "patient_id") not in test_patients
        ]
        strata = _patient_strata(records, rest, stratify_by)
        val_patients = set(_systematic_order(strata, rng)[: round(val_fraction * len(strata))])
        train_patients = set(strata) - val_patients
        if not train_patients:
            raise ValueError(f"site {site}: no patients left to train on")
        split = Split(
            name=f"site {site}",
            kind="leave-sites-out",
            train=_indices(members, train_patients),
            val=_indices(members, val_patients),
            test=test,
        )
        split.check_no_patient_leak(records)
        splits.append(split)
    return splits


def pooled_random_split(
    records: Sequence[Record],
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    seed: int = 0,
    stratify_by: str | None = "label",
) -> Split:
    """A patient-level random split with all sites mixed in every part.

    This is the baseline that shows how optimistic an evaluation is when the test set
    shares sites (scanners, protocols) with training; patients still never leak.

    Args:
        records: Manifest rows.
        test_fraction: Fraction of patients in the test part.
        val_fraction: Fraction of patients in the validation part.
        seed: Seeds the patient shuffle.
        stratify_by: Record field to stratify on, or ``None``.

    Returns:
        One split named ``"pooled random"``.

    Raises:
        ValueError: The fractions are out of range or leave no training patient.
    """
    _check_fraction("test_fraction", test_fraction, allow_zero=False)
    _check_fraction("val_fraction", val_fraction, allow_zero=True)
    if test_fraction + val_fraction >= 1:
        raise ValueError(
            'Arguments "test_fraction" and "val_fraction" must sum to less than 1, got '
            f"{test_fraction} + {val_fraction}"
        )
    strata = _patient_strata(records, range(len(records)), stratify_by)
    ordered = _systematic_order(strata, np.random.default_rng(seed))
    n_test = max(1, round(test_fraction * len(ordered)))
    n_val = round(val_fraction * len(ordered))
    if n_test + n_val >= len(ordered):
        raise ValueError(f"{len(ordered)} patients leave none to train on")
    members = _records_by_patient(records)
    split = Split(
        name="pooled random",
        kind="pooled random",
        train=_indices(members, set(ordered[n_test + n_val :])),
        val=_indices(members, set(ordered[n_test : n_test + n_val])),
        test=_indices(members, set(ordered[:n_test])),
    )
    split.check_no_patient_leak(records)
    return split


def _field(records: Sequence[Record], index: int, key: str) -> str:
    try:
        return str(records[index][key])
    except KeyError:
        raise ValueError(f'record {index} has no "{key}" field') from None


def _check_fraction(name: str, value: float, *, allow_zero: bool) -> None:
    low_ok = value >= 0 if allow_zero else value > 0
    if not (low_ok and value < 1):
        bound = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f'Argument "{name}" must be in {bound}, got {value}')


def _patient_strata(
    records: Sequence[Record],
    indices: Sequence[int] | range,
    stratify_by: str | None,
) -> dict[str, str]:
    """Map each patient among ``indices`` to its stratum (most common value, then smallest)."""
    values: dict[str, Counter[str]] = defaultdict(Counter)
    for index in indices:
        patient = _field(records, index, "patient_id")
        values[patient]["" if stratify_by is None else _field(records, index, stratify_by)] += 1
    return {
        patient: min(counts.items(), key=lambda item: (-item[1], item[0]))[0]
        for patient, counts in sorted(values.items())
    }


def _deal(strata: Mapping[str, str], k: int, rng: np.random.Generator) -> list[set[str]]:
    """Deal shuffled patients into ``k`` folds like cards, one stratum after another.

    Each stratum is spread over the folds to within one patient, and because dealing
    carries on where the previous stratum stopped, fold sizes differ by at most one.
    """
    folds: list[set[str]] = [set() for _ in range(k)]
    position = int(rng.integers(k))
    for patients in _by_stratum(strata):
        for j in rng.permutation(len(patients)):
            folds[position % k].add(patients[j])
            position += 1
    return folds


def _systematic_order(strata: Mapping[str, str], rng: np.random.Generator) -> list[str]:
    """Order patients so that every prefix is stratified (to within one per stratum).

    Within a stratum of size n, the shuffled patients get keys ``(j + u) / n`` with one
    random offset ``u``; sorting all patients by key interleaves the strata in proportion.
    """
    keyed: list[tuple[float, float, str]] = []
    for patients in _by_stratum(strata):
        order = rng.permutation(len(patients))
        offset = rng.random()
        for position, j in enumerate(order):
            # The second key breaks ties between strata of equal size at random.
            keyed.append(((position + offset) / len(patients), rng.random(), patients[j]))
    return [patient for *_, patient in sorted(keyed)]


def _by_stratum(strata: Mapping[str, str]) -> list[list[str]]:
    """Patients grouped by stratum, both in sorted order (the shuffles start from it)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for patient, stratum in strata.items():
        groups[stratum].append(patient)
    return [sorted(groups[stratum]) for stratum in sorted(groups)]


def _records_by_patient(records: Sequence[Record]) -> dict[str, list[int]]:
    members: dict[str, list[int]] = defaultdict(list)
    for index in range(len(records)):
        members[_field(records, index, "patient_id")].append(index)
    return members


def _indices(members: Mapping[str, list[int]], patients: set[str]) -> tuple[int, ...]:
    return tuple(sorted(i for p in patients for i in members[p]))
