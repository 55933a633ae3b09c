"""Similar cases of a received study: embed it, search the case index, weigh and cite the hits.

:class:`SimilarCaseFinder` follows the classifier's split so a deployment can batch the
embedder: :meth:`~SimilarCaseFinder.prepare` reads a study and samples its images (CPU),
:meth:`~SimilarCaseFinder.embed_batch` runs the image tower once for many studies, and
:meth:`~SimilarCaseFinder.search` finds the study's nearest indexed cases image to image,
the similarity-weighted evidence for the positive label, and an extractive draft whose
every statement cites a retrieved case. The index holds only
:class:`~multimodal_rag.cases.DeidentifiedCase` rows, so a hit never carries more than a
pseudonymous case id, a site code, a label and a scrubbed report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from multimodal_rag.archive_cases import load_study
from multimodal_rag.cases import SearchHit
from multimodal_rag.draft import DraftReport, Generator, draft_report, validate_citations
from multimodal_rag.fusion import retrieval_evidence
from multimodal_rag.index_evaluation import POSITIVE_LABELS
from multimodal_rag.retrieval import Query, Searcher, search_similar

if TYPE_CHECKING:
    import torch

    from multimodal_rag.embedding.embedder import Embedder

# Characters of a report shown with a hit that has no matched sentence.
EXCERPT_CHARACTERS = 300
# The fewest hits an adaptive cut keeps: a draft and a vote need a few cases.
MIN_HITS = 3


@dataclass(frozen=True)
class SimilarCases:
    """What retrieval says about one study.

    Attributes:
        modality: ``"MR"`` or ``"US"``; only cases of it are searched.
        hits: The similar cases, best first.
        positive_label: The label the evidence counts (``POSITIVE_LABELS[modality]``).
        evidence: Similarity-weighted share of hits with the positive label, in [0, 1].
        draft: The draft report; every statement cites a hit (checked).
    """

    modality: str
    hits: tuple[SearchHit, ...]
    positive_label: str
    evidence: float
    draft: DraftReport

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary: hits, evidence and the draft with its citations."""
        return {
            "similar_cases": [hit_summary(hit) for hit in self.hits],
            "evidence": {
                "positive_label": self.positive_label,
                "probability": self.evidence,
                "method": "similarity-weighted vote of the similar cases' labels",
                "n_cases": len(self.hits),
            },
            "draft": {
                "text": self.draft.text,
                "prediction": self.draft.prediction,
                "statements": list(self.draft.statements),
                "citations": dict(self.draft.citations),
                "generator": self.draft.generator,
                "note": self.draft.note,
            },
        }


class SimilarCaseFinder:
    """Finds indexed cases like a study, with evidence and a cited draft.

    Args:
        embedder: The CLIP embedder the index was built with.
        case_index: The case index (any :class:`~multimodal_rag.retrieval.Searcher`).
        k: The most hits returned.
        adaptive: Cut the list at its largest similarity drop (keeping at least 3).
        match_sentences: Pick each hit's report sentences closest to the study (costs
            one text-tower pass over the hits' sentences).
        generator: Writes the draft; the extractive :func:`draft_report` by default.
        max_sentences: The most cited sentences in the draft.
    """

    def __init__(
        self,
        embedder: Embedder,
        case_index: Searcher,
        *,
        k: int = 10,
        adaptive: bool = True,
        match_sentences: bool = True,
        generator: Generator | None = None,
        max_sentences: int = 5,
    ) -> None:
        if k < 1:
            raise ValueError(f'Argument "k" must be at least 1, got {k}')
        self.embedder = embedder
        self.case_index = case_index
        self.k = k
        self.adaptive = adaptive
        self.match_sentences = match_sentences
        self.generator = generator
        self.max_sentences = max_sentences

    @property
    def version(self) -> str:
        """The embedder's configuration and weights, for ``model_versions``."""
        return self.embedder.provenance.describe()

    def prepare(self, path: str | Path) -> torch.Tensor:
        """The image tower's input for the study at ``path`` (an MR series folder, a US file).

        Raises:
            ImagingError: The study cannot be read (names the file and the reason).
            FileNotFoundError: ``path`` does not exist.
        """
        study = load_study(Path(path))
        if study.cine is not None:
            return self.embedder.cine_images(
                np.asarray(study.cine.frames), np.asarray(study.cine.sector_mask)
            )
        return self.embedder.volume_images(study.volume)

    def embed_batch(self, prepared: Sequence[torch.Tensor]) -> np.ndarray:
        """``(len(prepared), d)`` unit-norm study embeddings, the images of all in one pass."""
        return self.embedder.embed_image_groups(list(prepared))

    def search(
        self, embedding: np.ndarray, modality: str, prediction: Mapping[str, object]
    ) -> SimilarCases:
        """Nearest cases of ``modality`` to ``embedding``, their evidence and a cited draft.

        Args:
            embedding: The study's image embedding.
            modality: ``"MR"`` or ``"US"``.
            prediction: ``label``, ``probability`` (and ``ef_percent``) for the draft's
                first sentence.

        Raises:
            ValueError: ``modality`` has no positive label, or the embedding is not usable.
            CitationError: The draft cites something that was not retrieved (a generator's
                fault; the extractive draft cannot).
        """
        positive = next((label for m, label in POSITIVE_LABELS.items() if m == modality), None)
        if positive is None:
            raise ValueError(
                f'Argument "modality" must be one of {sorted(POSITIVE_LABELS)}, got {modality!r}'
            )
        hits = search_similar(
            # The received study is not in the index (only archive cases are), so
            # nothing needs excluding.
            Query(image_embedding=np.asarray(embedding, dtype=np.float32)),
            self.case_index,
            mode="image_to_image",
            k=self.k,
            filters={"modality": modality},
            adaptive=self.adaptive,
            min_k=MIN_HITS,
            embed_texts=self.embedder.embed_texts if self.match_sentences else None,
        )
        if self.generator is None:
            draft = draft_report(prediction, hits, max_sentences=self.max_sentences)
        else:
            draft = self.generator.generate(prediction, hits, max_sentences=self.max_sentences)
        validate_citations(draft, hits)
        return SimilarCases(
            modality=modality,
            hits=tuple(hits),
            positive_label=positive,
            evidence=retrieval_evidence(hits, positive),
            draft=draft,
        )

    def find(
        self, path: str | Path, modality: str, prediction: Mapping[str, object]
    ) -> SimilarCases:
        """:meth:`prepare`, :meth:`embed_batch` and :meth:`search` for one study."""
        embedding = self.embed_batch([self.prepare(path)])[0]
        return self.search(embedding, modality, prediction)


def hit_summary(hit: SearchHit) -> dict[str, Any]:
    """A hit as the result shows it: pseudonymous id, score, label, site, report, why.

    ``report_text`` is the whole de-identified report and ``matched_sentences`` those of
    its sentences that matched the query (a viewer highlights them); ``report_excerpt``
    is the matched sentences, or the report's beginning when none matched.
    """
    if hit.matched_sentences:
        excerpt = " ".join(hit.matched_sentences)
    else:
        excerpt = hit.report_text[:EXCERPT_CHARACTERS]
    return {
        "case_id": hit.case_id,
        "rank": hit.rank,
        "score": round(float(hit.score), 4),
        "modality": hit.modality,
        "label": hit.label,
        "site_id": hit.site_id,
        "report_excerpt": excerpt,
        "report_text": hit.report_text,
        "matched_sentences": list(hit.matched_sentences),
        "why": hit.why,
    }
