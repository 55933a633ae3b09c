"""DICOMweb routes over in-memory fakes: TestClient checks, then dicomweb-client over uvicorn."""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import pixel_array

from imaging.dicom.reading import read_dicom
from imaging.errors import ImagingError
from imaging.synthetic.mr_dicom import write_mr_series
from serving.dicomweb.dicom_json import row_to_json
from serving.dicomweb.multipart import parse_content_type
from serving.dicomweb.rendered import to_display
from serving.dicomweb.routes import create_dicomweb_router
from serving.study_access import (
    INSTANCE_KEYWORDS,
    SERIES_KEYWORDS,
    STUDY_KEYWORDS,
    IngestResult,
)
from tests.synthetic_cases import make_mr_volume, make_study

BOUNDARY = "test-boundary-0123"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'
ECHO = Path(get_testdata_file("color3d_jpeg_baseline.dcm", download=False) or "")


class FakeStore:
    """Sink, query and locator over a dict of stored files; refuses listed SOP UIDs."""

    def __init__(self, root: Path, refuse: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.refuse = dict(refuse or {})
        self.files: dict[str, tuple[dict[str, str], Path]] = {}

    def ingest_file(
        self, path: Path, *, source: str, received_via: str, calling_ae: str | None = None
    ) -> IngestResult:
        try:
            dataset = read_dicom(path, stop_before_pixels=True)
        except ImagingError as exc:
            return IngestResult("refused", source, reason=exc.reason)
        sop = str(dataset.SOPInstanceUID)
        uids = {
            "sop_instance_uid": sop,
            "sop_class_uid": str(dataset.SOPClassUID),
            "study_instance_uid": str(dataset.StudyInstanceUID),
        }
        if sop in self.refuse:
            return IngestResult("refused", source, reason=self.refuse[sop], **uids)
        if sop in self.files:
            return IngestResult("duplicate", source, **uids)
        stored = self.root / f"{sop}.dcm"
        shutil.move(path, stored)
        row = {
            keyword: _text(dataset.get(keyword))
            for keyword in {*STUDY_KEYWORDS, *SERIES_KEYWORDS, *INSTANCE_KEYWORDS}
            if keyword in dataset
        }
        self.files[sop] = (row, stored)
        return IngestResult("stored", source, **uids)

    def _search(
        self,
        keywords: tuple[str, ...],
        filters: Mapping[str, str],
        limit: int | None,
        offset: int,
        **path: str | None,
    ) -> list[dict[str, str]]:
        unknown = set(filters) - set(keywords)
        if unknown:
            raise ValueError(f"cannot match on {sorted(unknown)}")
        wanted = {**filters, **{k: v for k, v in path.items() if v is not None}}
        rows: dict[tuple[str, ...], dict[str, str]] = {}
        for row, _ in self.files.values():
            if all(row.get(key) == value for key, value in wanted.items()):
                projected = {key: row.get(key, "") for key in keywords}
                rows[tuple(projected.values())] = projected
        ordered = sorted(rows.values(), key=lambda r: tuple(r.values()))
        return ordered[offset:][:limit] if limit is not None else ordered[offset:]

    def search_studies(
        self, filters: Mapping[str, str], *, limit: int | None = None, offset: int = 0
    ) -> list[dict[str, str]]:
        keywords = ("StudyInstanceUID", "StudyDate", "PatientName", "PatientID")
        return self._search(keywords, filters, limit, offset)

    def search_series(
        self,
        filters: Mapping[str, str],
        *,
        study_instance_uid: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, str]]:
        keywords = ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber")
        return self._search(keywords, filters, limit, offset, StudyInstanceUID=study_instance_uid)

    def search_instances(
        self,
        filters: Mapping[str, str],
        *,
        study_instance_uid: str | None = None,
        series_instance_uid: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, str]]:
        return self._search(
            INSTANCE_KEYWORDS,
            filters,
            limit,
            offset,
            StudyInstanceUID=study_instance_uid,
            SeriesInstanceUID=series_instance_uid,
        )

    def instance_path(self, study: str, series: str, sop: str) -> Path | None:
        entry = self.files.get(sop)
        if entry is None or entry[0]["StudyInstanceUID"] != study:
            return None
        return entry[1] if entry[0]["SeriesInstanceUID"] == series else None


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(item) for item in value)
    return str(value)


class RecordingAccess:
    """Records each check; refuses the actions listed with 403."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.refuse = refuse

    def __call__(self, request: Request, action: str, study_instance_uid: str | None) -> None:
        self.calls.append((action, study_instance_uid))
        if action in self.refuse:
            raise HTTPException(403, f"{action} is not allowed")


def make_app(
    store: FakeStore,
    access: RecordingAccess,
    work_dir: Path,
    max_request_bytes: int = 50 * 1024**2,
    max_instance_bytes: int = 20 * 1024**2,
) -> FastAPI:
    app = FastAPI()
    router = create_dicomweb_router(
        store,
        store,
        store,
        work_dir=work_dir,
        max_request_bytes=max_request_bytes,
        max_instance_bytes=max_instance_bytes,
        access=access,
    )
    app.include_router(router, prefix="/dicom-web")
    return app


@pytest.fixture(scope="module")
def mr_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three 16x20 MR slices with a VOI window, and a 12-bit ramp."""
    k, i, j = np.meshgrid(np.arange(3), np.arange(16), np.arange(20), indexing="ij")
    volume = make_mr_volume((100.0 + 10.0 * i + j + 200.0 * k).astype(np.float32))
    out = tmp_path_factory.mktemp("mr")
    return write_mr_series(volume, make_study(), out_dir=out, series_number=3, uid_seed="web")


@pytest.fixture()
def store(tmp_path: Path) -> FakeStore:
    root = tmp_path / "store"
    root.mkdir()
    return FakeStore(root)


def stow_body(parts: list[bytes], part_types: list[str] | None = None) -> bytes:
    types = part_types or ["application/dicom"] * len(parts)
    out = b"".join(
        f"--{BOUNDARY}\r\nContent-Type: {kind}\r\n\r\n".encode() + data + b"\r\n"
        for data, kind in zip(parts, types, strict=True)
    )
    return out + f"--{BOUNDARY}--\r\n".encode()


def uid(path: Path, keyword: str) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).get(keyword))


def test_stow_stores_all_and_reports_retrieve_urls(
    store: FakeStore, mr_files: list[Path], tmp_path: Path
) -> None:
    access = RecordingAccess()
    client = TestClient(make_app(store, access, tmp_path / "work"))
    response = client.post(
        "/dicom-web/studies",
        content=stow_body([p.read_bytes() for p in mr_files]),
        headers={"Content-Type": STOW_TYPE},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    result = pydicom.Dataset.from_json(response.json())
    assert "FailedSOPSequence" not in result
    items = result.ReferencedSOPSequence
    assert [item.ReferencedSOPInstanceUID for item in items] == [
        uid(p, "SOPInstanceUID") for p in mr_files
    ]
    study, series = uid(mr_files[0], "StudyInstanceUID"), uid(mr_files[0], "SeriesInstanceUID")
    assert items[0].RetrieveURL == (
        f"http://testserver/dicom-web/studies/{study}/series/"
        f"{series}/instances/{items[0].ReferencedSOPInstanceUID}"
    )
    assert len(store.files) == 3
    assert access.calls == [("stow", None)]
    assert list((tmp_path / "work").iterdir()) == []  # no part left behind


def test_stow_reports_each_failure_and_keeps_the_rest(
    store: FakeStore, mr_files: list[Path], tmp_path: Path
) -> None:
    refused = uid(mr_files[1], "SOPInstanceUID")
    store.refuse[refused] = "SOP Class not accepted here"
    study = uid(mr_files[0], "StudyInstanceUID")
    other_study = pydicom.dcmread(mr_files[2])
    other_study.StudyInstanceUID = "1.2.3.4"
    other = io.BytesIO()
    other_study.save_as(other, enforce_file_format=True)
    client = TestClient(make_app(store, RecordingAccess(), tmp_path / "work"))
    parts = [
        mr_files[0].read_bytes(),
        mr_files[1].read_bytes(),
        b"{}",
        b"not dicom",
        other.getvalue(),
    ]
    types = [
        "application/dicom",
        "application/dicom",
        "application/json",
        "application/dicom",
        "application/dicom",
    ]
    response = client.post(
        f"/dicom-web/studies/{study}",
        content=stow_body(parts, types),
        headers={"Content-Type": STOW_TYPE},
    )
    assert response.status_code == 202
    result = pydicom.Dataset.from_json(response.json())
    assert [i.ReferencedSOPInstanceUID for i in result.ReferencedSOPSequence] == [
        uid(mr_files[0], "SOPInstanceUID")
    ]
    failed = {
        i.get("ReferencedSOPInstanceUID") or f"#{n}": (i.FailureReason, i.ErrorComment)
        for n, i in enumerate(result.FailedSOPSequence)
    }
    assert failed[refused] == (0xC000, "SOP Class not accepted here")
    assert failed["#1"] == (0xC000, "part content type 'application/json' is not application/dicom")
    assert failed["#2"][0] == 0xC000 and failed["#2"][1]
    assert failed[uid(mr_files[2], "SOPInstanceUID")] == (
        0xA900,
        "StudyInstanceUID is not the study of the request",
    )
    assert list(store.files) == [uid(mr_files[0], "SOPInstanceUID")]
    # Nothing new stored: 409; a duplicate counts as stored: 200.
    again = client.post(
        f"/dicom-web/studies/{study}",
        content=stow_body(parts[1:4], types[1:4]),
        headers={"Content-Type": STOW_TYPE},
    )
    assert again.status_code == 409
    duplicate = client.post(
        "/dicom-web/studies", content=stow_body(parts[:1]), headers={"Content-Type": STOW_TYPE}
    )
    assert duplicate.status_code == 200


def test_stow_refuses_bad_requests(store: FakeStore, mr_files: list[Path], tmp_path: Path) -> None:
    client = TestClient(
        make_app(
            store,
            RecordingAccess(),
            tmp_path / "work",
            max_request_bytes=4096,
            max_instance_bytes=1024,
        )
    )
    data = mr_files[0].read_bytes()
    assert (
        client.post(
            "/dicom-web/studies", content=data, headers={"Content-Type": "application/dicom"}
        ).status_code
        == 415
    )
    no_boundary = client.post(
        "/dicom-web/studies", content=b"x", headers={"Content-Type": "multipart/related"}
    )
    assert no_boundary.status_code == 400 and "boundary" in no_boundary.json()["detail"]
    too_big = client.post(
        "/dicom-web/studies", content=stow_body([data] * 3), headers={"Content-Type": STOW_TYPE}
    )
    assert too_big.status_code == 413
    streamed = client.post(
        "/dicom-web/studies",
        content=iter([stow_body([data] * 3)]),
        headers={"Content-Type": STOW_TYPE},
    )
    assert streamed.status_code == 413  # no Content-Length: counted while received
    truncated = client.post(
        "/dicom-web/studies", content=stow_body([b"abc"])[:-10], headers={"Content-Type": STOW_TYPE}
    )
    assert truncated.status_code == 400 and "ended inside part 1" in truncated.json()["detail"]
    oversize_part = client.post(
        "/dicom-web/studies", content=stow_body([b"x" * 2000]), headers={"Content-Type": STOW_TYPE}
    )
    assert oversize_part.status_code == 409
    failed = pydicom.Dataset.from_json(oversize_part.json()).FailedSOPSequence[0]
    assert failed.FailureReason == 0xA700
    assert list((tmp_path / "work").iterdir()) == [] and store.files == {}


def test_access_check_runs_first(store: FakeStore, tmp_path: Path) -> None:
    access = RecordingAccess(refuse=frozenset({"stow", "wado"}))
    client = TestClient(make_app(store, access, tmp_path / "work"))
    assert (
        client.post(
            "/dicom-web/studies/1.2.3", content=b"junk", headers={"Content-Type": "text/plain"}
        ).status_code
        == 403
    )
    assert client.get("/dicom-web/studies/1.2/series/3.4/instances/5.6").status_code == 403
    assert client.get("/dicom-web/studies/1.2/series").status_code == 200
    assert access.calls == [("stow", "1.2.3"), ("wado", "1.2"), ("qido", "1.2")]


@pytest.fixture()
def loaded(store: FakeStore, mr_files: list[Path], tmp_path: Path) -> TestClient:
    for n, path in enumerate([*mr_files, ECHO]):
        copy = tmp_path / f"in{n}.dcm"
        shutil.copy(path, copy)
        assert store.ingest_file(copy, source="test", received_via="test").status == "stored"
    return TestClient(make_app(store, RecordingAccess(), tmp_path / "work"))


def test_qido_filters_pages_and_refuses_bad_parameters(
    loaded: TestClient, mr_files: list[Path]
) -> None:
    study = uid(mr_files[0], "StudyInstanceUID")
    studies = loaded.get("/dicom-web/studies", params={"includefield": "all"}).json()
    assert len(studies) == 2
    mr = loaded.get("/dicom-web/studies", params={"0020000D": study})
    assert mr.headers["content-type"] == "application/dicom+json"
    assert [row["0020000D"]["Value"] for row in mr.json()] == [[study]]
    assert mr.json()[0]["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Synthetic^Jane"}]}
    series = loaded.get(f"/dicom-web/studies/{study}/series", params={"Modality": "MR"}).json()
    assert [row["00080060"]["Value"] for row in series] == [["MR"]]
    assert series[0]["00200011"] == {"vr": "IS", "Value": [3]}
    instances = loaded.get(
        f"/dicom-web/studies/{study}/instances",
        params={"limit": "2", "offset": "1", "fuzzymatching": "true"},
    ).json()
    every = loaded.get(f"/dicom-web/studies/{study}/instances").json()
    assert sorted(row["00200013"]["Value"][0] for row in every) == [1, 2, 3]
    assert instances == every[1:3]
    assert instances[0]["00081190"]["Value"][0].startswith(
        f"http://testserver/dicom-web/studies/{study}/series/"
    )
    everything = loaded.get("/dicom-web/instances").json()
    assert {row["00080016"]["Value"][0] for row in everything} == {
        "1.2.840.10008.5.1.4.1.1.4",
        "1.2.840.10008.5.1.4.1.1.3.1",
    }
    assert loaded.get("/dicom-web/series", params={"Modality": "CT"}).json() == []
    for params, named in [
        ({"NotAnAttribute": "x"}, "NotAnAttribute"),
        ({"limit": "-1"}, "limit"),
        ({"offset": "many"}, "offset"),
        ({"AccessionNumber": "1"}, "Accession"),
    ]:
        response = loaded.get("/dicom-web/studies", params=params)
        assert response.status_code == 400 and named in response.json()["detail"]
    assert loaded.get("/dicom-web/studies/1.2.abc/series").status_code == 400


def test_results_past_the_server_cap_carry_a_warning(
    loaded: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("serving.dicomweb.routes.MAX_QUERY_RESULTS", 2)
    capped = loaded.get("/dicom-web/instances")
    assert len(capped.json()) == 2
    assert "additional results" in capped.headers["warning"]
    assert "warning" not in loaded.get("/dicom-web/instances", params={"limit": "2"}).headers


def test_wado_instance_metadata_bulkdata_and_rendered(
    loaded: TestClient, store: FakeStore, mr_files: list[Path]
) -> None:
    path = mr_files[1]
    url = (
        f"/dicom-web/studies/{uid(path, 'StudyInstanceUID')}/series/"
        f"{uid(path, 'SeriesInstanceUID')}/instances/{uid(path, 'SOPInstanceUID')}"
    )
    response = loaded.get(
        url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    )
    media, parameters = parse_content_type(response.headers["content-type"])
    assert (media, parameters["type"]) == ("multipart/related", "application/dicom")
    header = f"--{parameters['boundary']}\r\nContent-Type: application/dicom; transfer-syntax="
    assert response.content.startswith(header.encode())
    assert path.read_bytes() in response.content
    assert int(response.headers["content-length"]) == len(response.content)
    refused = loaded.get(
        url,
        headers={
            "Accept": 'multipart/related; type="application/dicom"; '
            "transfer-syntax=1.2.840.10008.1.2.4.50"
        },
    )
    assert refused.status_code == 406
    assert loaded.get(url + "9").status_code == 404

    metadata = loaded.get(url + "/metadata").json()[0]
    assert metadata["00080018"]["Value"] == [uid(path, "SOPInstanceUID")]
    assert metadata["7FE00010"] == {
        "vr": "OW",
        "BulkDataURI": f"http://testserver{url}/bulkdata/7FE00010",
    }
    series_url = url.rsplit("/instances/", 1)[0]
    series_metadata = loaded.get(series_url + "/metadata").json()
    assert sorted(item["00080018"]["Value"][0] for item in series_metadata) == sorted(
        uid(p, "SOPInstanceUID") for p in mr_files
    )
    bulk = loaded.get(url + "/bulkdata/7FE00010")
    assert pydicom.dcmread(path).PixelData in bulk.content

    dataset = pydicom.dcmread(path)
    png = loaded.get(url + "/rendered", headers={"Accept": "image/png"})
    assert png.headers["content-type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(png.content)))
    assert shown.shape == (16, 20) and shown.dtype == np.uint8
    assert np.array_equal(shown, to_display(dataset.pixel_array, dataset))
    jpeg = loaded.get(url + "/frames/1/rendered")
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert loaded.get(url + "/frames/2/rendered").status_code == 400
    assert loaded.get(url + "/frames/1,2/rendered").status_code == 400
    assert loaded.get(url + "/rendered", headers={"Accept": "image/gif"}).status_code == 406


def test_echo_frame_renders_alone_and_metadata_skips_pixels(loaded: TestClient) -> None:
    echo = pydicom.dcmread(ECHO, stop_before_pixels=True)
    url = (
        f"/dicom-web/studies/{echo.StudyInstanceUID}/series/{echo.SeriesInstanceUID}"
        f"/instances/{echo.SOPInstanceUID}"
    )
    frame = loaded.get(url + "/frames/60/rendered", headers={"Accept": "image/png"})
    shown = np.asarray(Image.open(io.BytesIO(frame.content)))
    expected = pixel_array(ECHO, index=59)  # that frame alone, as pydicom decodes it
    assert shown.shape == (480, 640, 3)
    assert np.abs(shown.astype(int) - expected.astype(int)).mean() < 2.0
    metadata = loaded.get(url + "/metadata").json()[0]
    assert metadata["7FE00010"]["vr"] == "OB"
    assert metadata["00083002"]["Value"] == ["1.2.840.10008.1.2.4.50"]
    assert loaded.get(url + "/frames/121/rendered").status_code == 400


def test_display_windowing() -> None:
    dataset = pydicom.Dataset()
    dataset.WindowCenter, dataset.WindowWidth = 100, 201
    dataset.PhotometricInterpretation = "MONOCHROME2"
    values = np.array([[-50, 0, 100, 200, 300]], dtype=np.int16)
    assert to_display(values, dataset).tolist() == [[0, 0, 128, 255, 255]]
    dataset.PhotometricInterpretation = "MONOCHROME1"
    assert to_display(values, dataset).tolist() == [[255, 255, 127, 0, 0]]
    bare = pydicom.Dataset()
    assert to_display(np.array([[10, 20, 30]]), bare).tolist() == [[0, 127, 255]]


def test_query_rows_take_their_vrs() -> None:
    row = {
        "StudyDate": "20240604",
        "StudyTime": "101500",
        "PatientName": "A^B",
        "ModalitiesInStudy": "MR\\US",
        "NumberOfStudyRelatedInstances": "12",
        "PatientID": "",
        "SOPInstanceUID": "1.2.3",
    }
    assert row_to_json(row) == {
        "00080018": {"vr": "UI", "Value": ["1.2.3"]},
        "00080020": {"vr": "DA", "Value": ["20240604"]},
        "00080030": {"vr": "TM", "Value": ["101500"]},
        "00080061": {"vr": "CS", "Value": ["MR", "US"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "A^B"}]},
        "00100020": {"vr": "LO"},
        "00201208": {"vr": "IS", "Value": [12]},
    }
    with pytest.raises(ValueError, match="Rows value 'x' is not a US number"):
        row_to_json({"Rows": "x"})


# --- end to end: dicomweb-client against uvicorn on loopback -------------------------------


@pytest.fixture()
def server(store: FakeStore, tmp_path: Path) -> Iterator[str]:
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = make_app(store, RecordingAccess(), tmp_path / "work")
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}/dicom-web"
    uv.should_exit = True
    thread.join(timeout=10)


def test_dicomweb_client_round_trip(server: str, mr_files: list[Path]) -> None:
    from dicomweb_client import DICOMwebClient

    client = DICOMwebClient(server)
    datasets = [pydicom.dcmread(path) for path in [*mr_files, ECHO]]
    # The echo loop is 6 MB: over the client's 1 MB chunk size, so it is sent chunked.
    result = client.store_instances(datasets)
    assert len(result.ReferencedSOPSequence) == 4
    assert "FailedSOPSequence" not in result

    studies = client.search_for_studies()
    assert {s["0020000D"]["Value"][0] for s in studies} == {
        str(d.StudyInstanceUID) for d in datasets
    }
    echo = datasets[-1]
    series = client.search_for_series(str(echo.StudyInstanceUID))
    assert [s["0020000E"]["Value"][0] for s in series] == [str(echo.SeriesInstanceUID)]
    mr_study = str(datasets[0].StudyInstanceUID)
    assert len(client.search_for_instances(mr_study, search_filters={"Rows": "16"})) == 3
    assert client.search_for_studies(search_filters={"PatientID": "nobody"}) == []
    paged = client.search_for_instances(limit=1, get_remaining=True)
    assert len(paged) == 4

    uids = (str(echo.StudyInstanceUID), str(echo.SeriesInstanceUID), str(echo.SOPInstanceUID))
    retrieved = client.retrieve_instance(*uids)
    assert retrieved.PixelData == echo.PixelData
    original = ECHO.read_bytes()
    raw = client._http_get(f"{server}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}")
    assert list(client._decode_multipart_message(raw, stream=False)) == [original]

    metadata = client.retrieve_instance_metadata(*uids)
    assert metadata["00280008"]["Value"] == [120]
    assert "BulkDataURI" in metadata["7FE00010"]

    jpeg = client.retrieve_instance_frames_rendered(
        *uids, frame_numbers=[1], media_types=("image/jpeg",)
    )
    assert Image.open(io.BytesIO(jpeg)).size == (640, 480)
