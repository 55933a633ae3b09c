"""The synthetic A4C echo loops, their US DICOM files and the EchoNet-Dynamic layout."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from imaging.synthetic.echo_cine import CineLoop, lv_cavity_mask, sample_echo_appearance
from imaging.synthetic.echonet import (
    ECHONET_SIZE,
    FILE_LIST_COLUMNS,
    echonet_volume_tracings,
    write_echonet_filelist,
    write_echonet_video,
)
from imaging.synthetic.records import SyntheticStudy
from imaging.synthetic.us_dicom import (
    US_MULTIFRAME_IMAGE_STORAGE,
    UltrasoundEncoding,
    write_us_multiframe,
)
from tests.dicom_validation import dciodvfy_errors
from tests.synthetic_cases import AGNES, make_cine, make_echo_study

ROWS, COLUMNS = 200, 264  # make_cine's default size


@pytest.fixture(scope="module")
def study() -> SyntheticStudy:
    return make_echo_study(patient=AGNES, institution_name="Saint Elsewhere Hospital")


@pytest.fixture(scope="module")
def cine(study: SyntheticStudy) -> CineLoop:
    return make_cine(study)


def area_length_volume_ml(cine: CineLoop, frame: int) -> float:
    """The area-length volume of the cavity mask, its length measured along the LV axis."""
    mask = lv_cavity_mask(cine, frame)
    rows, columns = np.nonzero(mask)
    ux, uy = cine.lv_geometry.axis
    along = columns * cine.mm_per_pixel_x * ux + rows * cine.mm_per_pixel_y * uy
    length_mm = float(along.max() - along.min()) + cine.mm_per_pixel_x
    area_mm2 = mask.sum() * cine.mm_per_pixel_x * cine.mm_per_pixel_y
    return 8.0 * area_mm2**2 / (3.0 * math.pi * length_mm) / 1000.0


def test_same_seed_gives_the_same_loop(study: SyntheticStudy, cine: CineLoop) -> None:
    again = make_cine(study)
    other = make_cine(study, seed=1)

    assert np.array_equal(cine.frames, again.frames)
    assert cine.end_systole_frames == again.end_systole_frames
    assert not np.array_equal(cine.frames, other.frames)


def test_loop_shape_and_events(cine: CineLoop) -> None:
    assert cine.frames.shape == (24, ROWS, COLUMNS, 3)
    assert cine.frames.dtype == np.uint8
    assert cine.frame_time_ms == pytest.approx(1000.0 / 30.0)
    # 0.8 s at 90 bpm holds at least one of each event.
    assert cine.end_diastole_frames and cine.end_systole_frames
    assert cine.esv_ml == pytest.approx(120.0 * 0.45)
    volume = cine.lv_volume_ml
    for frame in cine.end_diastole_frames:
        assert volume[frame] == pytest.approx(cine.edv_ml, rel=0.01)
    for frame in cine.end_systole_frames:
        assert volume[frame] == pytest.approx(cine.esv_ml, rel=0.01)
    assert volume.min() >= cine.esv_ml - 1e-6 and volume.max() <= cine.edv_ml + 1e-6


@pytest.mark.parametrize("ejection_fraction", [0.2, 0.4, 0.6, 0.75])
def test_cavity_masks_give_back_the_ejection_fraction(
    study: SyntheticStudy, ejection_fraction: float
) -> None:
    rng = np.random.default_rng(7)
    cine = make_cine(
        study,
        seed=int(ejection_fraction * 100),
        ejection_fraction=ejection_fraction,
        appearance=sample_echo_appearance(rng),
    )
    edv = area_length_volume_ml(cine, cine.end_diastole_frames[0])
    esv = area_length_volume_ml(cine, cine.end_systole_frames[0])

    assert 1.0 - esv / edv == pytest.approx(ejection_fraction, abs=0.03)
    assert edv == pytest.approx(cine.edv_ml, rel=0.08)


def test_cavity_mask_is_dark_in_the_pixels(cine: CineLoop) -> None:
    grey = cine.grayscale_frames().astype(np.float64)
    for frame in (*cine.end_diastole_frames, *cine.end_systole_frames):
        mask = lv_cavity_mask(cine, frame)
        rows = np.nonzero(mask)[0]
        # Walls: a ring 3 to 6 pixels outside the cavity, on the apical half (no valves there).
        ring = ndimage.binary_dilation(mask, iterations=6) & ~ndimage.binary_dilation(
            mask, iterations=3
        )
        ring[int(rows.mean()) :] = False
        core = ndimage.binary_erosion(mask, iterations=3)

        assert grey[frame][core].mean() < 0.5 * grey[frame][ring].mean()


def test_frames_change_over_the_cycle(cine: CineLoop) -> None:
    end_diastole = cine.frames[cine.end_diastole_frames[0]].astype(np.int16)
    end_systole = cine.frames[cine.end_systole_frames[0]].astype(np.int16)
    cavity_change = lv_cavity_mask(cine, cine.end_diastole_frames[0]) ^ lv_cavity_mask(
        cine, cine.end_systole_frames[0]
    )

    assert np.abs(end_diastole - end_systole).mean() > 5.0
    assert cavity_change.sum() > 200
    assert all(
        not np.array_equal(a, b) for a, b in zip(cine.frames[:-1], cine.frames[1:], strict=True)
    )


def test_header_text_is_burned_in_and_outside_the_fan_is_black(
    study: SyntheticStudy, cine: CineLoop
) -> None:
    texts = [box.text for box in cine.text_boxes]
    assert texts == [
        "Abernathy, Agnes",
        "ID: MMDX000042",
        "Saint Elsewhere Hospital",
        "2024-03-05 14:22:33",
    ]
    for box in cine.text_boxes:
        x0, y0, x1, y1 = box.box
        assert y1 <= cine.header_rows
        assert (cine.frames[:, y0:y1, x0:x1].max(axis=-1) > 200).sum(axis=(1, 2)).min() > 20

    rows, columns = np.mgrid[0 : cine.rows, 0 : cine.columns]
    dx, dy = columns - cine.sector_apex_xy[0], rows - cine.sector_apex_xy[1]
    outside = (np.hypot(dx, dy) > cine.sector_depth_px + 2) | (
        np.degrees(np.abs(np.arctan2(dx, dy))) > cine.sector_angle_deg / 2 + 2
    )
    below_header = cine.frames[:, cine.header_rows : cine.sector_bounding_box[3] + 1]
    assert below_header[:, outside[cine.header_rows : cine.sector_bounding_box[3] + 1]].max() == 0
    assert below_header[:, ~outside[cine.header_rows : cine.sector_bounding_box[3] + 1]].mean() > 20


def test_invalid_ejection_fraction_is_rejected(study: SyntheticStudy) -> None:
    with pytest.raises(ValueError, match="ejection_fraction"):
        make_cine(study, ejection_fraction=1.2)


@pytest.mark.parametrize(
    ("encoding", "photometric", "transfer_syntax"),
    [
        ("jpeg_baseline", "YBR_FULL_422", "1.2.840.10008.1.2.4.50"),
        ("rgb", "RGB", "1.2.840.10008.1.2.1"),
        ("monochrome2", "MONOCHROME2", "1.2.840.10008.1.2.1"),
    ],
)
def test_us_multiframe_round_trip(
    study: SyntheticStudy,
    cine: CineLoop,
    tmp_path: Path,
    encoding: UltrasoundEncoding,
    photometric: str,
    transfer_syntax: str,
) -> None:
    path = write_us_multiframe(
        cine,
        study,
        path=tmp_path / "loop.dcm",
        encoding=encoding,
        uid_seed="seed-1",
    )
    dataset = pydicom.dcmread(path)

    assert dciodvfy_errors(path) == []
    assert dataset.file_meta.TransferSyntaxUID == transfer_syntax
    assert dataset.SOPClassUID == US_MULTIFRAME_IMAGE_STORAGE
    assert dataset.PhotometricInterpretation == photometric
    assert dataset.NumberOfFrames == cine.number_of_frames
    assert float(dataset.FrameTime) == pytest.approx(cine.frame_time_ms, abs=1e-3)
    assert dataset.BurnedInAnnotation == "YES"
    assert dataset.PatientName == "Abernathy^Agnes"
    assert dataset.PatientAge == "064Y"
    region = dataset.SequenceOfUltrasoundRegions[0]
    assert region.PhysicalDeltaX == pytest.approx(cine.mm_per_pixel_x / 10.0)
    assert region.PhysicalDeltaY == pytest.approx(cine.mm_per_pixel_y / 10.0)
    assert region.RegionLocationMinX0 + region.ReferencePixelX0 == cine.sector_apex_xy[0]
    assert region.RegionLocationMinY0 + region.ReferencePixelY0 == cine.sector_apex_xy[1]

    pixels = dataset.pixel_array
    if encoding == "jpeg_baseline":
        assert pixels.shape == cine.frames.shape
        assert np.abs(pixels.astype(np.float64) - cine.frames).mean() < 5.0
    elif encoding == "rgb":
        assert np.array_equal(pixels, cine.frames)
    else:
        assert np.array_equal(pixels, cine.grayscale_frames())


def test_us_multiframe_is_reproducible_from_its_seed(
    study: SyntheticStudy, cine: CineLoop, tmp_path: Path
) -> None:
    first = write_us_multiframe(cine, study, path=tmp_path / "a.dcm", encoding="rgb", uid_seed="s")
    second = write_us_multiframe(cine, study, path=tmp_path / "b.dcm", encoding="rgb", uid_seed="s")
    other = write_us_multiframe(cine, study, path=tmp_path / "c.dcm", encoding="rgb", uid_seed="t")

    assert first.read_bytes() == second.read_bytes()
    assert pydicom.dcmread(other).SOPInstanceUID != pydicom.dcmread(first).SOPInstanceUID


def test_unknown_encoding_is_rejected(
    study: SyntheticStudy, cine: CineLoop, tmp_path: Path
) -> None:
    unsupported: Any = "jpeg2000"
    with pytest.raises(ValueError, match="encoding"):
        write_us_multiframe(
            cine, study, path=tmp_path / "x.dcm", encoding=unsupported, uid_seed="s"
        )


def test_echonet_video_reads_back(cine: CineLoop, tmp_path: Path) -> None:
    import av

    row = write_echonet_video(cine, tmp_path / "Videos" / "0X00AB.avi")
    with av.open(str(tmp_path / "Videos" / "0X00AB.avi")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]

    assert row == {
        "FileName": "0X00AB",
        "EF": pytest.approx(55.0),
        "ESV": pytest.approx(54.0),
        "EDV": pytest.approx(120.0),
        "FrameHeight": 112,
        "FrameWidth": 112,
        "FPS": 30.0,
        "NumberOfFrames": 24,
    }
    assert len(frames) == cine.number_of_frames
    assert frames[0].shape == (ECHONET_SIZE, ECHONET_SIZE, 3)
    # Grey content in every channel, and no header text: the top corners are black.
    assert np.abs(frames[0][..., 0].astype(int) - frames[0][..., 2]).max() < 12
    assert frames[0][:10, :10].max() < 10 and frames[0].mean() > 20


def test_filelist_csv(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"FileName": "0X01", "EF": 61.5, "ESV": 40.0, "EDV": 103.9, "FrameHeight": 112,
         "FrameWidth": 112, "FPS": 50.0, "NumberOfFrames": 120, "Split": "TRAIN"},
        {"FileName": "0X02", "EF": 30.0, "ESV": 98.0, "EDV": 140.0, "FrameHeight": 112,
         "FrameWidth": 112, "FPS": 30.0, "NumberOfFrames": 60, "Split": "TEST"},
    ]  # fmt: skip
    write_echonet_filelist(rows, tmp_path / "FileList.csv")
    with (tmp_path / "FileList.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        read = list(reader)

    assert tuple(reader.fieldnames or ()) == FILE_LIST_COLUMNS
    assert [(r["FileName"], float(r["EF"]), r["Split"]) for r in read] == [
        ("0X01", 61.5, "TRAIN"),
        ("0X02", 30.0, "TEST"),
    ]
    with pytest.raises(ValueError, match="Split"):
        write_echonet_filelist([{**rows[0], "Split": "HOLDOUT"}], tmp_path / "bad.csv")


def test_volume_tracings_give_back_the_volumes(cine: CineLoop) -> None:
    tracings = echonet_volume_tracings(cine, "0X00AB")
    x0, y0, x1, y1 = cine.sector_bounding_box
    mm_per_video_pixel = cine.mm_per_pixel_x * max(x1 - x0 + 1, y1 - y0 + 1) / ECHONET_SIZE

    def disc_volume_ml(frame: int) -> float:
        lines = [row for row in tracings if row["Frame"] == frame]
        lengths = [
            math.dist(
                (float(str(r["X1"])), float(str(r["Y1"]))),
                (float(str(r["X2"])), float(str(r["Y2"]))),
            )
            * mm_per_video_pixel
            for r in lines
        ]
        axis, chords = lengths[0], lengths[1:]
        return sum(math.pi * (c / 2) ** 2 * axis / len(chords) for c in chords) / 1000.0

    end_systole, end_diastole = cine.end_systole_frames[0], cine.end_diastole_frames[0]
    assert [row["Frame"] for row in tracings] == [end_systole] * 21 + [end_diastole] * 21
    assert tracings[0]["FileName"] == "0X00AB.avi"
    assert disc_volume_ml(end_systole) == pytest.approx(cine.esv_ml, rel=0.02)
    assert disc_volume_ml(end_diastole) == pytest.approx(cine.edv_ml, rel=0.02)
