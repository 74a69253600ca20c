"""`make bench-iot`: a day of Defender for IoT event polling on a compressed clock, measured.

An emulated sensor records events at a fixed rate (default 1,000 an hour). The collector polls
it every few minutes of emulated time for a day (the emulator's clock is advanced between
polls; nothing waits), into a fresh workspace. Printed: events the sensor recorded, events
stored, duplicates, gaps recorded, polls whose window came back full (and were asked again
type by type), requests, wall time and peak RSS. Beside it, the simplest alternative, the
original connector's way: one `minutesTimeFrame=1440` call a day, which the API caps at the
latest 100 events.

Usage: python bench/iot_events.py [--rate 1000] [--minutes 5] [--hours 24] [--seed 3]
"""

from __future__ import annotations

import argparse
import resource
import ssl
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import httpx

from endpoint_forensics.config import load_settings
from endpoint_forensics.pipeline.run import run_sync
from endpoint_forensics.sinks.duckdb import DuckDBSink
from epf_emulator import Emulator, EmulatorSettings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="events an hour")
    parser.add_argument("--minutes", type=int, default=5, help="emulated minutes between polls")
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    emulator = EmulatorSettings(
        devices=0,
        seed=args.seed,
        iot_sensors=1,
        iot_console=False,
        iot_events_per_hour=args.rate,
        iot_event_backlog_minutes=4.0,
    )
    with tempfile.TemporaryDirectory(prefix="epf-bench-iot-") as tmp, Emulator(emulator) as emu:
        config = Path(tmp) / "epf.toml"
        emu.write_config(config, mde=False)
        settings = load_settings(
            config,
            environ={},
            overrides={
                "store.path": str(Path(tmp) / "ws.duckdb"),
                "state.dir": str(Path(tmp) / "state"),
                "sensors.0.datasets": ["events"],
            },
        )
        polls = args.hours * 60 // args.minutes
        started = time.perf_counter()
        sink = DuckDBSink(settings.store.path)
        try:
            for poll in range(polls + 1):
                if poll:
                    emu.advance(args.minutes / 60)
                summary = run_sync(settings, [sink], now=emu.now)
                if summary.exit_code:
                    print("a poll failed:", summary.errors(), file=sys.stderr)
                    return 1
        finally:
            sink.close()
        wall = time.perf_counter() - started
        truth = emu.stats()["truth_detail"]["iot"]["sensors"]["sensor-1"]["events"]
        con = duckdb.connect(str(settings.store.path), read_only=True)
        stored, distinct = con.execute(
            "SELECT count(*), count(DISTINCT EventKey) FROM EPF_IotEvents_CL"
        ).fetchall()[0]
        requests, split, gaps = con.execute(
            "SELECT sum(Requests), count(*) FILTER (WHERE Requests > 1), "
            "count(*) FILTER (WHERE Gaps IS NOT NULL) FROM EPF_Runs_CL WHERE Dataset = 'events'"
        ).fetchall()[0]
        con.close()
        # The simplest alternative: one call a day for the last 1,440 minutes.
        sensor = emu.iot_appliances[0]
        verify = ssl.create_default_context(cafile=str(sensor.certificate_path))
        daily = httpx.get(
            f"{sensor.base_url}/api/v1/events",
            params={"minutesTimeFrame": "1440"},
            headers={"Authorization": sensor.token},
            verify=verify,
        ).json()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.hours} h at {args.rate:,.0f} events/h, a poll every {args.minutes} min")
    print(f"  events recorded by the sensor  {truth:>8,}")
    print(f"  events stored                  {stored:>8,}  ({distinct:,} distinct)")
    print(f"  lost                           {truth - distinct:>8,}")
    print(f"  gaps recorded in EPF_Runs_CL   {gaps:>8,}")
    print(f"  polls                          {polls + 1:>8,}  ({split:,} full, asked by type)")
    print(f"  requests                       {requests:>8,}")
    print(
        f"  wall time                      {wall:>8.1f} s  ({wall / (polls + 1) * 1000:.0f} ms a poll)"
    )
    print(f"  peak RSS                       {peak_mb:>8.0f} MB (emulator included)")
    print(f"one daily call (the original connector): {len(daily):,} of the day's events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
