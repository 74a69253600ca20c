"""The Microsoft Sentinel sink: the Azure Monitor Logs Ingestion API, through a durable outbox.

Writing a unit encodes its rows as JSON records (stream columns as the registry declares them,
datetimes in ISO 8601, values past the 64 KB field limit truncated with a marker) into gzip uploads
of at most 1 MB uncompressed (defender-apis.md D.2), each with its own ``BatchId`` stamped in every
row, and commits them to the outbox (``outbox.Outbox``): only then does the pipeline's checkpoint
move. Every row carries ``SnapshotTime`` beside ``TimeGenerated``: an upload that waits in the
outbox more than 2 days gets the receive time as its ``TimeGenerated`` (defender-apis.md F), its
``SnapshotTime`` stays. Sender threads (``max_concurrency``) post the uploads, oldest first, with
the Azure SDK's ``LogsIngestionClient`` to ``Custom-<Table>`` of the DCR; a 204 removes an upload
from the outbox. Retries follow ``http.retry`` alone (the SDK's are off): a 429 waits its
``Retry-After``, 5xx and lost connections back off (``sentinel_upload``); an upload whose answer was lost may arrive
twice (at least once; its ``BatchId`` tells). An endpoint that is down past its retries, throttles
past them, or refuses the identity stops the sending and leaves everything in the outbox for the
next run. A table no DCR takes (no route in the config), or whose stream its DCR does not declare
(404: a DCR declares at most 10 streams), is held: its uploads stay in the outbox, the other tables
go on, and the report names the held tables with the fix; a 413 splits the upload in two; a 400
(the service refuses those rows for good) sets the upload aside under ``rejected/`` with the
reason. Nothing is dropped. The outbox has a cap (``outbox_max_mb``): past it ``room`` waits
for the senders, and says why collection must stop when they cannot drain it. Imports ``tables``,
``contracts``, ``outbox``, ``http.retry``, ``identity.credentials`` and ``config``."""

from __future__ import annotations

import gzip
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from endpoint_forensics.config import SentinelConfig
from endpoint_forensics.contracts import Batch, DeliveryReport, HistoryPlan, SavedCheckpoint
from endpoint_forensics.errors import SinkError, local_failure
from endpoint_forensics.http.retry import Verdict, classify_error
from endpoint_forensics.identity.credentials import first_line
from endpoint_forensics.sinks.checkpoint_file import FileCheckpointStore
from endpoint_forensics.sinks.history import HistoryFile
from endpoint_forensics.sinks.outbox import Outbox, PendingFile
from endpoint_forensics.sinks.sentinel_upload import Uploader
from endpoint_forensics.sinks.sentinel_writer import (
    MAX_BODY_BYTES,
    MAX_FIELD_BYTES,
    SentinelWriter,
    encode_rows,
)
from endpoint_forensics.tables import Table

__all__ = ["MAX_BODY_BYTES", "MAX_FIELD_BYTES", "SentinelSink", "encode_rows"]

log = logging.getLogger(__name__)

_PERMANENT = {400, 422}  # the service refuses these rows; they never go through as they are


class SentinelSink:
    name = "sentinel"

    def __init__(self, config: SentinelConfig, outbox_dir: Path, checkpoint_dir: Path) -> None:
        self.config = config
        self.outbox = Outbox(outbox_dir)
        # Sentinel's tables cannot be read back cheaply: its checkpoints live in files, in a
        # folder of this endpoint's and these DCRs' own (sentinel_checkpoint_folder).
        self.checkpoints = FileCheckpointStore(checkpoint_dir)
        # What change-only history compares with: what was put in this destination's outbox.
        self._history = HistoryFile(checkpoint_dir / "history.duckdb")
        self.report = DeliveryReport()
        self._halted = threading.Event()
        self._lock = threading.Lock()
        # Tables whose uploads wait in the outbox for a route or a stream, and why.
        self._held: dict[str, str] = {}
        self._queue: queue.Queue[PendingFile | None] = queue.Queue()
        # Unit prefix -> the snapshot (scope, dataset, run_id) whose units are held.
        self._holding: dict[str, dict[str, str]] = {}
        self._release_finished_snapshots()
        self._uploader = Uploader(config, self._halted)
        self._started = time.monotonic()
        self._workers = [
            threading.Thread(target=self._work, name=f"epf-sentinel-{i}", daemon=True)
            for i in range(config.max_concurrency)
        ]
        for item in self.outbox.pending():  # what earlier runs could not deliver goes first
            self._queue.put(item)
        for worker in self._workers:
            worker.start()

    # --- Sink ------------------------------------------------------------------------------------
    @contextmanager
    def open(
        self,
        table: Table,
        *,
        unit: str,
        checkpoint: SavedCheckpoint | None = None,
        history: HistoryPlan | None = None,
    ) -> Iterator[SentinelWriter]:
        plan = history if table.changes is not None else None
        compare = None
        with _outbox_disk(self.outbox.dir, f"staging {table.name}"):
            held = next((s for p, s in self._holding.items() if unit.startswith(p)), None)
            staged = self.outbox.stage(unit, table.name, held=held)
            try:
                compare = self._history.begin() if plan is not None else None
            except BaseException:
                staged.abandon()
                raise
        writer = SentinelWriter(table, staged, history=(compare, plan))
        try:
            with _outbox_disk(self.outbox.dir, f"writing {table.name}"):
                yield writer
                writer.seal()
        except BaseException:
            staged.abandon()
            if compare is not None:
                self._history.rollback()
            raise
        try:
            with _outbox_disk(self.outbox.dir, f"committing {table.name}"):
                # The committed uploads themselves: rescanning the outbox here would race the
                # senders removing the folders of units they have finished.
                for item in staged.commit():
                    self._queue.put(item)
                # Once the unit is in the outbox it will be delivered: the checkpoint may move.
                if checkpoint is not None:
                    self.checkpoints.save(checkpoint)
                # Last: a history that remembered rows while the checkpoint could not be saved
                # (a full disk) would send no more of them, and the run that has them failed.
                # A crash between repeats rows instead.
                if compare is not None:
                    self._history.commit()
        except SinkError:
            if compare is not None:
                self._history.rollback()
            raise

    def finish_snapshot(
        self, table: Table, history: HistoryPlan, *, unit: str, stamp: Mapping[str, Any]
    ) -> int:
        """Put the ``Removed`` rows of a complete change-only snapshot in the outbox."""
        if table.changes is None or history.mode != "changes" or self.delivered(unit):
            return 0
        try:
            with _outbox_disk(self.outbox.dir, f"comparing {table.name} with its change history"):
                gone = self._history.begin().removed(table, stamp, history)
            if gone.num_rows:  # an empty unit would leave an empty folder in the outbox
                with self.open(table, unit=unit) as writer:
                    writer.write(Batch(table, arrow=gone), stamp)
        except BaseException:
            self._history.rollback()
            raise
        with _outbox_disk(self.outbox.dir, f"committing {table.name}'s change history"):
            self._history.commit()
        return int(gone.num_rows)

    def delivered(self, unit: str) -> bool:
        return self.outbox.has(unit)

    def holds(self, unit_scope: str) -> bool:
        return self.outbox.holds(f"{unit_scope}/")

    def discard(
        self,
        table: Table,
        *,
        run_id: str,
        unit_scope: str,
        where: Mapping[str, str],
        dataset: str,
    ) -> int:
        """Drop the partial snapshot's uploads still waiting; those sent cannot be recalled
        (EPF_Runs_CL marks the run Failed, so queries can leave it out)."""
        if table.changes is not None:  # its state no longer says what was sent
            with _outbox_disk(self.outbox.dir, f"forgetting {table.name}'s change history"):
                self._history.begin().forget(table)
                self._history.commit()
        return self.outbox.discard(f"{unit_scope}/{run_id}/{dataset}/", table.name)

    def hold_snapshot(self, unit_prefix: str, *, scope: str, dataset: str, run_id: str) -> None:
        self._holding[unit_prefix] = {"scope": scope, "dataset": dataset, "run_id": run_id}

    def release_snapshot(self, unit_prefix: str) -> None:
        self._holding.pop(unit_prefix, None)
        with _outbox_disk(self.outbox.dir, "releasing a complete snapshot"):
            for item in self.outbox.release(unit_prefix):
                self._queue.put(item)

    def _release_finished_snapshots(self) -> None:
        """Held units whose snapshot is no longer in progress in this destination's checkpoints
        completed (a run stopped between the checkpoint and the release): send them. Those of
        a snapshot still in progress wait: the run resumes or discards that snapshot."""
        for unit, snapshot in self.outbox.held_units():
            state = self.checkpoints.load(snapshot["scope"]).get(snapshot["dataset"], {})
            running = (state.get("snapshot") or {}).get("run_id")
            if running != snapshot["run_id"]:
                self.outbox.release(unit)

    def room(self) -> str | None:
        """Past the outbox's cap, wait while the senders drain it; None once under the cap,
        else why collection must stop (nothing is dropped: the outbox keeps every row)."""
        cap = int(self.config.outbox_max_mb * 2**20)
        while self.outbox.pending_bytes > cap:
            if self.outbox.pending_bytes - self.outbox.held_bytes() <= cap:
                return None  # a snapshot in progress waits whole; what can be sent fits
            # Nothing queued or being sent (``task_done`` follows each upload): what is left
            # waits for a route; or sending stopped for this run.
            if self._halted.is_set() or not self._queue.unfinished_tasks:
                with self._lock:
                    why = self.report.error or (self._held_message() if self._held else "")
                return (
                    f"the Sentinel outbox holds {_megabytes(self.outbox.pending_bytes)} waiting,"
                    f" over its cap of {self.config.outbox_max_mb:g} MB"
                    " ([sentinel] outbox_max_mb), and cannot drain now"
                    f"{f' ({why})' if why else ''}: collection stopped before reading more;"
                    " nothing was dropped,"
                    " and the next run sends the outbox first"
                )
            time.sleep(0.05)
        return None

    def flush(self) -> DeliveryReport:
        """Wait until every upload was sent, or sending stopped; report."""
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join()
        self.report.waiting_uploads, self.report.waiting_rows = self.outbox.counts()
        self.report.seconds = time.monotonic() - self._started
        if self._held:
            held = self._held_message()
            self.report.error = f"{self.report.error}; {held}" if self.report.error else held
        return self.report

    def close(self) -> None:
        if any(w.is_alive() for w in self._workers):
            # Closed without a flush (the run was interrupted): stop sending at once; what is
            # left waits in the outbox for the next run.
            self._halted.set()
            self.flush()
        self._uploader.close()
        self._history.close()

    # --- sending -----------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._halted.is_set() or not item.path.exists():
                    continue  # it stays in the outbox for the next run
                self._send(item)
            except Exception as exc:  # one line for the run summary; the upload stays
                self._halt(f"sending to Sentinel stopped: {type(exc).__name__}: {exc}")
            finally:
                self._queue.task_done()

    def _send(self, item: PendingFile) -> None:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )

        route = self.config.route(item.table)
        if route is None:
            self._hold(item.table, "no DCR takes it")
            return
        with self._lock:
            if item.table in self._held:
                return  # its DCR refused the stream before: it waits with the others
        endpoint, rule_id = route
        body = item.path.read_bytes()
        stream = self.config.stream_prefix + item.table
        try:
            self._upload(endpoint, rule_id, stream, body)
        except ClientAuthenticationError as exc:
            detail = first_line(exc.message or str(exc))
            if exc.status_code == 401:  # the endpoint refused it, a fresh token too
                self._halt(f"Sentinel refused the identity's token (HTTP 401), twice: {detail}")
            else:
                self._halt(f"Sentinel: the identity could not get a token: {detail}")
            return
        except HttpResponseError as exc:
            status = exc.status_code or 0
            detail = first_line(exc.message or str(exc))
            if status == 413:
                self._split(item, body)
            elif status in _PERMANENT:
                where = self.outbox.reject(item, f"HTTP {status} from {stream}: {detail}")
                log.warning("Sentinel refused %s (%s); set aside in %s", stream, detail, where)
                with self._lock:
                    self.report.rejected_uploads += 1
            elif status == 404:
                self._hold(
                    item.table, f"the DCR {rule_id} has no stream {stream} (HTTP 404: {detail})"
                )
            elif status in (401, 403):
                self._halt(
                    f"Sentinel refused the identity (HTTP {status}): give it the Monitoring "
                    f"Metrics Publisher role on the DCR (it can take 30 minutes to apply): {detail}"
                )
            else:
                self._halt(f"Sentinel answered HTTP {status} after retries: {detail}")
            return
        except (ServiceRequestError, ServiceResponseError) as exc:
            why = first_line(str(exc))
            if classify_error(exc) is Verdict.UNTRUSTED:
                why = "its TLS certificate is not trusted; set [sentinel] ca_bundle"
            self._halt(f"cannot reach Sentinel at {endpoint}: {why}")
            return
        self.outbox.acknowledged(item)
        with self._lock:
            self.report.sent_uploads += 1
            self.report.sent_rows += item.rows
            self.report.sent_bytes += len(body)
            self.report.raw_bytes += _raw_size(body)

    def _upload(self, endpoint: str, rule_id: str, stream: str, body: bytes) -> None:
        counts: Counter[str] = Counter()
        try:
            self._uploader.post(endpoint, rule_id, stream, body, stats=counts)
        finally:
            with self._lock:
                self.report.throttled += counts["throttled"]

    def _split(self, item: PendingFile, body: bytes) -> None:
        records = orjson.loads(gzip.decompress(body))
        if len(records) < 2:
            self.outbox.reject(item, "HTTP 413 for a single record")
            return
        half = len(records) // 2
        parts = [records[:half], records[half:]]
        for new in self.outbox.replace(item, [(_gzip_array(p), len(p)) for p in parts]):
            self._queue.put(new)

    def _hold(self, table: str, reason: str) -> None:
        """Keep ``table``'s uploads in the outbox and go on with the others (said once)."""
        with self._lock:
            if table in self._held:
                return
            self._held[table] = reason
        log.warning("Sentinel: %s is not delivered: %s; its rows wait in the outbox", table, reason)

    def _held_message(self) -> str:
        tables = sorted(self._held)
        reasons = "; ".join(f"{t}: {self._held[t]}" for t in tables)
        return (
            f"Sentinel: {len(tables)} table(s) not delivered, their rows wait in the outbox "
            f"({reasons}): give each table a DCR that declares its stream, in [[sentinel.dcrs]] "
            "as the dataCollectionRules output of `epf deploy arm` lists them (a DCR declares "
            "at most 10 streams)"
        )

    def _halt(self, message: str) -> None:
        with self._lock:
            if not self.report.error:
                self.report.error = message
                log.warning("%s; what was not sent waits in %s", message, self.outbox.dir)
        self._halted.set()


@contextmanager
def _outbox_disk(folder: Path, doing: str) -> Iterator[None]:
    """This machine's disk refusing the outbox or the change history beside it (full,
    read-only) fails the unit, in one line."""
    import duckdb

    try:
        yield
    except (OSError, duckdb.Error) as exc:
        what = local_failure(exc) if isinstance(exc, OSError) else first_line(str(exc))
        if not isinstance(exc, OSError):
            what = local_failure(SinkError(what))  # the hint, when it is the disk
        raise SinkError(f"Sentinel outbox {folder}: {doing} failed: {what}") from exc


def _megabytes(size: int) -> str:
    return f"{size / 2**20:,.1f} MB" if size >= 2**20 else f"{size / 1024:,.0f} KB"


def _gzip_array(records: list[Any]) -> bytes:
    return gzip.compress(orjson.dumps(records), compresslevel=6)


def _raw_size(body: bytes) -> int:
    # The gzip trailer ends with the uncompressed size (uploads are far below 4 GiB).
    return int.from_bytes(body[-4:], "little") if len(body) >= 18 else len(body)
