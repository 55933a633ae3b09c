"""The radiologist's web page in a real browser (Debian's Chromium, driven by Playwright).

Each test runs against two sites (:mod:`tests.integration.web_fixtures`): ``seeded``, the
app over stored results on 127.0.0.1 (seconds), and ``service``, `mmdx serve` with tiny
models and Orthanc in a loopback-only network namespace, fed an MR study and an echo loop
by storescu (minutes; skipped where no namespace, Orthanc or dcmtk is available). Every
test drives a fresh browser context (no shared cookies) at 1280 x 800 and checks what the
page shows against the JSON API.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.integration.service_fixtures import running_hospital
from tests.integration.service_fixtures import unavailable_reason as hospital_unavailable
from tests.integration.web_fixtures import (
    VIEWPORT,
    WebSite,
    artifact_dir,
    launch_browser,
    page_fetch_status,
    seeded_site,
    service_site,
    sign_in,
)
from tests.integration.web_fixtures import unavailable_reason as browser_unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

UNAVAILABLE = browser_unavailable()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or ""),
]

SEARCH_TEXT = "reduced ejection fraction with dilated ventricle"


@pytest.fixture(scope="module", params=["seeded", pytest.param("service", marks=pytest.mark.slow)])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebSite]:
    folder = tmp_path_factory.mktemp(f"web-{request.param}")
    if request.param == "seeded":
        with seeded_site(folder) as seeded:
            yield seeded
        return
    reason = hospital_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with running_hospital(folder / "hospital") as hospital:
        yield service_site(hospital, folder / "studies")


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    from playwright.sync_api import sync_playwright

    started = sync_playwright().start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def browser(playwright: Playwright, site: WebSite) -> Iterator[Browser]:
    browser = launch_browser(playwright, site.chromium)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh context (no cookies); fails the test on an uncaught script error."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    if errors:
        pytest.fail(f"script errors on the page: {errors}")


def row_uids(page: Page) -> list[str]:
    return [str(row.get_attribute("data-uid")) for row in page.locator("tr.study-row").all()]


def case_ids(page: Page, scope: str) -> list[str]:
    return [
        str(card.get_attribute("data-case-id"))
        for card in page.locator(f"{scope} .case-card").all()
    ]


def scores(page: Page, scope: str) -> list[float]:
    return [
        float(str(card.get_attribute("data-score")))
        for card in page.locator(f"{scope} .case-card").all()
    ]


def wait_loaded(page: Page, selector: str) -> dict[str, int]:
    """The natural size of the image at ``selector`` once loaded (times out if it never is).

    One check in the page: a playing loop may change the image's source between two calls.
    """
    size = page.wait_for_function(
        """selector => {
            const img = document.querySelector(selector);
            return img && img.complete && img.naturalWidth > 0
                ? {width: img.naturalWidth, height: img.naturalHeight} : null;
        }""",
        arg=selector,
    ).json_value()
    return {"width": int(size["width"]), "height": int(size["height"])}


def open_study(page: Page, site: WebSite, uid: str) -> None:
    """Sign in as the radiologist and open study ``uid`` from the worklist with the keyboard."""
    from playwright.sync_api import expect

    sign_in(page, site, "radiologist")
    row = page.locator(f'tr.study-row[data-uid="{uid}"]')
    row.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"#/study/{re.escape(uid)}$"))


def test_worklist_then_mr_study_with_heat_map_slices_and_similar_cases(
    page: Page, site: WebSite, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    sign_in(page, site, "radiologist")
    expect(page.locator("#who-name")).to_have_text("radiologist")
    expect(page.locator("#who-role")).to_have_text("radiologist")
    worklist = {item["study_instance_uid"]: item for item in site.get("/api/studies")["items"]}
    for uid in (site.mr_uid, site.echo_uid):
        row = page.locator(f'tr.study-row[data-uid="{uid}"]')
        label = site.result(uid)["prediction"]["label"]
        expect(row.locator(".prediction-cell")).to_have_text(label)
        expect(row.locator(".state")).to_have_text(worklist[uid]["job_state"] or "pending")
    expect(page.locator(".page-range")).to_have_text(re.compile(r"^1–\d+ of \d+$"))

    # Filter by modality, then sort all studies by date on the server: the API's answers.
    page.get_by_label("Modality").select_option("US")
    only_us = [
        item["study_instance_uid"] for item in site.get("/api/studies", modality="US")["items"]
    ]
    assert site.echo_uid in only_us and site.mr_uid not in only_us
    expect(page.locator("tr.study-row")).to_have_count(len(only_us))
    assert row_uids(page) == only_us
    page.get_by_label("Modality").select_option("")
    page.get_by_role("button", name="Study date").click()  # while "All" may still load
    expect(page.locator("th[data-key='date']")).to_have_attribute("aria-sort", "descending")
    by_date = [
        item["study_instance_uid"] for item in site.get("/api/studies", sort="-date")["items"]
    ]
    expect(page.locator("tr.study-row")).to_have_count(len(by_date))
    assert row_uids(page) == by_date

    page.locator(f'tr.study-row[data-uid="{site.mr_uid}"]').focus()
    page.keyboard.press("Enter")
    mr = site.result(site.mr_uid)
    section = "section[data-result='MR']"
    expect(page.locator(f"{section} .case-card").first).to_be_visible()
    expect(page.locator(".banner")).to_have_text("Not for diagnostic use")
    expect(page.locator(f"{section} .prediction-label")).to_have_text(mr["prediction"]["label"])
    facts = page.locator(f"{section} .prediction").inner_text()
    assert f"{mr['prediction']['probability'] * 100:.1f}%" in facts
    assert f"{mr['model']['name']} {mr['model']['version']}" in facts

    # Three planes, each image with its heat layer loaded at the same size.
    for plane in ("axial", "coronal", "sagittal"):
        image = wait_loaded(page, f"{section} img.layer-image[data-plane='{plane}']")
        heat = wait_loaded(page, f"{section} img.layer-heat[data-plane='{plane}']")
        assert image["width"] > 0 and image["height"] > 0, plane
        assert heat == image, plane

    expected = [hit["case_id"] for hit in mr["similar_cases"]]
    assert len(expected) >= 5
    assert case_ids(page, section) == expected
    shown = scores(page, section)
    assert shown == sorted(shown, reverse=True)
    assert shown == [hit["score"] for hit in mr["similar_cases"]]

    # Every card shows its thumbnail (loaded) or the box: no broken image is left.
    page.wait_for_function(
        "selector => [...document.querySelectorAll(selector)]"
        ".every(img => img.complete && img.naturalWidth > 0)",
        arg=f"{section} .case-card img.thumbnail",
    )
    thumbnails = page.locator(f"{section} .case-card img.thumbnail")
    placeholders = page.locator(f"{section} .case-card span.no-thumbnail")
    expect(thumbnails.or_(placeholders)).to_have_count(len(expected))

    screenshot = artifact_dir(tmp_path) / f"web_ui_study_mr_{site.name}.png"
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(screenshot))
    print(f"study view screenshot: {screenshot}")
    assert screenshot.stat().st_size > 10_000

    # The axial slider moves one slice: both layers follow.
    viewer = site.get(f"/api/studies/{site.mr_uid}/viewer/MR")
    key = viewer["key"]["axial"]
    slider = page.locator(f"{section} input.slice-slider[data-plane='axial']")
    assert slider.input_value() == str(key)
    step, moved = (
        ("ArrowRight", key + 1) if key + 1 < viewer["planes"]["axial"] else ("ArrowLeft", key - 1)
    )
    slider.focus()
    page.keyboard.press(step)
    axial = page.locator(f"{section} img.layer-image[data-plane='axial']")
    expect(axial).to_have_attribute("src", re.compile(rf"/axial/{moved}\.png\?layer=image$"))
    expect(page.locator(f"{section} img.layer-heat[data-plane='axial']")).to_have_attribute(
        "src", re.compile(rf"/axial/{moved}\.png\?layer=heat$")
    )
    assert wait_loaded(page, f"{section} img.layer-image[data-plane='axial']")["width"] > 0

    # Opacity 0-100% and the show/hide toggle act on the heat layer only.
    heat_layer = f"{section} img.layer-heat[data-plane='axial']"
    opacity = page.locator(f"{section} input.heat-opacity")
    opacity.focus()
    page.keyboard.press("Home")
    assert page.eval_on_selector(heat_layer, "img => getComputedStyle(img).opacity") == "0"
    page.keyboard.press("End")
    assert page.eval_on_selector(heat_layer, "img => getComputedStyle(img).opacity") == "1"
    page.locator(f"{section} input.heat-toggle").uncheck()
    assert page.eval_on_selector(heat_layer, "img => getComputedStyle(img).visibility") == "hidden"
    assert (
        page.eval_on_selector(
            f"{section} img.layer-image[data-plane='axial']",
            "img => getComputedStyle(img).visibility",
        )
        == "visible"
    )

    # A citation of the draft reveals its case in the panel.
    citations = mr["draft"]["citations"]
    assert citations
    first = page.locator(f"{section} button.citation").first
    cited = citations[first.inner_text()]
    first.click()
    card = page.locator(f'{section} .case-card[data-case-id="{cited}"]')
    expect(card).to_have_class(re.compile(r"\bflash\b"))
    expect(card).to_be_focused()

    # Compare: the study's key image with its heat beside the case's full de-identified report.
    top = mr["similar_cases"][0]
    page.locator(f"{section} .case-card").first.get_by_role("button", name="Compare").click()
    detail = site.get(f"/api/cases/{top['case_id']}")
    assert "patient_pseudonym" not in detail
    expect(page.locator(f"{section} .compare .full-report")).to_have_text(detail["report_text"])
    assert wait_loaded(page, f"{section} .compare-current img.layer-heat")["width"] > 0
    # A case's thumbnail, or a "No thumbnail" box where the index keeps none.
    if site.request(f"/api/cases/{top['case_id']}/thumbnail.png").status_code == 200:
        assert wait_loaded(page, f"{section} img.compare-thumbnail")["width"] > 0
    else:
        expect(page.locator(f"{section} .compare span.no-thumbnail")).to_have_text("No thumbnail")


def test_echo_study_cine_plays_and_scrubs(page: Page, site: WebSite) -> None:
    from playwright.sync_api import expect

    open_study(page, site, site.echo_uid)
    echo = site.result(site.echo_uid)
    section = "section[data-result='US']"
    expect(page.locator(f"{section} .prediction-label")).to_have_text(echo["prediction"]["label"])
    assert (
        f"{echo['prediction']['ef_percent']:.1f}%"
        in page.locator(f"{section} .prediction").inner_text()
    )
    assert wait_loaded(page, f"{section} img.layer-heat")["width"] > 0
    assert len(case_ids(page, section)) == len(echo["similar_cases"]) >= 5

    viewer = site.get(f"/api/studies/{site.echo_uid}/viewer/US")
    cine = page.locator(f"{section} .cine")
    start = cine.get_attribute("data-frame")
    page.wait_for_function(
        "([selector, start]) => document.querySelector(selector).dataset.frame !== start",
        arg=[f"{section} .cine", start],
        timeout=5_000,
    )
    expect(page.locator(f"{section} .cine-play")).to_have_text("Pause")

    scrubber = page.locator(f"{section} input.cine-scrubber")
    scrubber.focus()
    page.keyboard.press("End")
    expect(cine).to_have_attribute("data-frame", str(viewer["frames"] - 1))
    expect(page.locator(f"{section} .cine-play")).to_have_text("Play")  # scrubbing paused it
    page.keyboard.press("Home")
    page.keyboard.press("ArrowRight")
    expect(cine).to_have_attribute("data-frame", "1")
    expect(page.locator(f"{section} img.layer-image")).to_have_attribute(
        "src", re.compile(r"/frame/1\.png\?layer=image$")
    )
    page.wait_for_timeout(3 * max(viewer["frame_interval_ms"] or 40, 20))
    assert cine.get_attribute("data-frame") == "1"  # paused: stays put
    page.locator(f"{section} .cine-play").click()
    expect(cine).not_to_have_attribute("data-frame", "1")


def test_text_search_ranks_cases_like_the_api(page: Page, site: WebSite) -> None:
    from playwright.sync_api import expect

    sign_in(page, site, "radiologist")
    page.get_by_role("link", name="Case search").click()
    page.get_by_label("Findings or impression").fill(SEARCH_TEXT)
    page.keyboard.press("Enter")
    expected = site.get("/api/cases/search", text=SEARCH_TEXT, k=10)["hits"]
    assert len(expected) >= 5
    expect(page.locator(".search-results .case-card")).to_have_count(len(expected))
    assert case_ids(page, ".search-results") == [hit["case_id"] for hit in expected]
    shown = scores(page, ".search-results")
    assert shown == sorted(shown, reverse=True)


def test_feedback_on_prediction_and_case_reaches_the_api_then_sign_out(
    page: Page, site: WebSite
) -> None:
    from playwright.sync_api import expect

    open_study(page, site, site.mr_uid)
    section = "section[data-result='MR']"
    form = page.locator(f"{section} form[data-target='prediction']")
    form.get_by_label("Agree", exact=True).check()
    form.get_by_label("Comment (optional)").fill("heat map over the hippocampi, as expected")
    form.get_by_role("button", name="Send feedback").click()
    expect(page.locator("#status")).to_have_text("Feedback saved (prediction).")

    top = site.result(site.mr_uid)["similar_cases"][0]
    card = page.locator(f'{section} .case-card[data-case-id="{top["case_id"]}"]')
    card.get_by_text("Feedback on this case").click()
    card.get_by_label("Disagree", exact=True).check()
    card.get_by_role("button", name="Send feedback").click()
    expect(page.locator("#status")).to_have_text("Feedback saved (similar case).")
    expect(page.locator(".feedback-list tbody tr")).to_have_count(2)

    stored = site.get("/api/feedback", study_instance_uid=site.mr_uid)
    found = {
        (e["target"], e["case_id"], e["modality"], e["verdict"], e["comment"], e["user"])
        for e in stored["items"]
    }
    assert (
        "prediction",
        None,
        "MR",
        "agree",
        "heat map over the hippocampi, as expected",
        "radiologist",
    ) in found
    assert ("case", top["case_id"], "MR", "disagree", None, "radiologist") in found
    assert all(entry["created_at"] for entry in stored["items"])

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Access token")).to_be_visible()
    assert page_fetch_status(page, "/ui/api/session") == 401
    assert page_fetch_status(page, "/api/studies") == 401


def test_researcher_gets_search_only_and_no_session_gets_nothing(page: Page, site: WebSite) -> None:
    from playwright.sync_api import expect

    page.goto(f"{site.url}/ui/")
    assert page_fetch_status(page, "/api/studies") == 401
    assert page_fetch_status(page, f"/api/studies/{site.mr_uid}/viewer/MR") == 401
    page.get_by_label("Access token").fill("not-a-token-0123456789")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#status")).to_have_text(re.compile("^Sign-in refused: "))

    sign_in(page, site, "researcher")
    expect(page.locator("#who-role")).to_have_text("researcher")
    expect(page.locator(".note")).to_contain_text("only the de-identified case search")
    expect(page.locator("#nav-worklist")).to_be_hidden()
    page.goto(f"{site.url}/ui/#/worklist")
    expect(page.get_by_label("Findings or impression")).to_be_visible()
    expect(page.locator("table.worklist")).to_have_count(0)
    assert page_fetch_status(page, "/api/studies") == 403
    assert page_fetch_status(page, f"/api/studies/{site.mr_uid}/result") == 403
    assert page_fetch_status(page, "/api/feedback") == 403
    assert page_fetch_status(page, "/api/cases/search?text=atrophy") == 200
