"""The ingestor: good MR and US objects stored and catalogued, bad ones refused with a reason."""

from __future__ import annotations

import os
import threading
import warnings
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from imaging.dicom.reading import ReadLimits
from imaging.synthetic.mr_dicom import write_mr_series
from imaging.synthetic.mr_enhanced_dicom import write_enhanced_mr_series
from imaging.synthetic.us_dicom import write_us_multiframe
from serving.catalog import Catalog, InstanceAttributes
from serving.ingest import InstanceIngestor
from serving.store import StudyStore
from tests.imaging.malformed_corpus import MIB, build_corpus, build_seeds
from tests.synthetic_cases import make_cine, make_echo_study, make_mr_volume, make_study

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")

RECEIVED_AT = datetime(2024, 6, 4, 12, 0, tzinfo=UTC)
# The limits of test_malformed_corpus: a deflate bomb of 8 MiB is over them.
SMALL_LIMITS = ReadLimits(
    max_file_bytes=64 * MIB, max_inflated_bytes=4 * MIB, max_pixel_bytes=64 * MIB, max_frames=1000
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Three single-frame MR slices, one Enhanced MR, a JPEG US cine and an RGB US cine."""
    folder = tmp_path_factory.mktemp("sources")
    pixels = np.arange(3 * 16 * 20, dtype=np.float32).reshape(3, 16, 20)
    volume = make_mr_volume(pixels)
    study = make_study()
    echo = make_echo_study()
    cine = make_cine(echo, number_of_frames=6, rows=128, columns=160)
    return {
        "mr": write_mr_series(
            volume, study, out_dir=folder / "mr", series_number=1, uid_seed="ingest"
        ),
        "enhanced": [
            write_enhanced_mr_series(
                volume, study, out_dir=folder / "enhanced", series_number=2, uid_seed="ingest"
            )
        ],
        "us": [
            write_us_multiframe(
                cine, echo, path=folder / "us.dcm", encoding="jpeg_baseline", uid_seed="ingest"
            ),
            write_us_multiframe(
                cine, echo, path=folder / "rgb.dcm", encoding="rgb", series_number=2,
                uid_seed="ingest",
            ),
        ],
    }  # fmt: skip


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[StudyStore, Catalog, InstanceIngestor]]:
    store = StudyStore(tmp_path / "store")
    catalog = Catalog.open(f"sqlite:///{tmp_path / 'catalog.sqlite'}")
    yield store, catalog, InstanceIngestor(store, catalog, clock=lambda: RECEIVED_AT)
    store.close()
    catalog.close()


def ingest(ingestor: InstanceIngestor, path: Path) -> str:
    result = ingestor.ingest_file(path, source=path.name, received_via="stow-rs")
    return result.status


def test_mr_and_us_objects_are_stored_and_catalogued(
    sources: dict[str, list[Path]], parts: tuple[StudyStore, Catalog, InstanceIngestor]
) -> None:
    store, catalog, ingestor = parts
    paths = [*sources["mr"], *sources["enhanced"], *sources["us"]]
    results = [
        ingestor.ingest_file(path, source=path.name, received_via="c-store", calling_ae="PACS")
        for path in paths
    ]
    assert [result.status for result in results] == ["stored"] * 6
    assert all(path.exists() for path in paths)  # files outside the store are copied

    mr = pydicom.dcmread(sources["mr"][0])
    assert results[0].sop_instance_uid == mr.SOPInstanceUID
    assert results[0].study_instance_uid == mr.StudyInstanceUID
    stored = store.instance_path(mr.StudyInstanceUID, mr.SeriesInstanceUID, mr.SOPInstanceUID)
    assert stored is not None and stored.read_bytes() == sources["mr"][0].read_bytes()

    studies = {row["StudyDescription"]: row for row in catalog.search_studies({})}
    assert studies["MRI BRAIN"]["NumberOfStudyRelatedInstances"] == "4"
    assert studies["MRI BRAIN"]["NumberOfStudyRelatedSeries"] == "2"
    assert studies["MRI BRAIN"]["PatientName"] == "Synthetic^Jane"
    assert studies["Echocardiogram TTE"]["ModalitiesInStudy"] == "US"
    (cine,) = catalog.search_instances({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.3.1"}, limit=1)
    assert (cine["Rows"], cine["Columns"], cine["NumberOfFrames"]) == ("128", "160", "6")
    (record, *_) = catalog.list_instances(mr.StudyInstanceUID)
    assert record.received_at == RECEIVED_AT
    assert (store.root / record.file_path).is_file()


def test_a_duplicate_changes_nothing(
    sources: dict[str, list[Path]],
    parts: tuple[StudyStore, Catalog, InstanceIngestor],
    tmp_path: Path,
) -> None:
    store, catalog, ingestor = parts
    original = sources["mr"][0]
    assert ingest(ingestor, original) == "stored"
    changed = pydicom.dcmread(original)
    changed.SeriesDescription = "CHANGED"
    copy = tmp_path / "copy.dcm"
    changed.save_as(copy)
    result = ingestor.ingest_file(copy, source="copy", received_via="c-store")
    assert (result.status, result.accepted, result.reason) == ("duplicate", True, None)
    stored = store.study_files(changed.StudyInstanceUID)
    assert [path.read_bytes() for path in stored] == [original.read_bytes()]
    assert catalog.search_series({})[0]["SeriesDescription"] == "T1 MPRAGE SAG"


def test_a_received_temp_file_is_consumed(
    sources: dict[str, list[Path]], parts: tuple[StudyStore, Catalog, InstanceIngestor]
) -> None:
    store, _, ingestor = parts
    kept, refused = store.new_temp_file(), store.new_temp_file()
    kept.write_bytes(sources["us"][0].read_bytes())
    refused.write_bytes(b"not dicom")
    assert ingest(ingestor, kept) == "stored"
    assert ingest(ingestor, refused) == "refused"
    assert list(store.temp_dir().iterdir()) == []


def test_a_received_file_is_durable_before_it_is_catalogued(
    sources: dict[str, list[Path]],
    parts: tuple[StudyStore, Catalog, InstanceIngestor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, catalog, ingestor = parts
    events: list[str] = []
    real_fsync, real_replace, real_record = os.fsync, os.replace, catalog.record_instance

    def fsync(descriptor: int) -> None:
        target = Path(os.readlink(f"/proc/self/fd/{descriptor}"))
        events.append("fsync folder" if target.is_dir() else f"fsync {target.suffix}")
        real_fsync(descriptor)

    def replace(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        events.append("rename")
        real_replace(source, target)

    def record(attributes: InstanceAttributes) -> bool:
        events.append("catalogue")
        return real_record(attributes)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(catalog, "record_instance", record)
    received = store.new_temp_file()
    received.write_bytes(sources["mr"][0].read_bytes())
    assert ingest(ingestor, received) == "stored"
    # Flushed once (early, while it was checked), then named, its folder entry
    # flushed, and only then catalogued; new folders are flushed in between.
    assert events[0] == "fsync .part" and events.count("fsync .part") == 1
    assert events[events.index("rename") :] == ["rename", "fsync folder", "catalogue"]


def edited(source: Path, folder: Path, **attributes: object) -> Path:
    dataset = pydicom.dcmread(source)
    for keyword, value in attributes.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    path = folder / f"edited-{len(list(folder.iterdir()))}.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset.save_as(path)
    return path


def test_bad_objects_are_refused_with_reasons(
    sources: dict[str, list[Path]],
    parts: tuple[StudyStore, Catalog, InstanceIngestor],
    tmp_path: Path,
) -> None:
    store, catalog, ingestor = parts
    folder = tmp_path / "bad"
    folder.mkdir()
    mr, us = sources["mr"][0], sources["us"][0]
    truncated = folder / "truncated.dcm"
    truncated.write_bytes(mr.read_bytes()[:-300])
    ct = Path(get_testdata_file("CT_small.dcm", download=False))  # type: ignore[arg-type]
    frames = int(pydicom.dcmread(us).NumberOfFrames)
    cases = {
        truncated: "data ends inside an element",
        ct: "(0008,0016) SOPClassUID 1.2.840.10008.5.1.4.1.1.2 (CT Image Storage) is not accepted",
        edited(mr, folder, StudyInstanceUID=None): "missing (0020,000D) StudyInstanceUID",
        edited(mr, folder, SOPInstanceUID="1.2.abc"): "SOPInstanceUID '1.2.abc' is not a valid",
        edited(mr, folder, SeriesInstanceUID="1.2/../3"): "SeriesInstanceUID '1.2/../3'",
        edited(us, folder, NumberOfFrames=frames + 1): f"lists {frames} frames",
        edited(us, folder, PixelData=encapsulate([b"\xff\xd8 junk"] * frames)): "do not decode",
        edited(mr, folder, PixelData=b"\x00" * 100): "PixelData holds 100 bytes",
        edited(mr, folder, Rows=None): "Rows is missing",
    }
    for path, reason in cases.items():
        result = ingestor.ingest_file(path, source=path.name, received_via="stow-rs")
        assert result.status == "refused", path.name
        assert result.reason is not None and reason in result.reason, (path.name, result.reason)
    assert catalog.search_studies({}) == []
    assert sorted(path.name for path in store.root.iterdir()) == [".incoming", ".locks"]


def test_meta_header_disagreeing_with_the_data_set_is_refused(
    sources: dict[str, list[Path]],
    parts: tuple[StudyStore, Catalog, InstanceIngestor],
    tmp_path: Path,
) -> None:
    _, _, ingestor = parts
    dataset = pydicom.dcmread(sources["mr"][0])
    dataset.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4")
    path = tmp_path / "meta.dcm"
    dataset.save_as(path)
    result = ingestor.ingest_file(path, source="meta", received_via="c-store")
    assert result.reason == "(0002,0003) MediaStorageSOPInstanceUID differs from SOPInstanceUID"


def test_a_series_claimed_by_two_studies_is_refused(
    sources: dict[str, list[Path]],
    parts: tuple[StudyStore, Catalog, InstanceIngestor],
    tmp_path: Path,
) -> None:
    _, catalog, ingestor = parts
    assert ingest(ingestor, sources["mr"][0]) == "stored"
    dataset = pydicom.dcmread(sources["mr"][1])
    dataset.StudyInstanceUID = "1.2.3.4"
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4.5")
    moved = tmp_path / "moved.dcm"
    dataset.save_as(moved)
    result = ingestor.ingest_file(moved, source="moved", received_via="c-store")
    assert result.status == "refused"
    assert result.reason == "(0020,000E) SeriesInstanceUID is already stored under another study"
    assert not catalog.has_instance("1.2.3.4.5")


def test_the_malformed_corpus_is_refused_without_an_exception(
    parts: tuple[StudyStore, Catalog, InstanceIngestor], tmp_path: Path
) -> None:
    store, catalog, _ = parts
    ingestor = InstanceIngestor(store, catalog, limits=SMALL_LIMITS)
    seeds = build_seeds(tmp_path / "seeds")
    corpus = build_corpus(seeds)
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, data in [*seeds.items(), *corpus.items()]:
        (folder / f"{name}.dcm").write_bytes(data)
    seed_statuses = [ingest(ingestor, folder / f"{name}.dcm") for name in seeds]
    assert seed_statuses == ["stored"] * 4
    statuses = {name: ingest(ingestor, folder / f"{name}.dcm") for name in corpus}
    # The only case that reads whole is an intact copy of a seed (see test_malformed_corpus).
    assert {name for name, status in statuses.items() if status != "refused"} == {
        "absurd-length-meta-group"
    }
    assert statuses["absurd-length-meta-group"] == "duplicate"
    assert len(catalog.search_instances({})) == 4
    assert len(list(store.root.glob("*/*/*.dcm"))) == 4


def test_concurrent_ingest_stores_each_instance_once(
    sources: dict[str, list[Path]], parts: tuple[StudyStore, Catalog, InstanceIngestor]
) -> None:
    store, catalog, ingestor = parts
    paths = [*sources["mr"], *sources["enhanced"], *sources["us"]] * 3
    statuses: list[str] = []
    lock = threading.Lock()

    def work(share: list[Path]) -> None:
        for path in share:
            status = ingest(ingestor, path)
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=work, args=(paths[index::4],)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert Counter(statuses) == {"stored": 6, "duplicate": 12}
    assert len(catalog.search_instances({})) == 6
    assert len(list(store.root.glob("*/*/*.dcm"))) == 6
    assert list(store.temp_dir().iterdir()) == []
