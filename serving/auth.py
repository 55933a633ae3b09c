"""Users, roles and bearer tokens.

Each user holds one role; each role a fixed set of permissions (:data:`ROLE_PERMISSIONS`).
A token is ``secrets.token_urlsafe(32)`` (256 random bits), shown once when the user is
added; the catalog keeps only its SHA-256. A fast hash is enough here: a slow KDF
(bcrypt, argon2) protects guessable passwords, but nobody can search 2**256 tokens,
and hashing every request with a KDF would cost milliseconds for nothing. Lookup is
by hash, so no stored secret is compared byte by byte.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from serving.catalog import Catalog, utc_now
from serving.catalog.tables import User

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_MAX_TOKEN_LENGTH = 256


class Role(StrEnum):
    """What a user is for."""

    RADIOLOGIST = "radiologist"
    RESEARCHER = "researcher"
    ADMIN = "admin"


class Permission(StrEnum):
    """One kind of access an endpoint requires."""

    READ_STUDIES = "studies:read"  # identified data: QIDO, WADO, headers, images
    WRITE_STUDIES = "studies:write"  # STOW-RS
    READ_RESULTS = "results:read"  # one study's result, which names the patient's study
    WRITE_FEEDBACK = "feedback:write"  # a reader's verdict on a result
    READ_CASES = "cases:read"  # de-identified similar cases and case search
    READ_AGGREGATES = "aggregates:read"  # counts and metrics over many studies, no identities
    MANAGE_USERS = "users:manage"
    READ_AUDIT = "audit:read"


ROLE_PERMISSIONS: MappingProxyType[Role, frozenset[Permission]] = MappingProxyType(
    {
        Role.RADIOLOGIST: frozenset(
            {
                Permission.READ_STUDIES,
                Permission.WRITE_STUDIES,
                Permission.READ_RESULTS,
                Permission.WRITE_FEEDBACK,
                Permission.READ_CASES,
            }
        ),
        # Research works on de-identified material only: nothing that names a patient.
        Role.RESEARCHER: frozenset({Permission.READ_CASES, Permission.READ_AGGREGATES}),
        Role.ADMIN: frozenset(Permission),
    }
)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of a request."""

    user: str
    role: Role

    def can(self, permission: Permission) -> bool:
        """Whether this caller's role grants ``permission``."""
        return permission in ROLE_PERMISSIONS[self.role]


@dataclass(frozen=True)
class UserRecord:
    """A user as listed (never with the token)."""

    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """Not revoked."""
        return self.revoked_at is None


def hash_token(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def parse_role(value: str) -> Role:
    """``value`` as a :class:`Role`, or a ``ValueError`` naming the valid roles."""
    try:
        return Role(value)
    except ValueError:
        valid = ", ".join(role.value for role in Role)
        raise ValueError(f'Argument "role" must be one of {valid}, got {value!r}') from None


class UserDirectory:
    """The users table of a catalog: add, list, revoke, authenticate."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def add(self, name: str, role: Role | str, *, now: datetime | None = None) -> str:
        """Create a user and return their bearer token (it cannot be shown again).

        Raises:
            ValueError: The name is not 1-64 letters, digits or ``._@-``, the role is
                unknown, or the name is taken (revoked users keep theirs, so the
                audit trail stays unambiguous).
        """
        if not _NAME.match(name):
            raise ValueError(
                f'Argument "name" must be 1-64 letters, digits or ._@- '
                f"(starting with a letter or digit), got {name[:80]!r}"
            )
        role = parse_role(role)
        token = secrets.token_urlsafe(32)
        try:
            with self._catalog.write_session() as session:
                if session.scalar(select(User.id).where(User.name == name)) is not None:
                    raise ValueError(f"user {name!r} already exists")
                session.add(
                    User(
                        name=name,
                        role=role.value,
                        token_hash=hash_token(token),
                        created_at=now or utc_now(),
                    )
                )
        except IntegrityError:  # added by another process in between
            raise ValueError(f"user {name!r} already exists") from None
        return token

    def list_users(self) -> list[UserRecord]:
        """Every user, active and revoked, by name."""
        with self._catalog.read_session() as session:
            return [
                UserRecord(user.name, Role(user.role), user.created_at, user.revoked_at)
                for user in session.scalars(select(User).order_by(User.name))
            ]

    def revoke(self, name: str, *, now: datetime | None = None) -> bool:
        """Revoke a user's token for good.

        Returns:
            ``True`` if revoked now, ``False`` if it was revoked already.

        Raises:
            KeyError: No user has this name.
        """
        with self._catalog.write_session() as session:
            user = session.scalar(select(User).where(User.name == name))
            if user is None:
                raise KeyError(name)
            if user.revoked_at is not None:
                return False
            user.revoked_at = now or utc_now()
            return True

    def authenticate(self, token: str) -> Principal | None:
        """The active user holding ``token``, or ``None`` (unknown, revoked or malformed)."""
        if not token or len(token) > _MAX_TOKEN_LENGTH:
            return None
        with self._catalog.read_session() as session:
            user = session.scalar(
                select(User).where(User.token_hash == hash_token(token), User.revoked_at.is_(None))
            )
            return None if user is None else Principal(user.name, Role(user.role))
