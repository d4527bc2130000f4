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
    help="The detection models: build them into the model cache ahead of their first use.", no_args_is_help=True
)


@models_app.command("prepare")
def models_prepare(
    precision: Annotated[
        Precision, typer.Option(help="The precision to prepare: the int8 model, or the fp32 graph every run loads.")
    ] = Precision.INT8,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what is done.")] = False,
) -> None:
    """Build the model PRECISION needs into the model cache ($EFFACE_CACHE_DIR or the user cache folder) and
    print where it is; a run then loads it instead of building it. Exits 1 when the cache cannot be written."""
    # Imported when the command runs: ``efface --help`` loads no model runtime.
    from efface.detection.centerface import centerface_model_path

    configure_logging(verbose)
    fp32_path = or_exit(centerface_model_path)
    from efface.detection.weights import cache_dir, fp32_graph, int8_weights

    if precision is Precision.FP32:
        built = or_exit(lambda: fp32_graph(fp32_path))
        what = "fp32 graph (the published weights, input dims made symbolic)"
    else:
        stderr.print("preparing the int8 CenterFace model (a first build takes tens of seconds)", highlight=False)
        built = or_exit(lambda: int8_weights(fp32_path))
        what = "int8 model"
    if built.path is None:
        print_error(f"the model cache {path_text(cache_dir())} cannot be written; each run will build its model")
        raise typer.Exit(EXIT_FILES_FAILED)
    typer.echo(f"{what} (sha256 {built.sha256}): {path_text(built.path)}")
