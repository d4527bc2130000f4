"""API keys of the HTTP service, in the ``api_keys`` table of the audit database (migration 0003).

A key reads ``eff_<key_id>_<secret>``: ``key_id`` (16 hex digits) is public and names the key in the audit
log; ``secret`` is 256 random bits. Only the sha256 of the whole key is stored (a key this random needs no
salt or slow hash), so the key is shown once, when it is created, and never again. A presented key is
compared with the stored hash in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from efface.audit._errors import translate_errors
from efface.audit.store import AuditStore
from efface.audit.tables import api_keys
from efface.errors import AuditError

__all__ = ["KEY_PREFIX", "ApiKey", "ApiKeyStore", "IssuedKey", "parse_key_id"]

KEY_PREFIX = "eff"
_KEY_ID_HEX_DIGITS = 16
_SECRET_BYTES = 32
_KEY_PATTERN = re.compile(
    rf"^{KEY_PREFIX}_(?P<key_id>[0-9a-f]{{{_KEY_ID_HEX_DIGITS}}})_(?P<secret>[A-Za-z0-9_-]{{20,}})$"
)
_MAX_NAME_LENGTH = 255


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One API key, without its secret.

    Attributes:
        key_id: the public id; requests are audited under it.
        name: who or what the key is for.
        created_at: UTC time.
        revoked_at: UTC time of revocation, or None while the key is valid.
        rate_limit_per_min: requests per minute this key may make, or None for the server's default.
    """

    key_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    rate_limit_per_min: int | None

    def __post_init__(self) -> None:
        if self.rate_limit_per_min is not None and self.rate_limit_per_min < 1:
            raise ValueError(f"rate_limit_per_min must be >= 1 or None, got {self.rate_limit_per_min}")

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just created: the only time its full value is known.

    Attributes:
        key: the stored record.
        value: the key to hand to the client (``eff_<key_id>_<secret>``).
    """

    key: ApiKey
    value: str

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"IssuedKey(key={self.key!r}, value='{KEY_PREFIX}_{self.key.key_id}_...')"


def parse_key_id(value: str) -> str | None:
    """The key id of a well-formed key, or None when ``value`` is not shaped like an efface key."""
    match = _KEY_PATTERN.match(value)
    return match["key_id"] if match else None


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _api_key(row: Any) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        name=row.name,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        rate_limit_per_min=row.rate_limit_per_min,
    )


class ApiKeyStore:
    """Creates, lists, revokes and checks API keys in an open audit database.

    It shares the ``AuditStore``'s engine: the keys live in the same database (and migration) as the
    requests they are audited under.

    Args:
        store: the open audit store.
    """

    def __init__(self, store: AuditStore) -> None:
        self._engine = store._engine

    def create(self, name: str, *, rate_limit_per_min: int | None = None) -> IssuedKey:
        """Creates a key.

        Args:
            name: who or what the key is for (1-255 characters).
            rate_limit_per_min: requests per minute, or None for the server's default.

        Returns:
            The record and the key itself, which is not stored and cannot be shown again.

        Raises:
            ValueError: an empty or over-long name, or a rate limit below 1.
            AuditError: the database cannot be written.
        """
        name = name.strip()
        if not 1 <= len(name) <= _MAX_NAME_LENGTH:
            raise ValueError(f"key name must be 1-{_MAX_NAME_LENGTH} characters, got {len(name)}")
        key = ApiKey(
            key_id=secrets.token_hex(_KEY_ID_HEX_DIGITS // 2),
            name=name,
            created_at=datetime.now(UTC),
            revoked_at=None,
            rate_limit_per_min=rate_limit_per_min,
        )
        value = f"{KEY_PREFIX}_{key.key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
        with translate_errors(f"create API key {key.key_id}"), self._engine.begin() as connection:
            connection.execute(
                api_keys.insert().values(
                    key_id=key.key_id,
                    name=key.name,
                    key_sha256=_sha256(value),
                    created_at=key.created_at,
                    revoked_at=None,
                    rate_limit_per_min=rate_limit_per_min,
                )
            )
        return IssuedKey(key=key, value=value)

    def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first.

        Raises:
            AuditError: the database cannot be read.
        """
        query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        with translate_errors("list API keys"), self._engine.connect() as connection:
            return [_api_key(row) for row in connection.execute(query)]

    def revoke(self, key_id: str) -> ApiKey:
        """Revokes a key from now on; revoking a revoked key keeps its first revocation time.

        Raises:
            AuditError: there is no such key, or the database cannot be written.
        """
        with translate_errors(f"revoke API key {key_id}"), self._engine.begin() as connection:
            connection.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            row = connection.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).one_or_none()
        if row is None:
            raise AuditError(f"no API key {key_id!r}")
        return _api_key(row)

    def authenticate(self, value: str) -> ApiKey | None:
        """The key that ``value`` is, revoked or not; None when it is malformed, unknown or wrong.

        The stored hash is compared in constant time. Check ``is_revoked`` on the result.

        Raises:
            AuditError: the database cannot be read.
        """
        key_id = parse_key_id(value)
        if key_id is None:
            return None
        query = sa.select(api_keys).where(api_keys.c.key_id == key_id)
        with translate_errors(f"read API key {key_id}"), self._engine.connect() as connection:
            row = connection.execute(query).one_or_none()
        if row is None or not hmac.compare_digest(row.key_sha256, _sha256(value)):
            return None
        return _api_key(row)
