"""The study view's routes: viewer images and heat layers, de-identified cases, feedback."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from serving.web.case_lookup import DETAIL_COLUMNS, IndexCaseLookup
from serving.web.models import MAX_COMMENT
from tests.serving.api_service import audit_events, running_service
from tests.serving.web_fixtures import (
    MR_SHAPE,
    T0,
    US_FRAME_INTERVAL_MS,
    US_SHAPE,
    WebService,
    mr_explanation,
    result_payload,
    seeded_web_service,
)

CASE_FIELDS = {*DETAIL_COLUMNS, "disclaimer"}


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebService]:
    with seeded_web_service(tmp_path_factory.mktemp("web")) as service:
        yield service


def get(web: WebService, path: str, user: str = "radiologist", **params: Any) -> Any:
    response = web.client.get(path, params=params, headers=web.auth(user))
    assert response.status_code == 200, response.text
    return response


def png(web: WebService, path: str, **params: Any) -> np.ndarray:
    response = get(web, path, **params)
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "private, max-age=300"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_mr_viewer_lists_planes_and_key_slices_through_the_heat_peak(web: WebService) -> None:
    body = get(web, f"/api/studies/{web.mr_uid}/viewer/MR").json()
    x, y, z = MR_SHAPE
    assert body["kind"] == "volume" and body["shape"] == [x, y, z]
    assert body["planes"] == {"axial": z, "coronal": y, "sagittal": x}
    assert body["key"] == {"axial": z // 2, "coronal": y // 2, "sagittal": x // 2}
    assert (body["method"], body["target"]) == ("gradcam", "AD")
    assert "not for diagnostic use" in body["disclaimer"]


@pytest.mark.parametrize(
    ("plane", "index", "size", "bright_rows", "bright_columns"),
    [
        # The image's bright corner is the patient's left (X 0-2), anterior (Y last three),
        # superior (Z last three): left on the left, anterior or superior at the top.
        ("axial", MR_SHAPE[2] - 1, (MR_SHAPE[1], MR_SHAPE[0]), {0, 1, 2}, {0, 1, 2}),
        ("coronal", MR_SHAPE[1] - 1, (MR_SHAPE[2], MR_SHAPE[0]), {0, 1, 2}, {0, 1, 2}),
        ("sagittal", 0, (MR_SHAPE[2], MR_SHAPE[1]), {0, 1, 2}, {7, 8, 9}),
    ],
)
def test_mr_slices_are_greyscale_in_neurological_orientation(
    web: WebService,
    plane: str,
    index: int,
    size: tuple[int, int],
    bright_rows: set[int],
    bright_columns: set[int],
) -> None:
    pixels = png(web, f"/api/studies/{web.mr_uid}/viewer/MR/{plane}/{index}.png")
    assert pixels.shape == size and pixels.dtype == np.uint8  # mode L: rows x columns
    rows, columns = np.nonzero(pixels == 255)
    assert set(rows.tolist()) == bright_rows and set(columns.tolist()) == bright_columns
    assert int((pixels > 0).sum()) == 9


def test_the_heat_layer_is_jet_with_alpha_equal_to_the_heat(web: WebService) -> None:
    x, y, z = (n // 2 for n in MR_SHAPE)
    path = f"/api/studies/{web.mr_uid}/viewer/MR/axial/{z}.png"
    image = png(web, path)
    heat = png(web, path, layer="heat")

    assert heat.shape == (*image.shape, 4)  # RGBA, the image's size
    alpha = heat[..., 3]
    # Axial slice: row = Y-1-y, column = x. Peak 1.0 at the centre, 0.5 around it.
    row, column = MR_SHAPE[1] - 1 - y, x
    assert alpha[row, column] == 255 and tuple(heat[row, column, :3]) == (128, 0, 0)
    assert alpha[row - 1, column] == 128 and alpha[row, column + 1] == 128
    assert int((alpha > 0).sum()) == 9 and alpha[0, 0] == 0


def test_echo_viewer_gives_frames_key_frames_and_their_interval(web: WebService) -> None:
    body = get(web, f"/api/studies/{web.us_uid}/viewer/US").json()
    frames, height, width = US_SHAPE
    assert body["kind"] == "cine" and body["shape"] == [frames, height, width]
    assert body["frames"] == frames and 2 in body["key_frames"]  # the hottest frame
    assert body["frame_interval_ms"] == pytest.approx(US_FRAME_INTERVAL_MS)

    # Frame t is bright in its top t + 1 rows of the first 4 columns: first row at the top.
    pixels = png(web, f"/api/studies/{web.us_uid}/viewer/US/frame/3.png")
    assert pixels.shape == (height, width)
    rows, columns = np.nonzero(pixels == 255)
    assert set(rows.tolist()) == {0, 1, 2, 3} and set(columns.tolist()) == {0, 1, 2, 3}
    heat = png(web, f"/api/studies/{web.us_uid}/viewer/US/frame/2.png", layer="heat")
    assert heat.shape == (height, width, 4) and int((heat[..., 3] == 255).sum()) == 4 * 5


@pytest.mark.parametrize(
    "path",
    [
        "MR/axial/{z}.png",  # one past the last axial slice
        "MR/frame/0.png",
        "US/axial/0.png",
        "US/frame/{t}.png",
    ],
)
def test_images_out_of_range_or_of_another_modality_are_404(web: WebService, path: str) -> None:
    uid = web.mr_uid if path.startswith("MR") else web.us_uid
    url = f"/api/studies/{uid}/viewer/" + path.format(z=MR_SHAPE[2], t=US_SHAPE[0])
    assert web.client.get(url, headers=web.auth("radiologist")).status_code == 404


def test_a_study_without_that_modality_has_no_viewer(web: WebService) -> None:
    response = web.client.get(f"/api/studies/{web.mr_uid}/viewer/US", headers=web.auth("admin"))
    assert response.status_code == 404


def test_viewer_files_outside_the_data_folder_are_never_served(
    web: WebService, tmp_path: Path
) -> None:
    catalog = web.context.catalog
    data_dir = web.context.settings.data_dir
    original = catalog.latest_result(web.mr_uid)
    assert original is not None
    outside = tmp_path / "outside"
    # A valid viewer file, but outside the data folder; and a link to it from inside.
    from imaging.viewer_file import save_viewer

    elsewhere = save_viewer(mr_explanation(), outside, prefix="stolen")
    link = data_dir / "results" / "link_viewer.npz"
    link.symlink_to(elsewhere)
    candidates = [str(elsewhere), str(link), str(data_dir / ".." / "outside" / elsewhere.name)]
    try:
        for step, target in enumerate(candidates, start=1):
            entry = result_payload("MR", mr_explanation(), Path(target), web.cases)
            payload = {"results": [entry], "disclaimer": "not for diagnostic use"}
            catalog.save_result(web.mr_uid, payload, now=T0 + timedelta(minutes=step))
            for path in ("", "/axial/0.png"):
                response = web.client.get(
                    f"/api/studies/{web.mr_uid}/viewer/MR{path}", headers=web.auth("admin")
                )
                assert response.status_code == 404, (target, path)
    finally:
        catalog.save_result(
            web.mr_uid, original.payload, now=T0 + timedelta(minutes=len(candidates) + 1)
        )
    assert get(web, f"/api/studies/{web.mr_uid}/viewer/MR").json()["kind"] == "volume"


def test_similar_cases_carry_the_whole_report_and_matched_sentences(web: WebService) -> None:
    payload = get(web, f"/api/studies/{web.mr_uid}/result").json()["payload"]
    hits = payload["results"][0]["similar_cases"]
    assert len(hits) >= 5 and [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    for hit in hits:
        assert hit["report_text"].startswith("Case ")
        assert all(s in hit["report_text"] for s in hit["matched_sentences"])
    assert hits[0]["matched_sentences"] == ["Moderate hippocampal atrophy."]


def test_case_detail_and_thumbnail_are_de_identified_and_open_to_researchers(
    web: WebService,
) -> None:
    case = web.cases[1]
    response = get(web, f"/api/cases/{case.case_id}", user="researcher")
    body = response.json()
    assert set(body) == CASE_FIELDS
    assert body["case_id"] == case.case_id and body["report_text"] == case.report_text
    assert (body["modality"], body["label"], body["ef_percent"]) == ("US", "reduced_ef", 32.0)
    assert body["study_year"] == case.study_year and body["site_id"] == case.site_id
    assert case.patient_pseudonym not in response.text and "patient" not in response.text

    thumbnail = get(web, f"/api/cases/{case.case_id}/thumbnail.png", user="researcher")
    assert thumbnail.headers["content-type"] == "image/png"
    assert thumbnail.content == case.thumbnail_png
    assert thumbnail.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(thumbnail.content)).size == (32, 24)

    for path in ("/api/cases/2.25.1", "/api/cases/2.25.1/thumbnail.png"):
        assert web.client.get(path, headers=web.auth("researcher")).status_code == 404
    assert web.client.get("/api/cases/bad'id", headers=web.auth("researcher")).status_code == 422


def test_the_index_lookup_never_reads_the_patient_pseudonym(web: WebService) -> None:
    lookup = IndexCaseLookup(web.context.settings.data_dir / "case_index")
    detail = lookup.case_detail(web.cases[0].case_id)
    assert detail is not None and set(detail) == set(DETAIL_COLUMNS)
    assert lookup.case_detail("2.25.1") is None and lookup.thumbnail_png("2.25.1") is None


def test_case_routes_answer_503_without_a_case_index(tmp_path: Path) -> None:
    with running_service(tmp_path) as service:
        response = service.client.get("/api/cases/2.25.1", headers=service.auth("researcher"))
        assert response.status_code == 503


@pytest.mark.parametrize(
    "path",
    [
        "/api/studies",
        "/api/studies/{mr}",
        "/api/studies/{mr}/result",
        "/api/studies/{mr}/viewer/MR",
        "/api/studies/{mr}/viewer/MR/axial/0.png",
        "/api/feedback",
    ],
)
def test_researchers_are_refused_identified_views(web: WebService, path: str) -> None:
    url = path.format(mr=web.mr_uid)
    assert web.client.get(url, headers=web.auth("researcher")).status_code == 403
    assert web.client.get(url).status_code == 401
    resource = url.split("?")[0]
    events = [e for e in audit_events(web, user="researcher") if e["resource"] == resource]
    assert events and events[0]["outcome"] == "denied"


def post_feedback(web: WebService, user: str = "radiologist", **body: Any) -> Any:
    return web.client.post("/api/feedback", json=body, headers=web.auth(user))


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"target": "case", "verdict": "agree"}, "case_id"),
        ({"target": "prediction", "case_id": "2.25.9", "verdict": "agree"}, "case_id"),
        ({"target": "prediction"}, "verdict"),
        ({"target": "prediction", "comment": "   "}, "verdict"),
        ({"target": "prediction", "comment": "x" * (MAX_COMMENT + 1)}, "2000"),
        ({"target": "prediction", "verdict": "maybe"}, "verdict"),
        ({"target": "report", "verdict": "agree"}, "target"),
    ],
)
def test_feedback_is_validated(web: WebService, body: dict[str, Any], problem: str) -> None:
    response = post_feedback(web, study_instance_uid=web.mr_uid, **body)
    assert response.status_code == 422 and problem in response.text


def test_feedback_is_stored_with_user_and_time_and_listed_newest_first(web: WebService) -> None:
    case_id = web.cases[0].case_id
    first = post_feedback(
        web, study_instance_uid=web.us_uid, target="prediction", modality="US", verdict="agree"
    )
    assert first.status_code == 201, first.text
    second = post_feedback(
        web,
        user="admin",
        study_instance_uid=web.us_uid,
        target="case",
        case_id=case_id,
        verdict="disagree",
        comment="x" * MAX_COMMENT,
    )
    assert second.status_code == 201, second.text
    stored = second.json()
    assert stored["user"] == "admin" and stored["case_id"] == case_id
    assert len(stored["comment"]) == MAX_COMMENT and stored["created_at"]

    listing = get(web, "/api/feedback", study_instance_uid=web.us_uid).json()
    assert listing["total"] == 2
    assert [(i["user"], i["target"], i["verdict"]) for i in listing["items"]] == [
        ("admin", "case", "disagree"),
        ("radiologist", "prediction", "agree"),
    ]
    assert listing["items"][1] == first.json()
    assert get(web, "/api/feedback", study_instance_uid=web.us_uid, limit=1, offset=1).json()[
        "items"
    ] == [first.json()]
    writes = audit_events(web, action="feedback.write")
    assert {(e["user"], e["outcome"]) for e in writes} >= {
        ("radiologist", "allowed"),
        ("admin", "allowed"),
    }


def test_feedback_on_an_unknown_study_or_not_json_is_refused(web: WebService) -> None:
    unknown = post_feedback(web, study_instance_uid="1.2.3.4", target="prediction", verdict="agree")
    assert unknown.status_code == 404
    response = web.client.post(
        "/api/feedback",
        content=b'{"study_instance_uid": "1.2.3", "target": "prediction", "verdict": "agree"}',
        headers={**web.auth("radiologist"), "Content-Type": "text/plain"},
    )
    assert response.status_code == 415
