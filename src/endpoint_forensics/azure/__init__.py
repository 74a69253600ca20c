"""Azure: deployment artefacts generated from the table registry (ARM templates, what
``epf deploy`` writes), and in ``azure.functions`` the Azure Functions entry point (not imported
here: it runs the whole pipeline). May import ``azure.arm``, ``azure.classic`` and
``azure.expressions``.
"""

from endpoint_forensics.azure.arm import (
    MAX_STREAMS_PER_DCR,
    MONITORING_METRICS_PUBLISHER_ROLE_ID,
    RETENTION_DAYS,
    TOTAL_RETENTION_DAYS,
    build_arm_template,
    retention_problem,
    write_arm_template,
)
from endpoint_forensics.azure.classic import (
    legacy_type_problems,
    migrate_url,
    migration_script,
    write_migration_script,
)
from endpoint_forensics.azure.expressions import expression_problems

__all__ = [
    "MAX_STREAMS_PER_DCR",
    "MONITORING_METRICS_PUBLISHER_ROLE_ID",
    "RETENTION_DAYS",
    "TOTAL_RETENTION_DAYS",
    "build_arm_template",
    "expression_problems",
    "legacy_type_problems",
    "migrate_url",
    "migration_script",
    "retention_problem",
    "write_arm_template",
    "write_migration_script",
]
