"""Which model bundle screens which modality: ``--model`` names, else the settings' bundles.

A name is a bundle folder, or a folder under ``{data_dir}/models``. Each bundle is loaded
once here (its SHA-256 and weights checked), so a bad bundle stops the run before any
study is read, and the run records each model's name, version and hash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imaging.bundle import LoadedBundle
    from imaging.transforms.pipelines import EchoPreprocessing, MRIPreprocessing
    from serving.settings import Settings


class ModelChoiceError(ValueError):
    """No bundle for a name, two bundles for one modality, or no model at all."""


@dataclass(frozen=True)
class ScreenModel:
    """A bundle chosen for one modality.

    Attributes:
        modality: ``"MR"`` or ``"US"``.
        path: The bundle folder.
        name: The model card's name.
        version: The model card's version.
        sha256: SHA-256 of the weights (``models/model.pt``).
        source: The preprocessing source (``"nifti"``, ``"echonet"``, ``"dicom"``): which
            manifest column its studies are read from.
        positive_label: The class whose probability the ROC uses (class 1), if binary.
        preprocessing: The preset parameters its inputs are prepared with.
    """

    modality: str
    path: Path
    name: str
    version: str
    sha256: str
    source: str
    positive_label: str | None
    preprocessing: MRIPreprocessing | EchoPreprocessing

    def describe(self) -> dict[str, Any]:
        """What ``run.json`` records of the model."""
        return {
            "modality": self.modality,
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "bundle": str(self.path),
            "positive_label": self.positive_label,
        }


def resolve_bundle_path(name: str | Path, settings: Settings) -> Path:
    """The bundle folder ``name`` means: itself, or ``{data_dir}/models/NAME``.

    Raises:
        ModelChoiceError: Neither holds a bundle.
    """
    from imaging.bundle import METADATA_FILE

    candidates = [Path(name), settings.data_dir / "models" / str(name)]
    for candidate in candidates:
        if (candidate / METADATA_FILE).is_file():
            return candidate
    tried = " and ".join(str(c) for c in candidates)
    raise ModelChoiceError(f'Argument "model" {name!r}: no model bundle at {tried}')


def choose_models(names: Sequence[str | Path] | None, settings: Settings) -> dict[str, ScreenModel]:
    """One model per modality: the bundles ``names`` gives, else the settings' MR and US.

    Raises:
        ModelChoiceError: A name without a bundle, two bundles of one modality, or no
            bundle at all.
        CheckpointError: A bundle that does not load (hash, weights, model card).
    """
    if names:
        paths = [resolve_bundle_path(name, settings) for name in names]
    else:
        configured = (settings.models.mri_bundle, settings.models.echo_bundle)
        paths = [path for path in configured if path is not None]
    if not paths:
        raise ModelChoiceError(
            'Argument "model": none given and none configured (models.mri_bundle, '
            "models.echo_bundle)"
        )
    chosen: dict[str, ScreenModel] = {}
    for path in paths:
        model = describe_bundle(path)
        if model.modality in chosen:
            raise ModelChoiceError(
                f'Argument "model": two bundles for {model.modality}: '
                f"{chosen[model.modality].path} and {path}"
            )
        chosen[model.modality] = model
    return chosen


def describe_bundle(path: str | Path) -> ScreenModel:
    """Load the bundle at ``path`` (checking it) and describe it.

    Raises:
        CheckpointError: The bundle does not load.
    """
    from imaging.bundle import load_bundle

    return screen_model(load_bundle(path))


def screen_model(bundle: LoadedBundle) -> ScreenModel:
    """The :class:`ScreenModel` of a loaded bundle."""
    from serving.pipeline.classification import StudyClassifier

    names = StudyClassifier(bundle).class_names
    return ScreenModel(
        modality=bundle.modality,
        path=Path(bundle.path),
        name=bundle.name,
        version=bundle.version,
        sha256=str(bundle.metadata["mmdx"]["model_sha256"]),
        source=str(bundle.preprocessing.source),
        positive_label=names[1] if len(names) == 2 else None,
        preprocessing=bundle.preprocessing,
    )
