"""The processing of one received study: select, classify, explain, retrieve, report, deliver.

:meth:`StudyPipeline.process` is what :class:`serving.jobs.JobRunner` calls once a study
is stable. For each modality of the study that has a classifier (MR, US), it picks the
series the selection rules prefer, classifies it, draws the heat maps, finds similar
cases with their evidence and a cited draft, fuses the two when a fusion model is given,
and writes the result as a DICOM SR into the study, sent to the configured destination.
The payload it returns is JSON and carries no patient identity: UIDs, the model's
answer, de-identified cases.

The models are reached through two small protocols, so a Ray Serve deployment can hand
in a shim that forwards to a batched model deployment; :class:`StudyClassifier` and
:class:`SimilarCaseFinder` are the in-process implementations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from imaging.dicom.series_selection import (
    SelectionRules,
    explain_series_selection,
    load_selection_rules,
)
from imaging.dicom.study_index import SeriesRecord, StudyRecord, index_dicom_source
from imaging.errors import ImagingError
from imaging.predict import DISCLAIMER
from multimodal_rag.index_evaluation import POSITIVE_LABELS
from serving.pipeline.result_delivery import (
    SrSender,
    clipped_ef,
    deliver_sr,
    keep_sr,
    result_sr,
    task_of,
)
from serving.pipeline.similar_cases import SimilarCases, hit_summary
from serving.settings import DestinationSettings
from serving.sr_delivery import send_sr
from serving.store import StudyStore

if TYPE_CHECKING:
    from multimodal_rag.fusion import FusionModel
    from serving.settings import Settings

logger = logging.getLogger(__name__)

# Modalities processed, in this order.
MODALITIES = ("MR", "US")


class StudyProcessingError(Exception):
    """A study cannot be processed; ``reason`` says why (no patient identity in it)."""

    def __init__(self, study_instance_uid: str, reason: str) -> None:
        self.study_instance_uid = study_instance_uid
        self.reason = reason
        super().__init__(f"study {study_instance_uid}: {reason}")


class StudyNotFoundError(StudyProcessingError):
    """The store holds no file of the study."""


class NoUsableSeriesError(StudyProcessingError):
    """No series of the study can feed a configured model (the reason names each)."""


class SeriesClassifier(Protocol):
    """What the pipeline needs of a classifier (``StudyClassifier`` is one)."""

    @property
    def modality(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    @property
    def class_names(self) -> tuple[str, ...]: ...

    def classify_paths(
        self, paths: Sequence[str | Path], *, explain_dirs: Sequence[Path | None] | None = None
    ) -> list[dict[str, Any] | ImagingError]: ...


class CaseFinder(Protocol):
    """What the pipeline needs of similar-case retrieval (``SimilarCaseFinder`` is one)."""

    @property
    def version(self) -> str: ...

    def find(
        self, path: str | Path, modality: str, prediction: Mapping[str, object]
    ) -> SimilarCases: ...


class StudyPipeline:
    """Processes stored studies into results, SRs and deliveries.

    Args:
        store: Where received studies are.
        classifiers: One classifier per modality (``"MR"``, ``"US"``); a modality without
            one is not processed.
        finder: Similar-case retrieval; None leaves similar cases, evidence and draft out.
        destination: Where SRs go (``kind="none"``: nowhere).
        explanations_dir: Heat-map PNGs go to ``<dir>/<StudyInstanceUID>/<modality>/``.
        sr_dir: SRs are kept at ``<dir>/<StudyInstanceUID>/<SOPInstanceUID>.dcm``.
        fusion: Per modality, a fitted fusion of classifier probability and evidence.
        explain: Draw Grad-CAM heat maps.
        rules: Series selection rules; default ``configs/series_selection.yaml``.
        sr_sender: Sends an SR (``serving.sr_delivery.send_sr``; tests inject others).

    Raises:
        ValueError: A classifier is keyed under another modality than its own, or its
            labels are not those of the modality's SR task.
    """

    def __init__(
        self,
        store: StudyStore,
        *,
        classifiers: Mapping[str, SeriesClassifier],
        finder: CaseFinder | None,
        destination: DestinationSettings,
        explanations_dir: Path,
        sr_dir: Path,
        fusion: Mapping[str, FusionModel] | None = None,
        explain: bool = True,
        rules: SelectionRules | None = None,
        sr_sender: SrSender = send_sr,
    ) -> None:
        from imaging.dicom.result_sr import TASK_LABELS

        for modality, classifier in classifiers.items():
            if classifier.modality != modality:
                raise ValueError(
                    f'Argument "classifiers" maps {modality!r} to a {classifier.modality} model'
                )
            expected = set(TASK_LABELS[task_of(modality)])
            if set(classifier.class_names) != expected:
                raise ValueError(
                    f"The {modality} model {classifier.name} has labels "
                    f"{list(classifier.class_names)}; results need {sorted(expected)}"
                )
        self.store = store
        self.classifiers = dict(classifiers)
        self.finder = finder
        self.destination = destination
        self.explanations_dir = Path(explanations_dir)
        self.sr_dir = Path(sr_dir)
        self.fusion = dict(fusion or {})
        self.explain = explain
        self.rules = rules if rules is not None else load_selection_rules()
        self.sr_sender = sr_sender

    @classmethod
    def from_settings(
        cls, settings: Settings, store: StudyStore, *, sr_sender: SrSender = send_sr
    ) -> StudyPipeline:
        """The pipeline the settings describe.

        Classifiers come from ``models.mri_bundle`` and ``models.echo_bundle`` (an unset
        one is skipped); similar cases from the index at ``data_dir/case_index`` when it
        exists, embedded with ``models.clip_config`` and ``models.clip_checkpoint``.
        Explanations and SRs are kept under ``data_dir/results``.

        Raises:
            CheckpointError: A bundle or the CLIP checkpoint does not load.
            ValueError: A bundle is not of the modality its setting names.
        """
        from serving.pipeline.classification import StudyClassifier

        models = settings.models
        classifiers: dict[str, SeriesClassifier] = {}
        for setting, modality, bundle in (
            ("models.mri_bundle", "MR", models.mri_bundle),
            ("models.echo_bundle", "US", models.echo_bundle),
        ):
            if bundle is None:
                continue
            classifier = StudyClassifier(bundle)
            if classifier.modality != modality:
                raise ValueError(
                    f'Setting "{setting}" must name a {modality} bundle, '
                    f"{bundle} is {classifier.modality}"
                )
            classifiers[modality] = classifier
        finder = None
        index_dir = settings.data_dir / "case_index"
        if index_dir.is_dir():
            from multimodal_rag.embedding import create_embedder
            from multimodal_rag.index import CaseIndex, ServingSearcher
            from serving.pipeline.similar_cases import SimilarCaseFinder

            embedder = create_embedder(models.clip_config, checkpoint=models.clip_checkpoint)
            table = CaseIndex.open(index_dir, embedding_dim=embedder.embed_dim)
            searcher = ServingSearcher.open(table, index_dir.with_name("case_index_serving"))
            finder = SimilarCaseFinder(embedder, searcher, k=models.similar_cases)
        return cls.with_settings(
            settings, store, classifiers=classifiers, finder=finder, sr_sender=sr_sender
        )

    @classmethod
    def with_settings(
        cls,
        settings: Settings,
        store: StudyStore,
        *,
        classifiers: Mapping[str, SeriesClassifier],
        finder: CaseFinder | None,
        sr_sender: SrSender = send_sr,
    ) -> StudyPipeline:
        """A pipeline over the given models, everything else from the settings.

        Explanations and SRs are kept under ``data_dir/results``; SRs go to
        ``destination``. The service passes models that live in Serve deployments.
        """
        results = settings.data_dir / "results"
        return cls(
            store,
            classifiers=classifiers,
            finder=finder,
            destination=settings.destination,
            explanations_dir=results / "explanations",
            sr_dir=results / "sr",
            explain=settings.models.explain,
            sr_sender=sr_sender,
        )

    def model_versions(self) -> dict[str, str]:
        """Name -> version of every model a result may come from."""
        versions = {c.name: c.version for c in self.classifiers.values()}
        if self.finder is not None:
            versions["embedder"] = self.finder.version
        return versions

    def process(self, study_instance_uid: str) -> dict[str, Any]:
        """Classify a stored study, per modality; return the JSON result payload.

        Returns:
            ``study_instance_uid``, ``results`` (one per modality processed: ``modality``,
            series, ``prediction``, ``model``, ``explanation``, ``similar_cases``,
            ``evidence``, ``draft``, ``sr``, ``warnings``, ``timing_ms``), ``skipped``
            (modalities not processed, with the reason), ``model_versions``,
            ``timing_ms`` and ``disclaimer``.

        Raises:
            StudyNotFoundError: The store holds nothing of the study.
            NoUsableSeriesError: No modality gave a result (the reason says why for each).
        """
        started = time.perf_counter()
        if not self.store.study_files(study_instance_uid):
            raise StudyNotFoundError(study_instance_uid, "no stored instance")
        study = self._index(study_instance_uid)
        indexed_ms = _ms(started)
        results: list[dict[str, Any]] = []
        skipped: list[dict[str, str]] = []
        for modality in MODALITIES:
            if modality not in study.modalities:
                continue
            classifier = self.classifiers.get(modality)
            if classifier is None:
                skipped.append({"modality": modality, "reason": f"no {modality} model configured"})
                continue
            selection = explain_series_selection(study, self.rules, modality=modality)
            if selection.selected is None:
                why = "; ".join(f"{uid}: {r}" for uid, r in selection.rejections().items())
                skipped.append({"modality": modality, "reason": f"no series qualifies ({why})"})
                continue
            try:
                results.append(self._process_series(classifier, selection.selected))
            except ImagingError as exc:
                skipped.append({"modality": modality, "reason": f"{type(exc).__name__}: {exc}"})
        if not results:
            reasons = "; ".join(f"{s['modality']}: {s['reason']}" for s in skipped)
            found = ", ".join(study.modalities) or "none"
            raise NoUsableSeriesError(
                study_instance_uid, reasons or f"no MR or US series (modalities: {found})"
            )
        return {
            "study_instance_uid": study_instance_uid,
            "disclaimer": DISCLAIMER,
            "results": results,
            "skipped": skipped,
            "model_versions": self.model_versions(),
            "timing_ms": {"index": indexed_ms, "total": _ms(started)},
        }

    def _index(self, study_instance_uid: str) -> StudyRecord:
        index = index_dicom_source(self.store.study_dir(study_instance_uid))
        try:
            return index.get_study(study_instance_uid)
        except KeyError:
            failures = "; ".join(f.reason for f in index.failures[:3])
            raise NoUsableSeriesError(
                study_instance_uid, f"no readable instance of the study ({failures or 'none'})"
            ) from None

    def _process_series(self, classifier: SeriesClassifier, series: SeriesRecord) -> dict[str, Any]:
        modality = classifier.modality
        timing: dict[str, Any] = {}
        series_dir = series.instances[0].path.parent  # the store files one series per folder
        explain_dir = (
            self.explanations_dir / series.study_instance_uid / modality if self.explain else None
        )
        mark = time.perf_counter()
        (outcome,) = classifier.classify_paths([series_dir], explain_dirs=[explain_dir])
        if isinstance(outcome, ImagingError):
            raise outcome
        classification = outcome
        timing["classify"] = _ms(mark)
        evidence_paths = _evidence_paths(series, classification)
        prediction = _prediction(classification)
        warnings = list(classification["warnings"])
        if prediction.get("ef_percent") is not None:
            raw = float(prediction["ef_percent"])
            prediction["ef_percent"] = clipped_ef(raw)
            if prediction["ef_percent"] != raw:
                warnings.append(f"model EF {raw:.1f}% lies outside [0, 100]; clipped")

        similar: SimilarCases | None = None
        if self.finder is not None:
            mark = time.perf_counter()
            # A US series is read from the loop the classifier read; MR from its folder.
            retrieval_input = evidence_paths[0] if modality == "US" else series_dir
            try:
                similar = self.finder.find(retrieval_input, modality, prediction)
            except ImagingError as exc:
                # The classification stands without its similar cases.
                warnings.append(f"similar cases unavailable: {type(exc).__name__}: {exc.reason}")
            timing["similar_cases"] = _ms(mark)
        fusion = self.fusion.get(modality)
        if similar is not None and fusion is not None:
            fused = fusion.predict([prediction["positive_probability"]], [similar.evidence])
            prediction["fused_probability"] = float(fused[0])
        retrieval = similar.to_dict() if similar is not None else None

        mark = time.perf_counter()
        sr = result_sr(
            evidence_paths,
            modality=modality,
            classification={**classification, "ef_percent": prediction.get("ef_percent")},
            positive_probability=prediction["positive_probability"],
            fused_probability=prediction["fused_probability"],
            similar_cases=[hit_summary(hit) for hit in similar.hits] if similar else (),
            draft_text=similar.draft.text if similar else None,
        )
        sr_path = keep_sr(sr, self.sr_dir)
        timing["sr"] = _ms(mark)
        mark = time.perf_counter()
        delivery = deliver_sr(sr, self.destination, self.sr_sender)
        if self.destination.kind != "none":
            timing["delivery"] = _ms(mark)
        timing["classifier_steps"] = classification["timing_ms"]
        return {
            "modality": modality,
            "series_instance_uid": series.series_instance_uid,
            "series_description": series.series_description,
            "prediction": prediction,
            "model": {k: classification["model"][k] for k in ("name", "version", "architecture")},
            "explanation": classification["explanation"],
            "similar_cases": retrieval["similar_cases"] if retrieval else [],
            "evidence": retrieval["evidence"] if retrieval else None,
            "draft": retrieval["draft"] if retrieval else None,
            "sr": {
                "sop_instance_uid": str(sr.SOPInstanceUID),
                "series_instance_uid": str(sr.SeriesInstanceUID),
                "path": str(sr_path),
                **delivery,
            },
            "warnings": warnings,
            "timing_ms": timing,
        }


def _prediction(classification: Mapping[str, Any]) -> dict[str, Any]:
    """The classifier's answer, with the probability of the task's positive label."""
    modality = classification["modality"]
    positive = next(label for m, label in POSITIVE_LABELS.items() if m == modality)
    probabilities = dict(classification["probabilities"])
    return {
        "task": classification["task"],
        "label": classification["label"],
        "probability": classification["probability"],
        "probabilities": probabilities,
        "positive_label": positive,
        "positive_probability": float(probabilities[positive]),
        "fused_probability": None,
        "ef_percent": classification.get("ef_percent"),
        "temperature": classification["temperature"],
    }


def _evidence_paths(series: SeriesRecord, classification: Mapping[str, Any]) -> list[Path]:
    """The files the model read: the whole MR series, or the one US loop."""
    sop_instance_uid = classification["input"].get("sop_instance_uid")
    if sop_instance_uid is None:
        return [instance.path for instance in series.instances]
    return [i.path for i in series.instances if i.sop_instance_uid == sop_instance_uid]


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000.0, 1)
