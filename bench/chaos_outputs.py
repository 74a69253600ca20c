"""What the chaos harness searches for secrets: the other commands' output after the syncs
(doctor, query, forensics with its HTML report, triage, lifecycle, the dashboard's pages),
and the secrets themselves (the canaries: what the emulator handed out or holds)."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["as_environment", "canaries", "read_commands", "secrets_found"]

# Lines of a PEM body are 64 characters of base64: any one of the private key's found
# anywhere shows the key leaked (a part of it is as bad as the whole).
_PEM_KEY = re.compile(
    rb"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----(.*?)-----END (?:RSA |EC )?PRIVATE KEY-----",
    re.S,
)


def as_environment(overrides: dict[str, Any]) -> dict[str, str]:
    """The overrides as the EPF_* variables a process reads (a dict value: one per key)."""
    env: dict[str, str] = {}
    for dotted, value in overrides.items():
        name = "EPF_" + dotted.upper().replace(".", "__")
        if isinstance(value, dict):
            env.update({f"{name}__{k.upper()}": str(v) for k, v in value.items()})
        else:
            env[name] = str(value)
    return env


def read_commands(
    config: Path, work: Path, environ: dict[str, str], overrides: dict[str, Any]
) -> list[str]:
    """What the other commands print (and write) after the syncs, with ``--debug`` (request
    lines and tracebacks), and the dashboard's pages: each is searched for secrets too. A
    command that fails unexpectedly adds a line starting with ``epf ``."""
    import duckdb

    env = {**os.environ, **environ, **as_environment(overrides)}
    env.pop("EPF_CONFIG", None)
    db = str(work / "ws.duckdb")
    con = duckdb.connect(db, read_only=True)
    try:
        found = con.execute('SELECT DeviceId FROM "EPF_Devices_CL" LIMIT 1').fetchone()
    finally:
        con.close()
    device = found[0] if found else "none"
    report = work / "forensics.html"
    commands = [
        ["doctor", "--config", str(config)],
        ["query", "--db", db, "--format", "json", "EPF_Runs_CL | take 50"],
        ["query", "--db", db, "EPF_NoSuchTable_CL | take 1"],
        ["forensics", "--db", db, "--device", device, "--at", "2100-01-01T00:00:00Z",
         "--format", "html", "--out", str(report)],
        ["forensics", "--db", db, "--device", device, "--at", "2100-01-01T00:00:00Z",
         "--format", "json"],
        ["triage", "--db", db, "--format", "json"],
        ["lifecycle", "--db", db, "--json"],
    ]  # fmt: skip
    said: list[str] = []
    for command in commands:
        done = subprocess.run(
            [sys.executable, "-m", "endpoint_forensics", "--debug", *command],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        said += [done.stdout, done.stderr]
        if done.returncode not in (0, 1, 3):  # 1 and 3: a failed query, a failing check
            last = (done.stderr.strip().splitlines() or [""])[-1]
            said.append(f"epf {command[0]}: exit {done.returncode}: {last}")
    if report.exists():
        said.append(report.read_text("utf-8", "replace"))
    said += _dashboard_pages(db, device, env, work / "serve-tmp")
    return said


def _dashboard_pages(db: str, device: str, env: dict[str, str], temp: Path) -> list[str]:
    """`epf serve` on the workspace: its pages, every view, a device's answer and a query
    (good and failing), as a browser would fetch them; then stopped as a service manager
    stops it (SIGTERM), and its temporary folder ``temp`` must be left empty."""
    import httpx

    said: list[str] = []
    temp.mkdir(parents=True, exist_ok=True)
    with subprocess.Popen(
        [sys.executable, "-m", "endpoint_forensics", "--debug", "serve", "--db", db,
         "--port", "0"],
        env={**env, "TMPDIR": str(temp)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    ) as server:  # fmt: skip
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            address = re.search(r"(http://127\.0\.0\.1:\d+/)\?token=(\S+)", line)
            if address is None:
                return [line, f"epf serve: no address printed: {line.strip()[:200]}"]
            with httpx.Client(base_url=address[1], timeout=300) as client:
                entry = client.get(address[0], follow_redirects=True)
                pages = [entry, client.get("/api/views"), client.get("/assets/app.js")]
                sections = pages[1].json().get("sections", {}) if pages[1].is_success else {}
                pages.append(client.get("/api/workbook"))
                pages += [
                    client.get("/api/device", params={"device": device}),
                    client.get("/api/query", params={"q": "EPF_Runs_CL | take 50"}),
                    client.get("/api/query", params={"q": "EPF_NoSuchTable_CL | take 1"}),
                ]
            said += [p.text for p in pages]
            said += [
                f"epf serve: {p.request.url.path}: {p.status_code}"
                for p in pages
                if p.status_code >= 500 or p.status_code == 401
            ]
            if not sections:
                said.append("epf serve: /api/views named no section")
        finally:
            server.terminate()
            try:
                out, err = server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                out, err = server.communicate()
            said += [out, err]
    said += [f"epf serve: left behind: {path}" for path in temp.rglob("*")]
    return said


def canaries(emu: Any) -> set[str]:
    """Every secret of the run: the client secret, the client certificate's private key (each
    line of its PEM body), the IoT tokens, and each SAS signature, access token and client
    assertion (their signatures) the emulator handed out or received."""
    secrets = {emu.client_secret, *(a.token for a in emu.iot_appliances)}
    secrets |= set(emu.issued_sas_signatures()) | set(emu.issued_token_signatures())
    secrets |= set(emu.received_assertion_signatures())
    pem = Path(emu.client_certificate_path).read_bytes()
    for body in _PEM_KEY.findall(pem):
        secrets |= {line.decode() for line in body.split() if len(line) >= 32}
    return {s for s in secrets if s and len(s) >= 8}


def secrets_found(emu: Any, work: Path, logs: str, errors: list[str]) -> int:
    """How many places hold a secret: each (secret, place) pair counts once."""
    import duckdb

    secrets = canaries(emu)
    places: dict[str, str] = {"logs": logs, "errors": "\n".join(errors)}
    for path in (work / "state").rglob("*"):
        if path.is_file() and not path.name.endswith((".duckdb", ".duckdb.wal", ".lock")):
            data = path.read_bytes()
            if path.suffix == ".gz":
                try:
                    data = gzip.decompress(data)
                except (OSError, EOFError):
                    pass
            places[str(path)] = data.decode("utf-8", "replace")
    for db in [work / "ws.duckdb", *(work / "state").rglob("*.duckdb")]:
        con = duckdb.connect(str(db), read_only=True)
        try:
            for (table,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall():
                text = con.execute(f'SELECT CAST(list(t) AS VARCHAR) FROM "{table}" t').fetchall()
                places[f"{db.name}:{table}"] = str(text[0][0])
        finally:
            con.close()
    return sum(1 for s in secrets for text in places.values() if s in text)
