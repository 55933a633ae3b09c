"""Builders the pipeline tests share: tiny bundles, synthetic studies in a store, a case index.

Bundles are random-init tiny networks (as tests/imaging/test_predict.py makes them); the
MR study is a 48-slice T1 series (the selection rules' minimum) of 20 x 20 pixels; the
echo study is one 24-frame RGB loop. Cases for the index carry seeded random embeddings
and short reports, and only pseudonyms (built through ``DeidentifiedCase``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from imaging.bundle import LoadedBundle, load_bundle, save_bundle
from imaging.synthetic.mr_dicom import write_mr_series
from imaging.synthetic.records import SyntheticStudy
from imaging.synthetic.us_dicom import write_us_multiframe
from multimodal_rag.cases import DeidentifiedArchiveStudy, DeidentifiedCase, make_thumbnail_png
from multimodal_rag.index import CaseIndex
from serving.catalog import Catalog
from serving.ingest import InstanceIngestor
from serving.store import StudyStore
from tests.synthetic_cases import make_cine, make_echo_study, make_mr_volume, make_study

SECRET = b"pipeline-test-secret-0123456789"
MR_STUDY_UID = "1.2.826.0.1.3680043.8.498.7001"
ECHO_STUDY_UID = "1.2.826.0.1.3680043.8.498.7002"
US_LABELS = ("reduced_ef", "normal_ef")
MR_REPORTS = {
    "AD": "FINDINGS: Marked hippocampal atrophy. IMPRESSION: Pattern consistent with AD.",
    "CN": "FINDINGS: Age-appropriate volume. IMPRESSION: No atrophy beyond age.",
}
US_REPORTS = {
    "reduced_ef": "FINDINGS: Global hypokinesis. IMPRESSION: Reduced LV systolic function.",
    "normal_ef": "FINDINGS: Normal wall motion. IMPRESSION: Normal LV systolic function.",
}


def make_mri_bundle(out_dir: Path) -> LoadedBundle:
    """A random-init ``resnet10_3d_tiny`` AD/CN bundle on 32^3 inputs, temperature 2."""
    import torch

    from imaging.models.factory import create_model, load_model_config
    from imaging.transforms.pipelines import MRIPreprocessing

    torch.manual_seed(0)
    folder = save_bundle(
        create_model("resnet10_3d_tiny"),
        load_model_config("resnet10_3d_tiny"),
        out_dir,
        preprocessing=MRIPreprocessing(spacing=(6.0, 6.0, 6.0), spatial_size=(32, 32, 32)),
        class_names=["CN", "AD"],
        temperature=2.0,
        version="0.3.0",
    )
    return load_bundle(folder)


def make_echo_bundle(out_dir: Path) -> LoadedBundle:
    """A random-init ``r2plus1d_tiny_echo`` EF bundle on 8-frame 32 x 32 clips."""
    import torch

    from imaging.models.factory import create_model, load_model_config
    from imaging.transforms.pipelines import EchoPreprocessing

    torch.manual_seed(0)
    folder = save_bundle(
        create_model("r2plus1d_tiny_echo"),
        load_model_config("r2plus1d_tiny_echo"),
        out_dir,
        preprocessing=EchoPreprocessing(spatial_size=32, clip_length=8, period=2),
        version="1.0.0",
    )
    return load_bundle(folder)


def write_mr_study(
    out_dir: Path,
    *,
    study_instance_uid: str = MR_STUDY_UID,
    seed: int = 0,
    slices: int = 48,
    series_description: str = "T1 MPRAGE SAG",
    series_number: int = 3,
    study: SyntheticStudy | None = None,
) -> list[Path]:
    """One MR series of a blob in noise (of ``study`` if given); the default passes the MR
    selection rules."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:slices, 0:20, 0:20]
    centre = rng.uniform([slices * 0.3, 6, 6], [slices * 0.7, 14, 14])
    blob = np.exp(
        -(((z - centre[0]) / 8) ** 2 + ((y - centre[1]) / 5) ** 2 + ((x - centre[2]) / 5) ** 2)
    )
    pixels = 800.0 * blob + rng.normal(100.0, 10.0, blob.shape)
    return write_mr_series(
        make_mr_volume(pixels, acquisition={"series_description": series_description}),
        study or make_study(study_instance_uid=study_instance_uid),
        out_dir=out_dir,
        series_number=series_number,
        uid_seed=f"pipeline-{study.study_instance_uid if study else study_instance_uid}-{seed}",
    )


def write_echo_study(
    path: Path,
    *,
    study_instance_uid: str = ECHO_STUDY_UID,
    study: SyntheticStudy | None = None,
    seed: int = 0,
) -> Path:
    """One 24-frame RGB apical four-chamber loop, 128 rows (of ``study`` if given)."""
    if study is None:
        study = make_echo_study(study_instance_uid=study_instance_uid)
        columns = 160
    else:
        columns = 264  # wide enough for the default patient's burned-in header text
    cine = make_cine(study, seed=seed, number_of_frames=24, rows=128, columns=columns)
    return write_us_multiframe(
        cine,
        study,
        path=path,
        encoding="rgb",
        series_number=7,
        uid_seed=f"pipeline-{study.study_instance_uid}-{seed}",
    )


def ingest(ingestor: InstanceIngestor, paths: list[Path]) -> None:
    """Put ``paths`` into the store and catalog; fail the test on any refusal."""
    for path in paths:
        result = ingestor.ingest_file(path, source=path.name, received_via="c-store")
        if result.status != "stored":
            pytest.fail(f"{path.name} not stored ({result.status}): {result.reason}")


def open_store(root: Path) -> tuple[StudyStore, Catalog, InstanceIngestor]:
    """A store and an in-file SQLite catalog under ``root``, and their ingestor."""
    store = StudyStore(root / "store")
    catalog = Catalog.open(f"sqlite:///{root / 'catalog.sqlite'}")
    return store, catalog, InstanceIngestor(store, catalog)


def make_case(number: int, vector: np.ndarray, *, modality: str, label: str) -> DeidentifiedCase:
    """A de-identified case of site ``S{number % 3}`` with a report fitting ``label``."""
    row = {
        "study_instance_uid": f"1.2.826.0.1.3680043.8.498.{900 + number}",
        "patient_id": f"P{number:05d}",
        "site_id": f"S{number % 3}",
        "modality": modality,
        "study_date": "2021-03-01",
        "label": label,
    }
    report = (MR_REPORTS if modality == "MR" else US_REPORTS)[label]
    study = DeidentifiedArchiveStudy.from_manifest_row(row, secret=SECRET, report_text=report)
    # A distinct picture per case (a disc whose size follows the case number), so the
    # web page shows real thumbnails.
    yy, xx = np.mgrid[:48, :48]
    disc = ((yy - 24) ** 2 + (xx - 24) ** 2 < (6 + 2 * (number % 8)) ** 2).astype(np.float32)
    return DeidentifiedCase.from_deidentified(
        study,
        image_embedding=vector,
        text_embedding=vector[::-1].copy(),
        thumbnail_png=make_thumbnail_png(disc),
    )


def make_case_index(uri: str, dim: int, per_modality: int = 6, seed: int = 0) -> CaseIndex:
    """``per_modality`` MR and US cases, labels alternating, seeded random embeddings."""
    rng = np.random.default_rng(seed)
    cases = []
    for offset, (modality, labels) in enumerate((("MR", ("AD", "CN")), ("US", US_LABELS))):
        for i in range(per_modality):
            number = offset * per_modality + i
            cases.append(
                make_case(number, rng.standard_normal(dim), modality=modality, label=labels[i % 2])
            )
    index = CaseIndex.open(uri, embedding_dim=dim)
    index.add(cases)
    return index


def free_port() -> int:
    """A loopback port nobody listens on (now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def storescp(out_dir: Path, *, ae_title: str = "PACS") -> Iterator[int]:
    """dcmtk ``storescp`` on a free loopback port (TCP_NODELAY=1); yields the port; stops it."""
    if shutil.which("storescp") is None:
        pytest.fail("storescp is missing: install dcmtk")
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        ["storescp", "--aetitle", ae_title, "--output-directory", str(out_dir), str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10.0
        while True:
            if process.poll() is not None:
                pytest.fail(f"storescp exited with {process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"storescp did not listen on port {port}")
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
