"""The whole malformed corpus through STOW-RS while valid studies flow: each bad part is
refused with a reason, each good one stored, and the service keeps answering."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from tests.imaging.malformed_corpus import build_corpus, build_seeds
from tests.serving.api_service import STOW_TYPE, running_service, stow_body, write_mr_study

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
ERROR_COMMENT = "00000902"
# pydicom finds the end of the meta group by its tags, not its length: the object is whole.
INTACT = "absurd-length-meta-group"
BAD_PER_REQUEST = 12


def test_every_malformed_part_is_refused_with_a_reason_and_good_studies_are_stored(
    tmp_path: Path,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        corpus = build_corpus(build_seeds(tmp_path / "seeds"))
    assert len(corpus) >= 200
    bad_files = []
    for name, data in sorted(corpus.items()):
        if name != INTACT:
            path = tmp_path / "corpus" / f"{name}.dcm"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            bad_files.append(path)
    batches = [
        bad_files[start : start + BAD_PER_REQUEST]
        for start in range(0, len(bad_files), BAD_PER_REQUEST)
    ]
    good_studies = [
        write_mr_study(
            tmp_path / "good",
            seed=f"good-{i}",
            patient_id=f"GOOD{i:03d}",
            patient_name=f"Good^Patient{i}",
        )
        for i in range(len(batches))
    ]

    refused_reasons: list[str] = []
    stored = 0
    with running_service(tmp_path) as service:
        for bad, good in zip(batches, good_studies, strict=True):
            # A good study in the middle of each request, bad parts on both sides.
            half = len(bad) // 2
            response = service.client.post(
                "/dicom-web/studies",
                content=stow_body([*bad[:half], *good, *bad[half:]]),
                headers={"Content-Type": STOW_TYPE, **service.auth("radiologist")},
            )
            assert response.status_code == 202, response.text
            body = response.json()
            failed = body[FAILED_SOP_SEQUENCE]["Value"]
            referenced = body[REFERENCED_SOP_SEQUENCE]["Value"]
            assert len(failed) == len(bad) and len(referenced) == len(good)
            refused_reasons += [item[ERROR_COMMENT]["Value"][0] for item in failed]
            stored += len(referenced)
            assert service.client.get("/healthz").json() == {"status": "ok"}

        listed = service.client.get(
            "/api/studies", params={"limit": 500}, headers=service.auth("radiologist")
        ).json()
        instances = service.context.catalog.search_instances({})

    assert len(refused_reasons) == len(bad_files)
    assert all(reason.strip() for reason in refused_reasons)
    assert stored == sum(len(study) for study in good_studies)
    assert listed["total"] == len(good_studies)
    assert {item["patient_id"] for item in listed["items"]} == {
        f"GOOD{i:03d}" for i in range(len(good_studies))
    }
    assert len(instances) == stored
