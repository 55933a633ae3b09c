"""Bad input through C-STORE while valid traffic flows: refused, the rest stored, echo answered.

The malformed corpus of ``tests/imaging/malformed_corpus.py`` goes to a running
`mmdx listen` twice: through dcmtk's ``storescu`` (which refuses on its side to send what
it cannot parse) and through a pynetdicom SCU that sends every file's bytes unparsed, so
each case reaches the listener. Valid instances are interleaved with the bad ones.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.dsutils import split_dataset

from imaging.synthetic.mr_dicom import write_mr_series
from imaging.synthetic.mr_enhanced_dicom import write_enhanced_mr_series
from imaging.synthetic.us_dicom import write_us_multiframe
from serving.catalog import Catalog
from serving.dicom_network import set_tcp_nodelay
from tests.imaging.malformed_corpus import build_corpus, build_seeds
from tests.integration.test_listener_restart import (
    AE_TITLE,
    DCMTK_ENV,
    SEND_TIMEOUT_S,
    ListenProcess,
    mmdx_listen,
    store_outcomes,
)
from tests.synthetic_cases import make_cine, make_echo_study, make_mr_volume, make_study

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed"),
    # pydicom warns about every invalid value it meets; here that is the point.
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

VERIFICATION = "1.2.840.10008.1.1"
# Only its file meta group length is broken; C-STORE carries the data set alone, an
# intact MR_small, so sent raw it is rightly stored (storescu cannot read it to send it).
INTACT_DATA_SET = "absurd-length-meta-group"
# 8 MiB of zeros as the native Pixel Data of a 64x64 image: refused for its length.
OVERLONG_PIXEL_DATA = "deflate-bomb-over-small-limit"
# storescu re-encodes what it reads: this case's only flaw, a (0008,0000) group length of
# 2 bytes, is dropped on the way, and a valid MR_small arrives (the raw send keeps it).
REPAIRED_BY_STORESCU = "wrong-length-ul-2"
# Damage confined to the preamble or the file meta group, which DIMSE does not carry.
FILE_ONLY_FAMILIES = ("polyglot-", "vr-meta-")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The malformed cases as files, by case name."""
    folder = tmp_path_factory.mktemp("corpus")
    cases = build_corpus(build_seeds(folder / "seeds"))
    paths = {}
    for name, data in cases.items():
        paths[name] = folder / f"{name}.dcm"
        paths[name].write_bytes(data)
    return paths


@pytest.fixture(scope="module")
def good_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Valid MR, Enhanced MR and JPEG US instances, with UIDs no corpus case shares."""
    folder = tmp_path_factory.mktemp("good")
    study = make_study(study_instance_uid="2.25.7100")
    pixels = np.arange(4 * 16 * 16, dtype=np.float32).reshape(4, 16, 16)
    files = write_mr_series(
        make_mr_volume(pixels), study, out_dir=folder / "mr", series_number=1, uid_seed="good"
    )
    files.append(
        write_enhanced_mr_series(
            make_mr_volume(pixels), study, out_dir=folder / "enhanced", series_number=2,
            uid_seed="good",
        )
    )  # fmt: skip
    echo = make_echo_study(study_instance_uid="2.25.7200")
    files.append(
        write_us_multiframe(
            make_cine(echo, number_of_frames=8), echo, path=folder / "us.dcm",
            encoding="jpeg_baseline", uid_seed="good",
        )
    )  # fmt: skip
    return files


def malformed(corpus: dict[str, Path]) -> dict[str, Path]:
    """The cases that are malformed on the wire too.

    Neither the preamble nor the file meta group travels in DIMSE (only the data set
    does), so what reaches a listener of a polyglot or of a file with a broken meta VR is
    its valid seed; STOW-RS and file import, which see the whole file, refuse them
    (tests/serving/test_stow_corpus.py, tests/imaging/test_malformed_corpus.py).
    """
    return {
        name: path
        for name, path in corpus.items()
        if name != OVERLONG_PIXEL_DATA and not name.startswith(FILE_ONLY_FAMILIES)
    }


def interleaved(bad: list[Path], good: list[Path]) -> list[Path]:
    """The bad files with a good one after every few, so valid traffic flows throughout."""
    step = max(1, len(bad) // len(good))
    mixed: list[Path] = []
    for index, path in enumerate(good):
        mixed += [*bad[index * step : (index + 1) * step], path]
    return mixed + bad[len(good) * step :]


def mr_small_uid() -> str:
    """The SOP Instance UID of pydicom's MR_small, the seed of most MR cases."""
    path = get_testdata_file("MR_small.dcm", download=False)
    return str(pydicom.dcmread(path).SOPInstanceUID)  # type: ignore[arg-type]


def sop_instance_uids(files: list[Path]) -> list[str]:
    return sorted(str(pydicom.dcmread(path).SOPInstanceUID) for path in files)


def catalogued(listener: ListenProcess) -> list[str]:
    catalog = Catalog.open(listener.catalog_url)
    try:
        return sorted(row["SOPInstanceUID"] for row in catalog.search_instances({}))
    finally:
        catalog.close()


def echoscu(port: int) -> subprocess.CompletedProcess[str]:
    command = ["echoscu", "-v", "-aec", AE_TITLE, "127.0.0.1", str(port)]
    return subprocess.run(command, env=DCMTK_ENV, capture_output=True, text=True, timeout=30)


@contextmanager
def associate(port: int, contexts: list[tuple[str, str]]) -> Iterator[Association]:
    """A pynetdicom SCU association (TCP_NODELAY on) proposing ``contexts``, released on exit."""
    ae = AE(ae_title="BADSCU")
    ae.add_requested_context(VERIFICATION)
    for sop_class, transfer_syntax in contexts:
        ae.add_requested_context(sop_class, transfer_syntax)
    association = ae.associate(
        "127.0.0.1", port, ae_title=AE_TITLE, evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay)]
    )
    try:
        assert association.is_established
        yield association
    finally:
        if association.is_established:
            association.release()


@contextmanager
def echoing(port: int) -> Iterator[list[int]]:
    """C-ECHO on fresh associations every 50 ms in a thread; yields the statuses so far."""
    statuses: list[int] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.05):
            with associate(port, []) as association:
                reply = association.send_c_echo()
                statuses.append(int(reply.Status) if "Status" in reply else -1)

    thread = threading.Thread(target=loop, name="echo-probe")
    thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        thread.join(30)


def raw_sendable(path: Path, folder: Path, index: int) -> Path:
    """A file whose bytes after the file meta are the case's data set, as it came.

    pynetdicom's chunked send puts those bytes on the wire unparsed. A case whose file
    meta names a SOP Class and transfer syntax is sent under them; one without a usable
    file meta travels whole as the data set of an MR instance. The meta's SOP Instance
    UID only becomes the request's Affected SOP Instance UID, which pynetdicom checks
    before sending, so an invalid one there is replaced (the data set keeps its own).
    """
    sop_class, transfer_syntax, instance, offset = MRImageStorage, ExplicitVRLittleEndian, "", 0
    try:
        meta, data_offset = split_dataset(path)
        if "MediaStorageSOPClassUID" in meta and "TransferSyntaxUID" in meta:
            sop_class, transfer_syntax = meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID
            instance, offset = str(meta.get("MediaStorageSOPInstanceUID", "")), data_offset
            if not (isinstance(sop_class, str) and isinstance(transfer_syntax, str)):
                raise ValueError("a meta UID with a broken VR reads as several values")
    except Exception:  # any parse failure (values convert lazily): the bytes travel whole
        sop_class, transfer_syntax, instance, offset = (
            MRImageStorage,
            ExplicitVRLittleEndian,
            "",
            0,
        )
    if offset and UID(instance).is_valid:
        return path
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(f"2.25.{880000 + index}")
    meta.TransferSyntaxUID = UID(transfer_syntax)
    buffer = io.BytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)  # type: ignore[arg-type]
    wrapped = folder / f"wrapped-{path.name}"
    wrapped.write_bytes(bytes(128) + b"DICM" + buffer.getvalue() + path.read_bytes()[offset:])
    return wrapped


def test_storescu_bad_files_are_refused_good_ones_stored_echo_answers(
    tmp_path: Path, corpus: dict[str, Path], good_files: list[Path]
) -> None:
    # storescu re-encodes what it reads: an unknown VR becomes UN and arrives repaired, so
    # the vr-* family is left to the raw send below.
    bad = {name: path for name, path in malformed(corpus).items() if not name.startswith("vr-")}
    repaired = bad.pop(REPAIRED_BY_STORESCU)
    files = interleaved([*bad.values(), repaired], good_files)
    with mmdx_listen(tmp_path / "data") as listener, echoing(listener.port) as echoes:
        # -xy proposes JPEG Baseline too, so the JPEG cases go as encoded.
        result = subprocess.run(
            ["storescu", "-v", "-nh", "-xy", "-aec", AE_TITLE, "127.0.0.1", str(listener.port),
             *map(str, files)],
            env=DCMTK_ENV, capture_output=True, text=True, timeout=SEND_TIMEOUT_S,
        )  # fmt: skip
        after = echoscu(listener.port)
        stored = catalogued(listener)
    outcomes = store_outcomes(result.stdout + result.stderr)
    assert [outcomes[str(path)] for path in good_files] == ["Success"] * len(good_files)
    bad_outcomes = {name: outcomes[str(path)] for name, path in bad.items()}
    assert [name for name, outcome in bad_outcomes.items() if outcome == "Success"] == []
    # storescu itself refuses to send what it cannot parse; the rest reach the listener.
    refused = [name for name, outcome in bad_outcomes.items() if outcome.startswith("Error")]
    assert len(refused) >= 15, bad_outcomes  # 18 with dcmtk 3.6.7
    assert outcomes[str(repaired)] == "Success"
    assert stored == sorted([*sop_instance_uids(good_files), mr_small_uid()])
    assert len(echoes) >= 2 and set(echoes) == {0x0000}
    assert after.returncode == 0 and "Received Echo Response (Success)" in after.stderr


def test_raw_bad_bytes_all_reach_the_listener_and_are_refused(
    tmp_path: Path,
    corpus: dict[str, Path],
    good_files: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    bad = {
        name: raw_sendable(path, tmp_path, index)
        for index, (name, path) in enumerate(malformed(corpus).items())
    }
    intact = bad.pop(INTACT_DATA_SET)
    files = interleaved([*bad.values(), intact], good_files)
    contexts = sorted({_context(path) for path in files})
    outcomes: dict[Path, str] = {}
    echoes: list[int] = []
    with mmdx_listen(tmp_path / "data") as listener:
        with associate(listener.port, contexts) as association:
            accepted = {
                (c.abstract_syntax, c.transfer_syntax[0]) for c in association.accepted_contexts
            }
            for path in files:
                if _context(path) not in accepted:
                    outcomes[path] = "context rejected"
                    continue
                status = association.send_c_store(path)
                outcomes[path] = f"0x{int(status.Status):04X}" if "Status" in status else "none"
                echoes.append(int(association.send_c_echo().Status))
        after = echoscu(listener.port)
        stored = catalogued(listener)
    assert [outcomes[path] for path in good_files] == ["0x0000"] * len(good_files)
    bad_outcomes = {name: outcomes[path] for name, path in bad.items()}
    assert [name for name, outcome in bad_outcomes.items() if outcome in ("0x0000", "none")] == []
    # Only the transfer syntaxes the listener does not decode are turned away at association.
    rejected = sorted(
        name for name, outcome in bad_outcomes.items() if outcome == "context rejected"
    )
    assert rejected == [
        f"transfer-syntax-{name}" for name in ("hevc", "mpeg2", "mpeg4", "not-a-uid", "unknown-uid")
    ]
    refusals = {outcome for outcome in bad_outcomes.values() if outcome != "context rejected"}
    assert refusals <= {"0xA900", "0xC000"}, bad_outcomes
    assert outcomes[intact] == "0x0000"
    assert stored == sorted([*sop_instance_uids(good_files), mr_small_uid()])
    assert set(echoes) == {0x0000} and len(echoes) == len(files) - len(rejected)
    assert after.returncode == 0 and "Received Echo Response (Success)" in after.stderr


def _context(path: Path) -> tuple[str, str]:
    meta, _ = split_dataset(path)
    return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)


def test_native_pixel_data_far_longer_than_the_image_is_refused(
    tmp_path: Path, corpus: dict[str, Path]
) -> None:
    with mmdx_listen(tmp_path / "data") as listener:
        result = subprocess.run(
            ["storescu", "-v", "-aec", AE_TITLE, "127.0.0.1", str(listener.port),
             str(corpus[OVERLONG_PIXEL_DATA])],
            env=DCMTK_ENV, capture_output=True, text=True, timeout=SEND_TIMEOUT_S,
        )  # fmt: skip
    assert "Received Store Response (Error" in result.stderr
