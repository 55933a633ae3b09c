"""Training losses and per-epoch validation metrics for each task of a recipe.

- classification: cross-entropy on the logits; AUC (of the last class, or macro
  one-vs-rest), accuracy and balanced accuracy.
- regression: MSE or L1 on ``(prediction - target) / target_scale``; MAE and RMSE in the
  target's units.
- ef_multitask: output 0 is EF in percent, output 1 the reduced-EF logit; the EF loss as
  for regression plus ``reduced_ef_weight`` times binary cross-entropy; MAE and RMSE of
  EF, AUC of reduced EF.

These are the quick figures that steer early stopping; the evaluation package computes
the reported ones, with confidence intervals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from imaging.training.predictions import Predictions
from imaging.training.recipe import TrainingRecipe


def compute_loss(
    outputs: torch.Tensor, batch: Mapping[str, Any], recipe: TrainingRecipe
) -> torch.Tensor:
    """The recipe's task loss for a batch of model outputs (float32, mean over the batch)."""
    outputs = outputs.float()
    target = torch.as_tensor(batch["target"], device=outputs.device)
    if recipe.task == "classification":
        return functional.cross_entropy(outputs, target.long())
    loss = _regression_loss(outputs[:, 0], target.float(), recipe)
    if recipe.task == "ef_multitask":
        reduced = torch.as_tensor(batch["reduced_ef"], device=outputs.device).float()
        bce = functional.binary_cross_entropy_with_logits(outputs[:, 1], reduced)
        loss = loss + recipe.reduced_ef_weight * bce
    return loss


def _regression_loss(
    prediction: torch.Tensor, target: torch.Tensor, recipe: TrainingRecipe
) -> torch.Tensor:
    error = (prediction - target) / recipe.target_scale
    return error.abs().mean() if recipe.regression_loss == "l1" else error.square().mean()


def validation_metrics(predictions: Predictions, recipe: TrainingRecipe) -> dict[str, float]:
    """``val_*`` metrics (``recipe_module.TASK_METRICS``) of a validation pass; NaN if undefined."""
    outputs = predictions.outputs
    if len(outputs) == 0:
        return {}
    batch: dict[str, Any] = {"target": torch.from_numpy(predictions.targets)}
    if predictions.reduced_ef is not None:
        batch["reduced_ef"] = torch.from_numpy(predictions.reduced_ef)
    metrics = {"val_loss": float(compute_loss(torch.from_numpy(outputs), batch, recipe))}
    target = predictions.targets
    if recipe.task == "classification":
        probabilities = torch.softmax(torch.from_numpy(outputs), dim=1).numpy()
        predicted = probabilities.argmax(axis=1)
        metrics["val_auc"] = _auc(target.astype(int), probabilities)
        metrics["val_accuracy"] = float(np.mean(predicted == target))
        metrics["val_balanced_accuracy"] = _balanced_accuracy(target.astype(int), predicted)
        return metrics
    error = outputs[:, 0].astype(np.float64) - target
    metrics["val_mae"] = float(np.mean(np.abs(error)))
    metrics["val_rmse"] = float(np.sqrt(np.mean(error**2)))
    if recipe.task == "ef_multitask" and predictions.reduced_ef is not None:
        logit = outputs[:, 1].astype(np.float64)
        metrics["val_auc"] = _auc(predictions.reduced_ef.astype(int), logit)
    return metrics


def _auc(target: np.ndarray, scores: np.ndarray) -> float:
    """Binary AUC of the last column (or a 1-D score), macro one-vs-rest for more classes."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(target)) < 2:
        return math.nan  # one class only: AUC is undefined
    if scores.ndim == 1 or scores.shape[1] == 2:
        return float(roc_auc_score(target, scores if scores.ndim == 1 else scores[:, 1]))
    try:
        return float(roc_auc_score(target, scores, multi_class="ovr", average="macro"))
    except ValueError:  # a class absent from the validation part
        return math.nan


def _balanced_accuracy(target: np.ndarray, predicted: np.ndarray) -> float:
    recalls = [np.mean(predicted[target == label] == label) for label in np.unique(target)]
    return float(np.mean(recalls)) if recalls else math.nan


def is_improvement(value: float, best: float | None, *, higher_is_better: bool) -> bool:
    """Whether ``value`` beats ``best``; a NaN never does, anything beats no best or NaN."""
    if math.isnan(value):
        return best is None
    if best is None or math.isnan(best):
        return True
    return value > best if higher_is_better else value < best
