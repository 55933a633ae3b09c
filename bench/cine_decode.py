"""Cine decode time: a 120-frame 480x640 JPEG Baseline echo loop, against named baselines.

The loop is pydicom-data's ``color3d_jpeg_baseline.dcm`` (a SonoSite A4C echo,
YBR_FULL_422). Each arm reads the file and produces RGB pixels:

- candidate: ``imaging.dicom.cine.load_us_cine`` (read, checks, decode, timing, mask);
- baseline ``dcmdjpeg``: dcmtk decompressing the file to a native RGB file on tmpfs
  (process start and the write included, as a pipeline calling it would pay);
- baseline PyAV: ``pydicom.dcmread`` and FFmpeg's MJPEG decoder on the same JPEG
  frames, converted to RGB arrays.

A third line shows pydicom's default plugin order (GDCM first), which ``load_us_cine``
overrides for JPEG Baseline. Figures are medians of ``--repeats`` runs after one warm-up.
Usage:

    python -m bench.cine_decode [--repeats N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from bench.timing import median_seconds


def _pyav_decode(path: Path) -> np.ndarray:
    import av
    import pydicom
    from pydicom.encaps import generate_frames

    dataset = pydicom.dcmread(path)
    codec = av.CodecContext.create("mjpeg", "r")
    frames = []
    for data in generate_frames(dataset.PixelData, number_of_frames=int(dataset.NumberOfFrames)):
        for frame in codec.decode(av.Packet(data)):
            frames.append(frame.to_ndarray(format="rgb24"))
    return np.stack(frames)


def _dcmdjpeg(path: Path, out: Path) -> None:
    subprocess.run(["dcmdjpeg", str(path), str(out)], check=True, capture_output=True)


def _pydicom_default(path: Path) -> np.ndarray:
    import pydicom

    return np.asarray(pydicom.dcmread(path).pixel_array)


def main(argv: list[str] | None = None) -> None:
    """Print the median decode time of each arm and the ratios to the candidate."""
    from pydicom.data import get_testdata_file

    from imaging.dicom.cine import load_us_cine

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    found = get_testdata_file("color3d_jpeg_baseline.dcm", download=False)
    if found is None:
        raise SystemExit("color3d_jpeg_baseline.dcm is missing: install pydicom-data")
    path = Path(str(found))

    loop = load_us_cine(path)
    reference = _pyav_decode(path)
    frames = loop.number_of_frames
    agreement = np.abs(loop.frames.astype(np.int16) - reference).mean()
    candidate = median_seconds(lambda: load_us_cine(path), args.repeats)
    arms: list[tuple[str, float]] = [
        ("PyAV (FFmpeg MJPEG) decode", median_seconds(lambda: _pyav_decode(path), args.repeats))
    ]
    if shutil.which("dcmdjpeg"):
        scratch = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
        with tempfile.TemporaryDirectory(dir=scratch) as folder:
            out = Path(folder, "native.dcm")
            arms.insert(
                0, ("dcmtk dcmdjpeg", median_seconds(lambda: _dcmdjpeg(path, out), args.repeats))
            )
    else:
        print("  (dcmdjpeg not found: install dcmtk for that baseline)")
    arms.append(
        (
            "pydicom default (GDCM first)",
            median_seconds(lambda: _pydicom_default(path), args.repeats),
        )
    )

    print(
        f"cine decode: {frames} frames {loop.height}x{loop.width} JPEG Baseline "
        f"(median of {args.repeats}; engineering figures)"
    )
    name = "candidate load_us_cine"
    print(f"  {name:<40} {candidate * 1000:8.1f} ms  {frames / candidate:7.1f} frames/s")
    for name, seconds in arms:
        print(
            f"  {'baseline ' + name:<40} {seconds * 1000:8.1f} ms  {frames / seconds:7.1f} frames/s"
            f"  ratio candidate/baseline {candidate / seconds:5.2f}"
        )
    print(f"  mean |load_us_cine - PyAV| per RGB sample: {agreement:.2f} grey levels")


if __name__ == "__main__":
    main()
