"""Datasets from an archive, ``fit``: checkpoints, logs, resume, freezing, early stopping."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
import torch
from torch import nn

from imaging.evaluation.splits import Split
from imaging.training.data import (
    create_dataset,
    read_manifest,
    resolve_preprocessing,
    training_records,
)
from imaging.training.loop import fit
from imaging.training.predictions import predict_dataset
from imaging.training.recipe import TrainingRecipe
from imaging.training.run import prepare_run, train_from_recipe

# MR rows of the archive (conftest): patients 0 CN, 1 CN, 2 AD x2, 3 CN x2, 4 AD, 5 AD.
# Validation holds one CN and one AD patient, so its AUC is defined.
SPLIT = Split(name="test", kind="pooled random", train=(0, 2, 3, 4, 5, 7), val=(1, 6), test=())
ONE_CLASS_VAL = Split(
    name="one class", kind="pooled random", train=(0, 1, 2, 3, 4, 5), val=(6, 7), test=()
)


def _recipe(**changes: object) -> TrainingRecipe:
    settings: dict[str, object] = {
        "name": "tiny",
        "model": "resnet10_3d_tiny",
        "modality": "MR",
        "task": "classification",
        "target": "label",
        "class_names": ["CN", "AD"],
        "mri": {"spacing": [8.0, 8.0, 8.0], "spatial_size": [24, 24, 24]},
        "epochs": 2,
        "batch_size": 3,
        "seed": 3,
        **changes,
    }
    return TrainingRecipe.model_validate(settings)


def test_records_and_datasets_from_the_manifest(archive: Path) -> None:
    recipe = _recipe(
        mri={"source": "dicom", "spacing": [8.0, 8.0, 8.0], "spatial_size": [24, 24, 24]}
    )
    rows = read_manifest(archive / "manifest.csv", "MR")
    records = training_records(rows, archive, recipe)
    assert [r["target"] for r in records] == [0, 0, 1, 1, 0, 0, 1, 1]
    assert all(Path(r["image"]).is_dir() for r in records)  # DICOM series folders
    dataset = create_dataset(records[:2], resolve_preprocessing(recipe), train=False, cache="none")
    item = dataset[0]
    assert tuple(item["image"].shape) == (1, 24, 24, 24)
    assert item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert set(item) == {"image", "target", "study_instance_uid", "patient_id", "site_id"}


def test_echo_records_and_disk_cache(archive: Path, tmp_path: Path) -> None:
    recipe = TrainingRecipe(
        name="echo", model="r2plus1d_tiny_echo", modality="US", task="ef_multitask",
        target="ef", epochs=1, echo={"source": "dicom", "spatial_size": 32, "clip_length": 8},
    )  # fmt: skip
    records = training_records(read_manifest(archive / "manifest.csv", "US"), archive, recipe)
    assert [(r["target"], r["reduced_ef"]) for r in records] == [(32.79, 1.0), (61.83, 0.0)]
    preprocessing = resolve_preprocessing(recipe)
    dataset = create_dataset(
        records, preprocessing, train=True, cache="disk", cache_dir=tmp_path / "cache"
    )
    item = dataset[1]
    assert tuple(item["image"].shape) == (1, 8, 32, 32)
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 1  # decoded once, kept on disk


def test_fit_writes_checkpoints_and_logs_and_resumes_exactly(archive: Path, tmp_path: Path) -> None:
    manifest = archive / "manifest.csv"
    full = train_from_recipe(
        _recipe(), manifest=manifest, split=SPLIT, out_dir=tmp_path / "full", progress=False
    )
    assert full.epochs_completed == 2 and not full.stopped_early
    assert [e.epoch for e in full.history] == [1, 2]
    assert set(full.history[0].metrics) == {
        "val_loss", "val_auc", "val_accuracy", "val_balanced_accuracy"
    }  # fmt: skip
    for name in ("last.pt", "best.pt", "recipe.json", "split.json"):
        assert (tmp_path / "full" / name).is_file()
    assert list((tmp_path / "full" / "tensorboard").glob("events.out.tfevents.*"))
    last = torch.load(full.last_checkpoint, weights_only=True)
    assert last["epoch"] == 2 and last["best_epoch"] == full.best_epoch

    # Interrupted after one epoch, then resumed to two: the same weights, bit for bit.
    first = train_from_recipe(
        _recipe(epochs=1), manifest=manifest, split=SPLIT, out_dir=tmp_path / "resumed",
        progress=False,
    )  # fmt: skip
    assert first.epochs_completed == 1
    resumed = train_from_recipe(
        _recipe(), manifest=manifest, split=SPLIT, out_dir=tmp_path / "resumed", progress=False
    )
    assert [e.epoch for e in resumed.history] == [1, 2]
    expected = torch.load(full.last_checkpoint, weights_only=True)["model"]
    actual = torch.load(resumed.last_checkpoint, weights_only=True)["model"]
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_frozen_epochs_leave_the_backbone_unchanged(archive: Path, tmp_path: Path) -> None:
    run = prepare_run(
        _recipe(freeze_backbone_epochs=1, lr_backbone=1e-2, lr_head=1e-2),
        manifest=archive / "manifest.csv", split=SPLIT, out_dir=tmp_path,
    )  # fmt: skip
    model = run.model
    backbone, head = cast(nn.Module, model.backbone), cast(nn.Module, model.head)
    backbone0 = {k: v.clone() for k, v in backbone.state_dict().items()}
    head0 = {k: v.clone() for k, v in head.state_dict().items()}
    snapshots: list[dict[str, torch.Tensor]] = []

    def on_epoch(_: object) -> None:
        snapshots.append({k: v.clone() for k, v in backbone.state_dict().items()})

    result = fit(model, run.train_loader, run.val_loader, run.recipe, out_dir=tmp_path,
                 on_epoch=on_epoch, progress=False)  # fmt: skip
    assert [e.backbone_frozen for e in result.history] == [True, False]
    # Epoch 1: weights and BatchNorm statistics of the backbone untouched, head trained.
    assert all(torch.equal(snapshots[0][k], backbone0[k]) for k in backbone0)
    assert not torch.equal(head.state_dict()["weight"], head0["weight"])
    # Epoch 2: the backbone trains.
    assert not torch.equal(snapshots[1]["conv1.weight"], backbone0["conv1.weight"])


def test_early_stopping_stops_and_stays_stopped(archive: Path, tmp_path: Path) -> None:
    # A one-class validation part has no AUC, so the metric never improves after epoch 1.
    recipe = _recipe(epochs=6, early_stopping_patience=1)
    result = train_from_recipe(
        recipe, manifest=archive / "manifest.csv", split=ONE_CLASS_VAL, out_dir=tmp_path,
        progress=False,
    )  # fmt: skip
    assert result.stopped_early
    assert result.epochs_completed == 2 and result.best_epoch == 1
    again = train_from_recipe(
        recipe, manifest=archive / "manifest.csv", split=ONE_CLASS_VAL, out_dir=tmp_path,
        progress=False,
    )  # fmt: skip
    assert again.epochs_completed == 2  # resuming a stopped run trains no further


def test_predict_dataset_returns_outputs_targets_and_ids(archive: Path, tmp_path: Path) -> None:
    run = prepare_run(_recipe(), manifest=archive / "manifest.csv", split=SPLIT, out_dir=tmp_path)
    run.model.train()
    assert run.val_loader is not None
    predictions = predict_dataset(run.model, run.val_loader)
    assert predictions.outputs.shape == (2, 2)
    assert predictions.targets.tolist() == [0.0, 1.0]
    assert predictions.ids["patient_id"] == ["MMDX000001", "MMDX000004"]
    assert run.model.training  # mode restored


def test_resume_refuses_a_checkpoint_of_another_model(archive: Path, tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"")
    torch.save({"format": "mmdx-training-checkpoint", "model_name": "other"}, tmp_path / "last.pt")
    run = prepare_run(_recipe(), manifest=archive / "manifest.csv", split=SPLIT, out_dir=tmp_path)
    with pytest.raises(ValueError, match="holds model 'other'"):
        fit(
            run.model,
            run.train_loader,
            run.val_loader,
            run.recipe,
            out_dir=tmp_path,
            progress=False,
        )
