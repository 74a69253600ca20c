"""The Azure Functions entry point: one collection run per timer tick, logged, never raising.

Owns ``run_collection``, what ``deploy/functions/function_app.py`` calls: it reads the config
named by ``EPF_CONFIG`` (else ``default_config``), applies the usual ``EPF_*`` overrides (the
config loader does), puts the state (checkpoints, the Sentinel outbox, quarantine) under
``EPF_STATE_DIR`` when set, so it lives on storage that outlasts the instance, runs one sync
into the configured sinks and logs one line per dataset, one per sink delivery report and one
for the run. An expected failure (``EpfError``: a bad config, a refused credential) is one
logged line, never an exception, so the host does not retry a run that cannot succeed; a
missed delivery waits in the outbox for the next tick.

The credentials are the config's: with ``[sentinel] managed_identity = true`` azure-identity
reads ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER`` from the process environment (the Functions
host sets them), not from ``environ``.
May import ``pipeline``, ``sinks``, ``identity.keyvault`` (the config's Key Vault resolver),
``config`` and ``errors``; not azure-functions (the Functions project imports that), so the
collector runs and tests without the host.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from endpoint_forensics.azure import app_settings as names
from endpoint_forensics.config import load_settings
from endpoint_forensics.errors import ConfigError, EpfError
from endpoint_forensics.identity.keyvault import resolve_references
from endpoint_forensics.pipeline.lock import run_lock
from endpoint_forensics.pipeline.run import run_sync
from endpoint_forensics.pipeline.runlog import RunSummary
from endpoint_forensics.sinks import close_sinks, open_sinks

__all__ = [
    "CONFIG_VARIABLE",
    "DEFAULT_CONFIG_PATH",
    "STATE_DIR_VARIABLE",
    "plan_collection",
    "run_collection",
    "work_collection",
]

log = logging.getLogger(__name__)

CONFIG_VARIABLE = names.CONFIG
STATE_DIR_VARIABLE = names.STATE_DIR
#: Where a Linux function app's deployed files are: the config ships with the project.
DEFAULT_CONFIG_PATH = Path("/home/site/wwwroot/epf.toml")
_MAX_LINE = 500


def run_collection(
    environ: Mapping[str, str] | None = None, *, default_config: Path = DEFAULT_CONFIG_PATH
) -> RunSummary | None:
    """Run one collection as configured for the Functions host; return what it did.

    Args:
        environ: where ``EPF_CONFIG``, ``EPF_STATE_DIR``, the ``EPF_*`` overrides and the
            ``env:`` secrets come from; default ``os.environ``.
        default_config: the config file when ``EPF_CONFIG`` is not set.

    Returns:
        The run's summary (``exit_code`` says whether everything arrived), or None when no
        run could start: the failure is logged as one line, without secrets.
    """
    env = os.environ if environ is None else environ
    path = Path(env.get(CONFIG_VARIABLE) or default_config)
    # Relative to the config file, like every path in it; absolute on a real deployment.
    state_dir = env.get(STATE_DIR_VARIABLE)
    overrides = {"state.dir": state_dir} if state_dir else None
    try:
        settings = load_settings(
            path, environ=env, overrides=overrides, keyvault_resolver=resolve_references
        )
        # A timer that fires while the last invocation still runs finds the lock held: that
        # tick is skipped (logged as no collection run), the next one collects what is due.
        with run_lock(settings.state.dir, command="Azure Functions timer"):
            sinks = open_sinks(settings)
            try:
                summary = run_sync(settings, sinks)
            finally:
                close_sinks(sinks)
    except EpfError as exc:
        log.error("epf: no collection run: %s: %s", type(exc).__name__, _one_line(str(exc)))
        return None
    _log_summary(summary)
    return summary


# The fanned-out collection's app settings (azure/app_settings.py, shared with the template).
STATE_URL_VARIABLE = names.STATE_URL
WORK_QUEUE_VARIABLE = names.WORK_QUEUE
STORAGE_CONNECTION_VARIABLE = names.LOCAL_STORAGE_CONNECTION


def plan_collection(
    environ: Mapping[str, str] | None = None, *, default_config: Path = DEFAULT_CONFIG_PATH
) -> int:
    """The planner's tick: enqueue every unit that is due; returns how many (0 when none
    could be planned: the failure is logged as one line)."""
    from endpoint_forensics.azure.work_queue import plan_work

    env = os.environ if environ is None else environ
    try:
        settings = _settings(env, default_config)
        store, queue = _storage(env)
        return len(plan_work(settings, queue.send_message, store))
    except EpfError as exc:
        log.error("epf planner: nothing planned: %s: %s", type(exc).__name__, _one_line(str(exc)))
        return 0


def work_collection(
    body: str | bytes,
    dequeue_count: int,
    environ: Mapping[str, str] | None = None,
    *,
    default_config: Path = DEFAULT_CONFIG_PATH,
) -> None:
    """The queue trigger's work: one unit. Raises ``UnitFailed`` when the unit failed, so the
    host retries the message (and poisons it after ``maxDequeueCount``); any other expected
    failure is one logged line."""
    from endpoint_forensics.azure.work_queue import UnitFailed, work_message

    env = os.environ if environ is None else environ
    try:
        settings = _settings(env, default_config)
        store, queue = _storage(env)
        done = work_message(body, settings, store, queue.send_message, dequeue_count=dequeue_count)
    except UnitFailed:
        raise
    except EpfError as exc:
        log.error("epf worker: %s: %s", type(exc).__name__, _one_line(str(exc)))
        return
    if done.summary is not None:
        _log_summary(done.summary)


def _settings(env: Mapping[str, str], default_config: Path) -> Any:
    path = Path(env.get(CONFIG_VARIABLE) or default_config)
    # Each unit runs in a folder of its own; nothing is kept in this one.
    return load_settings(
        path,
        environ=env,
        overrides={"store.enabled": False},
        keyvault_resolver=resolve_references,
    )


def _storage(env: Mapping[str, str]) -> tuple[Any, Any]:
    """The state store and the work queue, by the managed identity (or, for a local host,
    a connection string). The queue's messages are base64, as the queue trigger reads them."""
    from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

    from endpoint_forensics.state import BlobStateStore

    url, queue_name = env.get(STATE_URL_VARIABLE), env.get(WORK_QUEUE_VARIABLE)
    if not url or not queue_name:
        raise ConfigError(
            f"{STATE_URL_VARIABLE} and {WORK_QUEUE_VARIABLE}: the fanned-out collection needs"
            " the state container's URL and the work queue's name in the app settings"
        )
    encoding: dict[str, Any] = {
        "message_encode_policy": TextBase64EncodePolicy(),
        "message_decode_policy": TextBase64DecodePolicy(),
    }
    connection = env.get(STORAGE_CONNECTION_VARIABLE)
    if connection:
        from azure.storage.blob import ContainerClient

        container = url.rstrip("/").rsplit("/", 1)[-1]
        store = BlobStateStore(ContainerClient.from_connection_string(connection, container))
        return store, QueueClient.from_connection_string(connection, queue_name, **encoding)
    from azure.identity import ManagedIdentityCredential

    credential = ManagedIdentityCredential()
    account = url.split("//", 1)[-1].split(".", 1)[0]
    queue_url = env.get(names.HOST_QUEUE_SERVICE_URI) or (
        f"https://{account}.queue.core.windows.net"
    )
    store = BlobStateStore.from_url(url, credential)
    return store, QueueClient(queue_url, queue_name, credential=credential, **encoding)


def _log_summary(summary: RunSummary) -> None:
    """One line per dataset and source, one per sink delivery report, one for the run."""
    for o in summary.outcomes:
        level = logging.WARNING if o.outcome == "Failed" else logging.INFO
        error = f": {_one_line(o.error)}" if o.error else ""
        log.log(
            level,
            "epf: %s %s %s -> %s: %s, %d rows, %d quarantined, %.1f s%s",
            o.kind,
            o.tenant,
            o.dataset,
            o.table,
            o.outcome,
            o.rows,
            o.quarantined,
            o.duration_seconds,
            error,
        )
    for name, report in summary.deliveries.items():
        waiting = report.waiting_uploads > 0 or bool(report.error)
        log.log(
            logging.WARNING if waiting or report.rejected_uploads else logging.INFO,
            "epf: %s: sent %d rows in %d uploads; %d rows in %d uploads wait in the outbox; "
            "%d uploads refused and set aside%s",
            name,
            report.sent_rows,
            report.sent_uploads,
            report.waiting_rows,
            report.waiting_uploads,
            report.rejected_uploads,
            f"; {_one_line(report.error)}" if report.error else "",
        )
    if summary.quarantine_folder:
        log.warning("epf: malformed records were set aside in %s", summary.quarantine_folder)
    failed = sum(1 for o in summary.outcomes if o.outcome == "Failed")
    log.log(
        logging.INFO if summary.exit_code == 0 else logging.WARNING,
        "epf: run %s finished with exit code %d: %d datasets, %d failed, %.1f s",
        summary.run_id,
        summary.exit_code,
        len(summary.outcomes),
        failed,
        summary.wall_seconds,
    )


def _one_line(text: str) -> str:
    """The first line, bounded: a log line per event, never a trace."""
    lines = text.strip().splitlines()
    return lines[0][:_MAX_LINE] if lines else ""
