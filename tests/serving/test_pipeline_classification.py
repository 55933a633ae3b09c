"""StudyClassifier: one forward pass per batch, the same answers as predict_path one by one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from imaging.bundle import LoadedBundle
from imaging.errors import ImagingError, PredictionInputError
from imaging.predict import predict_path
from serving.pipeline import StudyClassifier
from tests.serving.pipeline_fixtures import (
    make_echo_bundle,
    make_mri_bundle,
    write_echo_study,
    write_mr_study,
)

MR_STUDIES = 3
ECHO_STUDIES = 2


@pytest.fixture(scope="module")
def mri_bundle(tmp_path_factory: pytest.TempPathFactory) -> LoadedBundle:
    return make_mri_bundle(tmp_path_factory.mktemp("mri-bundle"))


@pytest.fixture(scope="module")
def echo_bundle(tmp_path_factory: pytest.TempPathFactory) -> LoadedBundle:
    return make_echo_bundle(tmp_path_factory.mktemp("echo-bundle"))


@pytest.fixture(scope="module")
def mr_series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Series folders of three MR studies with different blobs."""
    root = tmp_path_factory.mktemp("mr")
    folders = []
    for seed in range(MR_STUDIES):
        folder = root / f"study{seed}"
        write_mr_study(folder, study_instance_uid=f"1.2.826.0.1.3680043.8.498.71{seed}", seed=seed)
        folders.append(folder)
    return folders


@pytest.fixture(scope="module")
def echo_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("us")
    return [
        write_echo_study(
            root / f"loop{seed}.dcm",
            study_instance_uid=f"1.2.826.0.1.3680043.8.498.72{seed}",
            seed=seed,
        )
        for seed in range(ECHO_STUDIES)
    ]


def test_a_batch_gives_what_predict_path_gives_one_by_one(
    mri_bundle: LoadedBundle, mr_series: list[Path]
) -> None:
    classifier = StudyClassifier(mri_bundle)
    batch = classifier.classify_batch([classifier.prepare(path) for path in mr_series])

    assert [result["batch_size"] for result in batch] == [MR_STUDIES] * MR_STUDIES
    raw = []
    for path, result in zip(mr_series, batch, strict=True):
        alone = predict_path(path, mri_bundle, explain=False)
        np.testing.assert_allclose(result["raw_outputs"], alone["raw_outputs"], atol=1e-5)
        for name in ("CN", "AD"):
            assert result["probabilities"][name] == pytest.approx(
                alone["probabilities"][name], abs=1e-5
            )
        assert result["label"] == alone["label"]
        assert result["input"] == alone["input"]
        assert result["model"] == alone["model"]
        assert (
            result["disclaimer"]
            == alone["disclaimer"]
            == ("Research software; not for diagnostic use.")
        )
        assert set(result) - {"batch_size"} == set(alone)
        assert json.loads(json.dumps(result)) == result
        raw.append(result["raw_outputs"])
    # Three different studies, three different answers: the rows are not mixed up.
    assert len({tuple(np.round(row, 6)) for row in raw}) == MR_STUDIES


def test_echo_batch_gives_ef_and_calibrated_reduced_ef_as_one_by_one(
    echo_bundle: LoadedBundle, echo_files: list[Path]
) -> None:
    classifier = StudyClassifier(echo_bundle)
    batch = classifier.classify_batch([classifier.prepare(path) for path in echo_files])

    for path, result in zip(echo_files, batch, strict=True):
        alone = predict_path(path, echo_bundle, explain=False)
        np.testing.assert_allclose(result["raw_outputs"], alone["raw_outputs"], atol=1e-5)
        assert result["ef_percent"] == pytest.approx(alone["ef_percent"], abs=1e-5)
        reduced = 1.0 / (1.0 + np.exp(-result["raw_outputs"][1]))
        assert result["probabilities"]["reduced_ef"] == pytest.approx(reduced)
        assert result["input"]["sop_instance_uid"] == alone["input"]["sop_instance_uid"]
    assert classifier.class_names == ("normal_ef", "reduced_ef")
    assert classifier.modality == "US"


def test_the_batch_is_one_forward_pass_in_eval_and_inference_mode(
    mri_bundle: LoadedBundle, mr_series: list[Path]
) -> None:
    classifier = StudyClassifier(mri_bundle)
    prepared = [classifier.prepare(path) for path in mr_series]
    calls: list[tuple[int, bool, bool]] = []
    model = mri_bundle.model
    model.train()
    handle = model.register_forward_hook(
        lambda module, inputs, _o: calls.append(
            (int(inputs[0].shape[0]), module.training, torch.is_inference_mode_enabled())
        )
    )
    try:
        classifier.classify_batch(prepared)
    finally:
        handle.remove()
    assert calls == [(MR_STUDIES, False, True)]
    assert classifier.classify_batch([]) == []


def test_explain_draws_predict_paths_heat_maps(
    mri_bundle: LoadedBundle, mr_series: list[Path], tmp_path: Path
) -> None:
    classifier = StudyClassifier(mri_bundle)
    prepared = classifier.prepare(mr_series[0])
    (result,) = classifier.classify_batch([prepared])
    explanation = classifier.explain(prepared, result, tmp_path / "ours")
    reference = predict_path(mr_series[0], mri_bundle, out_dir=tmp_path / "reference")

    expected = reference["explanation"]
    assert explanation["target"] == expected["target"] == result["label"]
    assert explanation["shape"] == expected["shape"] == [32, 32, 32]
    assert explanation["peak"] == expected["peak"]
    assert sorted(Path(f).name for f in explanation["files"]) == sorted(
        Path(f).name for f in expected["files"]
    )
    assert all(Path(f).is_file() for f in explanation["files"])


def test_a_bad_study_fails_alone_in_its_batch(
    mri_bundle: LoadedBundle, mr_series: list[Path], echo_files: list[Path], tmp_path: Path
) -> None:
    classifier = StudyClassifier(mri_bundle)
    outcomes = classifier.classify_paths(
        [mr_series[0], echo_files[0], tmp_path / "missing"],
        explain_dirs=[tmp_path / "maps", None, None],
    )

    good, wrong_modality, missing = outcomes
    assert isinstance(good, dict) and good["batch_size"] == 1
    assert len(good["explanation"]["files"]) == 3
    assert "explain" in good["timing_ms"]
    assert isinstance(wrong_modality, PredictionInputError)
    assert "no MR series" in wrong_modality.reason
    assert isinstance(missing, ImagingError) and "no such file" in missing.reason
    with pytest.raises(ValueError, match="one entry per path"):
        classifier.classify_paths(mr_series, explain_dirs=[None])
