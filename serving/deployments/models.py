"""Model deployments: classifiers and similar-case retrieval, each call batched.

Each wraps a plain class that is tested without Ray (``StudyClassifier``,
``SimilarCaseFinder``). Requests carry a study's *path in the study store*, never its
pixels: the replicas read the files themselves. ``@serve.batch`` gathers concurrent
requests into one forward pass; its size and wait come from the constructor or, under
``serve deploy``, from ``user_config`` (:meth:`reconfigure`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from imaging.errors import ImagingError


def _set_batching(method: Any, config: dict[str, Any]) -> None:
    if "max_batch_size" in config:
        method.set_max_batch_size(int(config["max_batch_size"]))
    if "batch_wait_timeout_s" in config:
        method.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))


@serve.deployment(name="Classifier")
class ClassifierDeployment:
    """One model bundle (MR or US), classifying batches of stored studies."""

    def __init__(
        self, bundle: str, *, batching: dict[str, Any] | None = None, device: str | None = None
    ) -> None:
        from serving.pipeline.classification import StudyClassifier

        self._classifier = StudyClassifier(bundle, device=device)
        _set_batching(self.classify, batching or {})

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """``serve deploy``'s ``user_config``: ``max_batch_size``, ``batch_wait_timeout_s``."""
        _set_batching(self.classify, user_config)

    def describe(self) -> dict[str, Any]:
        """Modality, model name and version, class names."""
        classifier = self._classifier
        return {
            "modality": classifier.modality,
            "name": classifier.name,
            "version": classifier.version,
            "class_names": list(classifier.class_names),
        }

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def classify(
        self, requests: list[tuple[str, str | None]]
    ) -> list[dict[str, Any] | ImagingError]:
        """Classify ``(study path, heat-map folder or None)`` requests in one forward pass.

        A study that cannot be read comes back as its ``ImagingError``; the others are
        classified all the same.
        """
        paths = [path for path, _ in requests]
        explain_dirs = [Path(folder) if folder else None for _, folder in requests]
        return await asyncio.to_thread(
            self._classifier.classify_paths, paths, explain_dirs=explain_dirs
        )


@serve.deployment(name="SimilarCases")
class SimilarCasesDeployment:
    """The CLIP embedder and the case index together: embed, search, evidence, draft.

    One replica holds both because matching report sentences needs the text tower next
    to the index; splitting them would load the model twice.
    """

    def __init__(
        self,
        clip_config: str,
        index_dir: str,
        *,
        clip_checkpoint: str | None = None,
        k: int = 10,
        batching: dict[str, Any] | None = None,
    ) -> None:
        from multimodal_rag.embedding import create_embedder
        from multimodal_rag.index import CaseIndex, ServingSearcher
        from serving.pipeline.similar_cases import SimilarCaseFinder

        embedder = create_embedder(
            clip_config, checkpoint=Path(clip_checkpoint) if clip_checkpoint else None
        )
        table = CaseIndex.open(index_dir, embedding_dim=embedder.embed_dim)
        # FAISS graphs next to the table once it is large (see ServingSearcher).
        searcher = ServingSearcher.open(table, Path(index_dir).with_name("case_index_serving"))
        self._finder = SimilarCaseFinder(embedder, searcher, k=k)
        _set_batching(self._embed, batching or {})

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """``serve deploy``'s ``user_config``: ``max_batch_size``, ``batch_wait_timeout_s``."""
        _set_batching(self._embed, user_config)

    def version(self) -> str:
        """The embedder's configuration and weights."""
        return self._finder.version

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _embed(self, paths: list[str]) -> list[np.ndarray | Exception]:
        """Embed studies in one image-tower pass; an unreadable one returns its error."""
        return await asyncio.to_thread(self._embed_now, paths)

    def _embed_now(self, paths: list[str]) -> list[np.ndarray | Exception]:
        prepared: dict[int, Any] = {}
        results: list[np.ndarray | Exception] = []
        for i, path in enumerate(paths):
            try:
                prepared[i] = self._finder.prepare(path)
                results.append(np.empty(0))
            except (ImagingError, OSError, ValueError) as error:
                results.append(error)
        if prepared:
            embeddings = self._finder.embed_batch(list(prepared.values()))
            for i, embedding in zip(prepared, embeddings, strict=True):
                results[i] = embedding
        return results

    async def find(self, path: str, modality: str, prediction: dict[str, Any]) -> Any:
        """``SimilarCases`` for the stored study at ``path`` (hits, evidence, cited draft)."""
        embedding = await self._embed(path)
        if isinstance(embedding, Exception):
            raise embedding
        return await asyncio.to_thread(self._finder.search, embedding, modality, prediction)

    async def search_text(
        self,
        text: str,
        *,
        k: int,
        modality: str | None = None,
        label: str | None = None,
        site: str | None = None,
    ) -> list[dict[str, Any]]:
        """De-identified cases matching a free-text description, best first."""
        return await asyncio.to_thread(self._search_text, text, k, modality, label, site)

    def _search_text(
        self, text: str, k: int, modality: str | None, label: str | None, site: str | None
    ) -> list[dict[str, Any]]:
        from multimodal_rag.retrieval import Query, search_similar
        from serving.pipeline.similar_cases import hit_summary

        if not text.strip():
            raise ValueError('Argument "text" must not be empty')
        finder = self._finder
        filters = {
            name: value
            for name, value in (("modality", modality), ("label", label), ("site_id", site))
            if value
        }
        hits = search_similar(
            Query(text_embedding=finder.embedder.embed_texts([text])[0]),
            finder.case_index,
            mode="text_to_image",
            k=k,
            filters=filters or None,
            adaptive=False,
            embed_texts=finder.embedder.embed_texts,
        )
        return [hit_summary(hit) for hit in hits]
