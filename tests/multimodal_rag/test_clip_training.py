"""Contrastive fine-tuning: metrics, patient split, the checkpoint round trip, ``clip-train``."""

from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from imaging.errors import CheckpointError
from multimodal_rag.clip_training import (
    ClipPair,
    fine_tune_clip,
    load_clip_pairs,
    retrieval_metrics,
    split_by_patient,
)
from multimodal_rag.embedding import create_embedder
from serving.commands.rag import clip_train

FINDINGS = (
    "The lateral ventricles are enlarged.",
    "The hippocampi are of normal volume.",
    "Marked medial temporal atrophy.",
    "Left ventricular systolic function is reduced.",
    "Normal left ventricular size and function.",
    "Small pericardial effusion.",
)


def write_nifti(path: Path, seed: int) -> None:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    grid = np.indices((20, 24, 16)).astype(np.float32)
    centre = rng.uniform([6, 6, 5], [14, 18, 11])[:, None, None, None]
    radius = rng.uniform(3, 7)
    volume = np.where(((grid - centre) ** 2).sum(0) < radius**2, 2.0, 1.0)
    volume += rng.normal(0, 0.1, volume.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume.astype(np.float32), np.diag([2.0, 2.0, 2.5, 1.0])), path)


def write_avi(path: Path, seed: int) -> None:
    import av

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("mjpeg", rate=Fraction(25))
        stream.width = stream.height = 32
        stream.pix_fmt = "yuvj420p"
        base = rng.integers(0, 256, size=(32, 32, 1), dtype=np.uint8)
        for t in range(8):
            frame = np.repeat(np.roll(base, t, axis=0), 3, axis=2)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_archive(tmp_path_factory.mktemp("archive"))


def write_archive(root: Path) -> Path:
    """Six MR and six echo studies of nine patients, each with a distinct report."""
    rows = []
    for i in range(12):
        modality = "MR" if i < 6 else "US"
        report = root / "reports" / f"R{i}.txt"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(
            f"EXAMINATION: {'MRI brain' if modality == 'MR' else 'Echocardiogram'}. "
            f"FINDINGS: {FINDINGS[i % 6]} {FINDINGS[(i * 5 + 1) % 6]} Measurement {i * 7} mm."
        )
        nifti = video = ""
        if modality == "MR":
            nifti = f"nifti/sub-{i}.nii.gz"
            write_nifti(root / nifti, i)
        else:
            video = f"echonet/Videos/V{i}.avi"
            write_avi(root / video, i)
        rows.append(
            {"patient_id": f"P{i // 4 * 3 + i % 3}", "modality": modality,
             "nifti_path": nifti, "video_path": video, "report_path": f"reports/R{i}.txt"}
        )  # fmt: skip
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root / "manifest.csv"


def test_retrieval_metrics_ranks_each_study_s_own_report() -> None:
    texts = np.eye(4, dtype=np.float32)
    # Study 0 finds its report first; study 1 second; studies 2 and 3 last.
    images = np.array(
        [[1, 0, 0, 0], [0.8, 0.6, 0, 0], [0.1, 0.2, 0, 0.97], [0.5, 0.5, 0.7, 0.1]],
        dtype=np.float32,
    )
    metrics = retrieval_metrics(images, texts)
    assert metrics.n == 4
    assert metrics.recall_at_1 == 0.25
    assert metrics.recall_at_5 == 1.0
    assert metrics.median_rank == 3.0
    # An identical report is as correct as the true one.
    tied = retrieval_metrics(np.ones((2, 2), np.float32) / np.sqrt(2), np.ones((2, 2), np.float32))
    assert tied.recall_at_1 == 1.0


def test_split_keeps_patients_together_and_is_seeded() -> None:
    pairs = [ClipPair(torch.zeros(1), f"r{i}", f"P{i % 5}", "MR") for i in range(20)]
    train, held = split_by_patient(pairs, held_out_fraction=0.4, seed=3)
    assert sorted(train + held) == list(range(20))
    assert len({pairs[i].patient_id for i in held}) == 2
    assert not {pairs[i].patient_id for i in held} & {pairs[i].patient_id for i in train}
    assert split_by_patient(pairs, held_out_fraction=0.4, seed=3) == (train, held)
    assert split_by_patient(pairs, held_out_fraction=0.0, seed=3) == (list(range(20)), [])


def test_load_pairs_reads_volumes_videos_and_reports(archive: Path) -> None:
    embedder = create_embedder("clip_tiny")
    pairs = load_clip_pairs(embedder, archive)
    assert len(pairs) == 12
    assert [tuple(pair.images.shape) for pair in (pairs[0], pairs[-1])] == [
        (6, 3, 32, 32),
        (4, 3, 32, 32),
    ]
    assert pairs[6].modality == "US"
    assert pairs[0].report_text.startswith("EXAMINATION: MRI brain")


def test_fine_tuned_checkpoint_loads_to_the_same_embeddings(tmp_path: Path) -> None:
    rng = torch.Generator().manual_seed(0)
    pairs = [
        ClipPair(
            torch.randn(3, 3, 32, 32, generator=rng), f"report {i}. {FINDINGS[i]}", f"P{i}", "MR"
        )
        for i in range(6)
    ]
    embedder = create_embedder("clip_tiny")
    untouched = embedder.embed_image_groups([pairs[0].images])
    result = fine_tune_clip(
        embedder, pairs, epochs=1, lr=1e-3, batch_size=6, seed=0, out_dir=tmp_path,
        held_out_fraction=0.0,
    )  # fmt: skip
    tuned_images = embedder.embed_image_groups([pair.images for pair in pairs])
    tuned_texts = embedder.embed_texts([pair.report_text for pair in pairs])
    assert not np.allclose(tuned_images[0], untouched[0], atol=1e-4)

    loaded = create_embedder("clip_tiny", checkpoint=result.checkpoint)
    assert loaded.provenance.weights == "checkpoint"
    assert loaded.provenance.sha256 == result.sha256
    np.testing.assert_allclose(
        loaded.embed_image_groups([pair.images for pair in pairs]), tuned_images, atol=1e-6
    )
    np.testing.assert_allclose(
        loaded.embed_texts([pair.report_text for pair in pairs]), tuned_texts, atol=1e-6
    )
    assert loaded.model.logit_scale.item() == pytest.approx(embedder.model.logit_scale.item())

    # The sidecar pins the configuration and the hash.
    sidecar = result.checkpoint.with_suffix(".json")
    record = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**record, "config": "clip_vit_b32"}))
    with pytest.raises(CheckpointError, match="clip_vit_b32"):
        create_embedder("clip_tiny", checkpoint=result.checkpoint)
    sidecar.write_text(json.dumps({**record, "sha256": "0" * 64}))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        create_embedder("clip_tiny", checkpoint=result.checkpoint)


def test_clip_train_command_improves_training_recall(archive: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("clip-train")(clip_train)
    out = tmp_path / "clip"
    result = CliRunner().invoke(
        app,
        ["--manifest", str(archive), "--out", str(out), "--config", "clip_tiny",
         "--epochs", "2", "--lr", "1e-3", "--batch-size", "4", "--unlocked-groups", "-1",
         "--held-out", "0.25", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["n_train"] + summary["n_held_out"] == 12
    assert summary["n_held_out"] > 0
    before, after = summary["before"]["train"], summary["after"]["train"]
    # Two epochs from random weights mostly align the modalities: MR studies move to MR
    # reports, echo to echo (recall@5 0.4 -> 1.0, median rank 6 -> 3 on this archive).
    assert after["recall_at_5"] > before["recall_at_5"]
    assert after["median_rank"] < before["median_rank"]
    assert summary["epoch_losses"][1] < summary["epoch_losses"][0]

    # The written checkpoint reproduces the reported "after" figures.
    loaded = create_embedder("clip_tiny", checkpoint=Path(summary["checkpoint"]))
    pairs = load_clip_pairs(loaded, archive)
    train, _ = split_by_patient(pairs, held_out_fraction=0.25, seed=0)
    again = retrieval_metrics(
        loaded.embed_image_groups([pairs[i].images for i in train]),
        loaded.embed_texts([pairs[i].report_text for i in train]),
    )
    assert again.recall_at_1 == after["recall_at_1"]
    assert again.median_rank == after["median_rank"]


def test_clip_train_command_reports_a_missing_manifest(tmp_path: Path) -> None:
    app = typer.Typer()
    app.command("clip-train")(clip_train)
    result = CliRunner().invoke(
        app,
        ["--manifest", str(tmp_path / "none.csv"), "--out", str(tmp_path), "--config", "clip_tiny"],
    )
    assert result.exit_code == 1
    assert "FileNotFoundError" in result.output
