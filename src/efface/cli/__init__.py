"""The ``efface`` command line. It parses, builds settings and objects, calls the pipeline, shows
progress and maps outcomes to exit codes: 0 all files succeeded, 1 any file failed, 2 usage or setup
error (bad option, weak transform, unreachable audit database, missing model).

One module per command group (``anonymize``, ``serve``, ``review``, ``audit``, ``verify``, ``keys``, ``models``);
``_options`` holds the shared options and setup, ``_render`` what is printed.
"""

from __future__ import annotations

from typing import Annotated

import typer

from efface.cli._help import ReadableGroup
from efface.cli.anonymize import anonymize
from efface.cli.audit import audit_app
from efface.cli.keys import keys_app
from efface.cli.models import models_app
from efface.cli.review import review
from efface.cli.serve import serve
from efface.cli.verify import verify_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="efface",
    help="Anonymize every face in photos and video: detect, transform irreversibly, keep no original, audit "
    "everything.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=ReadableGroup,
)


def _print_version(value: bool) -> None:
    if value:
        from efface import __version__

        typer.echo(f"efface {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print efface's version and exit.", is_eager=True, callback=_print_version),
    ] = False,
) -> None:
    """Anonymize every face in photos and video: detect, transform irreversibly, keep no original, audit everything."""


app.command()(anonymize)
app.command()(serve)
app.command()(review)
app.add_typer(audit_app, name="audit")
app.add_typer(verify_app, name="verify")
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")


def main() -> None:
    """Console-script entry point."""
    app()
