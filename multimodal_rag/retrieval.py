"""Similar-case retrieval over any searcher: four query modes, adaptive k, explained hits.

The index (``multimodal_rag.index.CaseIndex``) is one implementation of :class:`Searcher`;
tests use in-memory fakes with hand-made embeddings. Embeddings are L2-normalised, so a
score is a cosine similarity and higher is better.

Modes (query field -> indexed column):

* ``image_to_image``: the query image embedding against the cases' image embeddings;
* ``text_to_image``: a text embedding (typed query or report) against image embeddings;
* ``image_to_report``: the query image embedding against the cases' report embeddings;
* ``study_to_study``: both of the above for image and report of a study, combined as
  ``(1 - report_weight) * image cosine + report_weight * report cosine`` over the union
  of both candidate lists (see :func:`search_similar` for candidates found by one only).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import ArrayLike

from multimodal_rag.cases import DeidentifiedCase, SearchHit

Mode = Literal["image_to_image", "text_to_image", "image_to_report", "study_to_study"]
MODES: tuple[Mode, ...] = ("image_to_image", "text_to_image", "image_to_report", "study_to_study")
Column = Literal["image_embedding", "text_embedding"]
IMAGE_COLUMN: Column = "image_embedding"
TEXT_COLUMN: Column = "text_embedding"

TextEmbedder = Callable[[list[str]], np.ndarray]


class Searcher(Protocol):
    """What retrieval needs from an index: k nearest cases to a vector in one column.

    :class:`multimodal_rag.index.CaseIndex` is one. Filters are mappings in the form of
    :mod:`multimodal_rag.index.filters` (column -> value, a list meaning any of), which the
    searcher validates and renders itself: ``where`` keeps cases matching every entry,
    ``exclude`` drops cases matching any entry. Hits come back best first.
    """

    def search(
        self,
        vector: np.ndarray,
        *,
        column: Column,
        k: int,
        where: Mapping[str, Any] | None = None,
        exclude: Mapping[str, Any] | None = None,
    ) -> list[SearchHit]:
        """The ``k`` cases matching the filters whose ``column`` is most similar to ``vector``."""
        ...


@dataclass(frozen=True, eq=False)
class Query:
    """What to search with. Which fields are needed depends on the mode.

    Attributes:
        image_embedding: The query study's image embedding.
        text_embedding: A text embedding: the typed query or the query study's report.
        exclude_case_id: A case never returned (the query study itself, when indexed).
        exclude_patient: A patient pseudonym whose cases are never returned.

    The two exclusions reach the searcher as its ``exclude`` filter (see :meth:`exclusions`).
    """

    image_embedding: np.ndarray | None = None
    text_embedding: np.ndarray | None = None
    exclude_case_id: str | None = None
    exclude_patient: str | None = None

    @classmethod
    def from_case(cls, case: DeidentifiedCase) -> Query:
        """Search with an indexed case, excluding the case and its patient's other studies."""
        return cls(
            image_embedding=case.image_embedding,
            text_embedding=case.text_embedding,
            exclude_case_id=case.case_id,
            exclude_patient=case.patient_pseudonym,
        )

    def exclusions(self) -> dict[str, str] | None:
        """The searcher's ``exclude`` filter for the excluded case and patient, if any."""
        exclude = {"case_id": self.exclude_case_id, "patient_pseudonym": self.exclude_patient}
        kept = {column: value for column, value in exclude.items() if value is not None}
        return kept or None


def search_similar(
    query: Query,
    searcher: Searcher,
    *,
    mode: Mode,
    k: int = 10,
    filters: Mapping[str, Any] | None = None,
    adaptive: bool = True,
    min_k: int = 3,
    report_weight: float = 0.5,
    embed_texts: TextEmbedder | None = None,
    n_sentences: int = 2,
) -> list[SearchHit]:
    """Find cases similar to ``query``, best first, each saying why it matched.

    With ``adaptive``, the list is cut at the largest drop in similarity among the first
    ``k`` (see :func:`adaptive_k`); ``k + 1`` cases are fetched so that a drop right after
    the k-th is seen. For ``study_to_study``, each column is searched for ``2k + 1``
    cases; a case found by one search only gets, for the other similarity, the lowest
    score that search returned (an upper bound of its true cosine), and its ``why``
    marks that value with ``<=``.

    Args:
        query: The query embeddings and exclusions.
        searcher: The index.
        mode: One of :data:`MODES`.
        k: The most hits returned.
        filters: The searcher's ``where`` filter: column -> value, a list meaning any of
            (columns and values are checked by :mod:`multimodal_rag.index.filters`).
        adaptive: Cut at the largest similarity drop instead of returning ``k`` hits.
        min_k: The fewest hits an adaptive cut keeps.
        report_weight: Weight of the report cosine in ``study_to_study``, in [0, 1].
        embed_texts: Embeds report sentences into the query's space; when given, each
            hit's ``matched_sentences`` holds its sentences most similar to the query.
        n_sentences: Matched sentences kept per hit.

    Returns:
        Hits ranked from 1, with ``score`` the (combined) cosine and ``why`` explaining it.
    """
    if mode not in MODES:
        raise ValueError(f'Argument "mode" must be one of {MODES}, got {mode!r}')
    if k < 1:
        raise ValueError(f'Argument "k" must be at least 1, got {k}')
    if not 0.0 <= report_weight <= 1.0:
        raise ValueError(f'Argument "report_weight" must lie in [0, 1], got {report_weight}')
    exclude = query.exclusions()
    fetch = k + 1 if adaptive else k
    if mode == "study_to_study":
        image = _required_vector(query.image_embedding, "image_embedding", mode)
        text = _required_vector(query.text_embedding, "text_embedding", mode)
        image_hits, report_hits = (
            searcher.search(vector, column=column, k=2 * k + 1, where=filters, exclude=exclude)
            for vector, column in ((image, IMAGE_COLUMN), (text, TEXT_COLUMN))
        )
        scored = _combine(image_hits, report_hits, report_weight)
    else:
        modes: dict[str, tuple[str, Column, str]] = {
            "image_to_image": ("image_embedding", IMAGE_COLUMN, "image"),
            "text_to_image": ("text_embedding", IMAGE_COLUMN, "image"),
            "image_to_report": ("image_embedding", TEXT_COLUMN, "report"),
        }
        field, column, name = modes[mode]
        vector = _required_vector(getattr(query, field), field, mode)
        found = searcher.search(vector, column=column, k=fetch, where=filters, exclude=exclude)
        scored = [(hit, float(hit.score), f"{name} {hit.score:.2f}") for hit in found]
    scored.sort(key=lambda item: -item[1])
    scored = scored[:fetch]
    keep = k
    if adaptive:
        keep = adaptive_k([score for _, score, _ in scored], min_k=min(min_k, k), max_k=k)
    hits = [
        replace(hit, score=score, rank=rank, why=why, matched_sentences=())
        for rank, (hit, score, why) in enumerate(scored[:keep], start=1)
    ]
    if embed_texts is not None and hits:
        sentence_query = query.text_embedding if mode != "image_to_report" else None
        if sentence_query is None:
            sentence_query = query.image_embedding
        hits = _with_matched_sentences(hits, np.asarray(sentence_query), embed_texts, n_sentences)
    return hits


def adaptive_k(scores: ArrayLike, *, min_k: int = 1, max_k: int = 10, min_drop: float = 0.0) -> int:
    """How many hits to keep: cut at the largest drop in similarity.

    The rule: for each cut ``j`` in ``min_k .. min(max_k, n - 1)`` (keep the first ``j``),
    the drop is ``scores[j - 1] - scores[j]``; keep up to the cut with the largest drop
    (the earliest on ties). When that drop is not above ``min_drop`` (no clear gap), or
    there is no cut to choose, keep ``min(max_k, n)``. Pass one score beyond ``max_k``
    so that a gap right after the ``max_k``-th hit keeps all ``max_k``.

    Example: scores ``[0.90, 0.88, 0.87, 0.60, 0.58]`` with ``min_k=1, max_k=5`` have
    drops ``0.02, 0.01, 0.27, 0.02`` after hits 1-4; the largest follows hit 3, so 3.

    Args:
        scores: Similarities, best first (non-increasing).
        min_k: The fewest hits kept (>= 1).
        max_k: The most hits kept (>= min_k).
        min_drop: A drop must exceed this to cut.

    Returns:
        The number of hits to keep.
    """
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or not np.isfinite(values).all():
        raise ValueError('Argument "scores" must be a 1-D array of finite numbers')
    if np.any(np.diff(values) > 1e-9):
        raise ValueError('Argument "scores" must be sorted best first (non-increasing)')
    if not 1 <= min_k <= max_k:
        raise ValueError(f"Arguments must satisfy 1 <= min_k <= max_k, got {min_k} and {max_k}")
    n = len(values)
    last_cut = min(max_k, n - 1)
    if last_cut < min_k:
        return min(max_k, n)
    drops = values[min_k - 1 : last_cut] - values[min_k : last_cut + 1]
    best = int(np.argmax(drops))
    if drops[best] <= min_drop:
        return min(max_k, n)
    return min_k + best


# Abbreviations whose full stop does not end a sentence (lower case, without the stop).
# Units and clinical short forms that often end a sentence ("Trace MR.", "QRS 96 ms.",
# "HR 70/min.") are deliberately absent.
ABBREVIATIONS = frozenset(
    {"approx", "ca", "cf", "dr", "e.g", "fig", "figs", "i.e", "incl", "no", "nos", "prof"}
    | {"pt", "pts", "resp", "vs", "viz"}
)
_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_LINE_BREAK = re.compile(r"\s*\n\s*\n\s*|\s*\n(?=\s*[A-Z][A-Za-z ]*:)")


def split_sentences(text: str) -> list[str]:
    """Report sentences: split after ``.``, ``!`` or ``?`` followed by a capital or digit.

    A full stop does not end a sentence after a known abbreviation (``approx.``, ``e.g.``,
    ``Fig.``, ``vs.``; see :data:`ABBREVIATIONS`). Decimals
    (``3.5 cm``) never split (no space), while ``EF 35%. Mild MR.`` does. Blank lines and
    section headings on a new line (``FINDINGS:``) also start a new sentence; other line
    breaks are wrapped text and become spaces.
    """
    sentences: list[str] = []
    for block in _LINE_BREAK.split(text):
        block = " ".join(block.split())
        if not block:
            continue
        pieces = _BOUNDARY.split(block)
        current = pieces[0]
        for piece in pieces[1:]:
            if _ends_with_abbreviation(current):
                current = f"{current} {piece}"
            else:
                sentences.append(current)
                current = piece
        sentences.append(current)
    return [s for s in sentences if any(c.isalnum() for c in s)]


def _ends_with_abbreviation(text: str) -> bool:
    if not text.endswith("."):
        return False
    last = text[:-1].rsplit(" ", 1)[-1].lstrip("([\"'").lower()
    return last in ABBREVIATIONS


def _combine(
    image_hits: Sequence[SearchHit], report_hits: Sequence[SearchHit], report_weight: float
) -> list[tuple[SearchHit, float, str]]:
    image = {hit.case_id: hit for hit in image_hits}
    report = {hit.case_id: hit for hit in report_hits}
    image_floor = min((h.score for h in image_hits), default=0.0)
    report_floor = min((h.score for h in report_hits), default=0.0)
    combined = []
    for case_id in dict.fromkeys([*image, *report]):
        hit = image.get(case_id) or report[case_id]
        image_part = _part("image", image.get(case_id), image_floor)
        report_part = _part("report", report.get(case_id), report_floor)
        score = (1 - report_weight) * image_part[0] + report_weight * report_part[0]
        combined.append((hit, score, f"{image_part[1]}; {report_part[1]}"))
    return combined


def _part(name: str, hit: SearchHit | None, floor: float) -> tuple[float, str]:
    if hit is None:
        return floor, f"{name} <={floor:.2f}"
    return float(hit.score), f"{name} {hit.score:.2f}"


def _with_matched_sentences(
    hits: list[SearchHit], query: np.ndarray, embed_texts: TextEmbedder, n_sentences: int
) -> list[SearchHit]:
    per_hit = [split_sentences(hit.report_text) for hit in hits]
    flat = [s for sentences in per_hit for s in sentences]
    if not flat:
        return hits
    vectors = np.asarray(embed_texts(flat), dtype=np.float64)
    if vectors.shape != (len(flat), query.shape[-1]):
        raise ValueError(
            f"Text embedder returned shape {vectors.shape} for {len(flat)} sentences, "
            f"expected ({len(flat)}, {query.shape[-1]})"
        )
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similarity = vectors @ (query / max(float(np.linalg.norm(query)), 1e-12))
    out, start = [], 0
    for hit, sentences in zip(hits, per_hit, strict=True):
        scores = similarity[start : start + len(sentences)]
        start += len(sentences)
        if not sentences:
            out.append(hit)
            continue
        best = np.argsort(-scores, kind="stable")[:n_sentences]
        matched = tuple(sentences[i] for i in best)
        why = f"{hit.why}; sentence {scores[best[0]]:.2f}"
        out.append(replace(hit, why=why, matched_sentences=matched))
    return out


def _required_vector(vector: np.ndarray | None, field: str, mode: str) -> np.ndarray:
    if vector is None:
        raise ValueError(f'Query field "{field}" is required for mode "{mode}"')
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or not np.isfinite(array).all() or not np.any(array):
        raise ValueError(f'Query field "{field}" must be a finite, non-zero 1-D vector')
    return array / np.float32(np.linalg.norm(array))
