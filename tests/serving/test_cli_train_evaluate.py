"""``mmdx train`` and ``mmdx evaluate`` on a tiny two-site archive; typed errors exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from serving.cli import app

# A recipe sized for the test: 8 mm voxels, 24^3 volumes, two epochs.
RECIPE = """\
name: cli-tiny
model: resnet10_3d_tiny
modality: MR
task: classification
target: label
class_names: [CN, AD]
mri:
  spacing: [8.0, 8.0, 8.0]
  spatial_size: [24, 24, 24]
split:
  val_fraction: 0.34
  test_fraction: 0.25
epochs: 2
batch_size: 3
seed: 1
"""


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten MR studies of 8 patients over two sites, both labels at each."""
    from imaging.synthetic.archive import ArchiveSpec, generate_archive

    out = tmp_path_factory.mktemp("cli-archive")
    generate_archive(
        ArchiveSpec(out_dir=out, mri_studies=10, echo_studies=0, sites=2, seed=7, workers=1)
    )
    return out


@pytest.fixture
def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "cli-tiny.yaml"
    path.write_text(RECIPE)
    return path


def test_train_writes_checkpoints_and_resumes(
    archive: Path, recipe_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    arguments = ["train", str(recipe_file), "--manifest", str(archive / "manifest.csv")]
    result = CliRunner().invoke(app, [*arguments, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["recipe"] == "cli-tiny"
    assert summary["epochs_completed"] == 2
    assert [epoch["epoch"] for epoch in summary["history"]] == [1, 2]
    assert summary["monitor"] == "val_auc"
    assert summary["best_checkpoint"] == str(out / "best.pt")
    assert {"best.pt", "last.pt", "recipe.json", "split.json"} <= {p.name for p in out.iterdir()}
    written = (out / "last.pt").stat().st_mtime_ns

    again = CliRunner().invoke(app, [*arguments, "--out", str(out), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["history"] == summary["history"]
    assert (out / "last.pt").stat().st_mtime_ns == written  # finished: nothing retrained

    fresh = CliRunner().invoke(app, [*arguments, "--out", str(out), "--no-resume"])
    assert fresh.exit_code == 0, fresh.output
    assert "cli-tiny: 2 epochs" in fresh.stdout
    assert (out / "last.pt").stat().st_mtime_ns != written


def test_evaluate_leave_sites_out_json(archive: Path, recipe_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        [
            "evaluate", str(recipe_file), "--manifest", str(archive / "manifest.csv"),
            "--split", "leave-sites-out", "--out", str(out), "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["split_type"] == "leave-sites-out"
    label = summary["summaries"]["label"]
    assert label["n"]["test_records"] == 10
    assert [site["site_id"] for site in label["per_site"]] == ["S01", "S02"]
    assert (out / "predictions.csv").read_text().count("\n") == 11  # header + 10 studies
    assert (out / "reliability.png").is_file()


def test_evaluate_kfold_prints_metrics_with_cis(
    archive: Path, recipe_file: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app,
        [
            "evaluate", str(recipe_file), "--manifest", str(archive / "manifest.csv"),
            "--split", "kfold", "--k", "2", "--out", str(tmp_path / "kfold"),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cli-tiny, patient-level k-fold, 2 folds" in result.stdout
    assert "auc: " in result.stdout and "95% CI" in result.stdout
    assert "not for diagnostic use" in result.stdout


def test_unknown_recipe_exits_1_with_the_reason(archive: Path, tmp_path: Path) -> None:
    manifest = str(archive / "manifest.csv")
    for command in (["train", "no_such_recipe", "--manifest", manifest],
                    ["evaluate", "no_such_recipe", "--manifest", manifest,
                     "--split", "pooled", "--out", str(tmp_path)]):  # fmt: skip
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1
        assert "no training recipe 'no_such_recipe'" in result.output
        assert "mri_ad_tiny" in result.output  # the known names are listed


def test_invalid_recipe_and_split_are_refused(recipe_file: Path, tmp_path: Path) -> None:
    recipe_file.write_text(RECIPE.replace("epochs: 2", "epochs: 0"))
    result = CliRunner().invoke(app, ["train", str(recipe_file), "--manifest", "m.csv"])
    assert result.exit_code == 1
    assert "epochs" in result.output
    result = CliRunner().invoke(
        app,
        ["evaluate", str(recipe_file), "--manifest", "m.csv", "--split", "random", "--out", "x"],
    )
    assert result.exit_code == 2  # usage error: not one of the three split kinds


def test_evaluate_fine_tunes_each_fold_from_its_own_pretraining(
    archive: Path, recipe_file: Path, tmp_path: Path
) -> None:
    manifest = str(archive / "manifest.csv")
    age_recipe = tmp_path / "cli-age.yaml"
    age_recipe.write_text(
        RECIPE.replace("name: cli-tiny", "name: cli-age")
        .replace("task: classification", "task: regression")
        .replace("target: label", "target: age")
        .replace("class_names: [CN, AD]", "model_overrides: {task: regression, num_classes: null}")
    )
    pretrain = tmp_path / "pretrain"
    result = CliRunner().invoke(
        app,
        ["evaluate", str(age_recipe), "--manifest", manifest, "--split", "leave-sites-out",
         "--out", str(pretrain), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    age = json.loads(result.stdout)["summaries"]["age"]
    assert (age["task"], age["target"]) == ("regression", "age (years)")
    assert set(age["pooled"]["metrics"]) == {"mae", "rmse", "r2"}

    tuned = CliRunner().invoke(
        app,
        ["evaluate", str(recipe_file), "--manifest", manifest, "--split", "leave-sites-out",
         "--out", str(tmp_path / "tuned"), "--backbone-runs", str(pretrain), "--json"],
    )  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    folds = json.loads(tuned.stdout)["folds"]
    assert [fold["backbone_checkpoint"] for fold in folds] == [
        str(pretrain / "folds" / "site-S01" / "best.pt"),
        str(pretrain / "folds" / "site-S02" / "best.pt"),
    ]

    missing = CliRunner().invoke(
        app,
        ["evaluate", str(recipe_file), "--manifest", manifest, "--split", "leave-sites-out",
         "--out", str(tmp_path / "none"), "--backbone-runs", str(tmp_path / "nowhere")],
    )  # fmt: skip
    assert missing.exit_code == 1
    assert "site S01: no backbone run at" in missing.output
