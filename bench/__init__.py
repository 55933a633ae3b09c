"""Benchmarks: each prints figures and a ratio against a named baseline measured in the same run."""
