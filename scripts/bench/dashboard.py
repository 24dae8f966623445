"""Page weight and speed of the dashboard's views, against a JSON fetch in the same run.

A devnet that has mined, stored, proven and missed (``tests/framework/marketnet.py``: one node,
two hosts, one file) stands still while Debian's chromium, driven by Playwright, opens each view
in a fresh browser context (empty cache) over loopback:

* **bytes** = every byte the view's first load transferred (the page, its scripts and styles,
  the charting library, the JSON it fetched), as the browser counted them on the wire;
Each view is loaded three times and the median of each figure reported.

* **first_render_ms** = from navigation start until the view is drawn with its data (the page
  marks it), as the page's own clock says; **fcp_ms** = the browser's first contentful paint;
* **baseline_ms** = one ``fetch('/status')`` from a loaded page (median of 20), the cost of a
  round trip to the node's API; ``ratio`` = first_render_ms / baseline_ms.

Targets: under 300 KB and 500 ms per view. Usage: ``python scripts/bench/dashboard.py [--json]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from _report import emit

from tests.framework.marketnet import MarketNet, market_net

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MAX_BYTES = 300_000
MAX_MS = 500.0
RUNS = 3  # loads of each view, the median reported (a busy machine stalls single loads)


def views(net: MarketNet) -> dict[str, tuple[str, str]]:
    contract = net.get(f"/contracts?owner={net.owner}")["contracts"][0]["id"]
    return {"explorer": ("", "explorer"), "host": ("host", "host"),
            "owner": (f"owner/{net.owner}", "owner"), "block": ("block/1", "block"),
            "principal": (f"principal/{net.other_host['host']}", "principal"),
            "path": (f"path{net.path}", "path"), "contract": (f"contract/{contract}", "contract")}


def measure(browser: Any, url: str, route: str, view: str) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        sizes: dict[str, float] = {}
        cdp.on("Network.loadingFinished",
               lambda e: sizes.__setitem__(e["requestId"], e["encodedDataLength"]))
        page.goto(f"{url}/#/{route}")
        page.wait_for_function("v => document.body.dataset.view === v", arg=view,
                               timeout=30_000)
        page.wait_for_load_state("load")
        first = float(page.evaluate("Number(document.body.dataset.firstRender)"))
        fcp = page.evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || "
                            "{startTime: 0}).startTime")
        return {"bytes": sum(sizes.values()), "first_render_ms": round(first, 1),
                "fcp_ms": round(float(fcp), 1), "requests": len(sizes)}
    finally:
        context.close()


def baseline(browser: Any, url: str) -> float:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{url}/#/login")
        page.wait_for_function("document.body.dataset.view === 'login'", timeout=30_000)
        times = page.evaluate("""async () => {
            const out = [];
            for (let i = 0; i < 20; i++) {
                const t = performance.now();
                await (await fetch('/status', {cache: 'no-store'})).json();
                out.push(performance.now() - t);
            }
            return out; }""")
        return float(statistics.median(times))
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    root = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    result: dict[str, Any] = {}
    try:
        started = time.monotonic()
        with market_net(root / "net") as net, sync_playwright() as pw:
            result["devnet_s"] = round(time.monotonic() - started, 1)
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                measure(browser, net.url, "", "explorer")  # warm the node's caches once
                base = baseline(browser, net.url)
                result["baseline_ms"] = round(base, 2)
                for name, (route, view) in views(net).items():
                    runs = [measure(browser, net.url, route, view) for _ in range(RUNS)]
                    m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                    result[name] = {**m, "ratio": round(m["first_render_ms"] / base, 1)}
            finally:
                browser.close()
        shown = [v for v in result.values() if isinstance(v, dict)]
        result["max_bytes"] = max(v["bytes"] for v in shown)
        result["max_first_render_ms"] = max(v["first_render_ms"] for v in shown)
        result["load_average"] = round(os.getloadavg()[0], 1)  # 2 cores shared: read with it
        result["targets_met"] = (result["max_bytes"] < MAX_BYTES
                                 and result["max_first_render_ms"] < MAX_MS)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    emit(result, args.json)


if __name__ == "__main__":
    main()
