"""Serving: settings, the `mmdx` CLI, and (later) Ray Serve deployments, DICOM listener, API."""
