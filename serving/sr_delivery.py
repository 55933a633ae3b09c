"""Deliver a result SR to the configured destination: a DICOM peer (C-STORE) or STOW-RS.

``destination.kind`` chooses: ``"none"`` sends nothing, ``"cstore"`` opens one association
to ``host:port`` (called AE title ``ae_title``), ``"stow"`` posts to ``stow_url``. Either
way the call returns only once the peer said the instance is stored, and raises
:class:`DeliveryError`, with the peer's status, when it did not.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from serving.dicom_network import set_tcp_nodelay

if TYPE_CHECKING:
    from pynetdicom.association import Association

    from serving.settings import DestinationSettings

LOGGER = logging.getLogger(__name__)

DEFAULT_CALLING_AE_TITLE = "MMDX"
DEFAULT_TIMEOUT_S = 30.0
# C-STORE statuses that mean "stored", with a warning (PS3.4 Table B.2-1).
_CSTORE_WARNINGS = frozenset({0xB000, 0xB006, 0xB007})


class DeliveryError(Exception):
    """The destination did not confirm that it stored the SR.

    Attributes:
        destination: Where it was sent (``AE@host:port``, or the STOW URL without credentials).
        reason: What went wrong.
        status: The peer's answer, if it gave one: the C-STORE status, the HTTP status of a
            refused STOW-RS request, or the Failure Reason of an accepted one.
    """

    def __init__(self, destination: str, reason: str, *, status: int | None = None) -> None:
        self.destination = destination
        self.reason = reason
        self.status = status
        super().__init__(f"{destination}: {reason}")


def send_sr(
    dataset: Dataset,
    destination: DestinationSettings,
    *,
    calling_ae_title: str = DEFAULT_CALLING_AE_TITLE,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Send ``dataset`` (a result SR) to ``destination``; nothing when its kind is ``"none"``.

    Args:
        dataset: The SR, with SOP Class and SOP Instance UIDs.
        destination: The ``destination`` settings.
        calling_ae_title: Our AE title on C-STORE associations.
        timeout_s: Connection and response timeout, in seconds.

    Raises:
        ValueError: ``dataset`` lacks its UIDs, or ``kind`` is ``"stow"`` without a
            ``stow_url``.
        DeliveryError: The peer refused, failed or did not answer.
    """
    if destination.kind == "none":
        return
    for keyword in ("SOPClassUID", "SOPInstanceUID"):
        if not dataset.get(keyword):
            raise ValueError(f'Argument "dataset" lacks {keyword}')
    if destination.kind == "cstore":
        _send_cstore(dataset, destination, calling_ae_title, timeout_s)
    elif destination.stow_url is None:
        raise ValueError('Setting "destination.stow_url" must be set when kind is "stow"')
    else:
        _send_stow(dataset, destination.stow_url, timeout_s)


def _send_cstore(
    dataset: Dataset, destination: DestinationSettings, calling_ae_title: str, timeout_s: float
) -> None:
    from pynetdicom import AE, evt

    where = f"{destination.ae_title}@{destination.host}:{destination.port}"
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s
    # One context, both uncompressed syntaxes: a peer that cannot take Explicit VR can
    # still take Implicit, and pynetdicom re-encodes to whichever the peer accepts.
    ae.add_requested_context(dataset.SOPClassUID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(
        destination.host,
        destination.port,
        ae_title=destination.ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, set_tcp_nodelay)],
    )
    if not assoc.is_established:
        raise DeliveryError(where, _association_failure(assoc, dataset.SOPClassUID))
    try:
        response = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    if "Status" not in response:
        raise DeliveryError(where, "no C-STORE response (timeout or abort)")
    status = int(response.Status)
    if status in _CSTORE_WARNINGS:
        LOGGER.warning("%s stored the SR with warning status 0x%04X", where, status)
    elif status != 0x0000:
        raise DeliveryError(where, f"C-STORE failed with status 0x{status:04X}", status=status)
    LOGGER.info("SR stored at %s", where)
    LOGGER.debug("SR %s stored at %s", dataset.SOPInstanceUID, where)


def _association_failure(assoc: Association, sop_class_uid: str) -> str:
    if assoc.is_rejected:
        return "association rejected"
    # pynetdicom aborts an association in which the peer accepted no context.
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        return f"peer does not accept SOP class {sop_class_uid}"
    return "association failed"


def _send_stow(dataset: Dataset, url: str, timeout_s: float) -> None:
    import requests
    from dicomweb_client import DICOMwebClient

    where = _without_credentials(url)
    client = DICOMwebClient(url, timeout=timeout_s)
    # A result is sent once; a retry with back-off belongs to the caller's job queue.
    client.set_http_retry_params(retry=False)
    try:
        response = client.store_instances([dataset])
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise DeliveryError(where, f"STOW-RS refused with HTTP {status}", status=status) from exc
    except requests.RequestException as exc:
        raise DeliveryError(where, f"STOW-RS request failed: {type(exc).__name__}") from exc
    failed = [
        item
        for item in response.get("FailedSOPSequence", [])
        if item.get("ReferencedSOPInstanceUID") == dataset.SOPInstanceUID
    ]
    if failed:
        reason = failed[0].get("FailureReason")
        raise DeliveryError(
            where,
            "STOW-RS stored nothing"
            + (f" (failure reason 0x{int(reason):04X})" if reason is not None else ""),
            status=int(reason) if reason is not None else None,
        )
    LOGGER.info("SR stored through STOW-RS")
    LOGGER.debug("SR %s stored at %s", dataset.SOPInstanceUID, where)


def _without_credentials(url: str) -> str:
    """``url`` without a user name or password, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit(parts._replace(netloc=netloc))
