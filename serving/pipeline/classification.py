"""One bundle, many studies: decode and preprocess each on the CPU, run them in one forward pass.

:class:`StudyClassifier` splits :func:`imaging.predict.predict_path` at its batch boundary:
:meth:`~StudyClassifier.prepare` decodes and preprocesses one study (what a caller can do
for many studies in parallel), :meth:`~StudyClassifier.classify_batch` stacks the
prepared inputs and runs the model once under ``torch.inference_mode``, and
:meth:`~StudyClassifier.explain` draws the Grad-CAM heat maps of one result. Each result
has the shape ``predict_path`` returns and the same numbers (the batch changes nothing
but the time), so the Ray Serve deployment that wraps this class with ``@serve.batch``
answers exactly as ``mmdx predict`` does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imaging.errors import ImagingError
from imaging.inference.inputs import DecodedInput, load_input
from imaging.model_card import EF_CLASS_NAMES
from imaging.predict import DISCLAIMER, interpret_outputs, preprocess

if TYPE_CHECKING:
    import torch

    from imaging.bundle import LoadedBundle
    from imaging.dicom.series_selection import SelectionRules


@dataclass(frozen=True, eq=False)
class PreparedStudy:
    """A study decoded and preprocessed for one bundle, ready to batch.

    Attributes:
        path: What was read (a series folder, a file...).
        x: The network input ``(1, C, *spatial)`` on the CPU.
        source: What :func:`imaging.inference.inputs.load_input` says it read (path, kind, UIDs).
        warnings: Why the selection rules would have refused an explicitly given series.
        timing_ms: ``decode`` and ``preprocess`` times.
    """

    path: Path
    x: torch.Tensor
    source: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    timing_ms: dict[str, float] = field(default_factory=dict)


class StudyClassifier:
    """A model bundle loaded once, classifying batches of studies.

    Args:
        bundle: A loaded bundle or its folder.
        rules: Series selection rules for study folders; default the repository's.
        device: Torch device of the model (``"cuda"``...); the CPU by default.

    Raises:
        CheckpointError: ``bundle`` is a folder that does not load.
    """

    def __init__(
        self,
        bundle: LoadedBundle | str | Path,
        *,
        rules: SelectionRules | None = None,
        device: str | None = None,
    ) -> None:
        import torch

        from imaging.bundle import load_bundle

        self.bundle = bundle if not isinstance(bundle, str | Path) else load_bundle(bundle)
        self.rules = rules
        self.device = torch.device(device or "cpu")
        self.bundle.model.to(self.device).eval()

    @property
    def modality(self) -> str:
        """``"MR"`` or ``"US"``."""
        return self.bundle.modality

    @property
    def name(self) -> str:
        """The bundle's name."""
        return self.bundle.name

    @property
    def version(self) -> str:
        """The bundle's version."""
        return self.bundle.version

    @property
    def class_names(self) -> tuple[str, ...]:
        """The labels a result can carry; empty for a regression model."""
        if self.bundle.config.task == "ef_multitask":
            return self.bundle.class_names or EF_CLASS_NAMES
        return self.bundle.class_names or ()

    def prepare(self, path: str | Path) -> PreparedStudy:
        """Decode and preprocess the study at ``path`` (CPU only; safe to run in parallel).

        Args:
            path: A DICOM study or series folder, a DICOM file, a NIfTI file or an AVI.

        Raises:
            PredictionInputError: The path cannot feed this model (kind, modality, series).
            ImagingError: A reader's error for a file that cannot be decoded.
        """
        started = time.perf_counter()
        decoded = load_input(path, self.modality, rules=self.rules)
        decoded_at = time.perf_counter()
        x = preprocess(decoded, self.bundle.preprocessing)
        return PreparedStudy(
            path=Path(path),
            x=x,
            source=decoded.source,
            warnings=list(decoded.warnings),
            timing_ms={
                "decode": _ms(decoded_at - started),
                "preprocess": _ms(time.perf_counter() - decoded_at),
            },
        )

    def classify_batch(self, prepared: Sequence[PreparedStudy]) -> list[dict[str, Any]]:
        """Run the model once on every prepared study; one result per study, in order.

        Inputs of one bundle share the preset's shape, so they form one batch; were two
        shapes ever mixed, each shape would get its own forward pass.

        Returns:
            Results shaped as :func:`imaging.predict.predict_path`'s (``explanation`` None,
            see :meth:`explain`), with ``batch_size``: the studies that shared the pass.
        """
        import torch

        if not prepared:
            return []
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for position, item in enumerate(prepared):
            by_shape.setdefault(tuple(item.x.shape[1:]), []).append(position)
        outputs: list[Any] = [None] * len(prepared)
        inference_ms: list[float] = [0.0] * len(prepared)
        model = self.bundle.model
        model.eval()
        for positions in by_shape.values():
            started = time.perf_counter()
            batch = torch.cat([prepared[i].x for i in positions]).to(self.device)
            with torch.inference_mode():
                rows = model(batch).float().cpu().numpy()
            elapsed = _ms(time.perf_counter() - started)
            for row, position in zip(rows, positions, strict=True):
                outputs[position] = row
                inference_ms[position] = elapsed
        return [
            self._result(item, row, elapsed, len(prepared))
            for item, row, elapsed in zip(prepared, outputs, inference_ms, strict=True)
        ]

    def explain(
        self, prepared: PreparedStudy, result: Mapping[str, Any], out_dir: str | Path | None
    ) -> dict[str, Any]:
        """Grad-CAM of ``result``'s label (or the reduced-EF output) for ``prepared``.

        Args:
            prepared: The study, as :meth:`prepare` made it.
            result: Its result from :meth:`classify_batch` (the explained label).
            out_dir: Where the PNG overlays go; None writes no file.

        Returns:
            ``predict_path``'s ``explanation``: method, target, layer, shape, peak, files.
        """
        # predict_path's own explanation step, so both draw the same maps and files.
        from imaging.predict import explain_prediction

        decoded = DecodedInput(self.modality, {}, prepared.source, prepared.warnings)
        x = prepared.x.to(self.device)
        return explain_prediction(self.bundle, x, dict(result), "gradcam", out_dir, decoded)

    def classify_paths(
        self, paths: Sequence[str | Path], *, explain_dirs: Sequence[Path | None] | None = None
    ) -> list[dict[str, Any] | ImagingError]:
        """Prepare, classify in one batch and explain; a bad study fails alone.

        What a batched model deployment calls: each path either gets its result (with
        ``explanation`` when its ``explain_dirs`` entry is a folder) or the
        :class:`ImagingError` that refused it, in the order given.
        """
        if explain_dirs is not None and len(explain_dirs) != len(paths):
            raise ValueError(
                f'Argument "explain_dirs" must have one entry per path, got {len(explain_dirs)} '
                f"for {len(paths)} paths"
            )
        outcomes: list[dict[str, Any] | ImagingError] = []
        prepared: list[tuple[int, PreparedStudy]] = []
        for position, path in enumerate(paths):
            try:
                prepared.append((position, self.prepare(path)))
                outcomes.append({})
            except ImagingError as exc:
                outcomes.append(exc)
        results = self.classify_batch([item for _, item in prepared])
        for (position, item), result in zip(prepared, results, strict=True):
            out_dir = explain_dirs[position] if explain_dirs is not None else None
            if out_dir is not None:
                started = time.perf_counter()
                result["explanation"] = self.explain(item, result, out_dir)
                result["timing_ms"]["explain"] = _ms(time.perf_counter() - started)
            outcomes[position] = result
        return outcomes

    def _result(
        self, prepared: PreparedStudy, row: Any, inference_ms: float, batch_size: int
    ) -> dict[str, Any]:
        bundle = self.bundle
        timing = {**prepared.timing_ms, "inference": inference_ms}
        timing["total"] = round(sum(timing.values()), 1)
        return {
            "disclaimer": DISCLAIMER,
            "model": {
                "name": bundle.name,
                "version": bundle.version,
                "architecture": bundle.config.architecture,
                "bundle": str(bundle.path),
            },
            "modality": bundle.modality,
            "task": bundle.config.task,
            **interpret_outputs(row, bundle),
            "input": dict(prepared.source),
            "warnings": list(prepared.warnings),
            "explanation": None,
            "timing_ms": timing,
            "batch_size": batch_size,
        }


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)
