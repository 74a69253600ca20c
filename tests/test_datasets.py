"""The dataset registry is the one place a dataset is declared: the config, the plan, the
budgets, the doctor's permissions, ``epf tables``, the README and the emulator all read it."""

import inspect
import re
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from endpoint_forensics.cli import app
from endpoint_forensics.config import CONSOLE_DATASETS, DATASETS, SENSOR_DATASETS, load_settings
from endpoint_forensics.config.models import TenantConfig
from endpoint_forensics.doctor.tenant import required_permissions
from endpoint_forensics.errors import ConfigError
from endpoint_forensics.http.ratelimit import DOCUMENTED_LIMITS
from endpoint_forensics.pipeline.plan import fetch_function
from endpoint_forensics.sources import ConsoleContext, FeedContext, FetchContext, SensorContext
from endpoint_forensics.tables import TABLES
from endpoint_forensics.tables.datasets import (
    DATASETS as REGISTRY,
)
from endpoint_forensics.tables.datasets import (
    dataset_names,
    readme_table,
    spec_of,
)
from epf_emulator.core.tenant import (
    CONSOLE_DATASETS_PER_SYNC,
    DATASETS_PER_SYNC,
    SENSOR_DATASETS_PER_SYNC,
)

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = {
    "tenant": FetchContext,
    "sensor": SensorContext,
    "console": ConsoleContext,
    "feed": FeedContext,
}


def _tenant(**kw: object) -> TenantConfig:
    return TenantConfig(
        name="t", tenant_id="tid", client_id="cid", client_secret=None, managed_identity=True, **kw
    )


def test_every_dataset_names_a_fetch_function_that_takes_its_kind_of_context() -> None:
    for spec in REGISTRY:
        function = fetch_function(spec)
        assert inspect.isgeneratorfunction(function) or callable(function), spec.fetch
        annotation = next(iter(inspect.signature(function).parameters.values())).annotation
        assert CONTEXT[spec.kind].__name__ in str(annotation), (spec.name, annotation)
        assert spec.table.name in TABLES


def test_names_are_unique_per_kind_and_the_config_offers_exactly_the_registry() -> None:
    for kind in ("tenant", "sensor", "console"):
        names = dataset_names(kind)
        assert len(names) == len(set(names)) > 0
    assert DATASETS == dataset_names("tenant")
    assert SENSOR_DATASETS == dataset_names("sensor")
    assert CONSOLE_DATASETS == dataset_names("console")
    # The emulator's ground truth counts one EPF_Runs_CL row per registry dataset.
    assert DATASETS_PER_SYNC == DATASETS
    assert (SENSOR_DATASETS_PER_SYNC, CONSOLE_DATASETS_PER_SYNC) == (
        SENSOR_DATASETS,
        CONSOLE_DATASETS,
    )


def test_an_unknown_dataset_in_the_config_names_the_key_and_the_choices(tmp_path: Path) -> None:
    config = tmp_path / "epf.toml"
    config.write_text(
        '[[tenants]]\nname = "t"\ntenant_id = "x"\nclient_id = "y"\nclient_secret = "s"\n'
        'datasets = ["machines", "machnies"]\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert "datasets" in message and "'machnies'" in message and "cve_catalog" in message
    config.write_text(
        '[[tenants]]\nname = "t"\ntenant_id = "x"\nclient_id = "y"\nclient_secret = "s"\n'
        "interval_hours = { vulnerabilites = 24 }\n"
    )
    with pytest.raises(ConfigError, match="vulnerabilites"):
        load_settings(config)


def test_default_intervals_come_from_the_registry_and_the_config_overrides_them() -> None:
    tenant = _tenant(interval_hours={"vulnerabilities": 12.0})
    assert tenant.interval_hours_for("vulnerabilities") == 12.0
    assert (
        tenant.interval_hours_for("secure_config")
        == spec_of("tenant", "secure_config").interval_hours
        == 24.0
    )
    assert tenant.interval_hours_for("machines") == 0.0


def test_budgets_are_the_union_of_the_limits_the_datasets_declare() -> None:
    declared = {
        limit.name: limit for spec in REGISTRY if spec.kind == "tenant" for limit in spec.limits
    }
    assert DOCUMENTED_LIMITS == declared
    assert DOCUMENTED_LIMITS["InfoGatheringExport"].per_hour == 20
    assert DOCUMENTED_LIMITS["advanced_hunting"].per_minute == 45


def test_the_doctor_asks_for_the_permissions_the_datasets_declare() -> None:
    mde, maybe, graph = required_permissions(_tenant(export_mode="json"))
    assert mde["Machine.Read.All"] == ["machines", "av_health"]
    assert mde["Software.Read.All"] == ["software_inventory"]
    assert "av_health via files" not in str(mde) and maybe == {}
    assert graph == {"ThreatHunting.Read.All": ["agent_health"]}
    mde, maybe, graph = required_permissions(
        _tenant(export_mode="files", hunting_api="mde", datasets=("av_health", "agent_health"))
    )
    assert mde == {
        "Machine.Read.All": ["av_health"],
        "Vulnerability.Read.All": ["av_health via files"],
        "AdvancedQuery.Read.All": ["agent_health"],
    }
    assert graph == {}
    _, maybe, _ = required_permissions(_tenant(datasets=("av_health",)))  # auto: maybe files
    assert maybe == {"Vulnerability.Read.All": ["av_health via files"]}


def test_the_readme_table_is_generated_from_the_registry() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- datasets: generated[^\n]*-->\n(.*?)<!-- datasets: end -->", text, re.S)
    assert found is not None, "the README lost its generated datasets table"
    assert found.group(1) == readme_table(), (
        "README.md is stale: paste `python -m endpoint_forensics.tables.datasets`"
    )
    assert readme_table().count("\n") == len(REGISTRY) + 3


def test_epf_tables_says_which_datasets_fill_each_table() -> None:
    result = CliRunner().invoke(app, ["tables", "--format", "json"])
    assert result.exit_code == 0, result.output
    tables = {t["name"]: t for t in orjson.loads(result.output)}
    filled = [(d["kind"], d["name"]) for d in tables["EPF_IotDevices_CL"]["datasets"]]
    assert filled == [("sensor", "devices"), ("console", "devices"), ("console", "device_changes")]
    vulns = tables["EPF_Vulnerabilities_CL"]["datasets"][0]
    assert vulns["interval_hours"] == 168.0 and vulns["resumable"] is True
    assert tables["EPF_Runs_CL"]["datasets"] == []
