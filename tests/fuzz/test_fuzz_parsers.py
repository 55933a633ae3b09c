"""Bounded fuzzing in the test suite, and the regressions the fuzzer found.

``make test`` runs a short, reproducible fuzz of each target (``MMDX_FUZZ_EXAMPLES``
inputs each, default 150); ``make fuzz`` runs :mod:`tests.fuzz.run` for longer. Every input
must be accepted or refused with the target's own error, within the time and heap bounds.
"""

from __future__ import annotations

import os
import random
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imaging.errors import CineLoopError, DicomReadError
from tests.fuzz.harness import (
    Target,
    build_targets,
    check,
    decode_cine,
    mutate,
    read_and_decode,
    warm_up,
)
from tests.fuzz.seeds import fuzz_seeds

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

EXAMPLES = int(os.environ.get("MMDX_FUZZ_EXAMPLES", "150"))
REGRESSIONS = Path(__file__).with_name("regressions")
FuzzInputs = tuple[dict[str, bytes], tuple[bytes, ...]]


@pytest.fixture(scope="module")
def fuzz_inputs(tmp_path_factory: pytest.TempPathFactory) -> FuzzInputs:
    return fuzz_seeds(tmp_path_factory.mktemp("fuzz-seeds"))


@pytest.fixture(scope="module")
def targets(fuzz_inputs: FuzzInputs) -> Iterator[dict[str, Target]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = build_targets(*fuzz_inputs)
        warm_up(built)
        for target in built.values():  # the seeds themselves are valid: accepted
            for seed in target.seeds:
                assert check(target, seed).verdict == "ok", target.name
        yield built


@pytest.mark.parametrize(
    "name", ["dicom_reader", "series_assembler", "cine_decoder", "stow_multipart"]
)
def test_mutated_inputs_are_accepted_or_refused_within_bounds(
    targets: dict[str, Target], name: str
) -> None:
    target = targets[name]
    verdicts: list[str] = []

    @settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )  # fmt: skip
    @given(seed=st.integers(min_value=0, max_value=2**32 - 1))
    def fuzz(seed: int) -> None:
        rng = random.Random(seed)
        outcome = check(target, mutate(rng.choice(target.seeds), rng))
        verdicts.append(outcome.verdict)
        assert not outcome.is_finding, f"{outcome.verdict}: {outcome.detail}"

    fuzz()
    # The mutations reach the parser's error paths, not only its first check.
    assert verdicts.count("refused") >= EXAMPLES // 8, verdicts


def test_mutation_is_reproducible_and_changes_the_input() -> None:
    data = bytes(range(256)) * 4
    first = mutate(data, random.Random(7))
    assert first == mutate(data, random.Random(7))
    assert first != data


def _regression_files() -> list[Path]:
    return sorted(REGRESSIONS.glob("*/*.bin"))


@pytest.mark.parametrize("path", _regression_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_saved_findings_stay_fixed(targets: dict[str, Target], path: Path) -> None:
    outcome = check(targets[path.parent.name], path.read_bytes())
    assert not outcome.is_finding, outcome.detail


# Found by the fuzzer (tests.fuzz.run, seed 1), saved under regressions/: each raised a
# bare exception type, which the listener would have answered as an internal failure
# instead of naming the problem.


def test_unknown_vr_in_the_meta_group_is_a_read_error() -> None:
    data = (REGRESSIONS / "dicom_reader" / "meta-transfer-syntax-unknown-vr.bin").read_bytes()
    with pytest.raises(DicomReadError, match="unreadable file meta information"):
        read_and_decode(data)


def test_multi_valued_region_unit_is_a_cine_error() -> None:
    data = (REGRESSIONS / "cine_decoder" / "region-units-multi-valued.bin").read_bytes()
    with pytest.raises(CineLoopError, match="PhysicalUnitsXDirection"):
        decode_cine(data)
