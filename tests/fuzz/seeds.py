"""Valid sample objects the mutations start from (built in a folder, nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imaging.synthetic.mr_dicom import write_mr_series
from tests.imaging.malformed_corpus import STUDY, build_seeds
from tests.synthetic_cases import make_mr_volume


def fuzz_seeds(folder: Path) -> tuple[dict[str, bytes], tuple[bytes, ...]]:
    """The corpus seeds (MR_small, a JPEG US cine, an Enhanced MR, a deflated MR) and the
    three slice files of a small regular MR series."""
    seeds = build_seeds(folder)
    pixels = np.arange(3 * 12 * 10, dtype=np.float32).reshape(3, 12, 10)
    paths = write_mr_series(
        make_mr_volume(pixels), STUDY, out_dir=folder / "series", series_number=3,
        uid_seed="fuzz",
    )  # fmt: skip
    return seeds, tuple(path.read_bytes() for path in sorted(paths))
