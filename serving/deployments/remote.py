"""Adapters that give the plain pipeline protocols a Ray Serve handle behind them.

The job runner's :class:`~serving.pipeline.study_pipeline.StudyPipeline` takes a
``SeriesClassifier`` per modality and a ``CaseFinder``; the HTTP app takes a
``CaseSearch``. These forward each call to the deployment by handle, so the same pipeline
code runs in-process in tests and across a Ray cluster in the service. Calls block on
``.result()``: they are made from the job runner's thread or FastAPI's thread pool,
never from an event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imaging.errors import ImagingError

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle

    from serving.pipeline.similar_cases import SimilarCases


class RemoteClassifier:
    """A ``SeriesClassifier`` backed by a ``Classifier`` deployment."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle
        described = handle.describe.remote().result()
        self._modality = str(described["modality"])
        self._name = str(described["name"])
        self._version = str(described["version"])
        self._class_names = tuple(described["class_names"])

    @property
    def modality(self) -> str:
        """``"MR"`` or ``"US"``."""
        return self._modality

    @property
    def name(self) -> str:
        """The model's name."""
        return self._name

    @property
    def version(self) -> str:
        """The model's version."""
        return self._version

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's labels."""
        return self._class_names

    def classify_paths(
        self, paths: Sequence[str | Path], *, explain_dirs: Sequence[Path | None] | None = None
    ) -> list[dict[str, Any] | ImagingError]:
        """One request per study; the deployment batches concurrent ones."""
        folders = list(explain_dirs) if explain_dirs is not None else [None] * len(paths)
        responses = [
            self._handle.classify.remote((str(path), str(folder) if folder else None))
            for path, folder in zip(paths, folders, strict=True)
        ]
        return [response.result() for response in responses]


class RemoteCaseFinder:
    """A ``CaseFinder`` backed by the ``SimilarCases`` deployment."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle
        self._version = str(handle.version.remote().result())

    @property
    def version(self) -> str:
        """The embedder's configuration and weights."""
        return self._version

    def find(
        self, path: str | Path, modality: str, prediction: Mapping[str, object]
    ) -> SimilarCases:
        """Hits, evidence and cited draft for the stored study at ``path``."""
        result: SimilarCases = self._handle.find.remote(
            str(path), modality, dict(prediction)
        ).result()
        return result


class RemoteCaseSearch:
    """The HTTP app's ``CaseSearch`` backed by the ``SimilarCases`` deployment."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle

    def search_text(
        self,
        text: str,
        *,
        k: int,
        modality: str | None,
        label: str | None,
        site: str | None,
    ) -> list[dict[str, Any]]:
        """De-identified cases matching ``text``, best first."""
        hits: list[dict[str, Any]] = self._handle.search_text.remote(
            text, k=k, modality=modality, label=label, site=site
        ).result()
        return hits
