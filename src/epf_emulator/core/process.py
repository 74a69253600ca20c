"""``EmulatorProcess``: an ``Emulator`` served from a child process, driven over a pipe.

The emulator in the collector's process shares its interpreter lock: every emulated request and
every record the emulated Logs Ingestion endpoint checks waits for the collector's Python and
the other way round. In a child process each has a core. ``epf demo`` runs it so: its fortnight
of syncs spends about half its CPU in the emulator.

The child is spawned, not forked: the parent may already run threads (a progress display, the
sinks' senders), and a fork copies their locks in whatever state they are in. The emulator is a
pure function of its settings and the emulated clock, so the child serves the same tenant.

Imports only emulator modules: it shares no code with the collector.
"""

from __future__ import annotations

import multiprocessing
import traceback
from types import TracebackType
from typing import TYPE_CHECKING, Any

from epf_emulator.common.settings import EmulatorSettings

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["EmulatorError", "EmulatorProcess"]

#: Seconds to wait for the child to build its tenant and bind, or to answer one call.
_START_TIMEOUT = 300.0
_CALL_TIMEOUT = 600.0


class EmulatorError(RuntimeError):
    """The child failed a call (its message and traceback text) or stopped answering."""


class EmulatorProcess:
    """``with EmulatorProcess(settings) as emu:``. ``call(name, *args, **kwargs)`` runs the
    child ``Emulator``'s method ``name`` and returns its value; ``get(name)`` reads a property.
    Values cross the pipe pickled: what the ``Emulator`` returns is plain data (dicts, lists,
    datetimes, paths, dataclasses)."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> EmulatorProcess:
        """Spawn the child; return once its emulator accepts connections."""
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_serve, args=(self.settings, child), name="epf-emulator", daemon=True
        )
        process.start()
        child.close()
        self._conn, self._process = parent, process
        try:
            self._answer(_START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the child's emulator and wait for the child; safe to call twice."""
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            try:
                conn.send(None)
            except OSError:  # the child is gone already
                pass
            conn.close()
        if process is not None:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """The child emulator's ``name(*args, **kwargs)``."""
        return self._request(("call", name, args, kwargs))

    def get(self, name: str) -> Any:
        """The child emulator's property ``name``."""
        return self._request(("get", name, (), {}))

    def _request(self, message: tuple[str, str, tuple[Any, ...], dict[str, Any]]) -> Any:
        if self._conn is None:
            raise EmulatorError("the emulator process is not running")
        self._conn.send(message)
        return self._answer(_CALL_TIMEOUT)

    def _answer(self, timeout: float) -> Any:
        assert self._conn is not None
        try:
            if not self._conn.poll(timeout):
                raise EmulatorError(f"the emulator process did not answer in {timeout:.0f} s")
            ok, value = self._conn.recv()
        except EOFError:
            raise EmulatorError("the emulator process stopped") from None
        if not ok:
            raise EmulatorError(value)
        return value


def _serve(settings: EmulatorSettings, conn: Connection) -> None:
    """The child: start the emulator, then answer calls until ``None`` or the pipe closes."""
    from epf_emulator.core.server import Emulator

    try:
        emu = Emulator(settings).start()
    except Exception:
        conn.send((False, traceback.format_exc()))
        return
    try:
        conn.send((True, None))
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the parent is gone
                return
            if message is None:
                return
            kind, name, args, kwargs = message
            try:
                value = getattr(emu, name)
                if kind == "call":
                    value = value(*args, **kwargs)
                conn.send((True, value))
            except Exception:
                conn.send((False, traceback.format_exc()))
    finally:
        emu.stop()
