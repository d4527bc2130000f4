"""Serves the review page on a socket bound before the link is printed (port 0: a free one, chosen by the OS)."""

from __future__ import annotations

import socket

import uvicorn
from fastapi import FastAPI

from efface.errors import ConfigurationError

__all__ = ["bind", "hosts_for", "serve"]

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``.

    Raises:
        ConfigurationError: the address cannot be bound (in use, not this machine's).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def hosts_for(host: str) -> frozenset[str]:
    """The host names a request to a server bound to ``host`` may name."""
    return _LOOPBACK if host in _LOOPBACK else frozenset({host})


def serve(app: FastAPI, sock: socket.socket) -> None:
    """Serves ``app`` on ``sock`` until Ctrl-C (or SIGTERM)."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=5)
    uvicorn.Server(config).run(sockets=[sock])
