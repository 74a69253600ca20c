"""The Azure Functions app (Python v2 programming model).

Two layouts, chosen by the app settings:
- **Fanned out** (``EPF_WORK_QUEUE`` set): a timer-triggered planner enqueues one message per
  unit of work that is due, (source, dataset), and a queue-triggered worker runs one unit per
  message, on as many instances as the scale controller gives; a message that fails
  ``maxDequeueCount`` times (host.json) goes to ``<queue>-poison``, after the unit's
  EPF_Runs_CL row says so. State lives in the Blob container ``EPF_STATE_URL`` names.
- **One run per tick** (otherwise): every dataset of every source, one instance.

Owns the triggers only: the schedule (the ``EPF_SCHEDULE`` app setting, an NCRONTAB expression
with seconds; hourly at minute 0 without it), the queue binding, and where the config lives by
default (``epf.toml`` next to this file). Everything else is ``endpoint_forensics.azure.functions``.
Imports azure-functions (the host provides it) and that module only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import azure.functions as func

from endpoint_forensics.azure.functions import plan_collection, run_collection, work_collection

DEFAULT_SCHEDULE = "0 0 * * * *"
# "%NAME%" is resolved by the host from the app settings; a missing setting would fail indexing.
SCHEDULE = "%EPF_SCHEDULE%" if os.environ.get("EPF_SCHEDULE") else DEFAULT_SCHEDULE
CONFIG_PATH = Path(__file__).with_name("epf.toml")
FANNED_OUT = bool(os.environ.get("EPF_WORK_QUEUE"))

log = logging.getLogger("endpoint_forensics.functions")

app = func.FunctionApp()

if FANNED_OUT:

    # use_monitor: a tick missed during a restart runs late (past_due) instead of never.
    @app.timer_trigger(schedule=SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
    def epf_plan(timer: func.TimerRequest) -> None:
        plan_collection(default_config=CONFIG_PATH)

    # The storage connection is the app's own (AzureWebJobsStorage, by its managed identity).
    @app.queue_trigger(
        arg_name="message", queue_name="%EPF_WORK_QUEUE%", connection="AzureWebJobsStorage"
    )
    def epf_work(message: func.QueueMessage) -> None:
        work_collection(
            message.get_body(), message.dequeue_count or 1, default_config=CONFIG_PATH
        )

else:

    # use_monitor: the host records the last run in storage, so a tick missed during a restart
    # runs late (past_due) instead of never; timer triggers run on one instance at a time.
    @app.timer_trigger(schedule=SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
    def epf_collect(timer: func.TimerRequest) -> None:
        if timer.past_due:
            log.warning("epf: the timer is past due; collecting now")
        run_collection(default_config=CONFIG_PATH)
