"""``predict_path``: every input kind, calibrated output, eval + inference mode, typed refusals."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from imaging.bundle import LoadedBundle, load_bundle, save_bundle
from imaging.errors import NiftiReadError, PredictionInputError
from imaging.models.factory import create_model, load_model_config
from imaging.predict import predict_path
from imaging.synthetic.archive import ArchiveSpec, generate_archive
from imaging.transforms.pipelines import EchoPreprocessing, MRIPreprocessing
from imaging.viewer_file import load_viewer


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Two MR studies and one echo study; the manifest rows by modality, paths absolute."""
    out = tmp_path_factory.mktemp("predict-archive")
    generate_archive(ArchiveSpec(out_dir=out, mri_studies=2, echo_studies=1, sites=1, seed=3))
    with (out / "manifest.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    found: dict[str, dict[str, str]] = {}
    for row in rows:
        found.setdefault(row["modality"], row)
        for column in ("dicom_path", "nifti_path", "video_path"):
            if row[column]:
                row[column] = str(out / row[column])
    return found


@pytest.fixture(scope="module")
def mri_bundle(tmp_path_factory: pytest.TempPathFactory) -> LoadedBundle:
    torch.manual_seed(0)
    folder = save_bundle(
        create_model("resnet10_3d_tiny"),
        load_model_config("resnet10_3d_tiny"),
        tmp_path_factory.mktemp("mri-bundle"),
        preprocessing=MRIPreprocessing(spacing=(6.0, 6.0, 6.0), spatial_size=(32, 32, 32)),
        class_names=["CN", "AD"],
        temperature=2.0,
        version="0.3.0",
    )
    return load_bundle(folder)


@pytest.fixture(scope="module")
def echo_bundle(tmp_path_factory: pytest.TempPathFactory) -> LoadedBundle:
    torch.manual_seed(0)
    folder = save_bundle(
        create_model("r2plus1d_tiny_echo"),
        load_model_config("r2plus1d_tiny_echo"),
        tmp_path_factory.mktemp("echo-bundle"),
        preprocessing=EchoPreprocessing(spatial_size=32, clip_length=8, period=2),
    )
    return load_bundle(folder)


def _series_folder(study_folder: str) -> Path:
    return next(path.parent for path in Path(study_folder).rglob("*.dcm"))


def test_mri_study_series_and_nifti_give_one_answer(
    archive: dict[str, dict[str, str]], mri_bundle: LoadedBundle, tmp_path: Path
) -> None:
    row = archive["MR"]
    study = predict_path(row["dicom_path"], mri_bundle, out_dir=tmp_path)
    series = predict_path(_series_folder(row["dicom_path"]), mri_bundle, explain=False)
    nifti = predict_path(row["nifti_path"], mri_bundle, explain=False)

    assert json.loads(json.dumps(study)) == study
    assert study["disclaimer"] == "Research software; not for diagnostic use."
    assert study["model"]["name"] == "resnet10_3d_tiny" and study["model"]["version"] == "0.3.0"
    assert study["input"]["kind"] == "dicom_study"
    assert study["input"]["study_instance_uid"] == row["study_instance_uid"]
    assert series["input"]["kind"] == "dicom_series"
    assert series["input"]["series_instance_uid"] == study["input"]["series_instance_uid"]
    assert nifti["input"]["kind"] == "nifti"
    assert series["raw_outputs"] == study["raw_outputs"]
    np.testing.assert_allclose(nifti["raw_outputs"], study["raw_outputs"], atol=1e-4)

    logits = np.asarray(study["raw_outputs"]) / 2.0  # the bundle's temperature
    expected = np.exp(logits) / np.exp(logits).sum()
    assert study["probabilities"] == pytest.approx({"CN": expected[0], "AD": expected[1]})
    assert study["label"] == ("AD" if expected[1] > expected[0] else "CN")
    assert study["probability"] == pytest.approx(expected.max())

    explanation = study["explanation"]
    assert explanation["method"] == "gradcam" and explanation["shape"] == [32, 32, 32]
    assert sorted(Path(f).name.rsplit("_", 1)[1] for f in explanation["files"]) == [
        "axial.png",
        "coronal.png",
        "sagittal.png",
    ]
    assert all(Path(f).is_file() for f in explanation["files"])
    viewer = load_viewer(explanation["viewer"])
    assert Path(explanation["viewer"]).is_absolute()
    assert viewer.image.shape == viewer.heat.shape == (32, 32, 32)
    assert list(viewer.peak) == explanation["peak"] and viewer.frame_interval_ms is None
    assert series["explanation"] is None
    assert set(study["timing_ms"]) == {"decode", "preprocess", "inference", "explain", "total"}


def test_the_model_runs_in_eval_and_inference_mode(
    archive: dict[str, dict[str, str]], mri_bundle: LoadedBundle
) -> None:
    seen: list[tuple[bool, bool]] = []
    model = mri_bundle.model
    model.train()
    handle = model.register_forward_hook(
        lambda module, _i, _o: seen.append((module.training, torch.is_inference_mode_enabled()))
    )
    try:
        predict_path(archive["MR"]["nifti_path"], mri_bundle, explain=False)
    finally:
        handle.remove()
    assert seen == [(False, True)]


def test_echo_video_and_dicom_give_ef_and_reduced_ef_probability(
    archive: dict[str, dict[str, str]], echo_bundle: LoadedBundle, tmp_path: Path
) -> None:
    row = archive["US"]
    video = predict_path(row["video_path"], echo_bundle, out_dir=tmp_path)
    dicom_file = next(Path(row["dicom_path"]).rglob("*.dcm"))
    dicom = predict_path(dicom_file, echo_bundle, explain=False)

    for result in (video, dicom):
        assert result["task"] == "ef_multitask"
        assert result["ef_percent"] == pytest.approx(result["raw_outputs"][0])
        reduced = 1.0 / (1.0 + np.exp(-result["raw_outputs"][1]))
        assert result["probabilities"]["reduced_ef"] == pytest.approx(reduced)
        assert result["label"] in ("normal_ef", "reduced_ef")
    assert video["input"]["kind"] == "video"
    assert dicom["input"]["kind"] == "dicom_file"
    assert dicom["input"]["study_instance_uid"] == row["study_instance_uid"]
    assert dicom["input"]["sop_instance_uid"]
    assert video["explanation"]["target"] == "reduced_ef"
    assert video["explanation"]["shape"] == [8, 32, 32]
    assert len(video["explanation"]["files"]) >= 4
    viewer = load_viewer(video["explanation"]["viewer"])
    assert viewer.image.shape == (8, 32, 32) and viewer.modality == "US"
    preprocessing = echo_bundle.preprocessing
    assert isinstance(preprocessing, EchoPreprocessing) and preprocessing.period
    assert viewer.frame_interval_ms == pytest.approx(
        1000.0 * preprocessing.period / video["input"]["frame_rate_hz"], abs=1e-3
    )


def test_inputs_that_cannot_feed_the_model_raise_typed_errors(
    archive: dict[str, dict[str, str]],
    mri_bundle: LoadedBundle,
    echo_bundle: LoadedBundle,
    tmp_path: Path,
) -> None:
    with pytest.raises(PredictionInputError, match="no such file"):
        predict_path(tmp_path / "missing.nii.gz", mri_bundle)
    with pytest.raises(PredictionInputError, match="cannot feed a US model"):
        predict_path(archive["MR"]["nifti_path"], echo_bundle)
    with pytest.raises(PredictionInputError, match="no US series"):
        predict_path(archive["MR"]["dicom_path"], echo_bundle)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(PredictionInputError, match="no readable DICOM"):
        predict_path(tmp_path, mri_bundle)
    both = tmp_path / "two-studies"
    shutil.copytree(archive["MR"]["dicom_path"], both / "a")
    shutil.copytree(archive["US"]["dicom_path"], both / "b")
    with pytest.raises(PredictionInputError, match="2 studies"):
        predict_path(both, mri_bundle)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not gzip")
    with pytest.raises(NiftiReadError):
        predict_path(broken, mri_bundle)
