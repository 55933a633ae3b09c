"""Run a model over a data loader and collect its outputs, targets and identifiers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from imaging.transforms.pipelines import ID_KEYS


@dataclass(frozen=True)
class Predictions:
    """What a model said about each item of a dataset, in loader order.

    Attributes:
        outputs: Raw outputs ``(N, K)`` float32 (logits, values or EF + reduced-EF logit).
        targets: The items' ``target`` ``(N,)`` float64 (class index or value); empty
            when the items carry none.
        reduced_ef: The items' ``reduced_ef`` ``(N,)`` (EF multi-task), else None.
        ids: ``study_instance_uid``, ``patient_id``, ``site_id`` per item, where present.
    """

    outputs: np.ndarray
    targets: np.ndarray
    reduced_ef: np.ndarray | None = None
    ids: dict[str, list[str]] = field(default_factory=dict)


def predict_dataset(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    *,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> Predictions:
    """Outputs of ``model`` for every batch of ``loader``, in eval mode, without autograd.

    Args:
        model: Takes ``batch["image"]``.
        loader: Batches of dataset items (``image``, optional ``target``, ``reduced_ef``, ids).
        device: Where to run; default the model's device.
        autocast_dtype: Run under ``torch.autocast`` with this dtype (None: full precision).
        channels_last: Feed 5-D inputs in ``channels_last_3d`` memory format.

    The model's training mode is restored afterwards.
    """
    device = torch.device(device) if device is not None else _device_of(model)
    was_training = model.training
    model.eval()
    outputs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    reduced: list[np.ndarray] = []
    ids: dict[str, list[str]] = {}
    try:
        with torch.inference_mode():
            for batch in loader:
                image = batch["image"].to(device, non_blocking=True)
                if channels_last and image.ndim == 5:
                    image = image.contiguous(memory_format=torch.channels_last_3d)
                with torch.autocast(
                    device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
                ):
                    output = model(image)
                outputs.append(output.float().reshape(len(image), -1).cpu().numpy())
                if "target" in batch:
                    targets.append(np.asarray(batch["target"], dtype=np.float64))
                if "reduced_ef" in batch:
                    reduced.append(np.asarray(batch["reduced_ef"], dtype=np.float64))
                for key in ID_KEYS:
                    if key in batch:
                        ids.setdefault(key, []).extend(str(value) for value in batch[key])
    finally:
        model.train(was_training)
    return Predictions(
        outputs=np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32),
        targets=np.concatenate(targets) if targets else np.zeros(0),
        reduced_ef=np.concatenate(reduced) if reduced else None,
        ids=ids,
    )


def predictions_to_dict(predictions: Predictions) -> dict[str, Any]:
    """A JSON-serialisable form of :class:`Predictions` (inverse: :func:`predictions_from_dict`)."""
    return {
        "outputs": predictions.outputs.tolist(),
        "targets": predictions.targets.tolist(),
        "reduced_ef": None if predictions.reduced_ef is None else predictions.reduced_ef.tolist(),
        **{key: list(predictions.ids.get(key, [])) for key in ID_KEYS},
    }


def predictions_from_dict(data: Mapping[str, Any]) -> Predictions:
    """:class:`Predictions` back from :func:`predictions_to_dict`'s form."""
    outputs = np.asarray(data["outputs"], dtype=np.float32)
    return Predictions(
        outputs=outputs.reshape(len(outputs), -1),
        targets=np.asarray(data["targets"], dtype=np.float64),
        reduced_ef=None
        if data.get("reduced_ef") is None
        else np.asarray(data["reduced_ef"], dtype=np.float64),
        ids={key: list(data[key]) for key in ID_KEYS},
    )


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
