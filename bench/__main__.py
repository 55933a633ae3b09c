"""`make bench`: run every benchmark in turn; each prints its figures and ratios."""

from __future__ import annotations

from bench import cine_decode, inference, series_to_volume, synth_throughput, vector_index

if __name__ == "__main__":
    synth_throughput.main()
    series_to_volume.main()
    cine_decode.main()
    inference.main()
    vector_index.main()
