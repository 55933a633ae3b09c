"""De-identification: PS3.15 Basic Profile on real echo loops and synthetic US and MR studies."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from imaging.dicom.deid import (
    BASIC_PROFILE,
    DeidentifiedDataset,
    DeidOptions,
    deidentify_dataset,
    deidentify_path,
    profile_attribute,
)
from imaging.dicom.reading import read_dicom
from imaging.dicom.us_regions import parse_ultrasound_regions, region_mask
from imaging.errors import DeidentificationError
from imaging.synthetic.echo_cine import CineLoop
from imaging.synthetic.mr_dicom import write_mr_series
from imaging.synthetic.records import SyntheticStudy
from imaging.synthetic.us_dicom import write_us_multiframe
from tests.dicom_validation import dciodvfy_errors
from tests.synthetic_cases import (
    AGNES,
    make_cine,
    make_echo_study,
    make_mr_volume,
    make_patient,
)

SECRET = b"test-secret-0123456789"
SITE_PACKAGES = Path(pydicom.__file__).resolve().parent.parent
REAL_LOOPS = {
    "sonosite_jpeg": SITE_PACKAGES / "data_store" / "data" / "color3d_jpeg_baseline.dcm",
    "philips_multiframe": SITE_PACKAGES / "deid_data/data/ultrasounds/ultrasound-multiframe.dcm",
    "philips_rgb": SITE_PACKAGES / "deid_data/data/ultrasounds/RGB_IMAGE.dcm",
    "philips_grey": SITE_PACKAGES / "deid_data/data/ultrasounds/GREYSCALE_IMAGE.dcm",
}
# Actions that must not leave an original value in place.
_PROTECTING = {"D", "Z", "X", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"}


def walk(dataset: Any) -> Iterator[Any]:
    """Every element of ``dataset`` and of its sequence items."""
    for element in dataset:
        yield element
        if element.VR == "SQ":
            for item in element.value:
                yield from walk(item)


def identifying_values(dataset: Any, *, retain_dates: bool) -> dict[int, set[str]]:
    """Non-empty values of the attributes the profile protects, by tag."""
    values: dict[int, set[str]] = {}
    for element in walk(dataset):
        row = profile_attribute(int(element.tag))
        if row is None or element.VR == "SQ" or element.value in (None, "", b""):
            continue
        if row.action(retain_longitudinal_temporal=retain_dates) in _PROTECTING:
            values.setdefault(int(element.tag), set()).add(str(element.value))
    return values


@pytest.fixture(scope="module")
def real_loops() -> dict[str, tuple[Any, DeidentifiedDataset]]:
    loops = {}
    for name, path in REAL_LOOPS.items():
        dataset = read_dicom(path)
        loops[name] = (dataset, deidentify_dataset(dataset, secret=SECRET, source=str(path)))
    return loops


ECHO_STUDY = make_echo_study(patient=AGNES, study_instance_uid="2.25.1001")
BORIS = make_patient(
    patient_id="MMDX000077", patient_name="Bagshaw^Boris", birth_date=date(1948, 11, 9), sex="M"
)


def test_profile_table_holds_the_basic_profile() -> None:
    assert len(BASIC_PROFILE) >= 600
    assert BASIC_PROFILE[0x00100010].keyword == "PatientName"
    assert BASIC_PROFILE[0x00100010].basic == "Z"
    assert BASIC_PROFILE[0x00080050].basic == "Z"  # Accession Number
    assert BASIC_PROFILE[0x0020000D].basic == "U"  # Study Instance UID
    assert BASIC_PROFILE[0x00081140].basic == "X/Z/U*"  # Referenced Image Sequence
    assert BASIC_PROFILE[0x00080080].basic == "X/Z/D"  # Institution Name
    study_date = BASIC_PROFILE[0x00080020]
    assert (study_date.basic, study_date.full_dates) == ("Z", "K")
    assert study_date.action(retain_longitudinal_temporal=False) == "Z"
    assert study_date.action(retain_longitudinal_temporal=True) == "K"
    birth_date = BASIC_PROFILE[0x00100030]  # not longitudinal: removed either way
    assert birth_date.action(retain_longitudinal_temporal=True) == "Z"
    overlay = profile_attribute(0x60023000)
    assert overlay is not None and overlay.basic == "X"
    assert profile_attribute(0x00280010) is None  # Rows: kept


@pytest.mark.parametrize("name", list(REAL_LOOPS))
def test_real_loop_keeps_no_identifying_value(
    name: str, real_loops: dict[str, tuple[Any, DeidentifiedDataset]]
) -> None:
    original, result = real_loops[name]
    output = result.dataset
    protected = identifying_values(original, retain_dates=True)
    assert protected, "the input holds identifying attributes"
    for element in walk(output):
        if element.VR != "SQ" and int(element.tag) in protected:
            assert str(element.value) not in protected[int(element.tag)], element.keyword
    assert not [element.tag for element in walk(output) if element.tag.is_private]
    # The patient's name and IDs appear nowhere in the written attributes.
    header = pydicom.Dataset()
    for element in output:
        if element.keyword != "PixelData":
            header.add(element)
    header.file_meta = output.file_meta
    written = pydicom.filebase.DicomBytesIO()
    pydicom.dcmwrite(written, header, enforce_file_format=True)
    for keyword in ("PatientName", "PatientID", "OtherPatientIDs", "InstitutionName"):
        value = str(original.get(keyword) or "")
        if len(value) >= 3:
            assert value.encode() not in written.getvalue(), keyword
    assert output.PatientName == output.PatientID == result.pseudonym
    assert output.PatientIdentityRemoved == "YES"
    assert output.BurnedInAnnotation == "NO"
    assert [item.CodeValue for item in output.DeidentificationMethodCodeSequence] == [
        "113100",
        "113106",
        "113101",
    ]
    assert output.StudyDate == original.StudyDate  # full dates kept
    assert output.file_meta.MediaStorageSOPInstanceUID == output.SOPInstanceUID


@pytest.mark.parametrize("name", list(REAL_LOOPS))
def test_real_loop_pixels_outside_the_regions_are_blank(
    name: str, real_loops: dict[str, tuple[Any, DeidentifiedDataset]]
) -> None:
    original, result = real_loops[name]
    before = original.pixel_array
    after = result.dataset.pixel_array
    regions = parse_ultrasound_regions(original, name)
    keep = region_mask(regions, int(original.Rows), int(original.Columns), tissue_only=False)
    assert keep.any() and result.pixel_cleaning == "ultrasound regions"
    frames = int(original.get("NumberOfFrames") or 1)
    before = before.reshape(frames, *keep.shape, -1)
    after = after.reshape(frames, *keep.shape, -1)
    assert before[:, ~keep].any(), "the input has burned-in pixels outside its regions"
    assert not after[:, ~keep].any()
    # Decoding is deterministic, so the image inside the regions is unchanged.
    assert np.array_equal(after[:, keep], before[:, keep])


def test_jpeg_loop_is_written_uncompressed_rgb(
    real_loops: dict[str, tuple[Any, DeidentifiedDataset]],
) -> None:
    _, result = real_loops["sonosite_jpeg"]
    output = result.dataset
    assert output.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert (output.PhotometricInterpretation, output.PlanarConfiguration) == ("RGB", 0)
    assert output.LossyImageCompression == "01"
    assert output.pixel_array.shape == (120, 480, 640, 3)


@pytest.mark.parametrize("name", ["sonosite_jpeg", "philips_multiframe", "philips_rgb"])
def test_real_loop_output_adds_no_dciodvfy_error(
    name: str, real_loops: dict[str, tuple[Any, DeidentifiedDataset]], tmp_path: Path
) -> None:
    _, result = real_loops[name]
    written = tmp_path / "out.dcm"
    result.dataset.save_as(written, enforce_file_format=True)
    assert set(dciodvfy_errors(written)) - set(dciodvfy_errors(REAL_LOOPS[name])) == set()


@pytest.fixture(scope="module")
def echo_cine() -> CineLoop:
    return make_cine(ECHO_STUDY, number_of_frames=6)


def write_echo(cine: CineLoop, study: SyntheticStudy, path: Path) -> Path:
    return write_us_multiframe(cine, study, path=path, encoding="rgb", uid_seed="deid")


def test_synthetic_echo_header_text_is_blanked(echo_cine: CineLoop, tmp_path: Path) -> None:
    path = write_echo(echo_cine, ECHO_STUDY, tmp_path / "echo.dcm")
    result = deidentify_dataset(read_dicom(path), secret=SECRET)
    frames = result.dataset.pixel_array
    assert echo_cine.text_boxes
    for box in echo_cine.text_boxes:
        x0, y0, x1, y1 = box.box
        assert echo_cine.frames[:, y0:y1, x0:x1].max() > 200, box.text  # the text was there
        assert not frames[:, y0:y1, x0:x1].any(), box.text
    errors_before, errors_after = dciodvfy_errors(path), []
    out = tmp_path / "out.dcm"
    result.dataset.save_as(out, enforce_file_format=True)
    errors_after = dciodvfy_errors(out)
    assert set(errors_after) - set(errors_before) == set()


def test_header_band_is_blanked_where_no_region_is_declared(
    echo_cine: CineLoop, tmp_path: Path
) -> None:
    dataset = read_dicom(write_echo(echo_cine, ECHO_STUDY, tmp_path / "echo.dcm"))
    del dataset.SequenceOfUltrasoundRegions
    result = deidentify_dataset(dataset, secret=SECRET)
    frames = result.dataset.pixel_array
    assert result.pixel_cleaning == "header band"
    band = int(np.argmax(frames.reshape(frames.shape[0], frames.shape[1], -1).any(axis=(0, 2))))
    assert band >= max(box.box[3] for box in echo_cine.text_boxes)
    assert band <= echo_cine.sector_bounding_box[1] + 1  # the fan itself is kept
    assert not frames[:, :band].any()


def test_malformed_region_sequence_is_refused(echo_cine: CineLoop, tmp_path: Path) -> None:
    dataset = read_dicom(write_echo(echo_cine, ECHO_STUDY, tmp_path / "echo.dcm"))
    del dataset.SequenceOfUltrasoundRegions[0].RegionLocationMaxY1
    with pytest.raises(DeidentificationError, match="no valid RegionLocationMaxY1"):
        deidentify_dataset(dataset, secret=SECRET)


def test_burned_in_annotation_that_cannot_be_cleaned_is_refused(
    echo_cine: CineLoop, tmp_path: Path
) -> None:
    dataset = read_dicom(write_echo(echo_cine, ECHO_STUDY, tmp_path / "echo.dcm"))
    with pytest.raises(DeidentificationError, match="Clean Pixel Data is off"):
        deidentify_dataset(dataset, secret=SECRET, options=DeidOptions(clean_pixel_data=False))
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    with pytest.raises(DeidentificationError, match="ultrasound only"):
        deidentify_dataset(dataset, secret=SECRET)


@pytest.fixture(scope="module")
def mr_studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Any]]:
    """Two studies of Agnes (two series each) and one of Boris, read back."""
    root = tmp_path_factory.mktemp("mr")
    pixels = np.random.default_rng(3).uniform(0, 1000, (3, 8, 10))
    volume = make_mr_volume(pixels)
    studies = {
        "agnes_2023": make_echo_study(
            patient=AGNES, study_instance_uid="2.25.2001", study_date=date(2023, 1, 10)
        ),
        "agnes_2024": make_echo_study(
            patient=AGNES, study_instance_uid="2.25.2002", study_date=date(2024, 1, 12)
        ),
        "boris_2024": make_echo_study(
            patient=BORIS, study_instance_uid="2.25.2003", study_date=date(2024, 2, 1)
        ),
    }
    read = {}
    for name, study in studies.items():
        paths = []
        for series in (1, 2):
            paths += write_mr_series(
                volume,
                study,
                out_dir=root / name / str(series),
                series_number=series,
                uid_seed=name,
            )
        read[name] = [read_dicom(path) for path in paths]
    return read


def deid_all(datasets: list[Any], secret: bytes = SECRET, **options: Any) -> list[Any]:
    return [
        deidentify_dataset(ds, secret=secret, options=DeidOptions(**options)).dataset
        for ds in datasets
    ]


def test_mr_uids_are_replaced_consistently(mr_studies: dict[str, list[Any]]) -> None:
    originals = mr_studies["agnes_2023"]
    outputs = deid_all(originals)
    assert len({ds.StudyInstanceUID for ds in outputs}) == 1
    assert outputs[0].StudyInstanceUID != originals[0].StudyInstanceUID
    assert outputs[0].StudyInstanceUID.startswith("2.25.")
    for key in ("SeriesInstanceUID", "FrameOfReferenceUID"):
        pairs = {
            (str(a.get(key)), str(b.get(key))) for a, b in zip(originals, outputs, strict=True)
        }
        assert len(pairs) == 2  # two series, mapped one to one
        assert all(new != old for old, new in pairs)
    assert len({ds.SOPInstanceUID for ds in outputs}) == len(outputs)
    again = deid_all(originals)
    assert [ds.SOPInstanceUID for ds in again] == [ds.SOPInstanceUID for ds in outputs]
    other = deid_all(originals, secret=b"another-secret-987654")
    assert other[0].StudyInstanceUID != outputs[0].StudyInstanceUID
    assert not {ds.SOPInstanceUID for ds in other} & {ds.SOPInstanceUID for ds in outputs}


def test_pseudonym_is_stable_per_patient(mr_studies: dict[str, list[Any]]) -> None:
    first = deid_all(mr_studies["agnes_2023"][:1])[0]
    second = deid_all(mr_studies["agnes_2024"][:1])[0]
    other = deid_all(mr_studies["boris_2024"][:1])[0]
    assert first.PatientID == second.PatientID == str(first.PatientName)
    assert first.PatientID.startswith("MMDX-")
    assert other.PatientID != first.PatientID
    assert first.StudyInstanceUID != second.StudyInstanceUID


def test_dates_follow_the_longitudinal_option(mr_studies: dict[str, list[Any]]) -> None:
    original = mr_studies["agnes_2024"][0]
    kept = deid_all([original])[0]
    assert (kept.StudyDate, kept.SeriesDate, kept.StudyTime) == ("20240112", "20240112", "142233")
    assert kept.LongitudinalTemporalInformationModified == "UNMODIFIED"
    # Birth date is not longitudinal information: emptied (Z) either way.
    assert "PatientBirthDate" in kept and not kept.PatientBirthDate

    removed = deid_all([original], retain_longitudinal_temporal=False)[0]
    assert not removed.StudyDate and not removed.StudyTime  # Z
    assert "SeriesDate" not in removed and "InstanceCreationDate" not in removed  # X/D -> X
    assert removed.LongitudinalTemporalInformationModified == "REMOVED"
    codes = [item.CodeValue for item in removed.DeidentificationMethodCodeSequence]
    assert codes == ["113100"]


def test_mr_output_adds_no_dciodvfy_error(mr_studies: dict[str, list[Any]], tmp_path: Path) -> None:
    original = mr_studies["agnes_2023"][0]
    for retain in (True, False):
        output = deid_all([original], retain_longitudinal_temporal=retain)[0]
        written = tmp_path / f"out-{retain}.dcm"
        output.save_as(written, enforce_file_format=True)
        assert (
            set(dciodvfy_errors(written)) - set(dciodvfy_errors(Path(original.filename))) == set()
        )


def test_folder_with_a_bad_file(mr_studies: dict[str, list[Any]], tmp_path: Path) -> None:
    source = tmp_path / "in" / "Abernathy^Agnes"
    source.mkdir(parents=True)
    for index, dataset in enumerate(mr_studies["agnes_2023"][:2]):
        dataset.save_as(source / f"slice{index}.dcm", enforce_file_format=True)
    (source / "notes.txt").write_text("not DICOM")
    report = deidentify_path(tmp_path / "in", tmp_path / "out", secret=SECRET)
    assert len(report.written) == 2 and not report.ok
    assert [Path(failure.path).name for failure in report.failures] == ["notes.txt"]
    assert report.failures[0].error == "DicomReadError"
    for path in report.written:
        assert "Abernathy" not in str(path) and path.name.startswith("2.25.")
        assert pydicom.dcmread(path).PatientIdentityRemoved == "YES"


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="pseudonym_prefix"):
        DeidOptions(pseudonym_prefix="A^B")
    with pytest.raises(ValueError, match="secret"):
        deidentify_dataset(pydicom.Dataset(), secret=b"short")
    assert dataclasses.asdict(DeidOptions())["retain_longitudinal_temporal"] is True
