"""``epf serve``: the dashboard over a local workspace, read-only.

Thin: checks the options and the ``serve`` extra, starts ``web.server`` and prints the address
to open, token included (``http://127.0.0.1:PORT/?token=...``, a contract), then waits for
Ctrl-C or SIGTERM (a service manager's stop); either removes its copies of the workspace.
"""

from __future__ import annotations

import importlib.util
import secrets
import signal
from pathlib import Path
from typing import Annotated

import typer

from endpoint_forensics.analytics import kql_check
from endpoint_forensics.cli.render import out
from endpoint_forensics.errors import ConfigError

__all__ = ["serve"]

SERVE_EXTRA_INSTALL = "pip install 'endpoint-forensics[serve]'"


def serve(
    db: Annotated[Path, typer.Option(help="Workspace file.")] = Path("epf.duckdb"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8765,
    no_token: Annotated[
        bool, typer.Option("--no-token", help="Serve without an access token (loopback only).")
    ] = False,
) -> None:
    """Serve the dashboard: the workbook's views, a device's posture at any time, and KQL,
    read-only over the workspace (a sync may write meanwhile)."""
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"epf serve needs the serve extra ({', '.join(missing)} not installed): "
            f"{SERVE_EXTRA_INSTALL}"
        )
    from endpoint_forensics.web.server import create_app, is_loopback, start_server
    from endpoint_forensics.web.snapshot import WorkspaceBusy, WorkspaceSnapshot

    if no_token and not is_loopback(host):
        raise ConfigError(
            f"--no-token: {host} is not a loopback address; anyone who reaches it would read"
            " the workspace. Keep the token, or serve on 127.0.0.1"
        )
    token = None if no_token else secrets.token_urlsafe(24)
    snapshot = WorkspaceSnapshot(db)
    try:
        try:
            snapshot.current()  # a missing workspace is said now, not on the first page
        except WorkspaceBusy as exc:
            out(f"note: {exc}")
        if kql_check.available():
            # Started here, before any request thread can: in the main thread it keeps the
            # SIGTERM handler set below (.NET would replace it with one that ends the process).
            kql_check.load_kustology()
        running = start_server(
            create_app(snapshot, token=token, prewarm=True), host=host, port=port, token=token
        )
        out(f"Serving {db} read-only. Open: {running.url}")
        out("Ctrl-C stops it.")
        # A stop from a service manager ends it as Ctrl-C does, copies removed (the default
        # SIGTERM ends the process on the spot, leaving a workspace-sized copy in the temp dir).
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            running.thread.join()
        except KeyboardInterrupt:
            running.stop()
    finally:
        snapshot.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
