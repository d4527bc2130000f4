"""``efface review``: a page on this machine to check what the detector found and was unsure of, add and remove
boxes, and apply them."""

from __future__ import annotations

import getpass
import secrets
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from efface.cli._options import (
    ConfigOption,
    DbOption,
    DeviceOption,
    MethodOption,
    PresetOption,
    ThresholdOption,
    fail_setup,
    load,
    open_store,
)
from efface.cli._render import configure_logging, stdout
from efface.errors import EffaceError

__all__ = ["review"]


def review(
    paths: Annotated[list[Path], typer.Argument(metavar="PATH...", help="Pictures and folders of pictures.")],
    reviewer: Annotated[
        str | None, typer.Option(help="Who reviews, as the audit records it. [default: the OS user]")
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback: only this machine can open the page).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on; 0: a free one.")] = 0,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in the default browser.")] = False,
    method: MethodOption = None,
    preset: PresetOption = None,
    threshold: ThresholdOption = None,
    device: DeviceOption = None,
    db: DbOption = None,
    config: ConfigOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what is done.")] = False,
) -> None:
    """Review PATHS in a browser before anonymizing: the faces found, the faint candidates the detector was unsure
    of, boxes to add or remove; Apply anonymizes the accepted pictures with them (audited, like anonymize)."""
    from efface.pipeline.build import audited_settings, build_policy, inference_threads_for, load_models
    from efface.review.app import create_review_app
    from efface.review.server import bind, hosts_for, serve
    from efface.review.session import ReviewSession

    configure_logging(verbose)
    settings = load(config, method=method, preset=preset, score_threshold=threshold, device=device, db_url=db)
    store = open_store(settings)
    try:
        policy = build_policy(settings)
        models = load_models(settings, inference_threads=inference_threads_for(1))
        session = ReviewSession(
            paths,
            models=models,
            policy=policy,
            store=store,
            reviewer=reviewer or getpass.getuser(),
            settings=audited_settings(settings),
        )
        sock = bind(host, port)
    except EffaceError as exc:
        store.close()
        raise fail_setup(exc) from exc
    token = secrets.token_urlsafe(32)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{bound_port}/?token={token}"
    stdout.print(
        f"efface review: {len(session.files)} pictures ({len(session.refused)} not reviewable); open {url}",
        highlight=False,
        soft_wrap=True,
    )
    session.start()
    if open_browser:
        webbrowser.open(url)
    try:
        serve(create_review_app(session, token=token, hosts=hosts_for(host)), sock)
    finally:
        store.close()
