"""Model bundles: weights and model card written, read back, verified, built from a run."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from imaging.bundle import MODEL_FILE, load_bundle, save_bundle
from imaging.errors import CheckpointError
from imaging.evaluation.report import classification_fold, evaluation_summary
from imaging.model_card import INTENDED_USE
from imaging.models.factory import create_model, load_model_config
from imaging.training.export import bundle_from_run
from imaging.training.recipe import load_recipe
from imaging.transforms.pipelines import EchoPreprocessing, MRIPreprocessing

MRI_PREPROCESSING = MRIPreprocessing(spacing=(4.0, 4.0, 4.0), spatial_size=(32, 32, 32))


def _summary() -> dict[str, object]:
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 10)
    logits = np.stack([np.zeros(20), y * 2.0 - 1.0 + rng.normal(0, 1, 20)], axis=1)
    fold = classification_fold("fold", y, logits, [f"P{i}" for i in range(20)], ["S01"] * 20)
    return evaluation_summary(
        [fold], split_kind="pooled random", task="classification", target="AD vs CN",
        n_resamples=50,
    )  # fmt: skip


@pytest.fixture
def mri_bundle(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = create_model("resnet10_3d_tiny")
    folder = save_bundle(
        model,
        load_model_config("resnet10_3d_tiny"),
        tmp_path / "bundle",
        preprocessing=MRI_PREPROCESSING,
        class_names=["CN", "AD"],
        metrics_summary=_summary(),
        training_data={"description": "synthetic", "sites": ["S01"], "n_studies": 20},
        temperature=1.7,
        version="1.2.3",
    )
    return folder, model


def test_bundle_round_trip_gives_the_same_outputs(mri_bundle: tuple[Path, torch.nn.Module]) -> None:
    folder, model = mri_bundle
    loaded = load_bundle(folder)

    x = torch.rand(2, 1, 32, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)
    assert not loaded.model.training
    assert (loaded.name, loaded.version, loaded.modality) == ("resnet10_3d_tiny", "1.2.3", "MR")
    assert loaded.class_names == ("CN", "AD")
    assert loaded.temperature == 1.7
    assert loaded.preprocessing == MRI_PREPROCESSING


def test_model_card_carries_format_use_data_metrics_and_hash(
    mri_bundle: tuple[Path, torch.nn.Module],
) -> None:
    folder, _ = mri_bundle
    card = json.loads((folder / "configs" / "metadata.json").read_text())

    assert card["intended_use"] == INTENDED_USE == "research; not for diagnostic use"
    assert "not for diagnostic use" in card["disclaimer"]
    image = card["network_data_format"]["inputs"]["image"]
    assert image["modality"] == "MR"
    assert image["spatial_shape"] == [1, 32, 32, 32]
    assert image["pixdim_mm"] == [4.0, 4.0, 4.0]
    assert image["value_range"] == [0.0, 1.0]
    assert card["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "CN", "1": "AD"}
    assert card["data_source"] == {"description": "synthetic", "sites": ["S01"], "n_studies": 20}
    evaluation = card["mmdx"]["evaluation"]
    assert evaluation["split_type"] == "pooled random"
    auc = evaluation["metrics"]["auc"]
    assert auc["low"] <= auc["value"] <= auc["high"] and auc["confidence"] == 0.95
    assert card["mmdx"]["calibration"]["temperature"] == 1.7
    assert card["mmdx"]["preprocessing"]["kind"] == "mri"
    digest = hashlib.sha256((folder / MODEL_FILE).read_bytes()).hexdigest()
    assert card["mmdx"]["model_sha256"] == digest


def test_a_changed_weights_file_is_refused(mri_bundle: tuple[Path, torch.nn.Module]) -> None:
    folder, _ = mri_bundle
    weights = folder / MODEL_FILE
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0xFF
    weights.write_bytes(bytes(data))

    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_bundle(folder)


def test_a_card_whose_config_does_not_fit_the_weights_is_refused(
    mri_bundle: tuple[Path, torch.nn.Module],
) -> None:
    folder, _ = mri_bundle
    path = folder / "configs" / "metadata.json"
    card = json.loads(path.read_text())
    card["mmdx"]["model_config"]["num_classes"] = 3
    card["mmdx"]["class_names"] = ["CN", "MCI", "AD"]
    path.write_text(json.dumps(card))

    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_bundle(folder)


def test_a_card_whose_input_shape_disagrees_is_refused(
    mri_bundle: tuple[Path, torch.nn.Module],
) -> None:
    folder, _ = mri_bundle
    path = folder / "configs" / "metadata.json"
    card = json.loads(path.read_text())
    card["network_data_format"]["inputs"]["image"]["spatial_shape"] = [1, 64, 64, 64]
    path.write_text(json.dumps(card))

    with pytest.raises(CheckpointError, match="input shape"):
        load_bundle(folder)


def test_a_folder_without_a_card_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a model bundle"):
        load_bundle(tmp_path)


def test_class_names_must_fit_the_outputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must name 2 classes"):
        save_bundle(
            create_model("resnet10_3d_tiny"),
            load_model_config("resnet10_3d_tiny"),
            tmp_path,
            preprocessing=MRI_PREPROCESSING,
            class_names=["CN"],
        )


def test_echo_bundle_describes_the_multitask_outputs(tmp_path: Path) -> None:
    folder = save_bundle(
        create_model("r2plus1d_tiny_echo"),
        load_model_config("r2plus1d_tiny_echo"),
        tmp_path,
        preprocessing=EchoPreprocessing(spatial_size=32, clip_length=8, period=2),
    )
    card = json.loads((folder / "configs" / "metadata.json").read_text())
    outputs = card["network_data_format"]["outputs"]

    assert card["network_data_format"]["inputs"]["image"]["spatial_shape"] == [1, 8, 32, 32]
    assert outputs["ef_percent"] == {"column": 0, "type": "regression", "units": "percent"}
    assert outputs["reduced_ef_logit"]["classes"] == ["normal_ef", "reduced_ef"]
    assert load_bundle(folder).temperature == 1.0


def test_bundle_from_run_takes_best_checkpoint_recipe_and_training_sites(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    recipe = load_recipe("mri_ad_tiny")
    (run / "recipe.json").write_text(json.dumps(recipe.to_json_dict()))
    (run / "split.json").write_text(
        json.dumps({"name": "pooled", "kind": "pooled random", "train": ["1", "2"], "val": ["3"]})
    )
    torch.manual_seed(1)
    model = create_model(recipe.model)
    torch.save({"format": "mmdx-training-checkpoint", "model": model.state_dict()}, run / "best.pt")
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_instance_uid", "patient_id", "site_id"])
        writer.writerows([["1", "P1", "S01"], ["2", "P2", "S02"], ["3", "P3", "S03"]])

    folder = bundle_from_run(run, tmp_path / "bundle", manifest=manifest, temperature=2.0)
    loaded = load_bundle(folder)

    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, rtol=0, atol=0)
    assert loaded.name == "mri_ad_tiny"
    assert loaded.class_names == ("CN", "AD")
    assert loaded.preprocessing.spatial_size == (48, 48, 48)
    source = loaded.metadata["data_source"]
    assert (source["n_studies"], source["sites"], source["n_patients"]) == (2, ["S01", "S02"], 2)
