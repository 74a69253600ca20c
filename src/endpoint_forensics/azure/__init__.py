"""Azure: deployment artefacts generated from the table registry (ARM templates, what
``epf deploy`` writes), and in ``azure.functions`` the Azure Functions entry point (not imported
here: it runs the whole pipeline). May import ``azure.arm``, ``azure.arm_functions``,
``azure.classic`` and ``azure.expressions``.
"""

from endpoint_forensics.azure.arm import (
    AUXILIARY_TABLES_API_VERSION,
    MAX_STREAMS_PER_DCR,
    MONITORING_METRICS_PUBLISHER_ROLE_ID,
    RETENTION_DAYS,
    TABLE_PLANS,
    TABLES_API_VERSION,
    TOTAL_RETENTION_DAYS,
    build_arm_template,
    plan_problem,
    retention_problem,
    write_arm_template,
)
from endpoint_forensics.azure.arm_functions import SAVED_SEARCHES_API_VERSION, tables_read
from endpoint_forensics.azure.classic import (
    legacy_type_problems,
    migrate_url,
    migration_script,
    write_migration_script,
)
from endpoint_forensics.azure.expressions import expression_problems

__all__ = [
    "AUXILIARY_TABLES_API_VERSION",
    "MAX_STREAMS_PER_DCR",
    "MONITORING_METRICS_PUBLISHER_ROLE_ID",
    "RETENTION_DAYS",
    "SAVED_SEARCHES_API_VERSION",
    "TABLES_API_VERSION",
    "TABLE_PLANS",
    "TOTAL_RETENTION_DAYS",
    "build_arm_template",
    "expression_problems",
    "legacy_type_problems",
    "migrate_url",
    "migration_script",
    "plan_problem",
    "retention_problem",
    "tables_read",
    "write_arm_template",
    "write_migration_script",
]
