from pathlib import Path

import pytest

from endpoint_forensics.config import DATASETS, Secret, load_settings
from endpoint_forensics.errors import ConfigError

GOOD = """
[store]
path = "ws.duckdb"

[[tenants]]
name = "contoso"
tenant_id = "11111111-2222-3333-4444-555555555555"
client_id = "66666666-7777-8888-9999-000000000000"
client_secret = "env:CONTOSO_SECRET"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "epf.toml"
    path.write_text(text)
    return path


def test_a_good_config_loads_with_defaults(tmp_path):
    settings = load_settings(write(tmp_path, GOOD), environ={"CONTOSO_SECRET": "s3cr3t-value"})
    tenant = settings.tenants[0]
    assert settings.store.path == (tmp_path / "ws.duckdb").resolve()
    assert tenant.client_secret.reveal() == "s3cr3t-value"
    assert tenant.mde_base_url == "https://api.security.microsoft.com"
    assert tenant.graph_base_url == "https://graph.microsoft.com/v1.0"
    assert tenant.datasets == DATASETS
    assert tenant.interval_hours_for("vulnerabilities") == 168
    assert tenant.interval_hours_for("machines") == 0
    assert tenant.authority_is_known


def test_secrets_never_show_in_repr(tmp_path):
    settings = load_settings(write(tmp_path, GOOD), environ={"CONTOSO_SECRET": "s3cr3t-value"})
    assert "s3cr3t-value" not in repr(settings)
    assert "s3cr3t-value" not in str(settings.tenants[0].client_secret)


def test_file_secret_reference_is_read_relative_to_the_config(tmp_path):
    (tmp_path / "secret.txt").write_text("from-a-file\n")
    text = GOOD.replace("env:CONTOSO_SECRET", "file:secret.txt")
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.tenants[0].client_secret.reveal() == "from-a-file"


def test_environment_overrides_one_field_of_one_tenant(tmp_path):
    env = {
        "CONTOSO_SECRET": "x",
        "EPF_TENANTS__0__PAGE_SIZE": "500",
        "EPF_STORE__PATH": "/tmp/other.duckdb",
        "EPF_TENANTS__0__DATASETS": '["machines"]',
    }
    settings = load_settings(write(tmp_path, GOOD), environ=env)
    assert settings.tenants[0].page_size == 500
    assert settings.tenants[0].datasets == ("machines",)
    assert settings.store.path == Path("/tmp/other.duckdb")


@pytest.mark.parametrize(
    "mutate, key, problem",
    [
        (
            lambda t: t.replace('client_id = "66666666-7777-8888-9999-000000000000"\n', ""),
            "tenants[0].client_id",
            "is required",
        ),
        (
            lambda t: t + 'mde_base_url = "http://plain.example"\n',
            "tenants[0].mde_base_url",
            "https://",
        ),
        (lambda t: t + "page_size = 20000\n", "tenants[0].page_size", "10000"),
        (lambda t: t + "colour = 'blue'\n", "tenants[0].colour", "unknown key"),
        (
            lambda t: t + 'datasets = ["machines", "everything"]\n',
            "tenants[0].datasets[1]",
            "machines",
        ),
        (lambda t: t + 'ca_bundle = "missing-ca.pem"\n', "tenants[0].ca_bundle", "does not exist"),
        (
            lambda t: t + 'certificate_path = "epf.toml"\n',
            "tenants[0]",
            "exactly one of client_secret, certificate_path or managed_identity",
        ),
        (
            lambda t: t.replace("[[tenants]]", "[[tenants]]\nname = 'dup'\n[[tenants]]"),
            "tenants",
            None,
        ),
    ],
)
def test_a_bad_config_names_the_key_and_what_is_wrong(tmp_path, mutate, key, problem):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, mutate(GOOD)), environ={"CONTOSO_SECRET": "hidden-value"})
    message = str(info.value)
    assert key in message
    if problem:
        assert problem in message
    assert "hidden-value" not in message


def test_unset_secret_variable_is_named(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"tenants\[0\]\.client_secret: environment variable 'CONTOSO_SECRET' is not set",
    ):
        load_settings(write(tmp_path, GOOD), environ={})


def test_not_toml_says_where(tmp_path):
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 2"):
        load_settings(write(tmp_path, "[store]\npath = \n"), environ={})


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_no_tenants_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="tenants"):
        load_settings(write(tmp_path, "[store]\npath='x'\n"), environ={})


def test_a_keyvault_reference_needs_a_keyvault_identity(tmp_path):
    text = GOOD.replace("env:CONTOSO_SECRET", "keyvault:https://v.vault.azure.net/secrets/x")
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.client_secret"):
        load_settings(write(tmp_path, text), environ={})


def test_secret_equality_and_source():
    assert Secret("a", source="literal") == Secret("a", source="env:X")
    assert Secret("a", source="env:X").source == "env:X"


SENSOR = """
[[sensors]]
name = "plant-1"
url = "https://10.1.2.3/"
token = "env:PLANT_TOKEN"
certificate_fingerprint = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
site = "Plant 1"

[[consoles]]
name = "cm"
url = "https://10.1.0.1"
token = "file:cm.token"
"""


def test_an_iot_only_config_loads(tmp_path):
    (tmp_path / "cm.token").write_text("c0ffee\n")
    settings = load_settings(write(tmp_path, SENSOR), environ={"PLANT_TOKEN": "9f0c1d"})
    assert settings.tenants == ()
    sensor, console = settings.sensors[0], settings.consoles[0]
    assert sensor.url == "https://10.1.2.3"
    assert sensor.token.reveal() == "9f0c1d" and "9f0c1d" not in repr(settings)
    assert sensor.certificate_fingerprint == "abcdef0123456789" * 4
    assert console.token.reveal() == "c0ffee"
    assert sensor.interval_hours_for("cves") == 24 and sensor.interval_hours_for("events") == 0
    assert console.datasets[0] == "devices"


def test_an_override_reaches_one_sensor(tmp_path):
    (tmp_path / "cm.token").write_text("c0ffee\n")
    env = {"PLANT_TOKEN": "x", "EPF_SENSORS__0__TOKEN": "env:OTHER", "OTHER": "y"}
    settings = load_settings(write(tmp_path, SENSOR), environ=env)
    assert settings.sensors[0].token.reveal() == "y"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('certificate_fingerprint = "AB:', 'certificate_fingerprint = "ZZ:'),
            "sensors[0].certificate_fingerprint: must be the certificate's SHA-256 fingerprint",
        ),
        (("https://10.1.2.3/", "http://10.1.2.3/"), "sensors[0].url: must be an https:// URL"),
        (
            ('site = "Plant 1"', 'site = "Plant 1"\nca_bundle = "cm.token"'),
            "sensors[0]: set ca_bundle or certificate_fingerprint, not both",
        ),
        (('name = "cm"', 'name = "plant-1"'), "names must be unique; repeated: plant-1"),
        (('token = "env:PLANT_TOKEN"', 'tokn = "x"'), "sensors[0].token: is required"),
    ],
)
def test_iot_config_errors_name_the_key(tmp_path, change, expected):
    (tmp_path / "cm.token").write_text("c0ffee\n")
    text = SENSOR.replace(*change)
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), environ={"PLANT_TOKEN": "9f0c1d"})
    assert expected in str(err.value)
    assert "9f0c1d" not in str(err.value)


def test_a_config_with_nothing_to_collect_says_so(tmp_path):
    with pytest.raises(ConfigError, match="nothing to collect"):
        load_settings(write(tmp_path, '[store]\npath = "x.duckdb"\n'), environ={})


SENTINEL = (
    GOOD
    + """
[sentinel]
endpoint = "https://dce.example.ingest.monitor.azure.com"
managed_identity = true

[[sentinel.dcrs]]
immutable_id = "dcr-00000000000000000000000000000001"
tables = ["Custom-EPF_Devices_CL", "EPF_AgentHealth_CL"]

[[sentinel.dcrs]]
immutable_id = "dcr-00000000000000000000000000000002"
endpoint = "https://dcr2.example.ingest.monitor.azure.com"
tables = ["EPF_IotEvents_CL"]
"""
)


def test_sentinel_routes_each_table_to_its_dcr(tmp_path):
    settings = load_settings(write(tmp_path, SENTINEL), environ={"CONTOSO_SECRET": "x"})
    sentinel = settings.sentinel
    assert sentinel.route("EPF_Devices_CL") == (
        "https://dce.example.ingest.monitor.azure.com",
        "dcr-00000000000000000000000000000001",
    )
    assert sentinel.route("EPF_IotEvents_CL") == (
        "https://dcr2.example.ingest.monitor.azure.com",
        "dcr-00000000000000000000000000000002",
    )
    assert sentinel.route("EPF_Runs_CL") is None  # no default DCR: the sink says so


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("managed_identity = true", 'client_secret = "x"'),
            "tenant_id and client_id are required",
        ),
        (
            ("managed_identity = true", 'managed_identity = true\nclient_secret = "x"'),
            "set exactly one of client_secret, certificate_path or managed_identity",
        ),
        (('"EPF_IotEvents_CL"', '"EPF_AgentHealth_CL"'), "listed twice: EPF_AgentHealth_CL"),
        (("dcr-00000000000000000000000000000002", "dcr-2"), "sentinel.dcrs[1].immutable_id"),
    ],
)
def test_sentinel_config_errors_name_the_key(tmp_path, change, expected):
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, SENTINEL.replace(*change)), environ={"CONTOSO_SECRET": "x"})
    assert expected in str(err.value)


# Found by fuzzing (tests/fuzz/test_config.py): each was an exception other than ConfigError.


@pytest.mark.parametrize(
    ("text", "key"),
    [
        # a file name too long to look up: OSError out of the pydantic validator
        (GOOD + f'ca_bundle = "{"x" * 5000}"\n', "tenants[0].ca_bundle"),
        (GOOD + f'\n[feeds.kev]\npath = "{"x" * 5000}"\n', "feeds.kev.path"),
        # the home folder of an unknown user: RuntimeError from Path.expanduser
        (GOOD.replace('"ws.duckdb"', '"~nosuchuser-epf/ws.duckdb"'), "store.path"),
        # a NUL byte in a path: ValueError from Path.resolve
        (GOOD.replace('"ws.duckdb"', '"ws\\u0000.duckdb"'), "store.path"),
        (GOOD.replace("env:CONTOSO_SECRET", "file:~nosuchuser-epf/s"), "tenants[0].client_secret"),
    ],
)
def test_a_path_that_cannot_be_used_names_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ={"CONTOSO_SECRET": "hidden-value"})
    assert key in str(info.value)


def test_a_secret_file_that_is_not_utf8_names_the_key(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\xff\xfe\x80")
    text = GOOD.replace("env:CONTOSO_SECRET", "file:secret.bin")
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.client_secret: .*not UTF-8"):
        load_settings(write(tmp_path, text), environ={})


def test_a_mapping_that_is_not_a_table_is_a_config_error(tmp_path):
    from endpoint_forensics.config import settings_from_mapping

    with pytest.raises(ConfigError, match=r"\(top level\): expected a table"):
        settings_from_mapping("store", base_dir=tmp_path, environ={})  # type: ignore[arg-type]
