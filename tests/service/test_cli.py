"""``efface keys create|list|revoke`` and the set-up checks of ``efface serve``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from efface.audit import AuditStore
from efface.audit.keys import ApiKeyStore
from efface.cli import app

runner = CliRunner()


def test_keys_create_list_revoke(db_url: str) -> None:
    created = runner.invoke(app, ["keys", "create", "mobile app", "--rate-limit", "120", "--db", db_url])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("eff_") and "\n" not in key  # the key alone on stdout, for $(...)
    assert "not shown again" in created.stderr
    key_id = key.split("_")[1]
    with AuditStore(db_url) as store:
        assert ApiKeyStore(store).authenticate(key).rate_limit_per_min == 120

    listed = runner.invoke(app, ["keys", "list", "--db", db_url, "--json"])
    assert listed.exit_code == 0
    (entry,) = json.loads(listed.stdout)
    assert entry["key_id"] == key_id and entry["name"] == "mobile app" and entry["revoked_at"] is None
    assert key.rsplit("_", 1)[1] not in listed.stdout

    table = runner.invoke(app, ["keys", "list", "--db", db_url], env={"COLUMNS": "200"})
    assert key_id in table.stdout and "mobile app" in table.stdout

    revoked = runner.invoke(app, ["keys", "revoke", key_id, "--db", db_url])
    assert revoked.exit_code == 0 and "revoked key" in revoked.stderr
    assert json.loads(runner.invoke(app, ["keys", "list", "--db", db_url, "--json"]).stdout)[0]["revoked_at"]


def test_a_key_name_with_brackets_is_shown_as_given(db_url: str) -> None:
    name = "[bold]ops[/bold] team"
    created = runner.invoke(app, ["keys", "create", name, "--db", db_url])
    assert created.exit_code == 0 and f"for {name!r}" in created.stderr
    listed = runner.invoke(app, ["keys", "list", "--db", db_url], env={"COLUMNS": "200"})
    assert name in listed.stdout
    key_id = created.stdout.strip().split("_")[1]
    revoked = runner.invoke(app, ["keys", "revoke", key_id, "--db", db_url])
    assert f"({name!r})" in revoked.stderr


def test_keys_revoke_of_an_unknown_key_is_a_usage_error(db_url: str) -> None:
    result = runner.invoke(app, ["keys", "revoke", "0123456789abcdef", "--db", db_url])
    assert result.exit_code == 2 and "no API key" in result.stderr


def test_keys_create_refuses_an_empty_name(db_url: str) -> None:
    result = runner.invoke(app, ["keys", "create", "  ", "--db", db_url])
    assert result.exit_code == 2 and "name" in result.stderr


def test_serve_refuses_a_weak_default_transform_before_listening(db_url: str) -> None:
    result = runner.invoke(app, ["serve", "--db", db_url, "--port", "0"], env={"EFFACE_BLUR_KERNEL_FRACTION": "0.01"})
    assert result.exit_code == 2 and "below the floor" in result.stderr


def test_serve_refuses_an_unreachable_database() -> None:
    result = runner.invoke(app, ["serve", "--db", "postgresql+psycopg://nobody@127.0.0.1:1/none", "--port", "0"])
    assert result.exit_code == 2 and "audit database" in result.stderr


def test_serve_on_cuda_without_a_gpu_is_refused_before_listening(db_url: str) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has CUDA")
    result = runner.invoke(app, ["serve", "--device", "cuda", "--db", db_url, "--port", "0"])
    assert result.exit_code == 2
    assert "CUDAExecutionProvider" in result.stderr and "onnxruntime-gpu" in result.stderr
