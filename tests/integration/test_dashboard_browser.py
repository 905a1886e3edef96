"""The dashboard in headless Chromium against a real worker fed demo traffic with a spike: the page
draws the cost chart with the spike marked, the anomaly in the table, KPIs, ROI and budget bars, and
logs no JavaScript exception or console error (collected over the DevTools protocol)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import shutil
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.test_web import demo_traffic, produce_demo, wait_for, web_settings

logger = logging.getLogger(__name__)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
INSTALL = "apt-get install -y --no-install-recommends chromium"


class Page:
    """One browser tab over the DevTools protocol; collects exceptions and console errors."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self.pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                self.errors.append(
                    f"exception: {details.get('exception', {}).get('description') or details['text']}"
                )
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                self.errors.append("console.error: " + " ".join(str(a.get("value")) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                self.errors.append(f"log ({entry['source']}): {entry['text']} {entry.get('url', '')}")

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = fut
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        reply = await asyncio.wait_for(fut, timeout=30)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_until(self, expression: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.evaluate(expression):
                return
            await asyncio.sleep(0.25)
        raise AssertionError(f"page never satisfied {expression!r}; errors: {self.errors}")


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path, width: int = 1400, height: int = 1800) -> AsyncIterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is needed for the dashboard test: {INSTALL}")
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--window-size={width},{height}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        endpoint = None
        deadline = time.monotonic() + 30
        while endpoint is None and time.monotonic() < deadline:
            line = (await asyncio.wait_for(proc.stderr.readline(), timeout=30)).decode(errors="replace")
            if not line:
                raise AssertionError("chromium exited before it listened for DevTools")
            found = re.search(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)", line)
            if found:
                endpoint = int(found.group(2))
        drain = asyncio.ensure_future(proc.stderr.read())  # keep the pipe from filling up
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{endpoint}/json/list") as resp:
                targets = await resp.json()
            page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with http.ws_connect(page_url, max_msg_size=0) as ws:
                page = Page(ws)
                for domain in ("Runtime", "Log", "Page"):
                    await page.send(f"{domain}.enable")
                await page.send(
                    "Emulation.setDeviceMetricsOverride",
                    width=width,
                    height=height,
                    deviceScaleFactor=1,
                    mobile=False,
                )
                yield page
                page.reader.cancel()
        drain.cancel()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_dashboard_draws_the_incident_without_errors(
    settings_factory, worker_factory, tmp_path
) -> None:
    budgets = {"ecommerce": Decimal("400"), "analytics": Decimal("150"), "marketing": Decimal("600")}
    settings = web_settings(settings_factory, budgets=budgets)
    events, spike, _, end = demo_traffic()
    worker = worker_factory.start(settings)
    worker.wait_healthy()
    await produce_demo(settings, events, end)
    await wait_for(
        worker,
        "/finops/anomalies/?status=all",
        lambda b: any(a["service"] == spike.service for a in b["anomalies"]),
        timeout=150,
    )
    await wait_for(worker, "/finops/roi/", lambda b: len(b["units"]) >= 4, timeout=60)

    shot = tmp_path / "dashboard.png"
    async with chromium(tmp_path) as page:
        await page.send("Page.navigate", url=worker.url + "/dashboard/")
        await page.wait_until(
            "Number(document.body.dataset.loaded || 0) >= 2"
            " && document.querySelectorAll('#cost-chart path.series').length >= 4"
            " && document.querySelectorAll('#cost-chart circle.anomaly').length >= 1"
        )
        series = await page.evaluate(
            "[...document.querySelectorAll('#cost-chart path.series')].map(p => p.getAttribute('data-unit'))"
        )
        points = await page.evaluate(
            "Math.min(...[...document.querySelectorAll('#cost-chart path.series')]"
            ".map(p => (p.getAttribute('d').match(/L/g) || []).length))"
        )
        marked = await page.evaluate(
            "[...document.querySelectorAll('#cost-chart circle.anomaly')]"
            ".map(c => [c.getAttribute('data-unit'), c.textContent])"
        )
        kpis = await page.evaluate("document.getElementById('kpis').textContent")
        bars = await page.evaluate(
            "[document.querySelectorAll('#roi-chart rect.bar').length,"
            " document.querySelectorAll('#budget-chart rect.bar').length,"
            " document.querySelectorAll('#budget-chart line.budget-line').length]"
        )
        shown = await page.evaluate("document.getElementById('updated').textContent")
        png = await page.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        shot.write_bytes(base64.b64decode(png["data"]))
        errors = list(page.errors)
    logger.info("dashboard screenshot: %s", shot)

    assert errors == [], errors
    assert sorted(series) == ["analytics", "ecommerce", "marketing", "platform"]
    assert points >= 12  # more than an hour of 5-minute windows per line
    assert any(unit == spike.business_unit and spike.service in text for unit, text in marked), marked
    for label in ("Detection latency", "Cost attributed", "ROI freshness", "Forecast error", "Dead letters"):
        assert label.lower() in kpis.lower()
    assert bars[0] == 4 and bars[1] >= 4 and bars[2] == 3
    assert shown.startswith("updated"), shown
    assert shot.stat().st_size > 20_000
