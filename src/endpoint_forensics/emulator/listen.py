"""Listening sockets and uvicorn servers for the emulator's HTTPS endpoints.

Owns binding (TCP_NODELAY on loopback), the uvicorn server that does not wait on idle
keep-alive connections when stopping, and the host as it appears in URLs. Used by the MDE
server and by every Defender for IoT appliance listener. Imports nothing of the collector.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

__all__ = ["bind", "make_server", "serve", "url_host"]


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


def _abort(connection: Any) -> None:
    transport = getattr(connection, "transport", None)
    if transport is not None:
        transport.abort()


def serve(server: Any, sock: socket.socket) -> None:
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


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


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def url_host(host: str) -> str:
    """The host to put in URLs: loopback for wildcard binds, brackets around IPv6."""
    if host == "0.0.0.0":
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if _is_ipv6(host) else host
