"""Serving the simulator on a real socket: in the foreground, in a background thread, or as a process.

uvicorn serves the app (with httptools and uvloop when they are installed). The socket is bound and
listening before uvicorn starts, so the port is known at once (``port=0`` picks a free one) and a
client that connects early just waits in the backlog.

uvicorn gives an ASGI app no way to close a connection without answering, which a dropped connection
must do. :class:`_Abortable` wraps the app and hands it one in ``scope["extensions"]``: it closes the
transport of uvicorn's request cycle (the object ``send`` is bound to). If a future uvicorn hides it,
the app falls back to starting an answer it never finishes, which still reaches the client as a
transport error (see :mod:`.faults`).

An idle connection is closed after the config's ``keepalive_timeout``, as real servers and the load
balancers in front of them do: a client that sends on a pooled connection the server has just closed
sees the same failure it would in production. It is a setting of the server, fixed when it starts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import EXIT_USAGE, RunnerError, UsageError
from .app import create_app
from .config import SimulatorConfig, add_simulator_arguments, config_from_args
from .faults import ABORT_EXTENSION


class _Abortable:
    """The app, given an ``abort`` extension that closes the connection without a word."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if scope["type"] == "http" and transport is not None:
            extensions = {**(scope.get("extensions") or {}), ABORT_EXTENSION: transport.close}
            scope = {**scope, "extensions": extensions}
        await self.app(scope, receive, send)


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # proto must say TCP: asyncio sets TCP_NODELAY only on accepted sockets whose proto is
        # IPPROTO_TCP, and without it an answer written in two pieces waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    except OSError as exc:
        raise UsageError(f"simulator: cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"simulator: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(app: Starlette, *, log_level: str, quiet_logging: bool) -> uvicorn.Server:
    options: dict[str, Any] = {"log_config": None} if quiet_logging else {}
    keepalive: float = app.state.sim.config.keepalive_timeout
    config = uvicorn.Config(
        _Abortable(app),
        log_level=log_level,
        timeout_keep_alive=keepalive,  # type: ignore[arg-type]  # a float works: it goes to call_later
        access_log=False,  # thousands of polls a minute; /_sim/stats counts them instead
        lifespan="off",
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=3,
        **options,
    )
    return uvicorn.Server(config)


def serve(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8790,
    *,
    ready_file: str | os.PathLike[str] | None = None,
    log_level: str = "warning",
    quiet: bool = False,
) -> None:
    """Serve the simulator in the foreground until Ctrl-C (or SIGTERM).

    ``ready_file``, if given, receives the base URL (``http://127.0.0.1:PORT``) once the socket listens.
    """
    config = config or SimulatorConfig()
    app = create_app(config)  # first: a bad price file must fail before anyone is told to connect
    sock = _bind(host, port)
    url = _base_url(sock)
    if ready_file is not None:
        partial = Path(f"{ready_file}.part")
        partial.write_text(url + "\n", encoding="utf-8")
        partial.replace(ready_file)  # a reader never sees half a URL
    if not quiet:
        print(
            f"RunComfy simulator on {url} (token {config.token!r}); "
            f"stats at {url}/_sim/stats; Ctrl-C stops it",
            file=sys.stderr,
            flush=True,
        )
    server = _server(app, log_level=log_level, quiet_logging=False)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shut down cleanly, then re-raised the Ctrl-C
        pass
    finally:
        sock.close()


@contextlib.contextmanager
def running_server(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    app: Starlette | None = None,
    log_level: str = "warning",
) -> Iterator[str]:
    """Serve the simulator (or ``app``, from :func:`.create_app`, e.g. with a test clock) from a
    background thread; the app's config says its keep-alive timeout.

    Yields the base URL; the server stops, and the port is released, when the block ends.
    """
    sock = _bind(host, port)
    server = _server(app or create_app(config), log_level=log_level, quiet_logging=True)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="runcomfy-simulator", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the simulator did not start")
            time.sleep(0.002)
        yield _base_url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def main(argv: list[str] | None = None) -> None:
    """``python -m runner.simulator``: serve the simulator in the foreground."""
    parser = argparse.ArgumentParser(
        prog="python -m runner.simulator",
        description="Serve a simulated RunComfy Model API on loopback until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8790, help="port to listen on; 0 picks a free one (default: 8790)"
    )
    parser.add_argument("--ready-file", metavar="FILE", help="write the base URL to FILE once listening")
    parser.add_argument("--log-level", default="warning", help="uvicorn's log level (default: warning)")
    add_simulator_arguments(parser)
    ns = parser.parse_args(argv)
    try:
        serve(config_from_args(ns), ns.host, ns.port, ready_file=ns.ready_file, log_level=ns.log_level)
    except RunnerError as exc:  # bad knobs, an unreadable price file, a port in use
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
