"""``epf doctor`` for Microsoft Sentinel: the identity's token, a route for every table a sync
will write (the tables no DCR takes are named: they would never be delivered; a DCR given more
than 10 of them could not exist), each DCR stream taking an empty upload, and what waits in the
outbox.

The upload is the sink's own path: ``identity.credentials.build_credential`` and the Azure
SDK's ``LogsIngestionClient``. The SDK sends nothing for an empty list, so the empty JSON array
goes as a stream (sent as is); the service answers 204 and stores nothing. May import
``doctor.checks``, ``pipeline.plan`` (the tables a sync writes), ``identity.credentials`` and
``config``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from endpoint_forensics.config import SentinelConfig, Settings
from endpoint_forensics.config.azure import MAX_STREAMS_PER_DCR, too_many_streams
from endpoint_forensics.doctor.checks import Check, refusal_fix, token_claims
from endpoint_forensics.identity.credentials import build_credential, first_line
from endpoint_forensics.pipeline.plan import tables_written

__all__ = ["outbox_checks", "sentinel_checks", "tables_written"]

_AREA = "sentinel"
_WHERE = "[sentinel]"
_PROBE_RETRIES = 1


def sentinel_checks(settings: Settings) -> list[Check]:
    """Token, routes and streams (assumes ``settings.sentinel`` is set)."""
    config = settings.sentinel
    assert config is not None
    checks, routes = _route_checks(settings, config)
    try:
        credential = build_credential(config)
    except (ValueError, OSError) as exc:
        fix = f"Point certificate_path of {_WHERE} at a PEM with the private key and certificate"
        checks.append(Check(_AREA, "token", False, first_line(str(exc)), fix))
        return checks
    try:
        oid = _token_check(config, credential, checks)
        if oid is not None:
            for (endpoint, rule_id), tables in routes.items():
                checks.extend(_stream_checks(config, credential, endpoint, rule_id, tables, oid))
    finally:
        credential.close()
    return checks


def _route_checks(
    settings: Settings, config: SentinelConfig
) -> tuple[list[Check], dict[tuple[str, str], list[str]]]:
    """The route checks, and (endpoint, DCR) -> its tables for the stream probes."""
    routes: dict[tuple[str, str], list[str]] = {}
    unrouted: list[str] = []
    for table in tables_written(settings):
        route = config.route(table)
        if route is None:
            unrouted.append(table)
        else:
            routes.setdefault(route, []).append(table)
    checks: list[Check] = []
    if unrouted:
        names = ", ".join(unrouted)
        detail = (
            f"no DCR takes {len(unrouted)} table{'s' * (len(unrouted) != 1)} a sync writes, "
            f"so their rows would never be delivered: {names}"
        )
        fix = (
            f"Add {names} to the tables of [[sentinel.dcrs]] entries (the dataCollectionRules "
            "output of `epf deploy arm` lists each DCR's tables), or set dcr_immutable_id for "
            f"the tables no entry names (at most {MAX_STREAMS_PER_DCR}: one DCR's streams)"
        )
        checks.append(Check(_AREA, "routes", False, detail, fix))
    per_dcr: dict[str, int] = {}
    for (_, rule_id), tables in routes.items():
        per_dcr[rule_id.lower()] = per_dcr.get(rule_id.lower(), 0) + len(tables)
    for (_, rule_id), _tables in routes.items():
        count = per_dcr.pop(rule_id.lower(), 0)
        if count > MAX_STREAMS_PER_DCR:
            detail = f"{count} tables route to the DCR {rule_id}"
            checks.append(Check(_AREA, "routes", False, detail, too_many_streams(rule_id, count)))
    if routes and not checks:
        count = sum(len(t) for t in routes.values())
        detail = f"{count} table{'s' * (count != 1)} to {len(routes)} DCR(s)"
        checks.append(Check(_AREA, "routes", True, detail))
    return checks, routes


def _token_check(config: SentinelConfig, credential: Any, checks: list[Check]) -> str | None:
    """Append the token check; return the identity's object id ("" unknown), None: no token."""
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

    try:
        token = credential.get_token(config.scope).token
    except ClientAuthenticationError as exc:
        message = first_line(exc.message or str(exc))
        fix = refusal_fix(message, config, _WHERE)
        checks.append(Check(_AREA, "token", False, f"the identity got no token: {message}", fix))
        return None
    except ServiceRequestError as exc:
        fix = (
            f"Check authority_host of {_WHERE} ({config.authority_host}) and that this machine "
            "can reach it; a TLS-inspecting proxy needs ca_bundle"
        )
        detail = f"cannot reach the authority: {first_line(str(exc))}"
        checks.append(Check(_AREA, "token", False, detail, fix))
        return None
    oid = str(token_claims(token).get("oid") or "")
    who = f"object id {oid}" if oid else "object id not in the token"
    checks.append(Check(_AREA, "token", True, f"token for {config.scope}; identity {who}"))
    return oid


def _stream_checks(
    config: SentinelConfig,
    credential: Any,
    endpoint: str,
    rule_id: str,
    tables: list[str],
    oid: str,
) -> list[Check]:
    """An empty upload to each stream of one DCR; a refused identity is reported once."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
    from azure.monitor.ingestion import LogsIngestionClient

    checks: list[Check] = []
    accepted = 0
    with LogsIngestionClient(endpoint, credential, **_probe_options(config)) as client:
        for table in tables:
            stream = config.stream_prefix + table
            try:
                client.upload(rule_id=rule_id, stream_name=stream, logs=io.BytesIO(b"[]"))
            except HttpResponseError as exc:
                checks.append(_refused_upload(config, exc, rule_id, table, oid))
                if exc.status_code == 404:
                    continue  # this stream is missing; the next may exist
                return checks  # every stream of the DCR answers the same
            except (ServiceRequestError, ServiceResponseError) as exc:
                detail = f"cannot reach {endpoint}: {first_line(str(exc))}"
                fix = (
                    f"Check endpoint of {_WHERE} (or of its [[sentinel.dcrs]] entry) and that "
                    "this machine can reach it; a TLS-inspecting proxy needs ca_bundle"
                )
                checks.append(Check(_AREA, "DCR", False, f"{rule_id}: {detail}", fix))
                return checks
            accepted += 1
    return _dcr_summary(config, endpoint, rule_id, tables, checks, accepted=accepted)


def _probe_options(config: SentinelConfig) -> dict[str, Any]:
    """The ``LogsIngestionClient`` options of a probe: the sink's trust, few retries."""
    options: dict[str, Any] = {
        "credential_scopes": [config.scope],
        "retry_total": _PROBE_RETRIES,
        "retry_backoff_factor": 0.5,
        "connection_timeout": min(30.0, config.timeout_seconds),
        "read_timeout": config.timeout_seconds,
    }
    if config.ca_bundle is not None:
        options["connection_verify"] = str(config.ca_bundle)
    return options


def _refused_upload(config: SentinelConfig, exc: Any, rule_id: str, table: str, oid: str) -> Check:
    """The finding for an upload the service answered with an error (``HttpResponseError``)."""
    status = exc.status_code or 0
    stream = config.stream_prefix + table
    detail = f"HTTP {status} from {stream}: {first_line(exc.message or str(exc))}"
    if status == 404:
        fix = (
            f"The DCR {rule_id} has no stream {stream}: deploy `epf deploy arm` "
            "(its template declares every stream) and copy its DCR outputs to "
            "[[sentinel.dcrs]]"
        )
        return Check(_AREA, f"stream {table}", False, detail, fix)
    if status in (401, 403):
        who = f"object id {oid}, from the token's oid claim" if oid else "its object id"
        fix = (
            f"Grant Monitoring Metrics Publisher on the DCR {rule_id} to the "
            f"identity ({who}); it can take 30 minutes to apply"
        )
    else:
        fix = f"Check endpoint and the DCR {rule_id} in {_WHERE}"
    return Check(_AREA, "DCR", False, f"{rule_id}: {detail}", fix)


def _dcr_summary(
    config: SentinelConfig,
    endpoint: str,
    rule_id: str,
    tables: list[str],
    checks: list[Check],
    *,
    accepted: int,
) -> list[Check]:
    """The DCR's findings: a line for the streams that took the upload first, and one line in
    place of a 404 per table when none did."""
    if accepted:
        detail = f"{rule_id} at {endpoint}: {accepted} stream(s) took an empty upload"
        return [Check(_AREA, "DCR", True, detail), *checks]
    if checks:
        # No stream at all: the DCR id, its endpoint or stream_prefix is wrong, not each table
        # (a DCR the router gave one table is no different).
        others = " and every other" if len(checks) > 1 else ""
        detail = (
            f"{rule_id} at {endpoint}: none of its {len(checks)} stream(s) exists (HTTP 404 "
            f"for {config.stream_prefix}{tables[0]}{others})"
        )
        fix = (
            f"Check dcr_immutable_id, endpoint and stream_prefix of {_WHERE} against the "
            "outputs of the template from `epf deploy arm` (deploy it if it is not yet)"
        )
        return [Check(_AREA, "DCR", False, detail, fix)]
    return checks


def outbox_checks(settings: Settings) -> list[Check]:
    """Uploads still waiting and uploads the service refused for good (warnings both)."""
    config = settings.sentinel
    assert config is not None
    folder = config.outbox_dir or settings.state.dir / "outbox" / "sentinel"
    waiting = _uploads(folder / "pending", "*/*.json.gz")
    rejected = _uploads(folder / "rejected", "*.json.gz")
    checks = []
    if waiting:
        detail = f"{waiting} upload(s) wait in {folder / 'pending'}; the next `epf sync` sends them"
        checks.append(Check(_AREA, "outbox", None, detail))
    else:
        checks.append(Check(_AREA, "outbox", True, "nothing waiting"))
    if rejected:
        detail = (
            f"{rejected} upload(s) were refused for good; each .reason file in "
            f"{folder / 'rejected'} says why"
        )
        checks.append(Check(_AREA, "rejected uploads", None, detail))
    return checks


def _uploads(folder: Path, pattern: str) -> int:
    return sum(1 for _ in folder.glob(pattern)) if folder.is_dir() else 0
