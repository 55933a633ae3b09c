"""Ultrasound cine loops: real scanner loops, synthetic loops in every encoding, timing, errors."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import convert_color_space
from pydicom.tag import Tag
from pydicom.uid import UID, JPEG2000Lossless, JPEGLSLossless, RLELossless

from imaging.dicom.cine import load_us_cine
from imaging.errors import CineLoopError, DicomReadError
from imaging.synthetic.echo_cine import CineLoop
from imaging.synthetic.records import SyntheticStudy
from imaging.synthetic.us_dicom import write_us_multiframe
from tests.synthetic_cases import make_cine, make_echo_study

SITE_PACKAGES = Path(pydicom.__file__).parent.parent
PYDICOM_DATA_ECHO = SITE_PACKAGES / "data_store" / "data" / "color3d_jpeg_baseline.dcm"
DEID_DATA_US = SITE_PACKAGES / "deid_data" / "data" / "ultrasounds"
FRAMES, ROWS, COLUMNS = 8, 128, 160


@pytest.fixture(scope="module")
def study() -> SyntheticStudy:
    return make_echo_study()


@pytest.fixture(scope="module")
def cine(study: SyntheticStudy) -> CineLoop:
    return make_cine(study, number_of_frames=FRAMES, rows=ROWS, columns=COLUMNS)


@pytest.fixture(scope="module")
def written(
    cine: CineLoop, study: SyntheticStudy, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("us")
    return {
        encoding: write_us_multiframe(
            cine, study, path=folder / f"{encoding}.dcm", encoding=encoding, uid_seed="s"
        )
        for encoding in ("jpeg_baseline", "rgb", "monochrome2")
    }


def native(written: dict[str, Path], encoding: str = "rgb") -> Dataset:
    return pydicom.dcmread(written[encoding])


def test_pydicom_data_echo_loop() -> None:
    loop = load_us_cine(PYDICOM_DATA_ECHO)
    reference = pydicom.dcmread(PYDICOM_DATA_ECHO)

    assert loop.frames.shape == (120, 480, 640, 3)
    assert loop.frames.dtype == np.uint8
    assert loop.timing_source == "FrameTime"
    assert loop.frame_times_ms[:3] == pytest.approx([0.0, 33.333, 66.666])
    assert loop.frame_times_ms[-1] == pytest.approx(119 * 33.333)
    assert loop.frame_rate_hz == pytest.approx(30.0003, abs=1e-4)
    assert loop.sop_instance_uid == reference.SOPInstanceUID
    (region,) = loop.regions
    assert (region.min_x0, region.min_y0, region.max_x1, region.max_y1) == (84, 31, 595, 414)
    assert region.is_2d_tissue and region.physical_units_x_name == "cm"
    assert region.physical_delta_x == pytest.approx(0.05104970559477806)
    assert loop.mask_source == "regions"
    assert loop.sector_mask.sum() == 512 * 384
    assert loop.sector_mask[31, 84] and loop.sector_mask[414, 595]
    assert not loop.sector_mask[30, 84] and not loop.sector_mask[414, 596]
    assert np.array_equal(loop.frames, reference.pixel_array)


def test_pydicom_data_echo_colour_matches_dcmtk(tmp_path: Path) -> None:
    """YBR_FULL_422 JPEG to RGB, checked against an independent decoder (dcmtk)."""
    if shutil.which("dcmdjpeg") is None:
        pytest.fail("dcmdjpeg is missing: run scripts/install-system-deps.sh (Debian dcmtk)")
    subprocess.run(
        ["dcmdjpeg", str(PYDICOM_DATA_ECHO), str(tmp_path / "raw.dcm")], check=True, timeout=120
    )
    dcmtk = pydicom.dcmread(tmp_path / "raw.dcm")
    loop = load_us_cine(PYDICOM_DATA_ECHO)

    assert dcmtk.PhotometricInterpretation == "RGB"
    difference = np.abs(loop.frames.astype(np.int16) - dcmtk.pixel_array)
    # Different IDCTs and chroma upsampling differ by a few levels, never by a colour swap.
    assert difference.mean() < 1.0
    assert np.percentile(difference, 99.9) <= 8


@pytest.mark.filterwarnings("ignore:The value length")  # over-long SH/LO values in the real file
def test_deid_data_ultrasound_loop() -> None:
    path = DEID_DATA_US / "ultrasound-multiframe.dcm"
    loop = load_us_cine(path)

    assert loop.frames.shape == (30, 600, 800, 3)
    # Frame Increment Pointer names Frame Time; Cine Rate (18) is only a display hint.
    assert loop.timing_source == "FrameTime"
    assert loop.frame_times_ms[1] == pytest.approx(54.241)
    assert loop.frame_rate_hz == pytest.approx(1000.0 / 54.241)
    (region,) = loop.regions
    assert (region.min_x0, region.min_y0, region.max_x1, region.max_y1) == (11, 30, 788, 592)
    assert loop.sector_mask.sum() == 778 * 563
    # Planar configuration 1 (colour by plane) comes back interleaved.
    assert np.array_equal(loop.frames, pydicom.dcmread(path).pixel_array)


def test_deid_data_still_image_is_not_a_loop() -> None:
    with pytest.raises(CineLoopError, match="no frame timing"):
        load_us_cine(DEID_DATA_US / "RGB_IMAGE.dcm")


@pytest.mark.parametrize("encoding", ["jpeg_baseline", "rgb", "monochrome2"])
def test_synthetic_loop_in_each_encoding(
    cine: CineLoop, written: dict[str, Path], encoding: str
) -> None:
    loop = load_us_cine(written[encoding])

    x0, y0, x1, y1 = cine.sector_bounding_box
    expected_mask = np.zeros((ROWS, COLUMNS), dtype=bool)
    expected_mask[y0 : y1 + 1, x0 : x1 + 1] = True
    assert np.array_equal(loop.sector_mask, expected_mask)
    assert loop.frame_times_ms == pytest.approx(np.arange(FRAMES) * 33.3333)
    assert loop.source == str(written[encoding])
    assert not loop.frames.flags.writeable
    if encoding == "monochrome2":
        assert loop.frames.shape == (FRAMES, ROWS, COLUMNS, 1)
        assert np.array_equal(loop.frames[..., 0], cine.grayscale_frames())
    elif encoding == "rgb":
        assert np.array_equal(loop.frames, cine.frames)
    else:
        assert loop.frames.shape == (FRAMES, ROWS, COLUMNS, 3)
        assert np.abs(loop.frames.astype(np.float64) - cine.frames).mean() < 3.0


@pytest.mark.parametrize("transfer_syntax", [JPEGLSLossless, JPEG2000Lossless, RLELossless])
@pytest.mark.parametrize("encoding", ["rgb", "monochrome2"])
def test_lossless_transcodes_decode_to_the_same_pixels(
    written: dict[str, Path], tmp_path: Path, encoding: str, transfer_syntax: UID
) -> None:
    dataset = native(written, encoding)
    dataset.compress(transfer_syntax)
    dataset.save_as(tmp_path / "compressed.dcm")

    loop = load_us_cine(tmp_path / "compressed.dcm")

    assert (
        pydicom.dcmread(tmp_path / "compressed.dcm").file_meta.TransferSyntaxUID == transfer_syntax
    )
    assert np.array_equal(loop.frames, load_us_cine(written[encoding]).frames)


def test_native_ybr_full_422(cine: CineLoop, written: dict[str, Path]) -> None:
    rgb = cine.frames.copy()
    rgb[:, :, 1::2] = rgb[:, :, ::2]  # one colour per pixel pair, so 4:2:2 loses nothing
    pairs = convert_color_space(rgb, "RGB", "YBR_FULL").reshape(FRAMES, ROWS, COLUMNS // 2, 2, 3)
    dataset = native(written)
    dataset.PhotometricInterpretation = "YBR_FULL_422"
    # Each pixel pair is stored Y1 Y2 Cb Cr.
    dataset.PixelData = np.concatenate([pairs[..., 0], pairs[:, :, :, 0, 1:]], axis=-1).tobytes()

    loop = load_us_cine(dataset)

    assert np.abs(loop.frames.astype(np.int16) - rgb).max() <= 1


def test_frame_time_vector(written: dict[str, Path]) -> None:
    dataset = native(written)
    dataset.FrameIncrementPointer = Tag("FrameTimeVector")
    increments = [0.0, 30.0, 35.0, 30.0, 40.0, 30.0, 35.0, 30.0]
    dataset.FrameTimeVector = increments  # Frame Time stays; the pointer decides

    loop = load_us_cine(dataset)

    assert loop.timing_source == "FrameTimeVector"
    assert list(loop.frame_times_ms) == [0.0, 30.0, 65.0, 95.0, 135.0, 165.0, 200.0, 230.0]
    assert loop.frame_rate_hz == pytest.approx(1000.0 * 7 / 230.0)
    assert loop.source == str(written["rgb"])


@pytest.mark.parametrize("keyword", ["CineRate", "RecommendedDisplayFrameRate"])
def test_frame_rate_fallbacks(written: dict[str, Path], keyword: str) -> None:
    dataset = native(written)
    for attribute in ("FrameTime", "FrameIncrementPointer", "CineRate"):
        del dataset[attribute]
    dataset.RecommendedDisplayFrameRate = 25
    setattr(dataset, keyword, 25)

    loop = load_us_cine(dataset)

    assert loop.timing_source == keyword
    assert loop.frame_times_ms[1:3] == pytest.approx([40.0, 80.0])
    assert loop.frame_rate_hz == pytest.approx(25.0)


def test_monochrome1_is_inverted(cine: CineLoop, written: dict[str, Path]) -> None:
    dataset = native(written, "monochrome2")
    dataset.PhotometricInterpretation = "MONOCHROME1"

    loop = load_us_cine(dataset)

    assert np.array_equal(loop.frames[..., 0], 255 - cine.grayscale_frames())


def test_palette_colour_is_applied(cine: CineLoop, written: dict[str, Path]) -> None:
    dataset = native(written, "monochrome2")
    dataset.PhotometricInterpretation = "PALETTE COLOR"
    levels = np.arange(256, dtype=np.uint16)
    # A "hot" palette in 16-bit entries: red rises first, then green, blue stays low.
    red, green, blue = levels * 257, np.clip(levels * 2, 0, 255) * 257, levels // 4 * 257
    for name, table in (("Red", red), ("Green", green), ("Blue", blue)):
        setattr(dataset, f"{name}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(dataset, f"{name}PaletteColorLookupTableData", table.astype("<u2").tobytes())

    loop = load_us_cine(dataset)

    grey = cine.grayscale_frames()
    assert loop.frames.shape == (FRAMES, ROWS, COLUMNS, 3)
    assert np.array_equal(loop.frames[..., 0], grey)
    assert np.array_equal(loop.frames[..., 1], np.clip(grey.astype(np.int32) * 2, 0, 255))
    assert np.array_equal(loop.frames[..., 2], grey // 4)


def test_no_regions_masks_the_header_band(cine: CineLoop, written: dict[str, Path]) -> None:
    dataset = native(written)
    del dataset.SequenceOfUltrasoundRegions

    loop = load_us_cine(dataset)

    band = int(np.argmax(loop.sector_mask.any(axis=1)))
    assert loop.regions == () and loop.mask_source == "header_band"
    # The text ends above row 28 and the fan starts on row 37; the band stops two rows
    # above the fan (the detector's dilation), so it covers the text and keeps the fan.
    assert max(box.box[3] for box in cine.text_boxes) == 27
    assert cine.sector_bounding_box[1] == 37
    assert band == 35
    assert not loop.sector_mask[:band].any() and loop.sector_mask[band:].all()


def test_regions_without_2d_tissue_give_an_empty_mask(written: dict[str, Path]) -> None:
    dataset = native(written)
    dataset.SequenceOfUltrasoundRegions[0].RegionSpatialFormat = 3  # spectral Doppler
    dataset.SequenceOfUltrasoundRegions[0].RegionDataType = 3

    loop = load_us_cine(dataset)

    assert loop.mask_source == "regions" and not loop.sector_mask.any()


VECTOR = Tag("FrameTimeVector")


@pytest.mark.parametrize(
    ("edits", "reason"),
    [
        ({"FrameTime": "0"}, "FrameTime is 0.0; it must be positive"),
        ({"FrameTime": "-33.3"}, "FrameTime is -33.3; it must be positive"),
        (
            {"FrameIncrementPointer": VECTOR, "FrameTimeVector": [0.0, 33.3, 33.3]},
            "FrameTimeVector has 3 values for 8 frames",
        ),
        (
            {"FrameIncrementPointer": VECTOR, "FrameTimeVector": [0.0, 33.3, 0.0] + [33.3] * 5},
            "FrameTimeVector has a zero, negative or non-finite increment",
        ),
        ({"Modality": "MR"}, "Modality is 'MR', not 'US'"),
        (
            {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"},
            "SOP Class 1.2.840.10008.5.1.4.1.1.2 is not an ultrasound",
        ),
        ({"BitsStored": 12}, "BitsStored 12"),
        (
            {"region.RegionLocationMinX0": COLUMNS - 1},
            "ultrasound region 1 box .* has its minimum past its maximum",
        ),
        (
            {"region.RegionLocationMaxY1": None},
            "ultrasound region 1 has no valid RegionLocationMaxY1",
        ),
    ],
    ids=[
        "zero frame time",
        "negative frame time",
        "short vector",
        "vector zero step",
        "not US",
        "CT class",
        "12 bits",
        "inverted region",
        "region without box",
    ],
)
def test_unusable_loops_raise_cine_loop_errors(
    written: dict[str, Path], edits: dict[str, Any], reason: str
) -> None:
    dataset = native(written)
    for keyword, value in edits.items():
        target: Any = dataset
        if keyword.startswith("region."):
            target = dataset.SequenceOfUltrasoundRegions[0]
            keyword = keyword.removeprefix("region.")
        if value is None:
            delattr(target, keyword)
        else:
            setattr(target, keyword, value)

    with pytest.raises(CineLoopError, match=reason) as caught:
        load_us_cine(dataset)
    assert caught.value.source == str(written["rgb"])


def test_not_dicom_is_a_read_error(tmp_path: Path) -> None:
    (tmp_path / "loop.avi").write_bytes(b"RIFF" + bytes(400))

    with pytest.raises(DicomReadError, match="not a DICOM Part 10 file"):
        load_us_cine(tmp_path / "loop.avi")


def test_a_loaded_loop_feeds_the_echo_preset(written: dict[str, Path]) -> None:
    from imaging.transforms.echo import create_echo_preset

    loop = load_us_cine(written["jpeg_baseline"])

    out = create_echo_preset()({"cine": loop.frames, "sector_mask": loop.sector_mask})["cine"]

    # 8 frames at period 2 fill 4 clip frames; the other 28 are EchoNet's zero padding.
    assert out.shape == (1, 32, 112, 112)
    assert out[0, :4].abs().amax(dim=(1, 2)).min() > 0.5 and out[0, 4:].abs().max() == 0
