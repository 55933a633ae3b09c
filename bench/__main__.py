"""`make bench`: run every benchmark in turn; each prints its figures and ratios."""

from __future__ import annotations

from bench import (
    cine_decode,
    dicom_ingest,
    inference,
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
    dicom_ingest.main([])
    service_latency.main([])
