"""The DICOM JSON model (PS3.18 Annex F) for metadata, query results and STOW responses."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence as DicomSequence

BULK_DATA_THRESHOLD = 1024
_INTEGER_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "UV", "SV"})
_DECIMAL_VRS = frozenset({"DS", "FL", "FD"})
PIXEL_DATA_TAG = "7FE00010"

# STOW-RS Failure Reasons (PS3.18 table 10.5.3-3, PS3.4 annex B.2.3).
FAILURE_PROCESSING = 0x0110
FAILURE_OUT_OF_RESOURCES = 0xA700
FAILURE_DOES_NOT_MATCH = 0xA900
FAILURE_CANNOT_UNDERSTAND = 0xC000


def dataset_to_json(
    dataset: Dataset,
    bulk_data_uri: Callable[[str], str],
    *,
    pixel_data_omitted: bool = False,
    bulk_data_threshold: int = BULK_DATA_THRESHOLD,
) -> dict[str, Any]:
    """A data set's DICOM JSON, large binary values replaced by BulkDataURIs.

    Top-level binary elements over ``bulk_data_threshold`` bytes become
    ``{"vr": ..., "BulkDataURI": bulk_data_uri("GGGGEEEE")}``. Binary elements inside
    sequences (icon images, LUTs) stay inline, since a bulk data URI names a
    top-level tag only. The file meta group is left out except the transfer syntax,
    given as AvailableTransferSyntaxUID (0008,3002).

    Args:
        dataset: The data set (read with or without its pixel data).
        bulk_data_uri: Makes the URI of a top-level element from its tag.
        pixel_data_omitted: The data set was read without its Pixel Data; a
            BulkDataURI for it is added when the image attributes say it exists.
        bulk_data_threshold: Binary values larger than this become URIs.
    """
    result: dict[str, Any] = {}
    for element in dataset:
        tag = f"{element.tag:08X}"
        if element.VR == "SQ":
            result[tag] = {
                "vr": "SQ",
                "Value": [item.to_json_dict(bulk_data_threshold, None) for item in element.value],
            }
            continue
        result[tag] = element.to_json_dict(_element_uri(bulk_data_uri), bulk_data_threshold)
    if pixel_data_omitted and PIXEL_DATA_TAG not in result and _is_image(dataset):
        result[PIXEL_DATA_TAG] = {
            "vr": _pixel_data_vr(dataset),
            "BulkDataURI": bulk_data_uri(PIXEL_DATA_TAG),
        }
    transfer_syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if transfer_syntax:
        result["00083002"] = {"vr": "UI", "Value": [str(transfer_syntax)]}
    return dict(sorted(result.items()))


def _element_uri(bulk_data_uri: Callable[[str], str]) -> Callable[[DataElement], str]:
    def handler(element: DataElement) -> str:
        return bulk_data_uri(f"{element.tag:08X}")

    return handler


def _is_image(dataset: Dataset) -> bool:
    return "Rows" in dataset and "Columns" in dataset and "BitsAllocated" in dataset


def _pixel_data_vr(dataset: Dataset) -> str:
    """OB for encapsulated or 8-bit pixel data, OW otherwise (PS3.5 section 8.2)."""
    transfer_syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if transfer_syntax is not None and transfer_syntax.is_compressed:
        return "OB"
    return "OB" if int(dataset.get("BitsAllocated", 8)) <= 8 else "OW"


def row_to_json(row: Mapping[str, str], *, retrieve_url: str | None = None) -> dict[str, Any]:
    """A query row (keyword -> DICOM string) as a DICOM JSON object with the right VRs.

    Multiple values are separated by backslashes, as in DICOM. Empty strings give an
    attribute with no value (present, zero length). PN values become
    ``{"Alphabetic": ...}``, IS/US/... integers and DS/FL/FD numbers.

    Raises:
        ValueError: A keyword that is not a DICOM keyword, or a number that is not one.
    """
    result: dict[str, Any] = {}
    for keyword, text in row.items():
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"query row has {keyword!r}, which is not a DICOM keyword")
        vr = dictionary_VR(tag)
        attribute: dict[str, Any] = {"vr": vr}
        if text:
            attribute["Value"] = [_json_value(keyword, vr, value) for value in text.split("\\")]
        result[f"{tag:08X}"] = attribute
    if retrieve_url is not None:
        result["00081190"] = {"vr": "UR", "Value": [retrieve_url]}
    return dict(sorted(result.items()))


def _json_value(keyword: str, vr: str, value: str) -> Any:
    if vr == "PN":
        return {"Alphabetic": value}
    try:
        if vr in _INTEGER_VRS:
            return int(value)
        if vr in _DECIMAL_VRS:
            return float(value)
    except ValueError as exc:
        raise ValueError(f"{keyword} value {value!r} is not a {vr} number") from exc
    return value


@dataclass(frozen=True)
class StowOutcome:
    """What happened to one STOW-RS part, for the response.

    Attributes:
        stored: Stored now or before (a duplicate).
        sop_class_uid: Its SOP Class UID when known.
        sop_instance_uid: Its SOP Instance UID when known.
        retrieve_url: Its WADO-RS URL, for stored instances.
        failure_reason: The Failure Reason code, for failed ones.
        reason: What went wrong, in words (ErrorComment).
    """

    stored: bool
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    retrieve_url: str | None = None
    failure_reason: int | None = None
    reason: str | None = None


def stow_response(outcomes: Sequence[StowOutcome], *, retrieve_url: str | None) -> dict[str, Any]:
    """The Store Instances Response Module (PS3.18 10.5.3) as DICOM JSON.

    Stored instances go into ReferencedSOPSequence with their RetrieveURL; failed
    ones into FailedSOPSequence with FailureReason and, as ErrorComment (0000,0902),
    the reason in words. A sequence is present only when it has an item.
    """
    response = Dataset()
    if retrieve_url is not None:
        response.RetrieveURL = retrieve_url
    stored = [outcome for outcome in outcomes if outcome.stored]
    failed = [outcome for outcome in outcomes if not outcome.stored]
    if stored:
        response.ReferencedSOPSequence = DicomSequence([_sop_item(outcome) for outcome in stored])
    if failed:
        response.FailedSOPSequence = DicomSequence([_sop_item(outcome) for outcome in failed])
    return response.to_json_dict()


def _sop_item(outcome: StowOutcome) -> Dataset:
    item = Dataset()
    # Both UIDs are Type 1 in the module; an unreadable part has neither, so they
    # are sent empty rather than left out.
    item.ReferencedSOPClassUID = outcome.sop_class_uid or ""
    item.ReferencedSOPInstanceUID = outcome.sop_instance_uid or ""
    if outcome.stored:
        if outcome.retrieve_url is not None:
            item.RetrieveURL = outcome.retrieve_url
    else:
        item.FailureReason = outcome.failure_reason or FAILURE_PROCESSING
        if outcome.reason:
            # ErrorComment is LO: 64 characters at most, no backslash.
            item.ErrorComment = outcome.reason.replace("\\", "/")[:64]
    return item
