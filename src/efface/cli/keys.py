"""``efface keys``: create, list and revoke the API keys of the HTTP service."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from efface.audit.keys import ApiKeyStore
from efface.cli._options import (
    EXIT_USAGE,
    ConfigOption,
    DbOption,
    fail_setup,
    load,
    open_store,
    or_exit,
    with_default,
)
from efface.cli._render import key_json, print_error, print_keys, stderr
from efface.errors import EffaceError

__all__ = ["keys_app"]

keys_app = typer.Typer(
    help="Manage the API keys of the HTTP service (stored hashed in the audit database).", no_args_is_help=True
)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    rate_limit: Annotated[
        int | None, typer.Option(min=1, help=with_default("Requests per minute.", "the server's --rate-limit"))
    ] = None,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Create a key and print it (on stdout, alone); it is stored hashed and cannot be shown again."""
    settings = load(config, db_url=db)
    with open_store(settings) as store:
        try:
            issued = ApiKeyStore(store).create(name, rate_limit_per_min=rate_limit)
        except ValueError as exc:
            print_error(exc)
            raise typer.Exit(EXIT_USAGE) from exc
        except EffaceError as exc:
            raise fail_setup(exc) from exc
    stderr.print(
        f"created key {issued.key.key_id} for {escape(repr(issued.key.name))}; store it now, it is not shown again"
    )
    typer.echo(issued.value)


@keys_app.command("list")
def keys_list(
    db: DbOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """List the keys (ids and names only; the keys themselves are not stored)."""
    settings = load(config, db_url=db)
    with open_store(settings) as store:
        keys = or_exit(ApiKeyStore(store).list_keys)
    if json_output:
        typer.echo(json.dumps([key_json(key) for key in keys], indent=2))
        return
    print_keys(keys)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (the part after 'eff_').")],
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Revoke a key: a running server refuses it from its next request."""
    settings = load(config, db_url=db)
    with open_store(settings) as store:
        key = or_exit(lambda: ApiKeyStore(store).revoke(key_id))
    stderr.print(
        f"revoked key {escape(key.key_id)} ({escape(repr(key.name))}) at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC",
        highlight=False,
    )
