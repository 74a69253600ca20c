"""The original connector's classic tables: their column types, and migrating them.

The 2021 connector sent its tables through the HTTP Data Collector API, which made them classic
custom tables ("Custom table (classic)", ``tableSubType`` "Classic") and typed each field by the
suffix it added (learn.microsoft.com/azure/azure-monitor/logs/data-collector-api, "Record type
and properties"). Azure refuses a DCR-based schema change on such a table ("Changing Classic
table ... schema by using DataCollectionRuleBased tables api is forbidden, please migrate the
table first") until ``POST .../tables/{table}/migrate`` (one-way, idempotent) converts it, and a
column's type never changes after that (logs/custom-logs-migrate). So the compat tables keep
each legacy column's type, checked here, and ``epf deploy arm --compat`` writes the migrate
commands as a script (``migration_script``). May import ``tables`` only.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from endpoint_forensics.tables import TABLES, KqlType, Table

__all__ = [
    "ARM_ENDPOINT",
    "LEGACY_SUFFIX_TYPES",
    "MIGRATE_API_VERSION",
    "legacy_type_problems",
    "migrate_url",
    "migration_script",
    "write_migration_script",
]

ARM_ENDPOINT = "https://management.azure.com"
# Tables - Migrate is in the stable 2022-10-01 API (the migration article still shows the
# 2021-12-01-preview that introduced it).
MIGRATE_API_VERSION = "2022-10-01"
#: The Data Collector API's type suffixes; a GUID is "stored as a string".
LEGACY_SUFFIX_TYPES = {
    "_s": KqlType.STRING,
    "_b": KqlType.BOOL,
    "_d": KqlType.REAL,
    "_t": KqlType.DATETIME,
    "_g": KqlType.STRING,
}


def legacy_type_problems(tables: Iterable[Table]) -> list[str]:
    """Each column of ``tables`` whose type is not the one its Data Collector suffix gave it."""
    problems = []
    for table in tables:
        for column in table.columns:
            wanted = LEGACY_SUFFIX_TYPES.get(column.name[-2:])
            if wanted is not None and column.type != wanted:
                problems.append(
                    f"{table.name}.{column.name} is {column.type.value}; the classic table has "
                    f"it as {wanted.value} (suffix {column.name[-2:]}), and a type can't change"
                )
    return problems


def migrate_url(workspace_resource_id: str, table: str, *, endpoint: str = ARM_ENDPOINT) -> str:
    """The Tables - Migrate URL of ``table`` in the workspace ``workspace_resource_id``."""
    return (
        f"{endpoint.rstrip('/')}{workspace_resource_id.rstrip('/')}/tables/{table}/migrate"
        f"?api-version={MIGRATE_API_VERSION}"
    )


def migration_script(tables: Iterable[Table]) -> str:
    """A POSIX shell script (Azure CLI) that migrates each of ``tables`` that is classic.

    Run as ``sh SCRIPT <subscription id> <resource group> <workspace>``: a table the workspace
    lacks is left for the template to create, a DCR-based one as it is.
    """
    names = " ".join(t.name for t in tables)
    return f"""#!/bin/sh
# Run before deploying the template of `epf deploy arm --compat` into a workspace that holds
# the original connector's tables. The HTTP Data Collector API made them classic tables, whose
# schema Azure lets the template change only once each is migrated to a DCR-based table
# (Tables - Migrate: one-way, idempotent; the data and the columns' types stay).
# Needs the Azure CLI, signed in as an identity allowed
# Microsoft.OperationalInsights/workspaces/tables/migrate/action (Log Analytics Contributor).
# Usage: sh {{this script}} <subscription id> <resource group> <workspace name>
set -eu
if [ "$#" -ne 3 ]; then
  echo "usage: sh $0 <subscription id> <resource group> <workspace name>" >&2
  exit 2
fi
workspace="{ARM_ENDPOINT}/subscriptions/$1/resourceGroups/$2/providers/Microsoft.OperationalInsights/workspaces/$3"
version="api-version={MIGRATE_API_VERSION}"
# The workspace first: past this, a ResourceNotFound is the table's.
az rest --method get --url "$workspace?$version" --output none
errors="$(mktemp)"
trap 'rm -f "$errors"' EXIT
for table in {names}; do
  if subtype="$(az rest --method get --url "$workspace/tables/$table?$version" \\
      --query properties.schema.tableSubType --output tsv 2>"$errors")"; then
    if [ "$subtype" = "Classic" ]; then
      az rest --method post --url "$workspace/tables/$table/migrate?$version" --output none
      echo "$table: migrated to a DCR-based table"
    else
      echo "$table: $subtype, nothing to migrate"
    fi
  elif grep -q ResourceNotFound "$errors"; then
    echo "$table: not in the workspace; the template creates it"
  else
    cat "$errors" >&2
    exit 1
  fi
done
"""


def write_migration_script(template_path: Path) -> Path:
    """Write the migration script of the registry's compat tables beside ``template_path``
    (``<stem>-migrate-classic.sh``) and return its path."""
    script = template_path.with_name(f"{template_path.stem}-migrate-classic.sh")
    script.write_text(migration_script(t for t in TABLES.values() if t.profile == "compat"))
    return script
