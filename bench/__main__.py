"""`make bench`: run every benchmark in turn; each prints its figures and ratios."""

from __future__ import annotations

from bench import (
    cine_decode,
    dicom_ingest,
    inference,
    load,
    screening,
    series_to_volume,
    service_latency,
    synth_throughput,
    vector_index,
)

if __name__ == "__main__":
    synth_throughput.main()
    series_to_volume.main()
    cine_decode.main()
    inference.main()
    vector_index.main()
    load.main([])
    # Before the two that re-run themselves in a network namespace and exit there.
    screening.main([])
    dicom_ingest.main([])
    service_latency.main([])
