"""The weights registry (``configs/weights.yaml``) and loading pretrained weights into a model.

An entry names a local file, its SHA-256, the model configuration it fits, its key
layout (``format``) and the input normalisation it was trained with. Nothing is ever
downloaded: a user places published checkpoints at the listed paths. Loading verifies
the hash of registry files, remaps keys by format and copies the backbone only when
every key and shape fits (see :mod:`imaging.models.checkpoints`).

Formats:
    ``medicalnet``: Tencent MedicalNet 3D ResNets (``module.`` prefix, ``conv_seg`` decoder).
    ``kinetics``: torchvision video ResNets trained on Kinetics-400 (``fc`` classifier).
    ``mmdx``: this project's own state dicts (``backbone.*`` and ``head.*``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from imaging.config_files import REPOSITORY_CONFIGS, load_yaml_model
from imaging.errors import CheckpointError
from imaging.models.checkpoints import (
    StateDict,
    copy_state,
    read_checkpoint,
    strip_prefix,
    verify_sha256,
)

if TYPE_CHECKING:
    from imaging.models.networks import BackboneHeadModel

WeightsFormat = Literal["medicalnet", "kinetics", "mmdx"]
DEFAULT_WEIGHTS_FILE = REPOSITORY_CONFIGS / "weights.yaml"
_HEX = re.compile(r"[0-9a-f]{8,64}")


class Normalisation(BaseModel):
    """The input scaling the weights were trained with (per channel mean/std after scaling)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: int = Field(ge=1)
    value_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


class WeightsEntry(BaseModel):
    """One checkpoint: where it lies, its hash, what it fits, how its keys are laid out.

    ``sha256`` must be written for every entry. ``null`` is allowed only to list a
    published checkpoint whose hash has not been pinned yet: such an entry refuses to
    load until the user records the hash of their copy (``sha256sum FILE``). A hash
    shorter than 64 digits is a published prefix (torchvision names files by one).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    sha256: str | None
    architecture: str
    format: WeightsFormat
    input: Normalisation
    source: str = ""
    description: str = ""

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not _HEX.fullmatch(value.lower()):
            raise ValueError("sha256 must be 8 to 64 hex digits (or null while unpinned)")
        return None if value is None else value.lower()


class WeightsFile(BaseModel):
    """``configs/weights.yaml``: a root folder (relative to the file) and the entries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Path = Path(".")
    weights: dict[str, WeightsEntry] = Field(default_factory=dict)


class WeightsRegistry:
    """Checkpoint entries by key, with paths resolved against one root folder."""

    def __init__(self, entries: dict[str, WeightsEntry], root: Path) -> None:
        self._entries = dict(entries)
        self.root = Path(root)

    @classmethod
    def load(cls, path: Path | None = None) -> WeightsRegistry:
        """The registry in ``path`` (default: the repository's ``configs/weights.yaml``).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: Not valid YAML or not a valid registry; the message names the field.
        """
        path = Path(path) if path is not None else DEFAULT_WEIGHTS_FILE
        data = load_yaml_model(path, WeightsFile, what="weights registry")
        return cls(data.weights, (path.parent / data.root).resolve())

    def keys(self) -> list[str]:
        """The registry keys, sorted."""
        return sorted(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def entry(self, key: str) -> WeightsEntry:
        """The entry for ``key``.

        Raises:
            KeyError: No such key; the message lists the known keys.
        """
        if key not in self._entries:
            raise KeyError(f'Unknown weights key "{key}"; known keys: {self.keys()}')
        return self._entries[key]

    def path(self, key: str) -> Path:
        """The file of ``key``, resolved against the registry's root."""
        return self.root / self.entry(key).path

    def verified_path(self, key: str) -> Path:
        """The file of ``key`` after checking that it exists and its SHA-256 matches.

        Raises:
            CheckpointError: Missing file, unpinned hash, or a hash mismatch.
        """
        entry, path = self.entry(key), self.path(key)
        if not path.is_file():
            where = f" (published at {entry.source})" if entry.source else ""
            raise CheckpointError(path, f'weights "{key}" not found; place the file here{where}')
        if entry.sha256 is None:
            raise CheckpointError(
                path,
                f'weights "{key}" have no sha256 in the registry; record the hash of your '
                "copy (sha256sum FILE) before loading it",
            )
        verify_sha256(path, entry.sha256)
        return path


@dataclass(frozen=True)
class LoadedWeights:
    """What :func:`load_pretrained` did: file, layout, tensors copied and keys dropped."""

    path: Path
    format: WeightsFormat
    tensors: int
    dropped: tuple[str, ...]
    head_loaded: bool


def load_pretrained(
    model: BackboneHeadModel,
    pretrained: str | Path,
    *,
    registry: WeightsRegistry | None = None,
    architecture: str | None = None,
    format: WeightsFormat | None = None,
    include_head: bool = False,
) -> LoadedWeights:
    """Load a registry key's or a file's weights into ``model.backbone`` (and its head).

    A string that is a registry key takes that entry (hash verified, ``format`` and
    ``architecture`` from the entry); anything else is a file path whose format is
    ``format`` or, when None, detected from its keys. The head stays as initialised
    unless ``include_head`` (``mmdx`` format only): pretrained heads answer another task.

    Args:
        model: A network from :func:`imaging.models.factory.create_model`.
        pretrained: Registry key or checkpoint path.
        registry: The registry; default ``configs/weights.yaml``, read only for a key.
        architecture: The model configuration name, checked against the entry's.
        format: The file's key layout; None detects it.
        include_head: Also load ``head.*`` (restoring a trained mmdx model).

    Raises:
        CheckpointError: Unknown key or missing file, hash mismatch, wrong architecture,
            unreadable file, or keys and shapes that do not fit.
    """
    path, format = _resolve(pretrained, registry, architecture, format)
    state = read_checkpoint(path)
    if format is None:
        format = detect_format(state, path)
    if include_head and format != "mmdx":
        raise CheckpointError(path, f"a {format} checkpoint has no head for this model")
    backbone_state, head_state, dropped = _split(state, format)
    tensors = copy_state(model.backbone, backbone_state, path)
    if include_head:
        tensors += copy_state(model.head, head_state, path)
    else:
        dropped = dropped + sorted(f"head.{key}" for key in head_state)
    return LoadedWeights(path, format, tensors, tuple(dropped), include_head)


def detect_format(state: StateDict, source: str | Path) -> WeightsFormat:
    """The layout of ``state``, from its key names.

    Raises:
        CheckpointError: The keys match no known layout.
    """
    keys = list(strip_prefix(state, "module."))
    if any(key.startswith("backbone.") for key in keys):
        return "mmdx"
    if any(key.startswith("stem.") for key in keys):
        return "kinetics"
    if "conv1.weight" in keys:
        return "medicalnet"
    raise CheckpointError(
        source, f"key layout is none of medicalnet, kinetics, mmdx (first keys {keys[:5]})"
    )


def _resolve(
    pretrained: str | Path,
    registry: WeightsRegistry | None,
    architecture: str | None,
    format: WeightsFormat | None,
) -> tuple[Path, WeightsFormat | None]:
    if isinstance(pretrained, str) and not _looks_like_path(pretrained):
        registry = registry if registry is not None else WeightsRegistry.load()
        if pretrained not in registry:
            raise CheckpointError(
                pretrained,
                f"neither a weights registry key (known: {registry.keys()}) nor a file path",
            )
        entry = registry.entry(pretrained)
        if architecture is not None and entry.architecture != architecture:
            raise CheckpointError(
                registry.path(pretrained),
                f'weights "{pretrained}" are for "{entry.architecture}", not "{architecture}"',
            )
        return registry.verified_path(pretrained), entry.format
    return Path(pretrained), format


def _looks_like_path(value: str) -> bool:
    return "/" in value or "\\" in value or value.endswith((".pt", ".pth", ".bin", ".ckpt"))


def _split(state: StateDict, format: WeightsFormat) -> tuple[StateDict, StateDict, list[str]]:
    from imaging.models.kinetics import remap_kinetics
    from imaging.models.medicalnet import remap_medicalnet

    if format == "medicalnet":
        backbone, dropped = remap_medicalnet(state)
        return backbone, {}, dropped
    if format == "kinetics":
        backbone, dropped = remap_kinetics(state)
        return backbone, {}, dropped
    stripped = strip_prefix(state, "module.")
    # Keys outside backbone.* and head.* stay in the backbone part, so the key check reports them.
    backbone = {
        key.removeprefix("backbone."): value
        for key, value in stripped.items()
        if not key.startswith("head.")
    }
    head = {
        key.removeprefix("head."): value
        for key, value in stripped.items()
        if key.startswith("head.")
    }
    return backbone, head, []
