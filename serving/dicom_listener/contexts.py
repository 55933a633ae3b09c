"""The presentation contexts the listener accepts: what it stores, in which encodings.

Storage contexts cover the MR and ultrasound classes the classifiers read, in every
transfer syntax :mod:`imaging` has a decoder for, so an instance is kept as the
modality encoded it and never transcoded on the way in.
"""

from __future__ import annotations

from pydicom import uid
from pynetdicom.presentation import PresentationContext, build_context

# pynetdicom generates its SOP Class names at import, out of the type checker's sight.
VERIFICATION = uid.UID("1.2.840.10008.1.1")
STUDY_ROOT_FIND = uid.UID("1.2.840.10008.5.1.4.1.2.2.1")
PATIENT_ROOT_FIND = uid.UID("1.2.840.10008.5.1.4.1.2.1.1")

STORAGE_SOP_CLASSES: tuple[str, ...] = (
    uid.MRImageStorage,
    uid.EnhancedMRImageStorage,
    uid.UltrasoundImageStorage,
    uid.UltrasoundMultiFrameImageStorage,
)

# The acceptor takes the first of these that a proposed context also lists, so the
# order is a preference: uncompressed first, then lossless compression, then lossy.
# A sender that offers one context with both its uncompressed data and a lossy syntax
# is never asked to compress lossily for us; a sender that proposes only the lossy
# syntax its file already has (storescu, Orthanc) sends the file unchanged.
STORAGE_TRANSFER_SYNTAXES: tuple[str, ...] = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.RLELossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLossless,
    uid.JPEGLSLossless,
    uid.JPEG2000Lossless,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLSNearLossless,
    uid.JPEG2000,
)

QUERY_SOP_CLASSES: tuple[str, ...] = (STUDY_ROOT_FIND, PATIENT_ROOT_FIND)

# Identifiers and responses are small; the uncompressed syntaxes are all a peer needs.
QUERY_TRANSFER_SYNTAXES: tuple[str, ...] = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
)


def supported_contexts(*, with_query: bool) -> list[PresentationContext]:
    """The SCP contexts: Verification, the storage classes and, ``with_query``, C-FIND.

    Args:
        with_query: Also accept Study Root and Patient Root C-FIND (when the listener
            has a :class:`~serving.study_access.StudyQuery`).
    """
    contexts = [build_context(VERIFICATION, list(QUERY_TRANSFER_SYNTAXES))]
    contexts += [
        build_context(abstract_syntax, list(STORAGE_TRANSFER_SYNTAXES))
        for abstract_syntax in STORAGE_SOP_CLASSES
    ]
    if with_query:
        contexts += [
            build_context(abstract_syntax, list(QUERY_TRANSFER_SYNTAXES))
            for abstract_syntax in QUERY_SOP_CLASSES
        ]
    return contexts
