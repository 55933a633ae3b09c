"""``mmdx predict PATH --bundle DIR``: JSON result, heat-map files, exit status 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from imaging.bundle import save_bundle
from imaging.models.factory import create_model, load_model_config
from imaging.transforms.pipelines import MRIPreprocessing
from serving.cli import app


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_bundle(
        create_model("resnet10_3d_tiny"),
        load_model_config("resnet10_3d_tiny"),
        tmp_path / "bundle",
        preprocessing=MRIPreprocessing(spacing=(6.0, 6.0, 6.0), spatial_size=(32, 32, 32)),
        class_names=["CN", "AD"],
        version="2.0.0",
    )


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """A 48^3 head-sized volume at 4 mm: a bright ellipsoid in noise."""
    grid = np.mgrid[:48, :48, :48].astype(np.float32) - 24
    head = ((grid / np.array([18, 20, 16])[:, None, None, None]) ** 2).sum(axis=0) < 1
    data = head * 800.0 + np.random.default_rng(0).normal(0, 5, head.shape)
    path = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([4.0, 4.0, 4.0, 1.0])), path)
    return path


def test_predict_prints_json_and_writes_overlays(
    bundle: Path, volume: Path, tmp_path: Path
) -> None:
    out = tmp_path / "heatmaps"
    result = CliRunner().invoke(
        app, ["predict", str(volume), "--bundle", str(bundle), "--json", "--out", str(out)]
    )

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["model"] == {
        "name": "resnet10_3d_tiny",
        "version": "2.0.0",
        "architecture": "monai_resnet",
        "bundle": str(bundle),
    }
    assert summary["label"] in ("CN", "AD")
    assert sum(summary["probabilities"].values()) == pytest.approx(1.0)
    assert summary["input"] == {"path": str(volume), "kind": "nifti"}
    files = [Path(name) for name in summary["explanation"]["files"]]
    assert len(files) == 3 and all(path.parent == out and path.is_file() for path in files)
    assert "not for diagnostic use" in summary["disclaimer"]


def test_predict_without_explanation_in_plain_text(bundle: Path, volume: Path) -> None:
    result = CliRunner().invoke(
        app, ["predict", str(volume), "--bundle", str(bundle), "--no-explain"]
    )

    assert result.exit_code == 0, result.output
    assert "resnet10_3d_tiny 2.0.0" in result.stdout
    assert "label: " in result.stdout and "heat map" not in result.stdout
    assert "not for diagnostic use" in result.stdout


def test_unusable_input_and_bundle_exit_with_status_2(
    bundle: Path, volume: Path, tmp_path: Path
) -> None:
    video = tmp_path / "clip.avi"
    video.write_bytes(b"RIFF")
    result = CliRunner().invoke(app, ["predict", str(video), "--bundle", str(bundle), "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)
    assert error["error"] == "PredictionInputError"
    assert "cannot feed a MR model" in error["reason"]

    result = CliRunner().invoke(app, ["predict", str(volume), "--bundle", str(tmp_path)])
    assert result.exit_code == 2
    assert "CheckpointError" in result.output and "not a model bundle" in result.output
