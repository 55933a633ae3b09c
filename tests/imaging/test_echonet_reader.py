"""The EchoNet-Dynamic reader against the layout our generator writes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imaging.dicom.reading import ReadLimits
from imaging.errors import CineLoopError, EchoNetLayoutError, ResourceLimitError
from imaging.readers import echonet as reader
from imaging.readers.echonet import list_echonet_studies, load_echonet_video
from imaging.synthetic import echonet as writer
from imaging.synthetic.echo_cine import CineLoop
from tests.synthetic_cases import make_cine

FRAMES = 24


@pytest.fixture(scope="module")
def cines() -> list[CineLoop]:
    return [
        make_cine(seed=seed, ejection_fraction=ef, number_of_frames=FRAMES, rows=128, columns=160)
        for seed, ef in ((0, 0.6), (1, 0.35), (2, 0.5))
    ]


@pytest.fixture(scope="module")
def root(cines: list[CineLoop], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("echonet")
    rows = []
    for name, cine, split in zip(("0X0A", "0X0B", "0X0C"), cines, writer.SPLITS, strict=True):
        row = writer.write_echonet_video(cine, root / "Videos" / f"{name}.avi")
        rows.append({**row, "Split": split})
    writer.write_echonet_filelist(rows, root / "FileList.csv")
    writer.write_echonet_tracings(
        writer.echonet_volume_tracings(cines[0], "0X0A"), root / "VolumeTracings.csv"
    )
    return root


def expected_video_frames(cine: CineLoop) -> np.ndarray:
    """The generator's video content: the fan's box centred in a square, resized to 112."""
    x0, y0, x1, y1 = cine.sector_bounding_box
    width, height = x1 - x0 + 1, y1 - y0 + 1
    side = max(width, height)
    top, left = (side - height) // 2, (side - width) // 2
    frames = []
    for grey in cine.grayscale_frames():
        square = np.zeros((side, side), dtype=np.uint8)
        square[top : top + height, left : left + width] = grey[y0 : y1 + 1, x0 : x1 + 1]
        small = Image.fromarray(square).resize((112, 112), Image.Resampling.BILINEAR)
        frames.append(np.asarray(small))
    return np.stack(frames)


def test_the_reader_and_the_generator_agree_on_the_layout() -> None:
    assert reader.FILE_LIST_COLUMNS == writer.FILE_LIST_COLUMNS
    assert reader.VOLUME_TRACING_COLUMNS == writer.VOLUME_TRACING_COLUMNS
    assert reader.SPLITS == writer.SPLITS


def test_list_studies_with_labels_and_splits(root: Path, cines: list[CineLoop]) -> None:
    studies = list_echonet_studies(root)

    assert [(s.file_name, s.split) for s in studies] == [
        ("0X0A", "TRAIN"),
        ("0X0B", "VAL"),
        ("0X0C", "TEST"),
    ]
    first = studies[0]
    assert first.video_path == root / "Videos" / "0X0A.avi"
    assert first.ef_percent == pytest.approx(60.0)
    assert first.edv_ml == pytest.approx(120.0)
    assert first.esv_ml == pytest.approx(48.0)
    assert (first.frame_height, first.frame_width) == (112, 112)
    assert first.fps == pytest.approx(30.0)
    assert first.number_of_frames == FRAMES
    assert studies[1].ef_percent == pytest.approx(35.0)
    assert [s.file_name for s in list_echonet_studies(root, split="val")] == ["0X0B"]


def test_tracings_are_grouped_by_frame(root: Path, cines: list[CineLoop]) -> None:
    first, second, _ = list_echonet_studies(root)
    end_systole, end_diastole = cines[0].end_systole_frames[0], cines[0].end_diastole_frames[0]
    rows = writer.echonet_volume_tracings(cines[0], "0X0A")

    assert [t.frame for t in first.tracings] == [end_systole, end_diastole]
    assert first.tracings[0].lines.shape == (1 + writer.DISCS, 4)
    assert first.tracings[0].lines[0] == pytest.approx(
        [float(str(rows[0][c])) for c in ("X1", "Y1", "X2", "Y2")]
    )
    assert second.tracings == ()


def test_load_video(root: Path, cines: list[CineLoop]) -> None:
    loop = load_echonet_video(root / "Videos" / "0X0B.avi")

    assert loop.frames.shape == (FRAMES, 112, 112, 3)
    assert loop.frame_rate_hz == pytest.approx(30.0)
    assert loop.timing_source == "VideoFrameRate"
    assert loop.frame_times_ms[:3] == pytest.approx([0.0, 100.0 / 3, 200.0 / 3])
    assert loop.mask_source == "whole_frame" and loop.sector_mask.all()
    assert loop.sop_instance_uid is None and loop.regions == ()
    # Near-lossless Motion-JPEG of the generator's frames, in order.
    error = np.abs(loop.frames[..., 1].astype(np.float64) - expected_video_frames(cines[1]))
    assert error.mean() < 2.0
    assert np.abs(loop.frames[..., 0].astype(np.int16) - loop.frames[..., 2]).max() < 12


def test_file_names_with_the_avi_extension(root: Path, tmp_path: Path) -> None:
    text = (root / "FileList.csv").read_text().replace("0X0A,", "0X0A.avi,")
    (tmp_path / "FileList.csv").write_text(text)

    assert list_echonet_studies(tmp_path)[0].video_path == tmp_path / "Videos" / "0X0A.avi"


def _rewrite(root: Path, tmp_path: Path, column: str, value: str) -> Path:
    with (root / "FileList.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[1][column] = value
    with (tmp_path / "FileList.csv").open("w", newline="") as handle:
        fields = [c for c in writer.FILE_LIST_COLUMNS if c in rows[1]]
        out = csv.DictWriter(handle, fieldnames=fields)
        out.writeheader()
        out.writerows({k: v for k, v in row.items() if k in fields} for row in rows)
    return tmp_path


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("EF", "n/a", "line 3: EF 'n/a' is not a number"),
        ("NumberOfFrames", "12.5", "line 3: NumberOfFrames '12.5' is not a non-negative integer"),
        ("Split", "HOLDOUT", "line 3: Split 'HOLDOUT' is not one of"),
        ("FileName", "0X0A", "line 3: FileName 0X0A repeats"),
        ("FileName", "../etc/passwd", "is not a plain file name"),
    ],
)
def test_malformed_file_list(
    root: Path, tmp_path: Path, column: str, value: str, reason: str
) -> None:
    with pytest.raises(EchoNetLayoutError, match=reason):
        list_echonet_studies(_rewrite(root, tmp_path, column, value))


def test_missing_tables_and_columns(root: Path, tmp_path: Path) -> None:
    with pytest.raises(EchoNetLayoutError, match=r"FileList\.csv: file does not exist"):
        list_echonet_studies(tmp_path)
    (tmp_path / "FileList.csv").write_text("FileName,EF\n0X0A,55\n")
    with pytest.raises(EchoNetLayoutError, match=r"missing columns \['ESV', 'EDV'"):
        list_echonet_studies(tmp_path)
    with pytest.raises(ValueError, match='Argument "split"'):
        list_echonet_studies(root, split="holdout")


def test_missing_and_corrupt_videos(root: Path, tmp_path: Path) -> None:
    data = (root / "Videos" / "0X0A.avi").read_bytes()
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.avi").write_bytes(b"not a video\n" * 50)

    with pytest.raises(CineLoopError, match="video file does not exist"):
        load_echonet_video(tmp_path / "absent.avi")
    with pytest.raises(CineLoopError, match="cannot decode video"):
        load_echonet_video(tmp_path / "text.avi")
    with pytest.raises(CineLoopError, match=rf"decoded \d+ of the {FRAMES} frames"):
        load_echonet_video(tmp_path / "half.avi")


def test_video_over_the_limits(root: Path) -> None:
    with pytest.raises(ResourceLimitError, match="over the limits of 5 frames"):
        load_echonet_video(root / "Videos" / "0X0A.avi", limits=ReadLimits(max_frames=5))
