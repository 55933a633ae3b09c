"""Ray Serve deployments: thin wrappers over the plain classes of :mod:`serving.pipeline`.

``app.build_app`` binds them into the ``mmdx`` application (``serve deploy`` reads the same
topology from ``configs/serve/mmdx.yaml``); ``remote`` holds the adapters through which the
job runner and the HTTP app call them by handle, passing studies by their store path.
"""
