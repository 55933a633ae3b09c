"""The radiologist's web page: its static files, browser sessions, viewer images, feedback.

The page (``serving/web/static``) is served by the service's own FastAPI app under
``/ui/``; it reads the JSON API with a session cookie that :mod:`serving.web.sessions`
issues against a user's bearer token. :func:`serving.web.routes.create_ui_router` serves
the page and the session; :mod:`serving.web.study_views` the key images, heat layers and
feedback of a study; :mod:`serving.web.case_views` the de-identified similar cases.
"""

from __future__ import annotations
