"""`make bench`: run every benchmark in turn."""

from __future__ import annotations

from bench import synth_throughput

if __name__ == "__main__":
    synth_throughput.main()
