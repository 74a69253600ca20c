"""Listening sockets and uvicorn servers for the emulator's HTTPS endpoints, and their threads.

Owns binding (TCP_NODELAY on loopback), the uvicorn server that does not wait on idle
keep-alive connections when stopping, running servers in daemon threads (started: accepting
connections; stopped: gracefully, then forced), the host as it appears in URLs and the names
a certificate for it must carry. Used by the MDE server (``core.server``) and by every
Defender for IoT appliance listener (``iot.server``).

Imports nothing of the emulator: it shares no code with the collector.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

__all__ = [
    "bind",
    "certificate_names",
    "make_server",
    "serve",
    "start_serving",
    "stop_serving",
    "url_host",
    "wait_started",
]

_log = logging.getLogger(__name__)
_START_TIMEOUT_SECONDS = 30.0
_STOP_TIMEOUT_SECONDS = 10.0
_LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def make_server(app: Any, *, host: str, port: int, certfile: str) -> Any:
    """A uvicorn HTTPS server for ``app`` (``certfile``: key and certificate chain, PEM) that
    does not wait on idle keep-alive connections when stopping.

    Closing a TLS connection gracefully waits for the client's close_notify; a client that
    keeps an idle pooled connection (azure-identity does) would hold ``stop()`` for the whole
    graceful timeout and leave the transport unclosed. Idle connections are aborted instead,
    and anything still open after the graceful phase too.
    """
    import uvicorn

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=certfile,
        log_config=None,  # only the CLI configures logging handlers
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws="none",
        http="h11",
        loop="asyncio",
        timeout_graceful_shutdown=5,
        server_header=False,
    )

    class _Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            for connection in list(self.server_state.connections):
                cycle = getattr(connection, "cycle", None)
                if cycle is None or getattr(cycle, "response_complete", False):
                    _abort(connection)
            await super().shutdown(sockets)
            for connection in list(self.server_state.connections):
                _abort(connection)

    return _Server(config)


def serve(server: Any, sock: socket.socket) -> None:
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def start_serving(server: Any, sock: socket.socket, *, name: str) -> threading.Thread:
    """Run ``server`` on ``sock`` in a daemon thread called ``name``, which owns ``sock`` from
    then on (closed here if the thread cannot start)."""
    thread = threading.Thread(target=serve, args=(server, sock), name=name, daemon=True)
    try:
        thread.start()
    except BaseException:
        sock.close()
        raise
    return thread


def wait_started(running: Sequence[tuple[Any, threading.Thread]]) -> None:
    """Return once every server accepts connections.

    Raises:
        RuntimeError: a server's thread ended, or 30 seconds passed, before it started.
    """
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    for server, thread in running:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the HTTPS server thread {thread.name} did not start")
            time.sleep(0.01)


def stop_serving(running: Sequence[tuple[Any, threading.Thread]]) -> None:
    """Ask every server to exit, then wait for each thread (forcing the exit after 10 seconds,
    giving up after 10 more); a thread never waits for itself."""
    for server, _ in running:
        server.should_exit = True
    for server, thread in running:
        if thread is threading.current_thread():
            continue
        thread.join(_STOP_TIMEOUT_SECONDS)
        if thread.is_alive():
            server.force_exit = True
            thread.join(_STOP_TIMEOUT_SECONDS)
            if thread.is_alive():
                _log.warning("the HTTPS server thread %s did not stop in time", thread.name)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if _is_ipv6(host) else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_host(host: str) -> str:
    """The host to put in URLs: loopback for wildcard binds, brackets around IPv6."""
    if host == "0.0.0.0":
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if _is_ipv6(host) else host


def certificate_names(host: str) -> list[str]:
    """The names a server certificate for ``host`` carries: loopback's, plus ``host`` unless
    it is a wildcard."""
    names = list(_LOOPBACK_NAMES)
    if host not in names and host not in ("0.0.0.0", "::"):
        names.append(host)
    return names


def _abort(connection: Any) -> None:
    transport = getattr(connection, "transport", None)
    if transport is not None:
        transport.abort()


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False
