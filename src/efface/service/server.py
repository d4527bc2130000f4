"""Runs the service on uvicorn: one process, its requests processed by a bounded pool of threads."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

__all__ = ["serve"]

_KEEP_ALIVE_S = 5
_GRACEFUL_SHUTDOWN_S = 30


def serve(app: FastAPI, *, host: str, port: int, max_connections: int | None = None, log_level: str = "info") -> bool:
    """Serves ``app`` until SIGINT or SIGTERM, then lets the requests in flight finish.

    Args:
        app: the application (``create_app``).
        host: the address to listen on.
        port: the port (0: any free one).
        max_connections: connections and requests handled at once; uvicorn answers a bare 503 beyond them.
        log_level: uvicorn's log level.

    Returns:
        False when the application failed to start (the reason is logged), True after a clean stop.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        limit_concurrency=max_connections,
        log_level=log_level,
        server_header=False,
        timeout_keep_alive=_KEEP_ALIVE_S,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
    )
    server = uvicorn.Server(config)
    server.run()
    return server.started
