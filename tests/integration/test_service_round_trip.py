"""The service as a hospital meets it: Orthanc routes studies to `mmdx serve`, SRs come back.

One loopback-only network namespace and one `mmdx serve` for the whole module (it takes
minutes to start here); every test runs its clients against that shared service. The
PACS push happens first (the ``pushed`` fixture) so the studies are classified while the
other tests run; the round-trip test, last, waits for the SRs in Orthanc.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from PIL import Image
from pynetdicom import AE, _config, evt
from pynetdicom.dsutils import split_dataset

from serving.dicom_network import set_tcp_nodelay
from tests.dicom_validation import dciodvfy_errors
from tests.imaging.malformed_corpus import build_corpus, build_seeds
from tests.integration.netns import only_loopback
from tests.integration.service_fixtures import (
    MMDX_AE,
    ORTHANC_AE,
    Hospital,
    running_hospital,
    unavailable_reason,
    wait_for,
)
from tests.integration.test_ingest_bad_input import raw_sendable
from tests.serving.api_service import STOW_TYPE, stow_body
from tests.serving.api_service import write_mr_study as write_small_mr_study
from tests.serving.pipeline_fixtures import (
    ECHO_STUDY_UID,
    MR_STUDY_UID,
    write_echo_study,
    write_mr_study,
)

UNAVAILABLE = unavailable_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or ""),
    # pydicom warns about every invalid value of the malformed objects; here that is the point.
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

VERIFICATION = "1.2.840.10008.1.1"
RAY_DASHBOARD = "http://127.0.0.1:8265"
# Stable in Orthanc (3 s), sent, stable in mmdx (2 s), classified on a loaded 2-core machine.
ROUND_TRIP_TIMEOUT_S = 300.0
# Malformed objects that reach the listener (sent unparsed) and must be refused there.
BAD_CSTORE = (
    "truncated-mr-pixel-mid",
    "pixel-data-short-mr",
    "dims-absurd-size",
    "uid-path-study",
    "sequence-nested-3000-deep",
)
BAD_STOW = (
    "text",
    "dicm-then-garbage",
    "truncated-mr-body-half",
    "pixel-data-short-mr",
    "uid-path-sop-instance",
)
LABELS = {MR_STUDY_UID: {"AD", "CN"}, ECHO_STUDY_UID: {"reduced_ef", "normal_ef"}}


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hospital]:
    with running_hospital(tmp_path_factory.mktemp("hospital")) as running:
        yield running


@pytest.fixture(scope="module")
def pushed(hospital: Hospital, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 48-slice MR study and an echo loop sent to Orthanc by storescu, every file stored."""
    folder = tmp_path_factory.mktemp("pacs-studies")
    files = [*write_mr_study(folder / "mr"), write_echo_study(folder / "echo.dcm")]
    outcomes = hospital.push(files, ae_title=ORTHANC_AE, port=hospital.orthanc.dicom_port)
    return {"files": files, "outcomes": outcomes}


def radiologist_get(hospital: Hospital, path: str) -> Any:
    response = hospital.http(
        "GET", hospital.mmdx.url + path, headers=hospital.mmdx.auth("radiologist")
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_pacs_stores_the_pushed_studies(hospital: Hospital, pushed: dict[str, Any]) -> None:
    assert list(pushed["outcomes"].values()) == ["Success"] * 49
    studies = hospital.http("GET", f"{hospital.orthanc.dicomweb_url}/studies").json()
    assert {study["0020000D"]["Value"][0] for study in studies} >= {MR_STUDY_UID, ECHO_STUDY_UID}


def test_only_loopback_serves_mmdx_and_ray_dashboard_needs_its_token(hospital: Hospital) -> None:
    # Ray and Orthanc also listen on every interface: the namespace has no other than lo.
    assert hospital.worker.run(only_loopback)
    listening = hospital.command("ss", "-Hltnp").stdout.split("\n")
    for port in (hospital.mmdx.http_port, hospital.mmdx.dicom_port):
        local = [
            line.split()[3] for line in listening if line and line.split()[3].endswith(f":{port}")
        ]
        assert local == [f"127.0.0.1:{port}"], listening
    assert hospital.http("GET", f"{RAY_DASHBOARD}/api/jobs/").status_code == 401
    token = (hospital.mmdx.data_dir / "secrets" / "ray_token").read_text().strip()
    with_token = hospital.http(
        "GET", f"{RAY_DASHBOARD}/api/jobs/", headers={"Authorization": f"Bearer {token}"}
    )
    assert with_token.status_code == 200


def test_ray_gcs_refuses_a_driver_without_the_token(hospital: Hospital) -> None:
    # Ray's GCS binds every interface: only its token keeps another driver (which could
    # run any code in the cluster) out.
    listening = hospital.command("ss", "-Hltnp").stdout.split("\n")
    gcs_ports = sorted(
        {line.split()[3].rsplit(":", 1)[1] for line in listening if '"gcs_server"' in line}
    )
    assert gcs_ports, listening
    token = (hospital.mmdx.data_dir / "secrets" / "ray_token").read_text().strip()
    attach = (
        "import ray; ray.init(address='127.0.0.1:{port}', log_to_driver=False); "
        "print('attached', len(ray.nodes())); ray.shutdown()"
    )
    outcomes: dict[str, tuple[int | None, str]] = {}
    client_dir = Path(tempfile.mkdtemp(prefix="mmdxrc-", dir="/tmp"))  # short: socket paths
    for name, auth in (
        ("wrong", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}),
        ("none", {"RAY_AUTH_MODE": "disabled"}),
        ("right", {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}),
    ):
        env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_AUTH")}
        env |= {**auth, "RAY_TMPDIR": str(client_dir)}
        command = hospital.namespace.command(
            [sys.executable, "-c", attach.format(port=gcs_ports[0])]
        )
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90)
            outcomes[name] = (done.returncode, done.stdout + done.stderr[-2000:])
        except subprocess.TimeoutExpired:
            outcomes[name] = (None, "timed out")
    shutil.rmtree(client_dir, ignore_errors=True)

    assert outcomes["right"][0] == 0 and "attached 1" in outcomes["right"][1], outcomes["right"]
    for refused in ("wrong", "none"):
        code, output = outcomes[refused]
        assert code != 0, (refused, output)
        assert "attached" not in output, (refused, output)


def test_dicomweb_client_stores_searches_and_retrieves(hospital: Hospital, tmp_path: Path) -> None:
    from dicomweb_client import DICOMwebClient

    files = write_small_mr_study(
        tmp_path, seed="dicomweb", patient_id="DW0001", patient_name="Web^Dora"
    )
    datasets = [pydicom.dcmread(path) for path in files]
    client = DICOMwebClient(hospital.mmdx.dicomweb_url, headers=hospital.mmdx.auth("radiologist"))
    stored = hospital.worker.run(client.store_instances, datasets)
    assert "FailedSOPSequence" not in stored
    assert sorted(item.ReferencedSOPInstanceUID for item in stored.ReferencedSOPSequence) == sorted(
        str(dataset.SOPInstanceUID) for dataset in datasets
    )

    studies = hospital.worker.run(client.search_for_studies, search_filters={"PatientID": "DW0001"})
    study_uid = str(datasets[0].StudyInstanceUID)
    assert [study["0020000D"]["Value"][0] for study in studies] == [study_uid]
    instances = hospital.worker.run(client.search_for_instances, study_uid)
    assert sorted(i["00080018"]["Value"][0] for i in instances) == sorted(
        str(dataset.SOPInstanceUID) for dataset in datasets
    )

    original = datasets[0]
    uids = (study_uid, str(original.SeriesInstanceUID), str(original.SOPInstanceUID))
    retrieved = hospital.worker.run(client.retrieve_instance, *uids)
    assert retrieved == original  # every element, pixels included
    raw = hospital.worker.run(
        client._http_get,
        f"{hospital.mmdx.dicomweb_url}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}",
    )
    assert list(client._decode_multipart_message(raw, stream=False)) == [files[0].read_bytes()]
    metadata = hospital.worker.run(client.retrieve_instance_metadata, *uids)
    assert metadata["00100010"]["Value"] == [{"Alphabetic": "Web^Dora"}]
    assert "BulkDataURI" in metadata["7FE00010"]
    png = hospital.worker.run(
        client.retrieve_instance_frames_rendered,
        *uids,
        frame_numbers=[1],
        media_types=("image/png",),
    )
    assert Image.open(io.BytesIO(png)).size == (original.Columns, original.Rows)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return build_corpus(build_seeds(tmp_path_factory.mktemp("corpus-seeds")))


def presentation_context(path: Path) -> tuple[str, str]:
    meta, _ = split_dataset(path)
    return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)


def send_unparsed(port: int, files: list[Path]) -> tuple[list[int], list[int]]:
    """Each file's C-STORE status, bytes sent as they are, and a C-ECHO status after each."""
    ae = AE(ae_title="BADSCU")
    ae.add_requested_context(VERIFICATION)
    for sop_class, transfer_syntax in sorted({presentation_context(path) for path in files}):
        ae.add_requested_context(sop_class, transfer_syntax)
    association = ae.associate(
        "127.0.0.1", port, ae_title=MMDX_AE, evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay)]
    )
    assert association.is_established
    stores, echoes = [], []
    try:
        for path in files:
            status = association.send_c_store(path)
            stores.append(int(status.Status) if "Status" in status else -1)
            echoes.append(int(association.send_c_echo().Status))
    finally:
        association.release()
    return stores, echoes


def test_bad_input_is_refused_good_input_stored_and_the_service_answers(
    hospital: Hospital, corpus: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # bytes go out unparsed
    for name in {*BAD_CSTORE, *BAD_STOW}:
        (tmp_path / f"{name}.dcm").write_bytes(corpus[name])
    bad = [raw_sendable(tmp_path / f"{name}.dcm", tmp_path, i) for i, name in enumerate(BAD_CSTORE)]
    good = write_small_mr_study(
        tmp_path / "good", seed="cstore-good", patient_id="BI0001", patient_name="Good^Ann"
    )
    stores, echoes = hospital.worker.run(
        send_unparsed, hospital.mmdx.dicom_port, [bad[0], good[0], *bad[1:], good[1]]
    )
    assert stores[1] == stores[-1] == 0x0000
    refusals = dict(zip(BAD_CSTORE, [stores[0], *stores[2:-1]], strict=True))
    assert refusals == dict.fromkeys(BAD_CSTORE, 0xC000)
    assert echoes == [0x0000] * len(stores)

    stow_good = write_small_mr_study(
        tmp_path / "stow", seed="stow-good", patient_id="BI0002", patient_name="Good^Bob"
    )
    body = stow_body([tmp_path / f"{name}.dcm" for name in BAD_STOW] + stow_good)
    response = hospital.http(
        "POST", f"{hospital.mmdx.dicomweb_url}/studies", data=body,
        headers={"Content-Type": STOW_TYPE, **hospital.mmdx.auth("radiologist")},
    )  # fmt: skip
    assert response.status_code == 202, response.text
    result = pydicom.Dataset.from_json(response.json())
    assert sorted(item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence) == sorted(
        str(pydicom.dcmread(path).SOPInstanceUID) for path in stow_good
    )
    failures = [
        (int(item.FailureReason), str(item.get("ErrorComment", "")))
        for item in result.FailedSOPSequence
    ]
    assert [reason for reason, _ in failures] == [0xC000] * len(BAD_STOW)
    assert failures[0][1] == "not a DICOM Part 10 file: no 'DICM' prefix after the preamble"
    assert failures[-1][1] == "SOPInstanceUID '../../etc/passwd' is not a valid UID"
    assert all(comment for _, comment in failures), failures

    for patient in ("BI0001", "BI0002"):
        found = radiologist_get(hospital, f"/dicom-web/instances?PatientID={patient}")
        assert len(found) == 2
    assert hospital.http("GET", f"{hospital.mmdx.url}/healthz").json() == {"status": "ok"}
    echo = hospital.command(
        "echoscu", "-v", "-aec", MMDX_AE, "127.0.0.1", str(hospital.mmdx.dicom_port)
    )
    assert echo.returncode == 0 and "Received Echo Response (Success)" in echo.stderr


def test_refused_and_forbidden_requests_are_audited_without_tokens(hospital: Hospital) -> None:
    mmdx = hospital.mmdx
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    instance = f"/dicom-web/studies/{MR_STUDY_UID}/series/1.2.3/instances/1.2.3.4"
    attempts = [
        ({}, "/api/studies", 401),
        ({"Authorization": "Bearer not-a-token-0123456789"}, "/api/studies", 401),
        (mmdx.auth("researcher"), "/api/studies", 403),
        (mmdx.auth("researcher"), f"/api/studies/{MR_STUDY_UID}", 403),
        (mmdx.auth("researcher"), "/dicom-web/studies", 403),
        (mmdx.auth("researcher"), instance, 403),
    ]
    for headers, path, status in attempts:
        response = hospital.http("GET", mmdx.url + path, headers=headers)
        assert response.status_code == status, (path, response.text)
        assert "Patient" not in response.text

    audit = hospital.http(
        "GET", f"{mmdx.url}/api/audit", params={"since": since}, headers=mmdx.auth("admin")
    )
    assert audit.status_code == 200, audit.text
    events = [
        (
            event["user"],
            event["action"],
            event["resource"],
            event["outcome"],
            event["client_address"],
        )
        for event in audit.json()["events"]
    ]
    expected = [
        (None, "studies.list", "/api/studies", "denied", "127.0.0.1"),
        (None, "studies.list", "/api/studies", "denied", "127.0.0.1"),
        ("researcher", "studies.list", "/api/studies", "denied", "127.0.0.1"),
        ("researcher", "studies.read", f"/api/studies/{MR_STUDY_UID}", "denied", "127.0.0.1"),
        ("researcher", "qido", "/dicom-web/studies", "denied", "127.0.0.1"),
        ("researcher", "wado", instance, "denied", "127.0.0.1"),
    ]
    for entry in expected:
        assert entry in events, (entry, events)
    for token in (*mmdx.tokens.values(), "not-a-token-0123456789"):
        assert token not in audit.text


def test_echoscu_and_findscu_reach_the_listener(
    hospital: Hospital, pushed: dict[str, Any], tmp_path: Path
) -> None:
    port = str(hospital.mmdx.dicom_port)
    echo = hospital.command("echoscu", "-v", "-aec", MMDX_AE, "127.0.0.1", port)
    assert echo.returncode == 0 and "Received Echo Response (Success)" in echo.stderr

    def found() -> set[str]:
        for old in tmp_path.glob("rsp*.dcm"):
            old.unlink()
        result = hospital.command(
            "findscu", "-S", "-aec", MMDX_AE, "-k", "QueryRetrieveLevel=STUDY",
            "-k", "StudyInstanceUID", "-k", "ModalitiesInStudy", "-X", "-od", str(tmp_path),
            "127.0.0.1", port,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return {str(pydicom.dcmread(path).StudyInstanceUID) for path in tmp_path.glob("rsp*.dcm")}

    # The studies arrive once Orthanc found them stable and forwarded them.
    wait_for(
        lambda: {MR_STUDY_UID, ECHO_STUDY_UID} <= found(),
        120.0,
        "the routed studies in findscu",
        interval_s=2.0,
    )


def test_sr_lands_in_the_pacs_study_and_the_result_is_served(
    hospital: Hospital, pushed: dict[str, Any], tmp_path: Path
) -> None:
    from dicomweb_client import DICOMwebClient

    pacs = DICOMwebClient(hospital.orthanc.dicomweb_url)

    def sr_series(study: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = hospital.worker.run(
            pacs.search_for_series, study, search_filters={"Modality": "SR"}
        )
        return found

    wait_for(
        lambda: all(sr_series(study) for study in LABELS),
        ROUND_TRIP_TIMEOUT_S,
        "the result SRs in Orthanc",
        interval_s=2.0,
        diagnosis=lambda: hospital.mmdx.output()[-3000:],
    )
    for study, labels in LABELS.items():
        (series,) = sr_series(study)
        series_uid = series["0020000E"]["Value"][0]
        (instance,) = hospital.worker.run(pacs.search_for_instances, study, series_uid)
        sop_uid = instance["00080018"]["Value"][0]

        payload = radiologist_get(hospital, f"/api/studies/{study}/result")["payload"]
        assert payload["study_instance_uid"] == study
        (result,) = payload["results"]
        assert result["prediction"]["label"] in labels
        assert 0.0 <= result["prediction"]["probability"] <= 1.0
        assert len(result["similar_cases"]) >= 3
        assert result["sr"]["sop_instance_uid"] == sop_uid
        assert result["sr"]["series_instance_uid"] == series_uid
        assert result["sr"]["sent_to"] == f"{ORTHANC_AE}@127.0.0.1:{hospital.orthanc.dicom_port}"
        assert result["sr"]["delivery_error"] is None

        (match,) = hospital.http(
            "POST", f"{hospital.orthanc.url}/tools/lookup", data=sop_uid
        ).json()
        stored = hospital.http("GET", f"{hospital.orthanc.url}/instances/{match['ID']}/file")
        path = tmp_path / f"{sop_uid}.dcm"
        path.write_bytes(stored.content)
        sr = pydicom.dcmread(path)
        assert str(sr.StudyInstanceUID) == study
        assert sr.VerificationFlag == "UNVERIFIED"
        assert dciodvfy_errors(path) == []
        dump = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60)
        assert dump.returncode == 0, dump.stderr
        assert dump.stdout.startswith("Comprehensive 3D SR Document")
        assert "not for diagnostic use" in dump.stdout
        assert "Verification Flag   : UNVERIFIED" in dump.stdout
