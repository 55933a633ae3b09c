"""Reading checkpoint files and copying a state dict into a module, with every check.

Files are read with ``torch.load(..., weights_only=True)``: tensors and plain
containers only, never arbitrary pickled objects. A state dict is copied only when its
keys and shapes fit the module exactly; otherwise :class:`CheckpointError` lists every
missing key, every unexpected key and every shape that differs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from imaging.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from torch import nn

StateDict = dict[str, "torch.Tensor"]

# Checkpoints wrap the state dict under one of these keys (MedicalNet: "state_dict"
# next to "epoch" and "optimizer"; training loops often use "model").
_WRAPPER_KEYS = ("state_dict", "model")
# BatchNorm's step counter: PyTorch < 0.4.1 checkpoints (MedicalNet's era) lack it, and
# it affects nothing unless BatchNorm runs with momentum=None, so its absence is allowed.
_OPTIONAL_SUFFIX = ".num_batches_tracked"
# How many keys an error lists before it gives a count of the rest.
_LISTED = 12


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise unless the file's SHA-256 equals ``expected`` (or starts with it, for a prefix).

    A prefix is what some publishers give (torchvision's file names carry the first 8
    hex digits); a full 64-digit hash is the strong check.

    Raises:
        CheckpointError: The hashes differ; the message names file, expected and actual.
    """
    actual = sha256_of(path)
    if not actual.startswith(expected.lower()):
        raise CheckpointError(path, f"sha256 mismatch: expected {expected}, actual {actual}")


def read_checkpoint(path: Path) -> StateDict:
    """The state dict stored in ``path`` (unwrapped from ``state_dict``/``model`` if needed).

    Raises:
        CheckpointError: No such file, not a PyTorch file, a file that needs more than
            tensors and containers to load, or no state dict inside.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError...
        raise CheckpointError(path, f"not a readable PyTorch checkpoint: {exc}") from exc
    return _unwrap(loaded, path)


def _unwrap(loaded: object, path: Path) -> StateDict:
    import torch

    if isinstance(loaded, Mapping):
        if loaded and all(isinstance(value, torch.Tensor) for value in loaded.values()):
            return {str(key): value for key, value in loaded.items()}
        for key in _WRAPPER_KEYS:
            if isinstance(loaded.get(key), Mapping):
                return _unwrap(loaded[key], path)
        listed = sorted(str(key) for key in loaded)[:_LISTED]
        raise CheckpointError(path, f"holds no state dict of tensors (top-level keys {listed})")
    raise CheckpointError(path, f"holds a {type(loaded).__name__}, not a state dict")


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """``state`` with ``prefix`` removed from every key that starts with it."""
    return {
        (key[len(prefix) :] if key.startswith(prefix) else key): value
        for key, value in state.items()
    }


def copy_state(module: nn.Module, state: Mapping[str, torch.Tensor], source: str | Path) -> int:
    """Copy ``state`` into ``module`` when every key and shape fits; return tensors copied.

    Raises:
        CheckpointError: Keys missing from ``state``, keys ``module`` does not have, or
            shapes that differ; the message lists each (the first few, then a count).
    """
    expected = module.state_dict()
    missing = [key for key in expected if key not in state and not key.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} {tuple(state[key].shape)} != model {tuple(expected[key].shape)}"
        for key in state
        if key in expected and state[key].shape != expected[key].shape
    ]
    problems = [
        _listing("missing keys", missing),
        _listing("unexpected keys", unexpected),
        _listing("shape mismatches", mismatched),
    ]
    reason = "; ".join(problem for problem in problems if problem)
    if reason:
        raise CheckpointError(source, f"does not fit {type(module).__name__}: {reason}")
    module.load_state_dict(dict(state), strict=False)
    return len(state)


def _listing(what: str, items: list[str]) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:_LISTED])
    more = f" and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return f"{len(items)} {what} ({shown}{more})"
