"""The Azure Functions app (Python v2 programming model): one collection run per timer tick.

Owns the trigger only: the schedule (the ``EPF_SCHEDULE`` app setting, an NCRONTAB expression
with seconds; hourly at minute 0 without it), the singleton/monitor flags, and where the config
lives by default (``epf.toml`` next to this file, i.e. deployed with the project). Everything
else is ``endpoint_forensics.azure.functions.run_collection``.
Imports azure-functions (the host provides it) and that module only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import azure.functions as func

from endpoint_forensics.azure.functions import run_collection

DEFAULT_SCHEDULE = "0 0 * * * *"
# "%NAME%" is resolved by the host from the app settings; a missing setting would fail indexing.
SCHEDULE = "%EPF_SCHEDULE%" if os.environ.get("EPF_SCHEDULE") else DEFAULT_SCHEDULE
CONFIG_PATH = Path(__file__).with_name("epf.toml")

log = logging.getLogger("endpoint_forensics.functions")

app = func.FunctionApp()


# use_monitor: the host records the last run in storage, so a tick missed during a restart
# runs late (past_due) instead of never; timer triggers run on one instance at a time.
@app.timer_trigger(schedule=SCHEDULE, arg_name="timer", run_on_startup=False, use_monitor=True)
def epf_collect(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.warning("epf: the timer is past due; collecting now")
    run_collection(default_config=CONFIG_PATH)
