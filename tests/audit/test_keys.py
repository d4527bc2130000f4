"""API keys in the audit database: stored as sha256 only, checked in constant time, revocable."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from efface.audit import AuditStore
from efface.audit.keys import ApiKeyStore, parse_key_id
from efface.errors import AuditError


def test_created_key_authenticates_and_only_its_hash_is_stored(store: AuditStore, raw_engine: sa.Engine) -> None:
    keys = ApiKeyStore(store)
    issued = keys.create("  ci pipeline ", rate_limit_per_min=30)

    assert issued.value.startswith(f"eff_{issued.key.key_id}_")
    assert issued.key.name == "ci pipeline" and issued.key.rate_limit_per_min == 30
    assert issued.value not in repr(issued)
    assert keys.authenticate(issued.value) == issued.key
    with raw_engine.connect() as connection:
        (row,) = connection.execute(sa.text("SELECT * FROM api_keys")).mappings()
    assert row["key_sha256"] == hashlib.sha256(issued.value.encode()).hexdigest()
    # The secret is all after the key id: token_urlsafe may itself hold "_", so a split at the last one could leave
    # a few characters that any stored value might contain.
    secret = issued.value.removeprefix(f"eff_{issued.key.key_id}_")
    assert len(secret) >= 32
    assert not any(secret in str(value) for value in row.values())


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda key: key[:-1] + ("A" if key[-1] != "A" else "B"), id="wrong secret"),
        pytest.param(lambda key: key.replace("eff_", "efx_"), id="wrong prefix"),
        pytest.param(lambda key: "eff_0000000000000000_" + key.rsplit("_", 1)[-1], id="unknown id"),
        pytest.param(lambda key: key[:30], id="truncated"),
        pytest.param(lambda key: "", id="empty"),
        pytest.param(lambda key: key + "\n", id="trailing newline"),
    ],
)
def test_a_wrong_key_does_not_authenticate(store: AuditStore, mangle) -> None:
    keys = ApiKeyStore(store)
    issued = keys.create("client")
    assert keys.authenticate(mangle(issued.value)) is None


def test_revoked_key_is_still_recognised_but_marked(store: AuditStore) -> None:
    keys = ApiKeyStore(store)
    issued = keys.create("leaked")
    other = keys.create("kept")

    first = keys.revoke(issued.key.key_id)
    again = keys.revoke(issued.key.key_id)

    assert first.is_revoked and again.revoked_at == first.revoked_at
    assert keys.authenticate(issued.value).is_revoked
    assert not keys.authenticate(other.value).is_revoked
    assert [key.key_id for key in keys.list_keys()] == [issued.key.key_id, other.key.key_id]


def test_revoking_an_unknown_key_fails(store: AuditStore) -> None:
    with pytest.raises(AuditError, match="no API key"):
        ApiKeyStore(store).revoke("0123456789abcdef")


@pytest.mark.parametrize(("name", "limit"), [("", None), ("x" * 256, None), ("ok", 0)])
def test_bad_key_settings_are_refused(store: AuditStore, name: str, limit: int | None) -> None:
    with pytest.raises(ValueError, match=r"name|rate_limit"):
        ApiKeyStore(store).create(name, rate_limit_per_min=limit)


@pytest.mark.parametrize(
    ("value", "key_id"),
    [
        ("eff_0123456789abcdef_" + "a" * 43, "0123456789abcdef"),
        ("eff_0123456789abcdef_a_b-c_" + "a" * 40, "0123456789abcdef"),
        ("eff_0123456789ABCDEF_" + "a" * 43, None),
        ("eff_0123456789abcdef_short", None),
        ("Bearer eff_0123456789abcdef_" + "a" * 43, None),
        ("", None),
    ],
)
def test_parse_key_id(value: str, key_id: str | None) -> None:
    assert parse_key_id(value) == key_id
