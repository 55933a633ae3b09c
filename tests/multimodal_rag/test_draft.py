"""Cited drafts: extractive, the citation validator, and an OpenAI-compatible fake endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from multimodal_rag.cases import SearchHit
from multimodal_rag.draft import (
    DRAFT_HEADER,
    CitationError,
    ExtractiveGenerator,
    OpenAICompatibleGenerator,
    citation_tokens,
    draft_report,
    validate_citations,
)

ECHO_A = (
    "EXAMINATION: Transthoracic echocardiogram, apical four-chamber view.\n"
    "FINDINGS: The left ventricle is dilated. Global hypokinesis of the left ventricle. "
    "No pericardial effusion.\n"
    "IMPRESSION: Reduced left ventricular ejection fraction (31%).\n"
)
ECHO_B = (
    "FINDINGS: Left ventricular cavity size is normal. LVEF (Simpson's biplane) 38%: "
    "moderately reduced systolic function. No pericardial effusion.\n"
    "IMPRESSION: Reduced left ventricular ejection fraction (38%).\n"
)
CASE_A = "2.25.318274650192837465019283746501928374"
CASE_B = "2.25.977120394857610293847561029384756102"

HITS = [
    SearchHit(CASE_A, 0.91, 1, "US", "reduced_ef", "S1", ECHO_A, "image 0.91"),
    SearchHit(CASE_B, 0.88, 2, "US", "reduced_ef", "S2", ECHO_B, "image 0.88"),
]
PREDICTION = {"label": "reduced_ef", "probability": 0.83, "ef_percent": 34.6}


def test_extractive_draft_states_the_prediction_and_cites_every_sentence() -> None:
    draft = draft_report(PREDICTION, HITS, max_sentences=5)
    assert draft.header == DRAFT_HEADER
    assert draft.text.startswith("AI-generated draft; not for diagnostic use\n\n")
    assert draft.prediction == (
        "Model prediction: reduced_ef (calibrated probability 0.83); "
        "estimated ejection fraction 35%."
    )
    # Round-robin over hits, impressions first, examination lines skipped.
    assert draft.statements == (
        "Reduced left ventricular ejection fraction (31%) [case 31827465].",
        "Reduced left ventricular ejection fraction (38%) [case 97712039].",
        "The left ventricle is dilated [case 31827465].",
        "Left ventricular cavity size is normal [case 97712039].",
        "Global hypokinesis of the left ventricle [case 31827465].",
    )
    assert draft.citations == {"[case 31827465]": CASE_A, "[case 97712039]": CASE_B}
    validate_citations(draft, HITS)


def test_a_sentence_in_several_reports_cites_each_and_matched_sentences_come_first() -> None:
    hits = [
        replace(HITS[0], matched_sentences=("FINDINGS: No pericardial effusion.",)),
        replace(HITS[1], matched_sentences=("No pericardial effusion.", "LVEF 38%.")),
    ]
    draft = draft_report(PREDICTION, hits, max_sentences=5)
    assert draft.statements == (
        "No pericardial effusion [case 31827465] [case 97712039].",
        "LVEF 38% [case 97712039].",
    )
    validate_citations(draft, hits)


def test_citation_tokens_lengthen_until_unique() -> None:
    hits = [replace(HITS[0], case_id="abcdefgh1"), replace(HITS[1], case_id="abcdefgh2")]
    assert citation_tokens(hits) == {
        "abcdefgh1": "[case abcdefgh1]",
        "abcdefgh2": "[case abcdefgh2]",
    }
    assert citation_tokens([replace(HITS[0], case_id="short")]) == {"short": "[case short]"}


def test_validator_catches_forged_and_missing_citations() -> None:
    draft = draft_report(PREDICTION, HITS, max_sentences=2)
    forged = replace(draft, statements=(*draft.statements, "Normal EF [case 12345678]."))
    with pytest.raises(CitationError, match=r"\[case 12345678\]"):
        validate_citations(forged, HITS)
    uncited = replace(draft, statements=(*draft.statements, "Normal EF."))
    with pytest.raises(CitationError, match="without a citation"):
        validate_citations(uncited, HITS)
    # A case that was indexed but not retrieved for this query cannot be cited.
    with pytest.raises(CitationError, match="not a retrieved hit"):
        validate_citations(draft, HITS[:1])
    with pytest.raises(ValueError, match='"probability"'):
        draft_report({"label": "AD", "probability": 1.2}, HITS)


class FakeCompletions(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions with the server's canned content."""

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.server.requests.append(  # type: ignore[attr-defined]
            {
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "body": json.loads(self.rfile.read(length)),
            }
        )
        content = self.server.content  # type: ignore[attr-defined]
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log."""


@pytest.fixture
def fake_server() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeCompletions)
    server.requests = []  # type: ignore[attr-defined]
    server.content = ""  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def generator_for(server: Any) -> OpenAICompatibleGenerator:
    host, port = server.server_address
    return OpenAICompatibleGenerator(
        base_url=f"http://{host}:{port}/v1", model="fake", api_key_env="MMDX_TEST_KEY", timeout_s=5
    )


def test_openai_compatible_draft_is_accepted_when_its_citations_check_out(
    fake_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMDX_TEST_KEY", "secret-token")
    fake_server.content = (
        "- Both similar cases show a reduced ejection fraction [case 31827465] [case 97712039].\n"
        "- One had a dilated left ventricle [case 31827465]."
    )
    draft = generator_for(fake_server).generate(PREDICTION, HITS, max_sentences=3)
    assert draft.generator == "openai-compatible:fake"
    assert draft.note == ""
    assert draft.statements == (
        "Both similar cases show a reduced ejection fraction [case 31827465] [case 97712039].",
        "One had a dilated left ventricle [case 31827465].",
    )
    assert draft.prediction.startswith("Model prediction: reduced_ef")
    (request,) = fake_server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["authorization"] == "Bearer secret-token"
    assert request["body"]["model"] == "fake"
    assert "[case 97712039]" in request["body"]["messages"][1]["content"]


def test_openai_compatible_draft_citing_an_unretrieved_case_falls_back(
    fake_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MMDX_TEST_KEY", raising=False)
    fake_server.content = "A prior case had EF 20% [case 55555555]."
    draft = generator_for(fake_server).generate(PREDICTION, HITS, max_sentences=3)
    assert draft.generator == "extractive"
    assert "fake draft rejected" in draft.note
    assert "[case 55555555]" not in draft.text
    assert draft == replace(draft_report(PREDICTION, HITS, max_sentences=3), note=draft.note)
    assert fake_server.requests[0]["authorization"] is None


def test_openai_compatible_uncited_statement_or_dead_endpoint_falls_back(fake_server: Any) -> None:
    fake_server.content = "The patient has heart failure."
    generator = generator_for(fake_server)
    assert generator.generate(PREDICTION, HITS).generator == "extractive"
    fake_server.content = "  "
    assert "no statement" in generator.generate(PREDICTION, HITS).note
    fake_server.shutdown()
    fake_server.server_close()
    draft = generator.generate(PREDICTION, HITS)
    assert draft.generator == "extractive"
    assert "rejected" in draft.note


def test_generators_share_the_protocol_and_urls_are_checked() -> None:
    assert ExtractiveGenerator().generate(PREDICTION, HITS) == draft_report(PREDICTION, HITS)
    with pytest.raises(ValueError, match="http"):
        OpenAICompatibleGenerator(base_url="file:///etc/passwd", model="x")
