"""The reliability harness (`make chaos`, bench/chaos.py), one pass per fault kind on a small
fleet: under each fault the syncs end clean within a few runs, with no row lost or stored
twice in the workspace, none lost in Sentinel, none there twice after the documented dedup,
no secret anywhere, and no file left behind."""

from __future__ import annotations

import gzip
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.e2e

HARNESS = Path(__file__).parents[2] / "bench" / "chaos.py"


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("epf_chaos_harness", HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


chaos = _harness()


@pytest.mark.parametrize("kind", chaos.KINDS)
def test_nothing_is_lost_or_stored_twice_under(kind: str, tmp_path: Path) -> None:
    result = chaos.run_fault(
        kind, devices=60, seed=3, rate=0.1, max_runs=6, work=tmp_path, kills=5, kill_horizon=4.0
    )
    assert result.clean, result.errors
    assert result.expected > 0 and result.stored == result.expected, result.by_table
    assert (result.lost, result.duplicated) == (0, 0), result.by_table
    assert (result.sentinel_lost, result.sentinel_duplicated) == (0, 0), result.by_table
    assert result.sentinel_dedup == result.expected
    assert result.secrets_found == 0
    assert result.read_failures == 0, result.errors  # the commands and pages afterwards
    assert result.leftovers == 0  # the outbox empty, no download or half-written file left
    # Certificate kinds authenticated with the certificate only, the others never did.
    assert (result.assertions > 0) == (kind in chaos.CERTIFICATE_KINDS)
    if kind != "none":
        assert result.struck > 0, "the fault never struck: the pass proves nothing"
    if kind in ("ingestion_down", "keyvault_down", "truncated_export"):
        assert result.runs > 1  # the first run could not finish: the next one did


def test_the_secrets_search_finds_a_planted_secret_in_each_place(tmp_path: Path) -> None:
    import duckdb
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "client-cert.pem").write_bytes(pem)
    key_line = pem.decode().splitlines()[5]

    class Issued:  # what the emulator says it handed out, received or holds
        client_secret = "canary-client-secret-0123"
        iot_appliances = ()
        client_certificate_path = tmp_path / "client-cert.pem"

        def issued_sas_signatures(self) -> set[str]:
            return {"canary-sas-signature+/="}

        def issued_token_signatures(self) -> set[str]:
            return {"canary-token-signature"}

        def received_assertion_signatures(self) -> set[str]:
            return {"canary-assertion-signature"}

    state = tmp_path / "state" / "quarantine"
    state.mkdir(parents=True)
    (state / "t.machines.jsonl").write_text('{"record": "canary-client-secret-0123"}')
    (state / "upload.json.gz").write_bytes(gzip.compress(b'["canary-sas-signature+/="]'))
    con = duckdb.connect(str(tmp_path / "ws.duckdb"))
    con.execute("CREATE TABLE t AS SELECT 'Bearer x.y.canary-token-signature' AS s")
    con.close()
    assert chaos.secrets_found(Issued(), tmp_path, "", []) == 3
    assert chaos.secrets_found(Issued(), tmp_path, "log canary-client-secret-0123", []) == 4
    (state / "key.txt").write_text(f"...{key_line}...")
    said = ["error: assertion x.y.canary-assertion-signature refused"]
    assert chaos.secrets_found(Issued(), tmp_path, "", said) == 5
