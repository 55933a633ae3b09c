"""The DICOM listener: a pynetdicom Application Entity serving C-ECHO, C-STORE and C-FIND.

Received instances are written in chunks straight to a file in ``temp_dir`` (never
held whole in memory) and handed to an :class:`~serving.study_access.InstanceSink`;
queries go to a :class:`~serving.study_access.StudyQuery`.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from pynetdicom import AE, _config, dimse_messages, evt
from pynetdicom.events import EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer

from serving.dicom_listener.contexts import supported_contexts
from serving.dicom_listener.handlers import ListenerHandlers
from serving.dicom_network import set_tcp_nodelay
from serving.settings import Settings
from serving.study_access import InstanceSink, StudyQuery

logger = logging.getLogger(__name__)

DEFAULT_MAX_FIND_MATCHES = 1000
# How long stop() waits for each association's thread once it is aborted.
_JOIN_TIMEOUT_S = 10.0
_MAX_AE_TITLE_LENGTH = 16
_MIN_PDU_BYTES = 4096


class DicomListener:
    """A C-ECHO, C-STORE and C-FIND SCP bound to ``host:port``.

    Args:
        sink: Takes each received instance; its verdict becomes the C-STORE status.
        query: Answers C-FIND; ``None`` offers no query service.
        host: Address to bind (loopback by default, so only local peers reach it).
        port: TCP port; ``0`` picks a free one (see :attr:`port` once started).
        ae_title: The listener's AE title.
        allowed_calling_ae_titles: Calling AE titles accepted; empty accepts any.
        max_pdu_bytes: Largest PDU the listener receives.
        temp_dir: Where incoming instances are written while they arrive; put it on the
            store's file system so the sink can move them in without copying.
        max_find_matches: Most matches one C-FIND returns.

    Raises:
        ValueError: An argument is out of range.
    """

    def __init__(
        self,
        sink: InstanceSink,
        query: StudyQuery | None,
        *,
        host: str = "127.0.0.1",
        port: int = 11112,
        ae_title: str = "MMDX",
        allowed_calling_ae_titles: list[str] | tuple[str, ...] = (),
        max_pdu_bytes: int = 262_144,
        temp_dir: Path,
        max_find_matches: int = DEFAULT_MAX_FIND_MATCHES,
    ) -> None:
        if not 1 <= len(ae_title.strip()) <= _MAX_AE_TITLE_LENGTH:
            raise ValueError(f'Argument "ae_title" must have 1 to 16 characters, got {ae_title!r}')
        if not 0 <= port <= 65535:
            raise ValueError(f'Argument "port" must be in 0..65535, got {port}')
        if max_pdu_bytes < _MIN_PDU_BYTES:
            raise ValueError(
                f'Argument "max_pdu_bytes" must be at least {_MIN_PDU_BYTES}, got {max_pdu_bytes}'
            )
        if max_find_matches < 1:
            raise ValueError(
                f'Argument "max_find_matches" must be positive, got {max_find_matches}'
            )
        self._handlers = ListenerHandlers(sink, query, max_find_matches=max_find_matches)
        self._with_query = query is not None
        self._host = host
        self._requested_port = port
        self._ae_title = ae_title.strip()
        self._allowed_calling_ae_titles = [title.strip() for title in allowed_calling_ae_titles]
        self._max_pdu_bytes = max_pdu_bytes
        self._temp_dir = temp_dir
        self._ae: AE | None = None
        self._server: ThreadedAssociationServer | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, sink: InstanceSink, query: StudyQuery | None, *, temp_dir: Path
    ) -> DicomListener:
        """A listener configured by ``settings``, receiving into ``temp_dir``.

        Pass the store's folder for incoming files as ``temp_dir``, so that the sink
        moves each received file into the store instead of copying it.
        """
        return cls(
            sink,
            query,
            host=settings.dicom_host,
            port=settings.dicom_port,
            ae_title=settings.dicom_ae_title,
            allowed_calling_ae_titles=settings.listener.allowed_calling_ae_titles,
            max_pdu_bytes=settings.listener.max_pdu_bytes,
            temp_dir=temp_dir,
        )

    @property
    def port(self) -> int:
        """The bound TCP port (the free one picked when started with port 0)."""
        if self._server is None:
            raise RuntimeError("the listener is not running")
        return int(self._server.server_address[1])

    @property
    def ae_title(self) -> str:
        """The listener's AE title."""
        return self._ae_title

    @property
    def running(self) -> bool:
        """Whether the listener accepts associations."""
        return self._server is not None

    def start(self) -> None:
        """Bind and start answering in background threads; returns at once.

        Raises:
            RuntimeError: The listener is already running.
            OSError: The address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("the listener is already running")
        self._temp_dir.mkdir(parents=True, exist_ok=True)
        _configure_pynetdicom()
        ae = AE(ae_title=self._ae_title)
        ae.maximum_pdu_size = self._max_pdu_bytes
        ae.require_calling_aet = self._allowed_calling_ae_titles
        ae.supported_contexts = supported_contexts(with_query=self._with_query)
        handlers: list[EventHandlerType] = [
            (evt.EVT_CONN_OPEN, set_tcp_nodelay),
            (evt.EVT_C_ECHO, self._handlers.on_echo),
            (evt.EVT_C_STORE, self._handlers.on_store),
        ]
        if self._with_query:
            handlers.append((evt.EVT_C_FIND, self._handlers.on_find))
        _register_receive_dir(ae, self._temp_dir)
        try:
            server = ae.start_server(
                (self._host, self._requested_port), block=False, evt_handlers=handlers
            )
        except BaseException:
            _unregister_receive_dir(ae)
            raise
        self._ae, self._server = ae, server
        logger.info("DICOM listener %s on %s:%d", self._ae_title, self._host, self.port)

    def stop(self) -> None:
        """Stop accepting, abort open associations and wait for their threads."""
        server, ae = self._server, self._ae
        if server is None or ae is None:
            return
        associations = server.active_associations
        # shutdown() returns once the accept loop has exited, so no association starts after it.
        server.shutdown()
        associations += [a for a in server.active_associations if a not in associations]
        for association in associations:
            association.abort()
        for association in associations:
            association.join(timeout=_JOIN_TIMEOUT_S)
        _unregister_receive_dir(ae)
        self._server = self._ae = None
        logger.info("DICOM listener %s stopped", self._ae_title)

    def __enter__(self) -> DicomListener:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _configure_pynetdicom() -> None:
    """Set pynetdicom's process-wide options the listener relies on.

    Chunked receive writes each incoming data set to a file as it arrives. Request
    and response identifiers (patient names and IDs in C-FIND) stay out of the log.
    """
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _install_receive_file_factory()


# Chunked receive -----------------------------------------------------------------------
#
# pynetdicom 3.0 creates each chunked receive file with ``NamedTemporaryFile`` in the
# system temporary folder, with no setting to choose another. That folder is often a
# tmpfs (RAM) and on another file system than the store, so the listener routes the
# files of its own associations into its ``temp_dir``: the factory below finds the
# association whose upper-layer thread is decoding (pynetdicom decodes P-DATA in the
# association's DUL thread) and the folder registered for that association's AE.

_receive_dirs: dict[int, Path] = {}
_receive_dirs_lock = threading.Lock()


def _register_receive_dir(ae: AE, directory: Path) -> None:
    with _receive_dirs_lock:
        _receive_dirs[id(ae)] = directory


def _unregister_receive_dir(ae: AE) -> None:
    with _receive_dirs_lock:
        _receive_dirs.pop(id(ae), None)


def _receive_file(*args: Any, **kwargs: Any) -> IO[bytes]:
    """``NamedTemporaryFile`` in the receiving listener's ``temp_dir``."""
    association = getattr(threading.current_thread(), "assoc", None)
    ae = getattr(association, "ae", None)
    with _receive_dirs_lock:
        directory = _receive_dirs.get(id(ae)) if ae is not None else None
    if directory is not None:
        kwargs["dir"] = directory
    return tempfile.NamedTemporaryFile(*args, **kwargs)  # pynetdicom closes it


def _install_receive_file_factory() -> None:
    """Point pynetdicom's chunked receive at :func:`_receive_file` (once per process).

    Raises:
        RuntimeError: The installed pynetdicom no longer creates the files this way;
            the listener would silently write into the system temporary folder.
    """
    current = getattr(dimse_messages, "NamedTemporaryFile", None)
    if current is _receive_file:
        return
    if current is not tempfile.NamedTemporaryFile:
        raise RuntimeError(
            "pynetdicom.dimse_messages no longer uses tempfile.NamedTemporaryFile for chunked "
            "receive; the listener cannot choose where received files are written"
        )
    dimse_messages.NamedTemporaryFile = _receive_file  # type: ignore[assignment]
