"""A real ``finops worker`` on the real broker: cost events in, exact window totals out; a
malformed message lands on the dead-letter topic with its reason and the worker keeps going."""

from __future__ import annotations

import base64
from decimal import Decimal

from finops_app import topics
from tests.support.kafka import produce, read_topic

BASE_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def cost(i: int, unit: str, minute: int, amount: str) -> dict[str, object]:
    return {
        "event_id": f"e2e-{i}",
        "timestamp": f"2026-01-01 00:{minute:02d}:00",  # the article's naive format, taken as UTC
        "event_type": "cloud_cost_incurred",
        "service": "ec2",
        "region": "us-east-1",
        "cost_amount": amount,
        "resource_id": f"i-{i % 3}",
        "business_unit": unit,
        "project_id": "p",
        "environment": "production",
        "metadata": {},
    }


async def test_worker_totals_windows_and_dead_letters(settings_factory, worker_factory) -> None:
    settings = settings_factory(window_seconds=300, allowed_lateness_seconds=600, roi_window_seconds=600)
    worker = worker_factory.start(settings)
    worker.wait_healthy()
    events = [cost(i, "ecommerce" if i % 2 else "analytics", i % 10, f"{i}.0125") for i in range(40)]
    await produce(settings, topics.COST_EVENTS, [(e["resource_id"], e) for e in events[:20]])
    await produce(settings, topics.COST_EVENTS, [("i-bad", b'{"event_id": "broken", "cost_amount": ')])
    await produce(settings, topics.COST_EVENTS, [(e["resource_id"], e) for e in events[20:]])
    # an event 20 minutes later closes both 5-minute windows of each unit
    closer = [cost(100 + k, unit, 25, "0") for k, unit in enumerate(("ecommerce", "analytics"))]
    await produce(settings, topics.COST_EVENTS, [(e["resource_id"], e) for e in closer])

    expected: dict[tuple[str, str], Decimal] = {}
    for e in events:
        minute = int(str(e["timestamp"])[14:16])
        start = f"2026-01-01T00:{minute - minute % 5:02d}:00.000Z"
        key = (str(e["business_unit"]), start)
        expected[key] = expected.get(key, Decimal(0)) + Decimal(str(e["cost_amount"]))

    totals = await read_topic(settings, topics.AGGREGATIONS, lambda rs: len(rs) >= len(expected), timeout=90)
    got = {(t["business_unit"], t["window_start"]): Decimal(t["total_cost"]) for t in totals}
    assert got == expected, worker.log_tail()
    assert all(t["revision"] == 1 for t in totals)
    assert sum(t["event_count"] for t in totals) == len(events)

    dead = await read_topic(settings, topics.DEADLETTER, lambda rs: len(rs) >= 1, timeout=30)
    assert len(dead) == 1
    assert dead[0]["source_topic"].endswith(topics.COST_EVENTS)
    assert "not valid JSON" in dead[0]["error"]
    assert base64.b64decode(dead[0]["raw"]).startswith(b'{"event_id": "broken"')
    assert worker.alive()
    status, health = worker.get("/finops/health/")
    assert status == 200 and health["recovery_finished"]
    # intake: its own consumer group read every input record and committed what it acknowledged
    intake = health["intake"]
    assert intake["group"] == f"{settings.app_id}-intake" and intake["records"] == len(events) + 3, intake
    assert intake["rewinds"] == 0 and intake["pending_batches"] == 0 and intake["commits"] >= 1, intake
    assert any(p.startswith(f"{settings.topic_prefix}{topics.COST_EVENTS}[") for p in intake["assigned"]), (
        intake
    )
