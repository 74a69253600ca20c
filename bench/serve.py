"""`make bench-serve DB=...`: how fast the dashboard shows a workspace, and what it costs.

Starts `epf serve` on the workspace in its own process, opens it in headless Chromium (Debian's,
through Playwright) and times each view from navigation to drawn (every panel answered and its
chart drawn), the first one from a cold start; then reads the server's peak resident memory
(VmHWM). Beside it, the simplest alternative: `epf report fleet` writing the same panels to a
file, timed in the same run.

Usage: python bench/serve.py --db WORKSPACE
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EPF = [sys.executable, "-m", "endpoint_forensics"]
_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]  # fmt: skip


def _peak_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(found[1]) / 1024 if found else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    launched = time.perf_counter()
    server = subprocess.Popen(
        [*EPF, "serve", "--db", str(args.db), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        url = re.search(r"http://\S+", server.stdout.readline())
        assert url, "epf serve printed no address"
        started = time.perf_counter() - launched
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            start = time.perf_counter()
            page.goto(url[0])
            page.wait_for_selector("body[data-rendered=true]", timeout=600_000)
            first = time.perf_counter() - start
            print(
                f"server start (a new process: imports, the workspace's committed copy) to its"
                f" address: {started:.2f} s; then the fleet view drawn: {first:.2f} s;"
                f" from launch to drawn: {started + first:.2f} s"
            )
            for view in page.eval_on_selector_all("nav a", "els => els.map(e => e.hash)"):
                if not view.startswith("#view="):
                    continue
                page.evaluate("() => { delete document.body.dataset.rendered; }")
                start = time.perf_counter()
                page.evaluate("f => { location.hash = f; }", view)
                page.wait_for_selector("body[data-rendered=true]", timeout=600_000)
                name = view.removeprefix("#view=").replace("%20", " ")
                print(f"  {name:<32} {time.perf_counter() - start:6.2f} s")
            browser.close()
        print(f"server peak memory (VmHWM): {_peak_mb(server.pid):.0f} MB")
    finally:
        server.terminate()
        server.wait(timeout=10)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run(
            [*EPF, "report", "fleet", "--db", str(args.db), "--out", f"{tmp}/fleet.html"],
            check=True, capture_output=True,
        )  # fmt: skip
        print(f"alternative, epf report fleet (every panel to one file): "
              f"{time.perf_counter() - start:.2f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
