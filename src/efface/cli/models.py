"""``efface models``: prepare the detection models ahead of their first use."""

from __future__ import annotations

from typing import Annotated

import typer

from efface.cli._options import EXIT_FILES_FAILED, or_exit
from efface.cli._render import configure_logging, print_error, stderr
from efface.records import Precision
from efface.text import path_text

__all__ = ["models_app"]

models_app = typer.Typer(
    help="The detection models: build the int8 model ahead of its first use.", no_args_is_help=True
)


@models_app.command("prepare")
def models_prepare(
    precision: Annotated[
        Precision, typer.Option(help="The precision to prepare: int8 is built here once; fp32 needs nothing.")
    ] = Precision.INT8,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what is done.")] = False,
) -> None:
    """Build the model PRECISION needs into the model cache ($EFFACE_CACHE_DIR or the user cache folder) and
    print where it is; a run then loads it instead of building it. Exits 1 when the cache cannot be written."""
    # Imported when the command runs: ``efface --help`` loads no model runtime.
    from efface.detection.centerface import centerface_model_path

    configure_logging(verbose)
    fp32_path = or_exit(centerface_model_path)
    if precision is Precision.FP32:
        typer.echo(f"fp32 runs the published weights as they are, nothing to build: {path_text(fp32_path)}")
        return
    from efface.detection.weights import cache_dir, int8_weights

    stderr.print("preparing the int8 CenterFace model (a first build takes tens of seconds)", highlight=False)
    weights = or_exit(lambda: int8_weights(fp32_path))
    if weights.path is None:
        print_error(f"the model cache {path_text(cache_dir())} cannot be written; each int8 run will build the model")
        raise typer.Exit(EXIT_FILES_FAILED)
    typer.echo(f"int8 model (sha256 {weights.sha256}): {path_text(weights.path)}")
