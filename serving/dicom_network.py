"""Socket settings every DICOM association of ours uses, listener and sender alike."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pynetdicom.events import Event


def set_tcp_nodelay(event: Event) -> None:
    """``EVT_CONN_OPEN`` handler: turn Nagle's algorithm off on the association's socket.

    With it on, each small PDU waits for the peer's delayed ACK, and a series of small
    C-STOREs crawls at 11-22 per second (measured here).
    """
    association_socket = event.assoc.dul.socket
    raw_socket = association_socket.socket if association_socket is not None else None
    if raw_socket is not None:
        raw_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
