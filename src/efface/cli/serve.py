"""``efface serve``: the HTTP API on uvicorn, refused before listening when its setup cannot work."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from efface.cli._options import (
    EXIT_USAGE,
    ConfigOption,
    DbOption,
    DeviceOption,
    MethodOption,
    PresetOption,
    ThresholdOption,
    fail_setup,
    load,
    with_default,
)
from efface.cli._render import configure_logging, print_error
from efface.errors import EffaceError

__all__ = ["serve"]


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int | None,
        # ServiceLimits.workers is the number of cores here.
        typer.Option(
            min=1, max=256, help=with_default("Images processed at once (threads sharing one model).", "cores")
        ),
    ] = None,
    queue: Annotated[
        int, typer.Option(min=0, help="Further requests that may wait for a worker; beyond that, 503.")
    ] = 64,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest image accepted, in MiB.")] = 25.0,
    max_pixels: Annotated[
        int | None,
        # service.limits.DEFAULT_SERVICE_MAX_PIXELS, which is not imported here: it would import FastAPI.
        typer.Option(min=1, help=with_default("Most pixels an image may have.", "50 million")),
    ] = None,
    rate_limit: Annotated[
        int, typer.Option(min=1, help="Requests per minute per API key, for keys that set none.")
    ] = 600,
    request_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a request may wait for and take in processing.")
    ] = 60.0,
    method: MethodOption = None,
    preset: PresetOption = None,
    threshold: ThresholdOption = None,
    device: DeviceOption = None,
    ui: Annotated[
        bool,
        typer.Option("--ui", help="Also serve an upload page at /ui: drop a picture, adjust the boxes, download it."),
    ] = False,
    db: DbOption = None,
    config: ConfigOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what is done.")] = False,
) -> None:
    """Serve the HTTP API (POST /v1/anonymize, /v1/detect) until Ctrl-C; every request is audited."""
    # Imported here: FastAPI, uvicorn, the pipeline and the audit store would slow down the start of every
    # other command.
    from efface.audit import AuditStore
    from efface.pipeline.build import build_policy, inference_threads_for, load_models
    from efface.service import ServiceLimits, create_app
    from efface.service.limits import DEFAULT_SERVICE_MAX_PIXELS
    from efface.service.server import serve as run_server

    configure_logging(verbose)
    settings = load(config, method=method, preset=preset, score_threshold=threshold, device=device, db_url=db)
    try:
        limits = ServiceLimits(
            max_upload_bytes=round(max_upload_mb * 1024 * 1024),
            max_image_pixels=max_pixels or min(settings.max_image_pixels, DEFAULT_SERVICE_MAX_PIXELS),
            workers=workers or os.cpu_count() or 1,
            queue_size=queue,
            rate_limit_per_min=rate_limit,
            request_timeout_s=request_timeout,
        )
    except ValueError as exc:
        print_error(exc)
        raise typer.Exit(EXIT_USAGE) from exc
    try:  # refuse a weak transform, a missing model or an unreachable database before listening
        build_policy(settings)
        models = load_models(settings, inference_threads=inference_threads_for(limits.workers))
        AuditStore(settings.db_url).close()
    except EffaceError as exc:
        raise fail_setup(exc) from exc
    # The models loaded above are the service's one copy.
    service_app = create_app(settings, limits=limits, load=lambda _settings, _threads: models, ui=ui)
    if not run_server(service_app, host=host, port=port, max_requests=limits.max_requests):
        raise typer.Exit(EXIT_USAGE)
