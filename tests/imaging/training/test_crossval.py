"""Cross-validation of a recipe: per-fold runs, pooled out-of-fold summary, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from imaging.training import crossval
from imaging.training.crossval import FOLD_FILE, create_splits, cross_validate, fold_dir
from imaging.training.data import read_manifest
from imaging.training.recipe import TrainingRecipe


@pytest.fixture(scope="module")
def two_site_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten MR studies (8 patients; both labels at both sites) and four echo studies.

    The session archive of conftest.py has all its MR studies at one site, too few for
    leave-sites-out.
    """
    from imaging.synthetic.archive import ArchiveSpec, generate_archive

    out = tmp_path_factory.mktemp("crossval-archive")
    generate_archive(
        ArchiveSpec(out_dir=out, mri_studies=10, echo_studies=4, sites=2, seed=7, workers=1)
    )
    return out


def _mri_recipe() -> TrainingRecipe:
    return TrainingRecipe.model_validate(
        {
            "name": "cv-tiny",
            "model": "resnet10_3d_tiny",
            "modality": "MR",
            "task": "classification",
            "target": "label",
            "class_names": ["CN", "AD"],
            "mri": {"spacing": [8.0, 8.0, 8.0], "spatial_size": [24, 24, 24]},
            # One of the 4-6 patients of the training site validates (temperature fit).
            "split": {"val_fraction": 0.34},
            "epochs": 2,
            "batch_size": 3,
            "seed": 3,
        }
    )


@pytest.fixture(scope="module")
def mri_run(two_site_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("cv-mri")
    summary = cross_validate(
        _mri_recipe(),
        manifest=two_site_archive / "manifest.csv",
        split_kind="leave-sites-out",
        out_dir=out,
        progress=False,
        n_resamples=200,
    )
    return {"summary": summary, "out": out}


def test_leave_sites_out_summary(two_site_archive: Path, mri_run: dict[str, Any]) -> None:
    summary, out = mri_run["summary"], mri_run["out"]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["split_type"] == "leave-sites-out"
    assert "not for diagnostic use" in summary["disclaimer"]
    assert [fold["fold"] for fold in summary["folds"]] == ["site S01", "site S02"]
    assert list(summary["summaries"]) == ["label"]
    label = summary["summaries"]["label"]
    assert label["split_type"] == "leave-sites-out"
    assert label["task"] == "classification"
    assert label["target"] == "AD vs CN"
    # Every MR study of the archive is tested exactly once, by the fold that held out its site.
    assert label["n"] == {
        "folds": 2,
        "test_records": 10,
        "test_patients": 8,
        "sites": ["S01", "S02"],
    }
    assert [site["site_id"] for site in label["per_site"]] == ["S01", "S02"]
    assert [site["n"] for site in label["per_site"]] == [4, 6]
    pooled = label["pooled"]
    assert set(pooled["metrics"]) == {
        "accuracy",
        "balanced_accuracy",
        "sensitivity",
        "specificity",
        "auc",
    }
    auc = pooled["metrics"]["auc"]
    assert 0.0 <= auc["low"] <= auc["value"] <= auc["high"] <= 1.0
    assert auc["n_groups"] == 8 and auc["n_resamples"] > 150
    assert pooled["calibration"]["ece_after"] is not None  # temperature fitted on validation
    assert all(fold["temperature"] > 0 for fold in label["per_fold"])
    assert Path(label["reliability_diagram"]).read_bytes()[:4] == b"\x89PNG"


def test_no_patient_is_tested_in_two_folds(two_site_archive: Path, mri_run: dict[str, Any]) -> None:
    out = mri_run["out"]
    tested: dict[str, str] = {}
    for name in ("site S01", "site S02"):
        record = json.loads((fold_dir(out, name) / FOLD_FILE).read_text())
        split = json.loads((fold_dir(out, name) / "split.json").read_text())
        assert record["test"]["study_instance_uid"] == split["test"]
        assert set(record["test"]["site_id"]) == {name.removeprefix("site ")}
        train_and_val = set(split["train"]) | set(split["val"])
        assert not train_and_val & set(split["test"])
        for patient in record["test"]["patient_id"]:
            assert tested.setdefault(patient, name) == name
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    mr_rows = read_manifest(two_site_archive / "manifest.csv", "MR")
    assert sorted(row["study_instance_uid"] for row in rows) == sorted(
        row["study_instance_uid"] for row in mr_rows
    )
    truth = {row["study_instance_uid"]: row["label"] for row in mr_rows}
    assert all(
        row["target"] == str(["CN", "AD"].index(truth[row["study_instance_uid"]])) for row in rows
    )
    assert all(0.0 <= float(row["calibrated_score"]) <= 1.0 for row in rows)


def test_resume_skips_finished_folds(
    two_site_archive: Path, mri_run: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = mri_run["out"]

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(crossval, "fit", no_training)
    again = cross_validate(
        _mri_recipe(),
        manifest=two_site_archive / "manifest.csv",
        split_kind="leave-sites-out",
        out_dir=out,
        progress=False,
        n_resamples=200,
    )
    assert again == mri_run["summary"]

    # A changed recipe makes the finished folds stale: both are trained afresh.
    monkeypatch.undo()
    trained: list[str] = []
    real_fit = crossval.fit

    def counting_fit(*args: Any, **kwargs: Any) -> Any:
        trained.append(str(kwargs["out_dir"]))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(crossval, "fit", counting_fit)
    changed = cross_validate(
        _mri_recipe().model_copy(update={"epochs": 1}),
        manifest=two_site_archive / "manifest.csv",
        split_kind="leave-sites-out",
        out_dir=out,
        progress=False,
        n_resamples=200,
    )
    assert trained == [str(fold_dir(out, "site S01")), str(fold_dir(out, "site S02"))]
    assert [fold["epochs_completed"] for fold in changed["folds"]] == [1, 1]


def test_echo_gives_ef_and_reduced_ef_summaries(two_site_archive: Path, tmp_path: Path) -> None:
    recipe = TrainingRecipe.model_validate(
        {
            "name": "cv-echo",
            "model": "r2plus1d_tiny_echo",
            "modality": "US",
            "task": "ef_multitask",
            "target": "ef",
            "echo": {"spatial_size": 32, "clip_length": 8},
            "epochs": 1,
            "batch_size": 2,
        }
    )
    summary = cross_validate(
        recipe,
        manifest=two_site_archive / "manifest.csv",
        split_kind="patient-level k-fold",
        k=2,
        out_dir=tmp_path,
        progress=False,
        n_resamples=50,
    )
    ef, reduced = summary["summaries"]["ef"], summary["summaries"]["reduced_ef"]
    assert (ef["task"], ef["target"]) == ("regression", "EF (%)")
    assert set(ef["pooled"]["metrics"]) == {"mae", "rmse", "r2"}
    assert (reduced["task"], reduced["target"]) == ("classification", "reduced EF (EF < 40%)")
    assert ef["split_type"] == reduced["split_type"] == "patient-level k-fold"
    assert ef["n"]["test_records"] == reduced["n"]["test_records"] == 4
    with (tmp_path / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(float(row["target"]) for row in rows) == [15.38, 58.88, 59.3, 59.83]
    assert sorted(row["reduced_ef"] for row in rows) == ["0", "0", "0", "1"]


def test_split_kinds(two_site_archive: Path) -> None:
    rows = read_manifest(two_site_archive / "manifest.csv", "MR")
    recipe = _mri_recipe()
    kfold = create_splits(rows, recipe, "patient-level k-fold", k=4)
    assert [s.name for s in kfold] == ["fold 1/4", "fold 2/4", "fold 3/4", "fold 4/4"]
    assert sorted(i for s in kfold for i in s.test) == list(range(10))
    (pooled,) = create_splits(rows, recipe, "pooled random")
    assert pooled.kind == "pooled random"
    assert fold_dir("out", pooled.name) == Path("out/folds/pooled-random")
    assert fold_dir("out", "fold 2/4") == Path("out/folds/fold-2-4")
    with pytest.raises(ValueError, match="split_kind"):
        create_splits(rows, recipe, "random")
