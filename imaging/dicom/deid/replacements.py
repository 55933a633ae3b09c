"""Replacement values: keyed UIDs, patient pseudonyms and dummy values by VR.

UIDs and pseudonyms are HMAC-SHA256 of the original value under a secret key, so
they are deterministic (every file of a study maps to the same new Study Instance
UID, in this run and the next) yet cannot be reversed or recomputed without the key.
A different key gives unrelated values.
"""

from __future__ import annotations

import hashlib
import hmac

_UID_DOMAIN = b"mmdx-deid/uid\x00"
_PATIENT_DOMAIN = b"mmdx-deid/patient\x00"
_MIN_SECRET_BYTES = 16
_PSEUDONYM_HEX_DIGITS = 16
_MAX_PREFIX_CHARS = 32
# PS3.5 6.2: backslash separates values, caret and equals structure person names.
_FORBIDDEN_PREFIX_CHARS = frozenset("\\^=")

# Dummy values for the D action, by VR; each is valid for its VR and identifies no one.
DUMMY_VALUES: dict[str, object] = {
    "AE": "ANONYMOUS",
    "AS": "000D",
    "CS": "ANONYMOUS",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "LO": "ANONYMOUS",
    "LT": "ANONYMOUS",
    "PN": "ANONYMOUS",
    "SH": "ANONYMOUS",
    "ST": "ANONYMOUS",
    "TM": "000000",
    "UC": "ANONYMOUS",
    "UR": "",
    "UT": "ANONYMOUS",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
}


def check_secret(secret: bytes) -> None:
    """Raise ``ValueError`` unless ``secret`` is long enough to key the hashes."""
    if not isinstance(secret, bytes) or len(secret) < _MIN_SECRET_BYTES:
        raise ValueError(
            f'Argument "secret" must be at least {_MIN_SECRET_BYTES} bytes, '
            f"got {len(secret) if isinstance(secret, bytes) else type(secret).__name__}"
        )


def check_prefix(prefix: str) -> None:
    """Raise ``ValueError`` unless ``prefix`` fits in Patient ID and Patient's Name."""
    if len(prefix) > _MAX_PREFIX_CHARS or not prefix.isprintable():
        raise ValueError(
            f'Argument "pseudonym_prefix" must be printable and at most {_MAX_PREFIX_CHARS} '
            f"characters, got {prefix!r}"
        )
    if _FORBIDDEN_PREFIX_CHARS & set(prefix):
        raise ValueError(
            f'Argument "pseudonym_prefix" must not contain "\\", "^" or "=", got {prefix!r}'
        )


def keyed_uid(secret: bytes, uid: str) -> str:
    """The replacement for ``uid``: ``2.25.`` and a 128-bit keyed hash (at most 44 characters).

    The 128 bits carry the version (8, custom) and variant bits of RFC 9562, so the
    integer is a well-formed UUID as PS3.5 B.2 asks of ``2.25.`` UIDs.
    """
    normalised = uid.strip(" \x00")
    digest = hmac.new(secret, _UID_DOMAIN + normalised.encode("ascii", "replace"), hashlib.sha256)
    value = int.from_bytes(digest.digest()[:16], "big")
    value = (value & ~(0xF << 76)) | (0x8 << 76)  # version 8
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # variant 10
    return f"2.25.{value}"


def pseudonym(secret: bytes, patient_key: tuple[str, ...], prefix: str) -> str:
    """A stable pseudonym for the patient that ``patient_key`` identifies.

    ``patient_key`` is (Patient ID, Issuer of Patient ID) or a fallback; equal keys
    give equal pseudonyms under the same secret.
    """
    message = _PATIENT_DOMAIN + "\x00".join(patient_key).encode("utf-8")
    digest = hmac.new(secret, message, hashlib.sha256).hexdigest()
    return f"{prefix}{digest[:_PSEUDONYM_HEX_DIGITS].upper()}"
