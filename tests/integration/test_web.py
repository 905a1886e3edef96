"""A real worker fed demo traffic with an injected spike: the JSON views answer with exact window
totals, the spike as an anomaly, ROI, budgets, KPIs and dead letters, read from the result topics."""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from typing import Any

from finops_app import demo, kafka, topics
from finops_app.cli import produce_all
from finops_app.core.validate import iso
from finops_app.web.store import ms
from tests.support.kafka import produce

logger = logging.getLogger(__name__)
HOUR_MS = 3_600_000
MINUTE_MS = 60_000


def web_settings(settings_factory: Any, **overrides: Any) -> Any:
    """One partition per topic: the anomaly detector scores a bucket when the next one starts, so
    with two input partitions its result depends on which one the worker happens to read first."""
    return settings_factory(
        topic_partitions=1,
        anomaly_bucket_seconds=60,
        anomaly_min_amount=Decimal("0.5"),
        utilisation_lookback_hours=1,  # recommendations from the first hour of utilisation
        sink_enabled=False,  # Snowflake is not what these tests look at
        **overrides,
    )


def demo_traffic(
    hours: float = 1.5,
) -> tuple[list[tuple[str, str, dict[str, Any]]], demo.Incident, int, int]:
    """Demo events for ``hours`` of event time ending ~10 minutes ago, with one strong spike."""
    now = int(time.time() * 1000)
    end = now - now % (5 * MINUTE_MS) - 10 * MINUTE_MS
    start = end - int(hours * HOUR_MS)
    at = end - 20 * MINUTE_MS  # well after the detector's warm-up (30 points and one hour of event time)
    # 60 times the resource's cost at average traffic, whatever the hour and day: a fixed 60x of a
    # Saturday-night level stayed under FINOPS_ANOMALY_MIN_AMOUNT's $0.5 excess and never alerted
    magnitude = 60.0 / demo.traffic(at, demo.GROWTH_FROM_MS)
    spike = demo.Incident("spike", at, end, "ec2", "ecommerce", magnitude, "ec2-ecommerce-0")
    events = [
        (topic, key, value)
        for n, (topic, key, value) in enumerate(demo.generate(start, end, seed=11, incidents=[spike]))
        if topic != topics.BUSINESS_EVENTS_RAW or n % 20 == 0  # a few orders are enough for ROI
    ]
    return events, spike, start, end


def expected_windows(
    events: list[tuple[str, str, dict[str, Any]]], window_ms: int
) -> dict[tuple[str, str], Decimal]:
    expected: dict[tuple[str, str], Decimal] = {}
    for topic, _, e in events:
        if topic != topics.COST_EVENTS:
            continue
        start_ms = ms(str(e["timestamp"]))
        key = (str(e["business_unit"]), iso(start_ms - start_ms % window_ms))
        expected[key] = expected.get(key, Decimal(0)) + Decimal(str(e["cost_amount"]))
    return expected


async def produce_demo(settings: Any, events: list[tuple[str, str, dict[str, Any]]], end: int) -> None:
    await kafka.ensure_topics(settings)
    await produce_all(settings, iter(events))  # in event-time order, across the three input topics
    # one zero-cost event per unit 20 minutes after the end closes every window of the run
    closer = [
        {
            "event_id": f"closer-{unit}",
            "timestamp": iso(end + 20 * MINUTE_MS),
            "service": "ec2",
            "region": "us-east-1",
            "cost_amount": "0",
            "resource_id": f"closer-{unit}",
            "business_unit": unit,
        }
        for unit in demo.UNITS
    ]
    await produce(settings, topics.COST_EVENTS, [(c["resource_id"], c) for c in closer])
    await produce(settings, topics.COST_EVENTS, [("bad", b"{not json")])


async def wait_for(worker: Any, path: str, ready: Any, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: Any = None
    while time.monotonic() < deadline:
        status, body = worker.get(path)
        if status == 200 and ready(body):
            return dict(body)
        await asyncio.sleep(0.5)
    raise AssertionError(
        f"{path} not ready after {timeout}s; last answer: {str(body)[:2000]}\n{worker.log_tail()}"
    )


async def test_json_views_answer_from_result_topics(settings_factory, worker_factory) -> None:
    settings = web_settings(
        settings_factory, budgets={"ecommerce": Decimal("5000"), "analytics": Decimal("1")}
    )
    events, spike, _, end = demo_traffic()
    expected = expected_windows(events, settings.window_seconds * 1000)
    worker = worker_factory.start(settings)
    worker.wait_healthy()
    t0 = time.monotonic()
    await produce_demo(settings, events, end)

    def all_windows(body: dict[str, Any]) -> bool:
        got = {(w["business_unit"], w["window_start"]) for w in body["windows"]}
        return set(expected) <= got

    body = await wait_for(worker, "/finops/windows/?hours=48", all_windows, timeout=120)
    logger.info("all windows after %.1fs", time.monotonic() - t0)
    got = {(w["business_unit"], w["window_start"]): Decimal(w["total_cost"]) for w in body["windows"]}
    for key, amount in expected.items():
        assert got[key] == amount.quantize(Decimal("0.0001")), key
    assert {k for k, v in got.items() if v} <= set(expected)
    one_unit = worker.get("/finops/windows/?business_unit=analytics&hours=48")[1]
    assert {w["business_unit"] for w in one_unit["windows"]} == {"analytics"}

    def top_drivers(a: dict[str, Any]) -> dict[str, str]:
        return {d["dimension"]: d["value"] for d in reversed(a["drivers"])}  # drivers come largest first

    def spike_alert(body: dict[str, Any]) -> dict[str, Any] | None:
        # an incident alerts once per service (the first series to cross); its drivers name the culprit
        return next(
            (
                a
                for a in body["anomalies"]
                if a["service"] == "ec2"
                and spike.start_ms <= ms(a["first_seen"]) < spike.end_ms
                and top_drivers(a).get("resource_id") == spike.resource_id
            ),
            None,
        )

    anomalies = await wait_for(worker, "/finops/anomalies/?status=all", lambda b: spike_alert(b) is not None)
    hit = spike_alert(anomalies)
    assert hit is not None
    logger.info(
        "anomaly after %.1fs, %.0f min into the spike",
        time.monotonic() - t0,
        (ms(hit["first_seen"]) - spike.start_ms) / MINUTE_MS,
    )
    assert top_drivers(hit)["business_unit"] == "ecommerce", hit["drivers"]
    assert hit["severity"] in ("CRITICAL", "HIGH", "MEDIUM")
    assert Decimal(hit["peak_cost"]) > Decimal(hit["historical_average"])

    roi = await wait_for(
        worker,
        "/finops/roi/?hours=48",
        lambda b: len(b["units"]) == len(demo.UNITS) and all(Decimal(u["revenue"]) > 0 for u in b["units"]),
    )
    for unit in roi["units"]:
        assert Decimal(unit["revenue"]) > 0 and unit["roi"] is not None
        cost, revenue = Decimal(unit["cost"]), Decimal(unit["revenue"])
        assert abs(unit["roi"] - float((revenue - cost) / cost)) < 1e-6

    budgets = worker.get("/finops/budgets/")[1]
    rows = {u["business_unit"]: u for u in budgets["units"]}
    month = budgets["month"]
    month_spend = sum(
        (got[k] for k in expected if k[0] == "ecommerce" and k[1][:7] == month), Decimal(0)
    )  # the sum of the unit's window totals (each rounded to 4 places) this month
    assert Decimal(rows["ecommerce"]["spent"]) == month_spend
    assert rows["ecommerce"]["budget"] == "5000.0000"
    assert rows["analytics"]["burn_percent"] > 100
    await wait_for(worker, "/finops/budgets/", lambda b: any(u["alerts"] for u in b["units"]))

    recs = await wait_for(worker, "/finops/recommendations/", lambda b: b["count"] >= 1)
    assert Decimal(recs["monthly_saving_total"]) > 0
    assert recs["recommendations"][0]["kind"] in ("rightsize", "stop_idle", "spot", "storage_tier")

    dead = await wait_for(worker, "/finops/deadletters/", lambda b: b["total"] >= 1)
    assert "not valid JSON" in dead["recent"][0]["error"]
    assert "raw" not in dead["recent"][0]

    kpis = worker.get("/finops/kpis/")[1]
    assert kpis["detection_latency_ms"]["samples"] >= 1 and kpis["detection_latency_ms"]["p95"] is not None
    assert kpis["cost_attribution"]["allocated_share"] == 1.0
    assert kpis["roi_freshness_seconds"] is not None and kpis["roi_freshness_seconds"] < 600
    assert kpis["open_anomalies"] >= 0 and kpis["deadletters"] >= 1
    assert "forecast_error" in kpis

    health = await wait_for(worker, "/finops/health/", lambda h: h["results_consumer_lag"] == 0, timeout=30)
    assert health["broker_reachable"] is True and health["results_view"]["caught_up"]
    _, metrics = worker.get("/metrics")
    assert "finops_results_view_lag" in metrics
    assert worker.get("/finops/anomalies/?status=nope")[0] == 400
    assert worker.get("/finops/windows/?hours=-1")[0] == 400
