"""Azure: deployment artefacts generated from the table registry (ARM templates, what
``epf deploy`` writes), and in ``azure.functions`` the Azure Functions entry point (not imported
here: it runs the whole pipeline). ``arm`` imports the table registry and nothing else of ours.
"""

from endpoint_forensics.azure.arm import (
    MAX_STREAMS_PER_DCR,
    MONITORING_METRICS_PUBLISHER_ROLE_ID,
    build_arm_template,
    write_arm_template,
)
from endpoint_forensics.azure.expressions import expression_problems

__all__ = [
    "MAX_STREAMS_PER_DCR",
    "MONITORING_METRICS_PUBLISHER_ROLE_ID",
    "build_arm_template",
    "expression_problems",
    "write_arm_template",
]
