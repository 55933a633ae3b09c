"""De-identify one data set: PS3.15 Basic Profile, optional full dates, Clean Pixel Data.

:func:`deidentify_dataset` is pure: it takes a pydicom data set and returns a new,
de-identified one wrapped in :class:`DeidentifiedDataset`; the input is not changed.

What it does, in order:

1. Refuse objects whose identity cannot be removed: burned-in annotation in an object
   that is not ultrasound (or with Clean Pixel Data off), recognisable visual features.
2. Walk the data set, recursing into every sequence item, and apply Table E.1-1
   (:mod:`imaging.dicom.deid.profile`) to every attribute: private attributes are
   removed; ``U`` attributes get a keyed-hash UID (:func:`replacements.keyed_uid`),
   the same in every file and every run under one secret, so instances of a study
   still group and references between files still resolve.
3. Dates and times: with ``retain_longitudinal_temporal`` (the default) the Retain
   Longitudinal Temporal Information with Full Dates Option keeps them unchanged;
   without it the Basic Profile action applies (Study Date emptied, Content Date
   emptied, Acquisition Date removed, ...). Dates are never shifted.
4. Patient's Name and Patient ID become a pseudonym keyed on (Patient ID, Issuer of
   Patient ID), stable per patient across studies.
5. Ultrasound pixels are cleaned (:mod:`imaging.dicom.deid.clean_pixels`).
6. Patient Identity Removed, De-identification Method (and its code sequence, CID
   7050) and Longitudinal Temporal Information Modified are set; the File Meta
   Information is rebuilt from scratch and the preamble left empty.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from imaging.dicom.deid.clean_pixels import (
    CleaningMethod,
    clean_ultrasound_pixels,
    store_native_pixels,
)
from imaging.dicom.deid.profile import Action, profile_attribute
from imaging.dicom.deid.replacements import (
    DUMMY_VALUES,
    check_prefix,
    check_secret,
    keyed_uid,
    pseudonym,
)
from imaging.dicom.reading import DEFAULT_READ_LIMITS, ReadLimits
from imaging.dicom.us_regions import is_ultrasound
from imaging.errors import DeidentificationError

# CID 7050 De-identification Method (coding scheme DCM).
BASIC_PROFILE_CODE = ("113100", "Basic Application Confidentiality Profile")
CLEAN_PIXEL_DATA_CODE = ("113101", "Clean Pixel Data Option")
FULL_DATES_CODE = ("113106", "Retain Longitudinal Temporal Information Full Dates Option")

# A fixed 2.25 UID naming this de-identifier in the File Meta Information.
IMPLEMENTATION_CLASS_UID = "2.25.95003474381853431539963094330584129318"
IMPLEMENTATION_VERSION_NAME = "MMDX_DEID_1"

# IODs built on the multi-frame functional groups make some attributes Type 1 or 2
# that the older IODs leave Type 3 (Enhanced General Equipment, Multi-frame
# Functional Groups, Enhanced MR Image, Acquisition Context).
_ENHANCED_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
        "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR
        "1.2.840.10008.5.1.4.1.1.4.3",  # Enhanced MR Color
        "1.2.840.10008.5.1.4.1.1.6.2",  # Enhanced US Volume
        "1.2.840.10008.5.1.4.1.1.128.1",  # Enhanced PET
        "1.2.840.10008.5.1.4.1.1.12.1.1",  # Enhanced XA
        "1.2.840.10008.5.1.4.1.1.12.2.1",  # Enhanced XRF
    }
)
_ENHANCED_TYPE_1 = frozenset(
    {"ContentDate", "ContentTime", "AcquisitionDateTime", "DeviceSerialNumber"}
)
_ENHANCED_TYPE_2 = frozenset({"AcquisitionContextSequence"})

# The composite actions, resolved by the attribute's type: Type 3, Type 2, Type 1.
_COMPOSITE: dict[str, tuple[str, str, str]] = {
    "Z/D": ("Z", "Z", "D"),
    "X/Z": ("X", "Z", "Z"),
    "X/D": ("X", "D", "D"),
    "X/Z/D": ("X", "Z", "D"),
    # U*: keep the sequence and replace the UIDs it holds (the table's rows do that).
    "X/Z/U*": ("X", "Z", "K"),
}

_LOSSY_TRANSFER_SYNTAXES = frozenset(
    {
        "1.2.840.10008.1.2.4.50",  # JPEG Baseline
        "1.2.840.10008.1.2.4.51",  # JPEG Extended
        "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.203",  # HTJ2K
    }
)


@dataclass(frozen=True)
class DeidOptions:
    """How to de-identify.

    Attributes:
        retain_longitudinal_temporal: Keep dates and times unchanged (the Retain
            Longitudinal Temporal Information with Full Dates Option); when False the
            Basic Profile removes or empties them. Dates are never shifted.
        clean_pixel_data: Blank ultrasound pixels outside the declared regions. When
            False, an object that declares burned-in annotation is refused.
        pseudonym_prefix: Prefix of the patient pseudonym (Patient ID and Patient's Name).
        limits: Size limits for decoding pixels.
    """

    retain_longitudinal_temporal: bool = True
    clean_pixel_data: bool = True
    pseudonym_prefix: str = "MMDX-"
    limits: ReadLimits = field(default=DEFAULT_READ_LIMITS)

    def __post_init__(self) -> None:
        check_prefix(self.pseudonym_prefix)


@dataclass(frozen=True)
class DeidentifiedDataset:
    """A data set that went through :func:`deidentify_dataset`, and what was done to it.

    Only this type may enter stores that leave the hospital (the similar-case index).

    Attributes:
        dataset: The de-identified pydicom data set, with new File Meta Information.
        pseudonym: The patient's pseudonym (its Patient ID and Patient's Name).
        methods: CID 7050 code values of the profile and options applied.
        pixel_cleaning: How the pixels were cleaned, or ``None`` when they were not.
        private_tags_removed: Number of private attributes removed (nested ones included).
    """

    dataset: Any
    pseudonym: str
    methods: tuple[str, ...]
    pixel_cleaning: CleaningMethod | None
    private_tags_removed: int

    @property
    def study_instance_uid(self) -> str:
        return str(self.dataset.StudyInstanceUID)

    @property
    def series_instance_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


@dataclass
class _Walk:
    """State of one walk over a data set."""

    secret: bytes
    retain_longitudinal_temporal: bool
    enhanced: bool
    private_tags_removed: int = 0


def deidentify_dataset(
    dataset: Any,
    *,
    secret: bytes,
    options: DeidOptions | None = None,
    source: str = "dataset",
) -> DeidentifiedDataset:
    """De-identify ``dataset`` (not changed) into a new data set.

    Args:
        dataset: A pydicom data set, with ``file_meta`` when it holds pixel data.
        secret: Key of the UID and pseudonym hashes, at least 16 bytes.
        options: Profile options; the defaults keep dates and clean ultrasound pixels.
        source: Names the object in error messages.

    Raises:
        DeidentificationError: The object cannot be de-identified safely.
        PixelDataError, ResourceLimitError, UnsupportedTransferSyntaxError: Ultrasound
            pixels cannot be decoded for cleaning.
        ValueError: ``secret`` is too short.
    """
    check_secret(secret)
    options = options or DeidOptions()
    _refuse_unremovable_identity(dataset, options, source)
    sop_instance_uid = str(dataset.get("SOPInstanceUID") or "").strip()
    if not sop_instance_uid or "SOPClassUID" not in dataset:
        raise DeidentificationError(source, "missing SOP Class UID or SOP Instance UID")
    transfer_syntax = _output_transfer_syntax(dataset, source)

    clean = options.clean_pixel_data and is_ultrasound(dataset) and "PixelData" in dataset
    cleaned = clean_ultrasound_pixels(dataset, source, options.limits) if clean else None

    output = _copy_without_pixels(dataset) if cleaned else _copy(dataset)
    walk = _Walk(
        secret=secret,
        retain_longitudinal_temporal=options.retain_longitudinal_temporal,
        enhanced=str(dataset.SOPClassUID) in _ENHANCED_SOP_CLASSES,
    )
    _apply_profile(output, walk)

    alias = pseudonym(secret, _patient_key(dataset, source), options.pseudonym_prefix)
    output.PatientName = alias
    output.PatientID = alias
    if cleaned is not None:
        lossy = transfer_syntax in _LOSSY_TRANSFER_SYNTAXES
        store_native_pixels(output, cleaned, lossy_source=lossy)
        transfer_syntax = "1.2.840.10008.1.2.1"  # Explicit VR Little Endian
    codes = [BASIC_PROFILE_CODE]
    if options.retain_longitudinal_temporal:
        codes.append(FULL_DATES_CODE)
    if cleaned is not None:
        codes.append(CLEAN_PIXEL_DATA_CODE)
    _record_method(output, codes, options.retain_longitudinal_temporal)
    _rebuild_file_meta(output, transfer_syntax)
    return DeidentifiedDataset(
        dataset=output,
        pseudonym=alias,
        methods=tuple(value for value, _ in codes),
        pixel_cleaning=cleaned.method if cleaned else None,
        private_tags_removed=walk.private_tags_removed,
    )


def _refuse_unremovable_identity(dataset: Any, options: DeidOptions, source: str) -> None:
    if str(dataset.get("RecognizableVisualFeatures", "")).upper() == "YES":
        raise DeidentificationError(
            source, "RecognizableVisualFeatures is YES: the image itself may identify the patient"
        )
    if str(dataset.get("BurnedInAnnotation", "")).upper() != "YES":
        return
    if not is_ultrasound(dataset):
        raise DeidentificationError(
            source,
            "BurnedInAnnotation is YES and Clean Pixel Data handles ultrasound only "
            f"(SOP Class {dataset.get('SOPClassUID')})",
        )
    if not options.clean_pixel_data:
        raise DeidentificationError(source, "BurnedInAnnotation is YES and Clean Pixel Data is off")


def _output_transfer_syntax(dataset: Any, source: str) -> str:
    """The transfer syntax to write; native data are always written little endian."""
    meta = getattr(dataset, "file_meta", None)
    transfer_syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if transfer_syntax is None:
        if "PixelData" in dataset:
            raise DeidentificationError(
                source, "pixel data without a transfer syntax (no file meta)"
            )
        return "1.2.840.10008.1.2.1"
    if transfer_syntax.is_deflated:
        return "1.2.840.10008.1.2.1"  # the data set was inflated on reading
    if not transfer_syntax.is_little_endian:
        raise DeidentificationError(source, f"{transfer_syntax.name} is not supported")
    return str(transfer_syntax)


def _copy(dataset: Any) -> Any:
    """A new data set holding deep copies of the elements (no file name, meta or preamble)."""
    from pydicom.dataset import Dataset

    output = Dataset()
    for element in dataset:
        output.add(copy.deepcopy(element))
    return output


def _copy_without_pixels(dataset: Any) -> Any:
    from pydicom.dataset import Dataset

    output = Dataset()
    for element in dataset:
        if element.keyword != "PixelData":
            output.add(copy.deepcopy(element))
    return output


def _apply_profile(dataset: Any, walk: _Walk) -> None:
    """Apply Table E.1-1 to every attribute of ``dataset`` and of its sequence items."""
    for tag in list(dataset.keys()):
        element = dataset[tag]
        if element.tag.is_private:
            del dataset[tag]
            walk.private_tags_removed += 1
            continue
        row = profile_attribute(int(tag))
        if row is None:
            action = "K"
        else:
            basic = row.action(retain_longitudinal_temporal=walk.retain_longitudinal_temporal)
            action = _resolve(basic, row.keyword or element.keyword, walk.enhanced)
        _apply(dataset, element, action, walk)


def _resolve(action: Action, keyword: str, enhanced: bool) -> str:
    """A composite action (``X/Z/D``...) resolved by the attribute's type in the IOD."""
    choices = _COMPOSITE.get(action)
    if choices is None:
        return action
    if enhanced and keyword in _ENHANCED_TYPE_1:
        return choices[2]
    if enhanced and keyword in _ENHANCED_TYPE_2:
        return choices[1]
    return choices[0]


def _apply(dataset: Any, element: Any, action: str, walk: _Walk) -> None:
    if action == "X":
        del dataset[element.tag]
    elif action == "Z":
        element.value = [] if element.VR == "SQ" else None
    elif action == "U":
        _replace_uids(dataset, element, walk.secret)
    elif action == "D":
        _replace_with_dummy(dataset, element, walk)
    elif element.VR == "SQ":  # K and C: keep, and clean what the items hold
        for item in element.value:
            _apply_profile(item, walk)


def _replace_uids(dataset: Any, element: Any, secret: bytes) -> None:
    if element.VR != "UI":
        # A UID attribute whose VR is unknown (UN) cannot be remapped: remove it.
        del dataset[element.tag]
        return
    values = element.value if element.VM > 1 else [element.value]
    replaced = [keyed_uid(secret, str(value)) if str(value).strip() else "" for value in values]
    element.value = replaced if element.VM > 1 else replaced[0]


def _replace_with_dummy(dataset: Any, element: Any, walk: _Walk) -> None:
    if element.VR == "SQ":
        # A sequence keeps its items; the profile then cleans what they hold.
        for item in element.value:
            _apply_profile(item, walk)
    elif element.VR == "UI":
        _replace_uids(dataset, element, walk.secret)
    elif element.VR in DUMMY_VALUES:
        element.value = DUMMY_VALUES[element.VR]
    else:
        element.value = b"\x00\x00"  # binary VRs: two zero bytes, an even length


def _patient_key(dataset: Any, source: str) -> tuple[str, ...]:
    """What identifies the patient: Patient ID and issuer, else name and birth date.

    Objects without any of them fall back to their study, so they at least group
    by study; without a Study Instance UID they cannot be pseudonymised.
    """
    patient_id = str(dataset.get("PatientID") or "").strip()
    if patient_id:
        return ("id", patient_id, str(dataset.get("IssuerOfPatientID") or "").strip())
    name = str(dataset.get("PatientName") or "").strip()
    if name:
        return ("name", name, str(dataset.get("PatientBirthDate") or "").strip())
    study = str(dataset.get("StudyInstanceUID") or "").strip()
    if study:
        return ("study", study)
    raise DeidentificationError(source, "no Patient ID, Patient's Name or Study Instance UID")


def _record_method(output: Any, codes: list[tuple[str, str]], retain_dates: bool) -> None:
    """Patient Identity Removed, De-identification Method and its code sequence."""
    from pydicom.dataset import Dataset

    output.PatientIdentityRemoved = "YES"
    output.DeidentificationMethod = ["mmdx deid", *(meaning for _, meaning in codes)]
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue = value
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    output.DeidentificationMethodCodeSequence = items
    output.LongitudinalTemporalInformationModified = "UNMODIFIED" if retain_dates else "REMOVED"


def _rebuild_file_meta(output: Any, transfer_syntax: str) -> None:
    """New File Meta Information naming this de-identifier (PS3.15 E.1.1 item 7)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(str(output.SOPClassUID))
    meta.MediaStorageSOPInstanceUID = UID(str(output.SOPInstanceUID))
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    output.file_meta = meta
