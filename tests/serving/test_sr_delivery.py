"""Result SR delivery: C-STORE to dcmtk storescp, STOW-RS to a local server, refusals typed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from imaging.dicom.result_sr import AIResult, SimilarCase, build_result_sr
from imaging.synthetic.mr_dicom import write_mr_series
from serving import sr_delivery
from serving.settings import DestinationSettings
from serving.sr_delivery import DeliveryError, send_sr
from tests.synthetic_cases import make_mr_volume, make_study

OUT_OF_RESOURCES = 0xA700
CASE_ID = "2.25.333333333333333333333333333333333333"


@pytest.fixture(scope="module")
def sr(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """The result SR of a 2-slice synthetic MR series."""
    paths = write_mr_series(
        make_mr_volume(np.arange(2 * 6 * 6, dtype=np.float64).reshape(2, 6, 6)),
        make_study(),
        out_dir=tmp_path_factory.mktemp("mr"),
        series_number=3,
        uid_seed="sr-delivery",
    )
    result = AIResult(
        model_name="mri-ad-densenet121",
        model_version="2.1.0",
        task="mri_ad",
        predicted_label="CN",
        probability=0.18,
        similar_cases=(SimilarCase(CASE_ID, 0.8, "CN"),),
    )
    evidence = [pydicom.dcmread(path) for path in paths]
    return build_result_sr(evidence, result, series_number=990, instance_number=1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"storescp exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"storescp did not listen on port {port} within {timeout_s} s")


def body_bytes(dataset: Dataset) -> bytes:
    """The data set (meta group left out) as pydicom encodes it in Explicit VR Little Endian."""
    copy = Dataset(dataset)
    copy.file_meta = pydicom.dataset.FileMetaDataset()
    buffer = BytesIO()
    copy.save_as(buffer, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def test_cstore_to_storescp_delivers_the_sr(sr: Dataset, tmp_path: Path) -> None:
    if shutil.which("storescp") is None:
        pytest.fail("storescp is missing: install dcmtk")
    out_dir = tmp_path / "received"
    out_dir.mkdir()
    port = free_port()
    process = subprocess.Popen(
        ["storescp", "--aetitle", "PACS", "--output-directory", str(out_dir), str(port)],
        env={**os.environ, "TCP_NODELAY": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        send_sr(sr, DestinationSettings(kind="cstore", port=port, ae_title="PACS"))
    finally:
        process.terminate()
        process.wait(timeout=10)

    (received_path,) = out_dir.iterdir()
    received = pydicom.dcmread(received_path)
    assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert received.SOPInstanceUID == sr.SOPInstanceUID
    assert body_bytes(received) == body_bytes(sr)


class StowHandler(BaseHTTPRequestHandler):
    """Records each POST and answers with the server's configured status and body."""

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        server: StowServer = self.server  # type: ignore[assignment]
        server.requests.append((self.path, self.headers["Content-Type"], self.rfile.read(length)))
        self.send_response(server.status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(server.reply)))
        self.end_headers()
        self.wfile.write(server.reply)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


class StowServer(ThreadingHTTPServer):
    def __init__(self, status: int, reply: Dataset) -> None:
        super().__init__(("127.0.0.1", 0), StowHandler)
        self.status = status
        self.reply = json.dumps(reply.to_json_dict()).encode()
        self.requests: list[tuple[str, str, bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/dicom-web"


@contextmanager
def stow_server(status: int, reply: Dataset) -> Iterator[StowServer]:
    server = StowServer(status, reply)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def stored_reply(sr: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sr.SOPClassUID
    item.ReferencedSOPInstanceUID = sr.SOPInstanceUID
    reply = Dataset()
    reply.ReferencedSOPSequence = [item]
    return reply


def multipart_parts(content_type: str, body: bytes) -> list[bytes]:
    """The bodies of a multipart/related message."""
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
    parts = body.split(b"--" + boundary)[1:-1]
    return [part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for part in parts]


def test_stow_posts_the_sr_as_one_dicom_part(sr: Dataset) -> None:
    with stow_server(200, stored_reply(sr)) as server:
        send_sr(sr, DestinationSettings(kind="stow", stow_url=server.url))

        ((path, content_type, body),) = server.requests
        assert path == "/dicom-web/studies"
        assert content_type.startswith("multipart/related")
        assert 'type="application/dicom"' in content_type
        (part,) = multipart_parts(content_type, body)
        posted = pydicom.dcmread(BytesIO(part))
        assert posted.SOPInstanceUID == sr.SOPInstanceUID
        assert body_bytes(posted) == body_bytes(sr)


def test_stow_refusal_is_a_typed_error_with_the_http_status(sr: Dataset) -> None:
    with stow_server(409, Dataset()) as server:
        with pytest.raises(DeliveryError, match="HTTP 409") as caught:
            send_sr(sr, DestinationSettings(kind="stow", stow_url=server.url))
        assert caught.value.status == 409
        assert len(server.requests) == 1  # refused once, not retried


def test_stow_failed_sop_is_a_typed_error_with_the_failure_reason(sr: Dataset) -> None:
    failed = Dataset()
    failed.ReferencedSOPClassUID = sr.SOPClassUID
    failed.ReferencedSOPInstanceUID = sr.SOPInstanceUID
    failed.FailureReason = OUT_OF_RESOURCES
    reply = Dataset()
    reply.FailedSOPSequence = [failed]
    with stow_server(202, reply) as server:
        with pytest.raises(DeliveryError, match="0xA700") as caught:
            send_sr(sr, DestinationSettings(kind="stow", stow_url=server.url))
        assert caught.value.status == OUT_OF_RESOURCES


def scp(port: int, handler_status: int, *, contexts: list[str]) -> ThreadedAssociationServer:
    ae = AE(ae_title="PACS")
    for sop_class in contexts:
        ae.add_supported_context(sop_class, ExplicitVRLittleEndian)
    server = ae.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, lambda event: handler_status)],
    )
    assert server is not None  # non-blocking start returns the server
    return server


@pytest.mark.parametrize("status", [0x0000, 0xB007])
def test_cstore_success_or_warning_delivers_with_nagle_off(
    sr: Dataset, status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodelay: list[int] = []

    def spy(event: evt.Event) -> None:
        set_tcp_nodelay(event)
        sock = event.assoc.dul.socket.socket  # type: ignore[union-attr]
        nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))  # type: ignore[union-attr]

    set_tcp_nodelay = sr_delivery.set_tcp_nodelay
    monkeypatch.setattr(sr_delivery, "set_tcp_nodelay", spy)
    port = free_port()
    server = scp(port, status, contexts=[sr.SOPClassUID])
    try:
        send_sr(sr, DestinationSettings(kind="cstore", port=port, ae_title="PACS"))
    finally:
        server.shutdown()
    assert nodelay == [1]


def test_cstore_failure_status_is_a_typed_error(sr: Dataset) -> None:
    port = free_port()
    server = scp(port, OUT_OF_RESOURCES, contexts=[sr.SOPClassUID])
    try:
        with pytest.raises(DeliveryError, match="status 0xA700") as caught:
            send_sr(sr, DestinationSettings(kind="cstore", port=port, ae_title="PACS"))
    finally:
        server.shutdown()
    assert caught.value.status == OUT_OF_RESOURCES
    assert caught.value.destination == f"PACS@127.0.0.1:{port}"


def test_peer_without_sr_storage_is_a_typed_error(sr: Dataset) -> None:
    port = free_port()
    server = scp(port, 0x0000, contexts=[MRImageStorage])
    try:
        with pytest.raises(DeliveryError, match="does not accept SOP class"):
            send_sr(sr, DestinationSettings(kind="cstore", port=port, ae_title="PACS"))
    finally:
        server.shutdown()


def test_nobody_listening_is_a_typed_error(sr: Dataset) -> None:
    port = free_port()
    with pytest.raises(DeliveryError, match="association failed") as caught:
        send_sr(sr, DestinationSettings(kind="cstore", port=port), timeout_s=5)
    assert caught.value.status is None


def test_stow_error_messages_hide_credentials(sr: Dataset) -> None:
    url = f"http://mmdx:s3cret@127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(DeliveryError) as caught:
        send_sr(sr, DestinationSettings(kind="stow", stow_url=url), timeout_s=5)
    assert "s3cret" not in str(caught.value)
    assert caught.value.destination.startswith("http://127.0.0.1:")


def test_kind_none_sends_nothing(sr: Dataset) -> None:
    closed_port = free_port()

    send_sr(sr, DestinationSettings(kind="none", port=closed_port))  # returns, connects nowhere


def test_stow_without_url_is_a_settings_error(sr: Dataset) -> None:
    with pytest.raises(ValueError, match=r'"destination\.stow_url"'):
        send_sr(sr, DestinationSettings(kind="stow"))


def test_dataset_without_uids_is_refused() -> None:
    with pytest.raises(ValueError, match="SOPClassUID"):
        send_sr(Dataset(), DestinationSettings(kind="cstore"))
