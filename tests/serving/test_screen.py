"""``mmdx screen`` without Ray: the stages, the results store, resume, the report and evaluate.

Ray Data only schedules :func:`prepare_row` and :class:`InferBatch`; here the same stages
run in this process (``_ray_batches`` is replaced), so everything but Ray is checked on
a tiny archive with corrupt files. The Ray runs are in tests/integration/test_screen_*.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from imaging.predict import predict_path
from serving.cli import app
from serving.screening import run as run_module
from serving.screening.bundles import ScreenModel, choose_models
from serving.screening.evaluate import evaluate_bundle
from serving.screening.inputs import StudyTask
from serving.screening.results_store import RESULT_COLUMNS, ResultsStore, results_schema
from serving.screening.run import RUN_FILE, run_screen
from serving.screening.stages import InferBatch, prepare_row
from serving.settings import Settings
from tests.serving.pipeline_fixtures import make_echo_bundle, make_mri_bundle
from tests.serving.screen_fixtures import SECRET, ScreenArchive, write_screen_archive


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> ScreenArchive:
    return write_screen_archive(tmp_path_factory.mktemp("screen"), mr=4, us=4)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("bundles")
    return [make_mri_bundle(root / "mri").path, make_echo_bundle(root / "echo").path]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", deid={"secret": SECRET})


def in_process_batches(
    settings: Settings,
    address: str | None,
    tasks: Sequence[StudyTask],
    models: Mapping[str, ScreenModel],
    batch_size: int,
    workers: int,
    roots: Sequence[str],
) -> Iterator[list[dict[str, Any]]]:
    """What the Ray pipeline runs, in this process: prepare each study, classify batches."""
    infer = InferBatch({modality: model.path for modality, model in models.items()})
    preprocessing = {modality: model.preprocessing for modality, model in models.items()}
    prepared = [
        prepare_row(task.as_row(), preprocessing=preprocessing, roots=roots) for task in tasks
    ]
    for start in range(0, len(prepared), batch_size):
        yield infer.classify_rows(prepared[start : start + batch_size])


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "_ray_batches", in_process_batches)


def test_batched_stages_give_predict_paths_numbers(
    archive: ScreenArchive, bundles: list[Path], settings: Settings
) -> None:
    models = choose_models(bundles, settings)
    preprocessing = {modality: model.preprocessing for modality, model in models.items()}
    rows = [
        {"study_id": row["study_instance_uid"], "modality": row["modality"], "path": path}
        for row in archive.rows
        for path in [str(archive.root / (row["nifti_path"] or row["video_path"]))]
    ]
    prepared = [prepare_row(row, preprocessing=preprocessing) for row in rows]
    results = InferBatch({m: model.path for m, model in models.items()}).classify_rows(prepared)
    assert [r["study_id"] for r in results] == [r["study_id"] for r in rows]
    for row, result in zip(rows, results, strict=True):
        if row["study_id"] in archive.bad_ids:
            continue
        expected = predict_path(row["path"], models[row["modality"]].path, explain=False)
        assert result["status"] == "done"
        assert result["prediction"] == expected["label"]
        assert result["probability"] == pytest.approx(expected["probability"], abs=1e-6)
        positive = "AD" if row["modality"] == "MR" else "reduced_ef"
        assert result["positive_label"] == positive
        assert result["positive_probability"] == pytest.approx(
            expected["probabilities"][positive], abs=1e-6
        )
        if row["modality"] == "US":
            assert result["ef_percent"] == pytest.approx(expected["ef_percent"], abs=1e-4)
        assert result["decode_ms"] > 0 and result["infer_ms"] > 0
    bad = {r["study_id"]: r for r in results if r["status"] == "failed"}
    assert set(bad) == set(archive.bad_ids)
    mr_bad, us_bad = (bad[study_id] for study_id in archive.bad_ids)
    assert mr_bad["error_stage"] == "decode"
    assert (
        mr_bad["error"].startswith("NiftiReadError: ") and "not a readable NIfTI" in mr_bad["error"]
    )
    assert (
        us_bad["error"].startswith("CineLoopError: ") and "cannot decode video" in us_bad["error"]
    )


def test_screen_records_every_study_and_the_reasons_of_failures(
    archive: ScreenArchive, bundles: list[Path], settings: Settings, tmp_path: Path, no_ray: None
) -> None:
    out = tmp_path / "screen"
    summary = run_screen(
        archive.dicom, out, models=bundles, batch_size=3, progress=False, settings=settings
    )
    good = {*archive.mr_ids, *archive.us_ids}
    assert (summary.done, summary.failed, summary.skipped) == (len(good), 3, 0)
    table = ResultsStore(out).read()
    assert table.schema == results_schema()
    assert table.column_names == list(RESULT_COLUMNS)
    rows = {row["study_id"]: row for row in table.to_pylist()}
    assert set(rows) == good | set(archive.bad_ids) | {"JUNK/not_dicom.dcm"}
    assert {rows[s]["status"] for s in good} == {"done"}
    assert rows["JUNK/not_dicom.dcm"]["error_stage"] == "discover"
    assert rows["JUNK/not_dicom.dcm"]["error"].startswith("DicomReadError: JUNK/not_dicom.dcm")
    mr_bad, us_bad = (rows[study_id] for study_id in archive.bad_ids)
    assert mr_bad["error_stage"] == us_bad["error_stage"] == "decode"
    # The truncated files are named relative to the input, with the reason.
    assert mr_bad["error"].startswith("DicomReadError: SCRMR004/AMR004/MR1/")
    assert "data ends inside an element" in mr_bad["error"]
    assert us_bad["error"].startswith("DicomReadError: SCRUS004/AUS004/US1/loop.dcm: ")
    mr = rows[archive.mr_ids[1]]
    assert (mr["modality"], mr["model_name"], mr["model_version"]) == (
        "MR",
        "resnet10_3d_tiny",
        "0.3.0",
    )
    assert mr["sex"] == "F" and mr["age_years"] == 75.0 and mr["site_id"] == "Site S2"
    assert mr["patient_pseudonym"].startswith("MMDX-") and "SCRMR001" not in mr["patient_pseudonym"]
    assert rows[archive.us_ids[0]]["ef_percent"] is not None
    assert len(ResultsStore(out).parts()) == 5  # the discovery failure, 10 studies by 3
    info = json.loads((out / RUN_FILE).read_text())
    assert info["disclaimer"] == "Research software; not for diagnostic use."
    assert info["input_kind"] == "dicom" and info["ray_address"] == "local"
    assert {m["modality"]: m["version"] for m in info["models"]} == {"MR": "0.3.0", "US": "1.0.0"}
    assert all(len(m["sha256"]) == 64 for m in info["models"])
    assert info["counts"]["results_done"] == len(good) and info["counts"]["results_failed"] == 3
    assert info["finished"] is not None and info["wall_seconds"] > 0


def test_a_rerun_skips_recorded_studies_and_retries_failures_on_request(
    archive: ScreenArchive, bundles: list[Path], settings: Settings, tmp_path: Path, no_ray: None
) -> None:
    out = tmp_path / "screen"
    first = run_screen(
        archive.manifest, out, models=bundles, batch_size=4, progress=False, settings=settings
    )
    assert (first.done, first.failed) == (8, 2)
    parts = ResultsStore(out).parts()
    again = run_screen(archive.manifest, out, models=bundles, progress=False, settings=settings)
    assert (again.done, again.failed, again.skipped) == (0, 0, 10)
    assert ResultsStore(out).parts() == parts  # nothing written, nothing rewritten

    # A lost batch (its part never written) is screened again, and only it.
    lost = pq.read_table(parts[1]).column("study_id").to_pylist()
    parts[1].unlink()
    resumed = run_screen(archive.manifest, out, models=bundles, progress=False, settings=settings)
    assert resumed.skipped == 10 - len(lost)
    assert resumed.done + resumed.failed == len(lost)
    retried = run_screen(
        archive.manifest, out, models=bundles, retry_failed=True, progress=False, settings=settings
    )
    assert (retried.done, retried.failed, retried.skipped) == (0, 2, 8)
    table = ResultsStore(out).read()
    assert table.num_rows == 10 and len(set(table.column("study_id").to_pylist())) == 10
    assert (retried.total_done, retried.total_failed) == (8, 2)


def test_results_store_appends_atomically_and_deduplicates_on_read(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    failed = {"study_id": "a", "status": "failed", "error": "X: y", "error_stage": "decode"}
    store.append([failed, {"study_id": "b", "status": "done", "probability": float("nan")}])
    store.append([{"study_id": "a", "status": "done", "probability": 0.25}])
    store.append([{"study_id": "a", "status": "done", "probability": 0.75}])
    (store.folder / ".part-000003.parquet.tmp").write_bytes(b"partial")
    assert [p.name for p in store.parts()] == [f"part-{n:06d}.parquet" for n in range(3)]
    assert store.recorded(("failed",)) == {"a"} and store.recorded() == {"a", "b"}
    rows = {row["study_id"]: row for row in store.read().to_pylist()}
    assert rows["a"]["probability"] == 0.25  # the first done row wins over the failed one
    assert rows["b"]["probability"] is None  # NaN is stored as null
    assert [p.name for p in store.remove_partial()] == [".part-000003.parquet.tmp"]
    with pytest.raises(ValueError, match="status 'maybe'"):
        store.append([{"study_id": "c", "status": "maybe"}])


def test_screen_auc_equals_the_serial_evaluation_of_each_bundle(
    archive: ScreenArchive, bundles: list[Path], settings: Settings, tmp_path: Path, no_ray: None
) -> None:
    out = tmp_path / "screen"
    summary = run_screen(
        archive.manifest,
        out,
        models=bundles,
        labels=archive.manifest,
        progress=False,
        settings=settings,
    )
    assert summary.report is not None
    screened = json.loads((out / "summary.json").read_text())
    assert (out / "report.html").is_file()
    aucs = {task["modality"]: task["auc"]["value"] for task in screened["tasks"]}
    for bundle, modality in zip(bundles, ("MR", "US"), strict=True):
        evaluated = evaluate_bundle(
            bundle, archive.manifest, tmp_path / modality, settings=settings
        )
        written = json.loads((tmp_path / modality / "summary.json").read_text())
        assert written["metrics"]["auc"]["value"] == evaluated["metrics"]["auc"]["value"]
        assert written["n"] == {"studies": 5, "done": 4, "failed": 1, "scored": 4, "positive": 2,
                                "patients": 4}  # fmt: skip
        assert aucs[modality] == pytest.approx(written["metrics"]["auc"]["value"], abs=1e-6)
        low, high = written["metrics"]["auc"]["low"], written["metrics"]["auc"]["high"]
        assert low is not None and high is not None and low <= aucs[modality] <= high
    assert "ef_metrics" in json.loads((tmp_path / "US" / "summary.json").read_text())


def test_cli_screen_and_evaluate_bundle(
    archive: ScreenArchive,
    bundles: list[Path],
    tmp_path: Path,
    no_ray: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from serving.settings import get_settings

    monkeypatch.setenv("MMDX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MMDX_DEID__SECRET", SECRET)
    get_settings.cache_clear()
    out = tmp_path / "screen"
    models = [arg for bundle in bundles for arg in ("--model", str(bundle))]
    result = CliRunner().invoke(app, ["screen", str(archive.echonet), "--out", str(out), *models])
    assert result.exit_code == 0, result.output
    assert "screened 4 studies, 1 failed, 0 recorded before" in result.output
    assert "failed (decode): 0XSCREEN0004: CineLoopError: Videos/0XSCREEN0004.avi" in result.output
    assert "not for diagnostic use" in result.output
    result = CliRunner().invoke(
        app, ["screen", str(archive.echonet), "--out", str(out), *models, "--json"]
    )
    assert json.loads(result.output)["skipped"] == 5

    result = CliRunner().invoke(app, ["screen", str(tmp_path / "nowhere"), "--out", str(out)])
    assert result.exit_code == 2 and "no such file or folder" in result.output
    result = CliRunner().invoke(
        app, ["screen", str(archive.echonet), "--out", str(out), "--model", str(tmp_path)]
    )
    assert result.exit_code == 2 and "no model bundle at" in result.output

    evaluated = tmp_path / "evaluated"
    result = CliRunner().invoke(
        app,
        ["evaluate", "--bundle", str(bundles[1]), "--manifest", str(archive.manifest),
         "--out", str(evaluated)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "4 studies predicted, 1 failed" in result.output and "auc: " in result.output
    lines = (evaluated / "predictions.csv").read_text().splitlines()
    assert len(lines) == 6 and lines[0].startswith("study_id,patient_pseudonym")
    result = CliRunner().invoke(
        app,
        ["evaluate", "--bundle", str(bundles[1]), "--split", "pooled",
         "--manifest", str(archive.manifest), "--out", str(evaluated)],
    )  # fmt: skip
    assert result.exit_code == 2 and "give no CONFIG or --split" in result.output
    get_settings.cache_clear()
