"""[sentinel.workspace]: the workspace `epf doctor` reads, validated like every other key."""

import pytest

from endpoint_forensics.config import load_settings
from endpoint_forensics.errors import ConfigError

from .test_config import SENTINEL, write

WORKSPACE_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/sec-rg/providers/"
    "Microsoft.OperationalInsights/workspaces/sentinel-ws"
)


def test_the_workspace_is_optional_and_defaults_to_public_resource_manager(tmp_path):
    assert (
        load_settings(write(tmp_path, SENTINEL), environ={"CONTOSO_SECRET": "x"}).sentinel.workspace
        is None
    )
    text = SENTINEL + f'\n[sentinel.workspace]\nresource_id = "{WORKSPACE_ID}/"\n'
    workspace = load_settings(
        write(tmp_path, text), environ={"CONTOSO_SECRET": "x"}
    ).sentinel.workspace
    assert workspace.resource_id == WORKSPACE_ID  # the trailing slash dropped
    assert workspace.endpoint == "https://management.azure.com"
    assert workspace.scope == "https://management.azure.com/.default"


@pytest.mark.parametrize(
    "lines, expected",
    [
        ('resource_id = "sentinel-ws"', "sentinel.workspace.resource_id"),
        (f'resource_id = "{WORKSPACE_ID}/tables/X_CL"', "must be a workspace's resource id"),
        (f'resource_id = "{WORKSPACE_ID}"\nendpoint = "http://arm.local"', "https:// URL"),
        ('endpoint = "https://management.azure.com"', "resource_id"),
    ],
)
def test_a_wrong_workspace_names_the_key(tmp_path, lines, expected):
    text = SENTINEL + f"\n[sentinel.workspace]\n{lines}\n"
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text), environ={"CONTOSO_SECRET": "x"})
    assert expected in str(err.value)
