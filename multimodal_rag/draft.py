"""Draft reports whose every statement cites a retrieved case.

The default draft is extractive (:func:`draft_report`): a sentence stating the model's
prediction, then sentences copied from the retrieved reports, each citing its case as
``[case 3f9a1b2c]``. A :class:`Generator` may instead ask an OpenAI-compatible endpoint
(:class:`OpenAICompatibleGenerator`, off by default); its output is accepted only when
:func:`validate_citations` passes, otherwise the extractive draft is returned.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from multimodal_rag.cases import SearchHit
from multimodal_rag.retrieval import split_sentences

logger = logging.getLogger(__name__)

DRAFT_HEADER = "AI-generated draft; not for diagnostic use"
CITATION_PATTERN = re.compile(r"\[\s*case\b[^\]]*\]", re.IGNORECASE)
_SHORT_ID_LENGTH = 8
MAX_RESPONSE_BYTES = 1 << 20
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")
# De-identified case ids are keyed UIDs that all start with this root.
_UID_ROOT = "2.25."
_HEADING = re.compile(r"^([A-Z][A-Z ]{2,}):\s*")
# Sections that describe the request, not the findings: never quoted as evidence.
ADMINISTRATIVE_SECTIONS = frozenset(
    {"EXAMINATION", "CLINICAL HISTORY", "HISTORY", "INDICATION", "COMPARISON"}
    | {"TECHNIQUE", "HEART RATE"}
)
CONCLUSION_SECTIONS = frozenset(("IMPRESSION", "CONCLUSION", "CONCLUSIONS", "SUMMARY"))


class CitationError(ValueError):
    """A draft cites something that is not a retrieved case, or states something uncited."""


@dataclass(frozen=True)
class DraftReport:
    """A draft: header, the model's statement, then cited statements.

    Attributes:
        header: Always :data:`DRAFT_HEADER`.
        prediction: The model's prediction and calibrated probability (no citation: it
            is the model's own statement).
        statements: Sentences from retrieved reports, each with its citation(s).
        citations: Citation token (``"[case 3f9a1b2c]"``) -> case id.
        generator: ``"extractive"`` or ``"openai-compatible:<model>"``.
        note: Why a generator's output was rejected, when it was.
    """

    header: str
    prediction: str
    statements: tuple[str, ...]
    citations: Mapping[str, str] = field(default_factory=dict)
    generator: str = "extractive"
    note: str = ""

    @property
    def text(self) -> str:
        """The draft as text: header, blank line, prediction and statements."""
        return f"{self.header}\n\n" + " ".join((self.prediction, *self.statements))


class Generator(Protocol):
    """Writes a draft from a prediction and the retrieved hits."""

    def generate(
        self, prediction: Mapping[str, object], hits: Sequence[SearchHit], *, max_sentences: int = 5
    ) -> DraftReport:
        """A draft whose citations all refer to ``hits``."""
        ...


def draft_report(
    prediction: Mapping[str, object], hits: Sequence[SearchHit], *, max_sentences: int = 5
) -> DraftReport:
    """The extractive draft: the prediction, then up to ``max_sentences`` cited sentences.

    Sentences are taken round-robin over the hits in rank order (each hit's best sentence
    before any hit's second), from a hit's ``matched_sentences`` when it has them, else
    from its report in reading order. A section heading (``FINDINGS:``) is dropped from a
    sentence; a sentence found in several reports is written once, citing each.

    Args:
        prediction: ``label`` (str) and ``probability`` (calibrated, of that label) are
            required; ``ef_percent`` (echo) is stated when present.
        hits: The retrieved cases, best first.
        max_sentences: The most sentences taken from retrieved reports.
    """
    if max_sentences < 0:
        raise ValueError(f'Argument "max_sentences" must be >= 0, got {max_sentences}')
    tokens = citation_tokens(hits)
    pools = [_candidate_sentences(hit) for hit in hits]
    chosen: dict[str, list[str]] = {}  # normalised sentence -> [sentence, token, ...]
    for depth in range(max((len(pool) for pool in pools), default=0)):
        for hit, pool in zip(hits, pools, strict=True):
            if depth >= len(pool):
                continue
            key = " ".join(pool[depth].lower().split())
            if key in chosen:
                if tokens[hit.case_id] not in chosen[key]:
                    chosen[key].append(tokens[hit.case_id])
            elif len(chosen) < max_sentences:
                chosen[key] = [pool[depth], tokens[hit.case_id]]
    statements = tuple(_cite(entry[0], entry[1:]) for entry in chosen.values())
    return DraftReport(
        header=DRAFT_HEADER,
        prediction=prediction_sentence(prediction),
        statements=statements,
        citations={token: case_id for case_id, token in tokens.items()},
    )


def validate_citations(draft: DraftReport, hits: Sequence[SearchHit]) -> None:
    """Check that every citation refers to a retrieved hit and every statement cites one.

    Raises:
        CitationError: A citation token in the text, or in ``draft.citations``, does not
            name a retrieved case (or names it under another token), or a statement
            carries no citation.
    """
    expected = citation_tokens(hits)
    retrieved = {token: case_id for case_id, token in expected.items()}
    for token, case_id in draft.citations.items():
        if retrieved.get(token) != case_id:
            raise CitationError(f"Citation {token} -> {case_id!r} is not a retrieved hit")
    for token in CITATION_PATTERN.findall(draft.text):
        if token not in retrieved or token not in draft.citations:
            raise CitationError(f"Citation {token} does not refer to a retrieved hit")
    for statement in draft.statements:
        if not CITATION_PATTERN.search(statement):
            raise CitationError(f"Statement without a citation: {statement!r}")
    if CITATION_PATTERN.search(draft.prediction):
        raise CitationError("The prediction sentence must not cite a case")


def citation_tokens(hits: Sequence[SearchHit]) -> dict[str, str]:
    """Case id -> citation token, e.g. ``"[case 3f9a1b2c]"``.

    The token shows the first 8 characters of the id (after the ``2.25.`` root of keyed
    UIDs), lengthened until no two hits share it.
    """
    ids = list(dict.fromkeys(hit.case_id for hit in hits))
    stems = {i: i.removeprefix(_UID_ROOT) for i in ids}
    tokens = {}
    for case_id in ids:
        stem = stems[case_id]
        length = _SHORT_ID_LENGTH
        while length < len(stem) and any(
            other != case_id and stems[other].startswith(stem[:length]) for other in ids
        ):
            length += 1
        tokens[case_id] = f"[case {stem[:length]}]"
    return tokens


def prediction_sentence(prediction: Mapping[str, object]) -> str:
    """``"Model prediction: AD (calibrated probability 0.83)."``, plus EF when given."""
    label = prediction.get("label")
    probability = prediction.get("probability")
    if not isinstance(label, str) or not label:
        raise ValueError('Argument "prediction" must have a non-empty "label"')
    if not isinstance(probability, int | float) or not 0.0 <= float(probability) <= 1.0:
        raise ValueError('Argument "prediction" must have a "probability" in [0, 1]')
    sentence = f"Model prediction: {label} (calibrated probability {float(probability):.2f})"
    ef = prediction.get("ef_percent")
    if isinstance(ef, int | float):
        sentence += f"; estimated ejection fraction {float(ef):.0f}%"
    return sentence + "."


class ExtractiveGenerator:
    """The default generator: :func:`draft_report`."""

    def generate(
        self, prediction: Mapping[str, object], hits: Sequence[SearchHit], *, max_sentences: int = 5
    ) -> DraftReport:
        """The extractive draft."""
        return draft_report(prediction, hits, max_sentences=max_sentences)


@dataclass(frozen=True)
class OpenAICompatibleGenerator:
    """Drafts with an OpenAI-compatible ``/chat/completions`` endpoint (opt-in).

    The endpoint sees the prediction and the candidate sentences of the retrieved reports
    (de-identified) with their citation tokens, and must write sentences that each end
    with a token. Its output is checked with :func:`validate_citations`; when it cites
    anything that was not retrieved, states something uncited, or the request fails, the
    extractive draft is returned with ``note`` saying why.

    Attributes:
        base_url: E.g. ``"http://127.0.0.1:8000/v1"`` (``http`` or ``https`` only).
        model: The model name the endpoint serves.
        api_key_env: Environment variable holding the key, read at each call; no
            ``Authorization`` header when unset or empty.
        timeout_s: Request timeout.
    """

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: float = 30.0
    fallback: Generator = field(default_factory=ExtractiveGenerator)

    def __post_init__(self) -> None:
        if urllib.parse.urlparse(self.base_url).scheme not in ("http", "https"):
            raise ValueError(f'Argument "base_url" must be an http(s) URL, got {self.base_url!r}')

    def generate(
        self, prediction: Mapping[str, object], hits: Sequence[SearchHit], *, max_sentences: int = 5
    ) -> DraftReport:
        """The endpoint's draft when its citations check out, else the fallback's."""
        extractive = draft_report(prediction, hits, max_sentences=2 * max_sentences)
        try:
            content = self._complete(_messages(extractive, max_sentences))
            statements = _statements(content)[:max_sentences]
            if not statements:
                raise CitationError("The endpoint returned no statement")
            draft = replace(
                extractive, statements=statements, generator=f"openai-compatible:{self.model}"
            )
            validate_citations(draft, hits)
            return draft
        except (CitationError, OSError, ValueError, KeyError, IndexError, TypeError) as error:
            # OSError covers URLError and timeouts; the others a malformed response.
            logger.warning("Generator %s rejected, using the fallback: %s", self.model, error)
            fallback = self.fallback.generate(prediction, hits, max_sentences=max_sentences)
            return replace(fallback, note=f"{self.model} draft rejected: {error}")

    def _complete(self, messages: list[dict[str, str]]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0})
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            self.base_url.rstrip("/") + "/chat/completions",
            data=body.encode("utf-8"),
            headers=headers,
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            raw = response.read(MAX_RESPONSE_BYTES + 1)
        if len(raw) > MAX_RESPONSE_BYTES:
            raise ValueError(f"The endpoint's response exceeds {MAX_RESPONSE_BYTES} bytes")
        payload = json.loads(raw.decode("utf-8"))
        content = payload["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise TypeError("The endpoint returned no text content")
        return content


def _messages(extractive: DraftReport, max_sentences: int) -> list[dict[str, str]]:
    excerpts = "\n".join(f"- {statement}" for statement in extractive.statements)
    return [
        {
            "role": "system",
            "content": (
                "You summarise findings of similar prior cases for a radiologist. Use only "
                "the excerpts given. End every sentence with the citation token(s) of the "
                "excerpt(s) it comes from, copied exactly, e.g. [case 3f9a1b2c]. Never "
                "invent a citation. Write no sentence without a citation."
            ),
        },
        {
            "role": "user",
            "content": (
                f"{extractive.prediction}\nExcerpts from retrieved reports:\n{excerpts}\n"
                f"Write at most {max_sentences} sentences."
            ),
        },
    ]


def _statements(content: str) -> tuple[str, ...]:
    """Sentences of a generated text; each line is its own paragraph, bullets removed."""
    lines = (_BULLET.sub("", line) for line in content.splitlines())
    return tuple(split_sentences("\n\n".join(lines)))


def _candidate_sentences(hit: SearchHit) -> list[str]:
    """The hit's matched sentences in order, else its report's, impression first.

    Headings (``FINDINGS:``) are removed; sentences of administrative sections
    (examination, history, comparison) are skipped.
    """
    matched = bool(hit.matched_sentences)
    sentences = list(hit.matched_sentences) if matched else split_sentences(hit.report_text)
    conclusions: list[str] = []
    others: list[str] = []
    section: str | None = None
    for sentence in sentences:
        heading = _HEADING.match(sentence)
        if heading:
            section = heading.group(1)
            sentence = sentence[heading.end() :]
        elif matched:
            section = None  # matched sentences are not contiguous: no section to inherit
        if section in ADMINISTRATIVE_SECTIONS or not any(c.isalnum() for c in sentence):
            continue
        target = conclusions if section in CONCLUSION_SECTIONS and not matched else others
        target.append(sentence.strip())
    return conclusions + others


def _cite(sentence: str, tokens: Sequence[str]) -> str:
    """``"EF 35% [case 3f9a1b2c]."``: the citations before the closing full stop."""
    body = sentence.rstrip()
    end = body[-1] if body and body[-1] in ".!?" else "."
    body = body.rstrip(".!?").rstrip()
    return f"{body} {' '.join(tokens)}{end}"
