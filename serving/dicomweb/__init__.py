"""The DICOMweb subset a viewer and ``dicomweb-client`` use: STOW-RS, QIDO-RS, WADO-RS.

:func:`serving.dicomweb.routes.create_dicomweb_router` builds the FastAPI router; the
other modules are its parts (multipart bodies, the DICOM JSON model, rendered frames).
"""
