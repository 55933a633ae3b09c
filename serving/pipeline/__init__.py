"""The processing of a received study as plain classes that the Ray Serve deployments wrap.

- :class:`StudyClassifier` (``classification``): one model bundle; prepare studies on the
  CPU, classify a batch in one forward pass, explain with Grad-CAM.
- :class:`SimilarCaseFinder` (``similar_cases``): embed a study, search the case index,
  weigh the hits' labels and draft a cited report.
- :class:`StudyPipeline` (``study_pipeline``): one study from the store to its result
  payload and its DICOM SR, per modality; what the job runner calls.

Importing this package loads neither torch nor ray.
"""

from __future__ import annotations

from serving.pipeline.classification import PreparedStudy, StudyClassifier
from serving.pipeline.similar_cases import SimilarCaseFinder, SimilarCases
from serving.pipeline.study_pipeline import (
    NoUsableSeriesError,
    StudyNotFoundError,
    StudyPipeline,
    StudyProcessingError,
)

__all__ = [
    "NoUsableSeriesError",
    "PreparedStudy",
    "SimilarCaseFinder",
    "SimilarCases",
    "StudyClassifier",
    "StudyNotFoundError",
    "StudyPipeline",
    "StudyProcessingError",
]
