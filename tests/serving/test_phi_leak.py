"""PHI leak check: synthetic identities go in, in tags and burned into the pixels, and every
output shared across patients is scanned for them.

Three synthetic patients with names and IDs found nowhere else each have an echo loop (the
name, ID and institution burned into its header band) and an MR series. Their studies are
de-identified into the similar-case index, one patient's studies are processed by the
service pipeline against that index, and all of them are screened. Then the case index
(every file's bytes, and the text Tesseract reads in every thumbnail), the similar cases
and draft shown with another patient's result, the result SRs (for the other patients),
the logs of the whole run and the screening outputs (Parquet, run.json, report) are
searched for every identity: none may be found. Tesseract reading the names in the
original loops is the control that the scan can find them.
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from imaging.dicom.deid.deidentify import deidentify_dataset
from imaging.dicom.reading import read_dicom
from multimodal_rag.archive_cases import embed_study, load_study
from multimodal_rag.cases import DeidentifiedCase, scrub_identifiers
from multimodal_rag.embedding import create_embedder
from multimodal_rag.index import CaseIndex
from serving.pipeline import SimilarCaseFinder, StudyClassifier, StudyPipeline
from serving.screening import run as run_module
from serving.screening.run import run_screen
from serving.settings import DestinationSettings, Settings
from tests.serving.pipeline_fixtures import (
    ingest,
    make_echo_bundle,
    make_mri_bundle,
    open_store,
    write_echo_study,
    write_mr_study,
)
from tests.serving.test_screen import in_process_batches
from tests.synthetic_cases import make_echo_study, make_patient, make_study

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

SECRET = b"phi-leak-test-secret-0123456789abcdef"
INSTITUTION = "Quarrymead Infirmary"
# (family, given, patient id, accession): strings that occur nowhere but in these patients.
IDENTITIES = (
    ("Quixlebrand", "Ottoline", "PHIQ7731", "ACQ7731"),
    ("Vorthington", "Barnaby", "PHIV2294", "ACV2294"),
    ("Zembalova", "Ilse", "PHIZ5518", "ACZ5518"),
)
PROCESSED = 0  # the patient whose studies the pipeline processes


@dataclass
class Outputs:
    """Everything the run left behind, by kind."""

    root: Path
    index_dir: Path
    thumbnails: list[bytes]
    original_ocr: list[str]
    payload: dict[str, Any]
    sr_files: list[Path]
    log_text: str
    screen_dir: Path


def identities(patient: int | None = None) -> list[str]:
    """Every identity string (of one patient, or of all), as they could appear in text."""
    chosen = IDENTITIES if patient is None else (IDENTITIES[patient],)
    return [value for identity in chosen for value in identity]


def found(text: str, strings: list[str]) -> list[str]:
    """The ``strings`` that occur in ``text``, ignoring case and whitespace (OCR splits
    words: "Quixle brand")."""
    squeezed = "".join(text.split()).lower()
    return [value for value in strings if "".join(value.split()).lower() in squeezed]


def ocr(png: bytes, folder: Path) -> str:
    """The text Tesseract reads in a picture, upscaled 4x (the burned-in font is small)."""
    import io

    image = Image.open(io.BytesIO(png)).convert("L")
    image = image.resize((image.width * 4, image.height * 4), Image.Resampling.LANCZOS)
    path = folder / "ocr.png"
    image.save(path)
    result = subprocess.run(
        ["tesseract", str(path), "-", "--psm", "6"], capture_output=True, text=True, timeout=60
    )
    return result.stdout


def frame_png(path: Path) -> bytes:
    """The first frame of a loop as PNG (what a viewer or thumbnail would show)."""
    import io

    from imaging.dicom.cine import load_us_cine

    frame = np.asarray(load_us_cine(path).frames[0])
    buffer = io.BytesIO()
    Image.fromarray(frame.squeeze().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outputs]:
    root = tmp_path_factory.mktemp("phi")
    log_records: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: log_records.append(handler.format(record))  # type: ignore[method-assign]
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root_logger = logging.getLogger()
    previous_level = root_logger.level
    root_logger.addHandler(handler)
    root_logger.setLevel(logging.DEBUG)
    monkeypatch = pytest.MonkeyPatch()
    try:
        yield _run(root, log_records, monkeypatch)
    finally:
        monkeypatch.undo()
        root_logger.removeHandler(handler)
        root_logger.setLevel(previous_level)


def _run(root: Path, log_records: list[str], monkeypatch: pytest.MonkeyPatch) -> Outputs:
    studies: list[tuple[Path, list[Path]]] = []
    original_ocr = []
    for number, (family, given, patient_id, accession) in enumerate(IDENTITIES):
        patient = make_patient(patient_id=patient_id, patient_name=f"{family}^{given}")
        echo = make_echo_study(
            patient=patient,
            institution_name=INSTITUTION,
            study_instance_uid=f"2.25.{880100 + number}",
        )
        echo = replace(echo, accession_number=accession)
        loop = write_echo_study(root / "dicom" / f"p{number}" / "us" / "loop.dcm", study=echo)
        mr = make_study(
            patient=patient,
            study_instance_uid=f"2.25.{880200 + number}",
            accession_number=accession,
        )
        series = write_mr_study(root / "dicom" / f"p{number}" / "mr", study=mr, seed=number)
        studies.append((loop, series))
        original_ocr.append(ocr(frame_png(loop), root))

    # The similar-case index: every study de-identified first (tags, and the burned-in
    # band blanked), its report scrubbed of the patient's identifiers.
    embedder = create_embedder("clip_tiny")
    index_dir = root / "data" / "case_index"
    index = CaseIndex.open(index_dir, embedding_dim=embedder.embed_dim)
    cases = []
    for number, (loop, series) in enumerate(studies):
        family, given, patient_id, accession = IDENTITIES[number]
        for label, source, path in (
            ("reduced_ef", loop, loop),
            ("AD", series[len(series) // 2], series[0].parent),
        ):
            deidentified = deidentify_dataset(read_dicom(source), secret=SECRET, source=source.name)
            report = (
                f"{given} {family} ({patient_id}, accession {accession}) seen at "
                f"{INSTITUTION}. Findings compatible with {label}."
            )
            study = load_study(path)
            cases.append(
                DeidentifiedCase.from_deidentified(
                    deidentified,
                    image_embedding=embed_study(embedder, study),
                    text_embedding=embedder.embed_texts([report])[0],
                    site_id="S1",
                    label=label,
                    report_text=scrub_identifiers(
                        report, [family, given, patient_id, accession, INSTITUTION]
                    ),
                )
            )
    index.add(cases)
    thumbnails = [case.thumbnail_png for case in cases if case.thumbnail_png]

    # The service pipeline on one patient's studies, with the others' cases retrieved.
    store, catalog, ingestor = open_store(root / "data")
    for loop, series in studies:
        ingest(ingestor, [loop, *series])
    pipeline = StudyPipeline(
        store,
        classifiers={
            "MR": StudyClassifier(make_mri_bundle(root / "bundles" / "mri")),
            "US": StudyClassifier(make_echo_bundle(root / "bundles" / "echo")),
        },
        finder=SimilarCaseFinder(embedder, index, k=5),
        destination=DestinationSettings(kind="none"),
        explanations_dir=root / "data" / "results" / "explanations",
        sr_dir=root / "data" / "results" / "sr",
    )
    payloads = [
        pipeline.process(f"2.25.{base + number}")
        for number in range(len(IDENTITIES))
        for base in (880100, 880200)
    ]
    # Both results of one patient: the echo study's and the MR study's.
    payload = {
        "results": [r for p in payloads[2 * PROCESSED : 2 * PROCESSED + 2] for r in p["results"]]
    }
    sr_files = [Path(entry["sr"]["path"]) for p in payloads for entry in p["results"]]
    catalog.close()

    # Every study screened (in this process: the stages Ray would schedule).
    monkeypatch.setattr(run_module, "_ray_batches", in_process_batches)
    settings = Settings(data_dir=root / "data")
    screen_dir = root / "screen"
    run_screen(
        root / "dicom",
        screen_dir,
        models=[root / "bundles" / "mri", root / "bundles" / "echo"],
        progress=False,
        settings=settings,
    )
    return Outputs(
        root=root,
        index_dir=index_dir,
        thumbnails=thumbnails,
        original_ocr=original_ocr,
        payload=payload,
        sr_files=sr_files,
        log_text="\n".join(log_records),
        screen_dir=screen_dir,
    )


def test_the_scan_finds_burned_in_names_in_the_original_loops(outputs: Outputs) -> None:
    # The control: the same OCR that scans the thumbnails reads the originals' names.
    for number, text in enumerate(outputs.original_ocr):
        family, _, patient_id, _ = IDENTITIES[number]
        assert found(text, [family, patient_id, INSTITUTION]) == [family, patient_id, INSTITUTION]


def test_case_index_files_hold_no_identity(outputs: Outputs) -> None:
    files = [path for path in outputs.index_dir.rglob("*") if path.is_file()]
    assert files
    leaks = {
        str(path.relative_to(outputs.index_dir)): hits
        for path in files
        if (hits := found(path.read_bytes().decode("latin-1"), identities()))
    }
    assert leaks == {}
    assert len(CaseIndex.open(outputs.index_dir)) == 2 * len(IDENTITIES)


def test_thumbnails_show_no_burned_in_identity(outputs: Outputs) -> None:
    assert len(outputs.thumbnails) == 2 * len(IDENTITIES)
    texts = [ocr(png, outputs.root) for png in outputs.thumbnails]
    assert [found(text, [*identities(), INSTITUTION]) for text in texts] == [[]] * len(texts)


def test_similar_cases_and_draft_of_a_result_name_no_other_patient(outputs: Outputs) -> None:
    results = outputs.payload["results"]
    assert {entry["modality"] for entry in results} == {"MR", "US"}
    assert all(len(entry["similar_cases"]) >= 3 for entry in results)
    others = [value for n in range(len(IDENTITIES)) if n != PROCESSED for value in identities(n)]
    shown = json.dumps(
        [{key: entry[key] for key in ("similar_cases", "evidence", "draft")} for entry in results]
    )
    assert found(shown, [*others, INSTITUTION]) == []
    # Nor the processed patient's own identifiers: the cases are de-identified throughout.
    assert found(shown, identities(PROCESSED)) == []


def test_result_srs_name_no_other_patient(outputs: Outputs) -> None:
    assert len(outputs.sr_files) == 2 * len(IDENTITIES)
    for path in outputs.sr_files:
        text = path.read_bytes().decode("latin-1")
        owner = next(n for n in range(len(IDENTITIES)) if IDENTITIES[n][2] in text)
        others = [value for n in range(len(IDENTITIES)) if n != owner for value in identities(n)]
        assert found(text, others) == [], path.name


def test_logs_of_the_whole_run_hold_no_identity(outputs: Outputs) -> None:
    assert outputs.log_text  # the run did log
    assert found(outputs.log_text, [*identities(), INSTITUTION]) == []


def test_screening_outputs_hold_no_identity(outputs: Outputs) -> None:
    import pyarrow.parquet as pq

    files = [path for path in outputs.screen_dir.rglob("*") if path.is_file()]
    parquet = [path for path in files if path.suffix == ".parquet"]
    assert parquet
    table = pq.read_table(parquet[0]).to_pylist()
    assert table and all(row["patient_pseudonym"] for row in table)
    for path in files:
        if path.name.endswith(".lock"):
            continue
        assert found(path.read_bytes().decode("latin-1"), identities()) == [], path.name
