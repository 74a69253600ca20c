"""The function app's app settings and storage names: what ``epf deploy arm --function-app``
sets, and what the planner and the worker read.

One place for the names both sides use, so that the template and the code cannot drift apart.
Every app setting is an environment variable of the Functions host's worker process. Names that
start with ``EPF_`` and whose first ``__``-separated part is a top-level config section
(``EPF_SENTINEL__ENDPOINT``) are read by the config loader as overrides of that key; the others
(``EPF_STATE_URL``, ``EPF_WORK_QUEUE``) name no section, so the loader passes them by. Imports
nothing.

Set by the template:

``EPF_CONFIG``
    Path of the collector's config file, set only when the template's ``epfConfigPath``
    parameter is: without it the code reads ``epf.toml`` next to ``function_app.py``, in the
    deployed package. The file holds what the deployment cannot know: the tenants and their
    credentials (``keyvault:`` references), the datasets, the intervals.
``EPF_SCHEDULE``
    The planner's timer: an NCRONTAB expression with seconds (default
    :data:`DEFAULT_SCHEDULE`, hourly at minute 0), bound as ``%EPF_SCHEDULE%``.
``EPF_WORK_QUEUE``
    The queue the planner fills with one message per unit of work (source, dataset) and the
    worker is triggered by (:data:`WORK_QUEUE_NAME`); set, it selects the fanned-out layout.
    After ``maxDequeueCount`` failed tries (host.json, 5 by default) the host moves a message
    to ``<queue>-poison`` (:func:`poison_queue`).
``EPF_STATE_URL``
    URL of the Blob container holding the collector's state: checkpoints, the Sentinel
    outbox, quarantined records, run records and leases
    (``https://<account>.blob.core.windows.net/epf-state``). Clients sign in with the app's
    managed identity (Storage Blob Data Contributor on the container).
``EPF_SENTINEL__ENDPOINT``, ``EPF_SENTINEL__MANAGED_IDENTITY``, ``EPF_SENTINEL__DCRS``
    The ``[sentinel]`` section, as config overrides: the first DCR's logs-ingestion endpoint,
    ``true`` (the app's managed identity, Monitoring Metrics Publisher on each DCR), and the
    DCR routes as a JSON list of ``[[sentinel.dcrs]]`` entries (``immutable_id``,
    ``endpoint``, ``tables``) from the template's ``sentinelDcrs`` output. They replace any
    ``[sentinel]`` keys of the same name in the config file.
``AzureWebJobsStorage__*``
    The host's storage connection, :data:`HOST_STORAGE`, by identity: ``accountName``, the
    ``blobServiceUri``, ``queueServiceUri`` and ``tableServiceUri`` of the account, and
    ``credential`` ``managedidentity`` (the system-assigned identity). It is also the worker's
    queue trigger ``connection``, and :data:`HOST_QUEUE_SERVICE_URI` is where a queue client
    finds the queue service.
``APPLICATIONINSIGHTS_CONNECTION_STRING``, ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING``
    With ``--app-insights`` only: where the host logs, with Entra authentication.

Never set by the template:

``EPF_STORAGE_CONNECTION``
    A storage connection string, for a local host (Azurite) instead of the managed identity.
    In Azure the account takes no shared key, so such a string could not work.
``EPF_STATE_DIR``
    The state folder of the one-run-per-tick layout (without ``EPF_WORK_QUEUE``).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "CONFIG",
    "DEFAULT_SCHEDULE",
    "DEPLOYMENT_CONTAINER_NAME",
    "HOST_QUEUE_SERVICE_URI",
    "HOST_STORAGE",
    "HOST_STORAGE_SETTINGS",
    "LOCAL_STORAGE_CONNECTION",
    "POISON_QUEUE_NAME",
    "SCHEDULE",
    "SENTINEL_DCRS",
    "SENTINEL_ENDPOINT",
    "SENTINEL_MANAGED_IDENTITY",
    "STATE_CONTAINER_NAME",
    "STATE_DIR",
    "STATE_URL",
    "WORK_QUEUE",
    "WORK_QUEUE_NAME",
    "poison_queue",
]

# --- app setting names ----------------------------------------------------------------------

CONFIG: Final = "EPF_CONFIG"
SCHEDULE: Final = "EPF_SCHEDULE"
WORK_QUEUE: Final = "EPF_WORK_QUEUE"
STATE_URL: Final = "EPF_STATE_URL"
SENTINEL_ENDPOINT: Final = "EPF_SENTINEL__ENDPOINT"
SENTINEL_MANAGED_IDENTITY: Final = "EPF_SENTINEL__MANAGED_IDENTITY"
SENTINEL_DCRS: Final = "EPF_SENTINEL__DCRS"
#: The host's storage connection, and the worker's queue trigger's.
HOST_STORAGE: Final = "AzureWebJobsStorage"
HOST_QUEUE_SERVICE_URI: Final = f"{HOST_STORAGE}__queueServiceUri"
#: The identity-based form of the host's connection: every setting of it the template sets.
HOST_STORAGE_SETTINGS: Final = tuple(
    f"{HOST_STORAGE}__{part}"
    for part in (
        "accountName",
        "blobServiceUri",
        "queueServiceUri",
        "tableServiceUri",
        "credential",
    )
)
LOCAL_STORAGE_CONNECTION: Final = "EPF_STORAGE_CONNECTION"
STATE_DIR: Final = "EPF_STATE_DIR"

# --- defaults and the storage account's names -----------------------------------------------


def poison_queue(queue: str) -> str:
    """Where the Functions host moves a queue message that failed every try:
    ``<queue>-poison`` (Azure Queue storage trigger, "Poison messages")."""
    return f"{queue}-poison"


DEFAULT_SCHEDULE: Final = "0 0 * * * *"
# Queue and container names: 3-63 lowercase letters, digits and single hyphens.
WORK_QUEUE_NAME: Final = "epf-work"
POISON_QUEUE_NAME: Final = poison_queue(WORK_QUEUE_NAME)
STATE_CONTAINER_NAME: Final = "epf-state"
#: The Flex Consumption deployment package's container (functionAppConfig.deployment).
DEPLOYMENT_CONTAINER_NAME: Final = "epf-app-package"
