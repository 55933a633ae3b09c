"""The service's HTTP application: authentication, roles, audit, DICOMweb and results JSON.

:func:`serving.api.app.create_app` builds a plain FastAPI app over a
:class:`serving.api.context.ServiceContext`; the Ray Serve ingress wraps it.
"""
