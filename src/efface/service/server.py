"""Runs the service on uvicorn: one process, its requests processed by a bounded pool of threads.

Two guards against clients that hold the server without using it (slowloris): a connection must send its
complete request headers within ``HEADER_TIMEOUT_S`` of connecting (or of its first byte after a keep-alive
pause), else it is closed; and the last-resort limit counts requests being served, whose headers are complete,
not connections, so half-open ones never take a place of a real request.
"""

from __future__ import annotations

import asyncio

import h11
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["HEADER_TIMEOUT_S", "serve"]

_KEEP_ALIVE_S = 5
_GRACEFUL_SHUTDOWN_S = 30
# A browser or SDK sends its headers in one packet; five seconds leave room for a slow link.
HEADER_TIMEOUT_S = 5.0


class _HeaderDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on request headers, which h11 and uvicorn lack.

    uvicorn's ``timeout_keep_alive`` only runs between requests and stops at the first byte of the next; a
    fresh connection has no timeout at all.
    """

    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        if self._header_deadline is None and self.conn.their_state is h11.IDLE:
            self._arm_header_deadline()  # the first byte of a further request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are complete: the request is being served
            self._disarm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._header_deadline = self.loop.call_later(HEADER_TIMEOUT_S, self._on_header_deadline)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _on_header_deadline(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.logger.info("closing a connection that sent no complete headers in %g s", HEADER_TIMEOUT_S)
            self.transport.close()


class _RequestLimit:
    """Answers a bare 503 to requests beyond ``max_requests`` being served at once (headers complete)."""

    def __init__(self, app: ASGIApp, *, max_requests: int) -> None:
        self.app = app
        self.max_requests = max_requests
        self._in_flight = 0  # only touched on the event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._in_flight >= self.max_requests:
            await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"Service Unavailable"})
            return
        self._in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._in_flight -= 1


def serve(app: FastAPI, *, host: str, port: int, max_requests: int | None = None, log_level: str = "info") -> bool:
    """Serves ``app`` until SIGINT or SIGTERM, then lets the requests in flight finish.

    Args:
        app: the application (``create_app``).
        host: the address to listen on.
        port: the port (0: any free one).
        max_requests: requests served at once (their headers complete), refused ones included; a bare 503
            beyond them. Connections still sending headers do not count (they are closed after
            ``HEADER_TIMEOUT_S``).
        log_level: uvicorn's log level.

    Returns:
        False when the application failed to start (the reason is logged), True after a clean stop.
    """
    config = uvicorn.Config(
        app if max_requests is None else _RequestLimit(app, max_requests=max_requests),
        host=host,
        port=port,
        http=_HeaderDeadlineProtocol,
        lifespan="on",
        log_level=log_level,
        server_header=False,
        timeout_keep_alive=_KEEP_ALIVE_S,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
    )
    server = uvicorn.Server(config)
    server.run()
    return server.started
