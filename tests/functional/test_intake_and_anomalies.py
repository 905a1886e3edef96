"""Intake (its batch processing, sends captured) and the anomaly agent through test_context."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson

from finops_app import kafka, topics
from finops_app.agents.common import groups
from finops_app.agents.intake import Intake
from finops_app.core.validate import Limits, iso, parse_cost

LIMITS = Limits(currencies=frozenset({"USD"}))
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def records(settings: Any, topic: str, *values: bytes, partition: int = 0) -> list[Any]:
    """ConsumerRecord-like records of ``topic`` at offsets 0, 1, ..."""
    name = kafka.topic_name(settings, topic)
    return [
        SimpleNamespace(topic=name, partition=partition, offset=i, timestamp=T0 + i, key=None, value=v)
        for i, v in enumerate(values)
    ]


async def test_cost_intake_routes_valid_and_dead_letters_invalid(app_factory) -> None:
    _, ctx, sent = app_factory()
    good = {
        "event_id": "g1",
        "timestamp": "2026-01-01 09:30:00",
        "service": "rds",
        "cost_amount": 1.5,
        "business_unit": "analytics",
        "region": "eu-west-1",
    }
    batch = records(
        ctx.settings,
        topics.COST_EVENTS,
        orjson.dumps(good),
        b'{"event_id": "x", "timestamp": "2026-01-01", "service": "s3", "cost_amount": "NaN"}',
        b"\xff\xfe not utf-8",
    )
    await Intake(ctx).process(batch)
    ((unit_key, unit_env),) = sent.records[topics.BY_UNIT]  # no producer here: keyed records
    ((kind, src, part, key, items),) = groups(unit_env)
    assert (unit_key, kind, src, part, key) == ("analytics", "cost", "c", 0, "analytics")
    ((offset, _, body),) = items  # the one valid event, with its source offset
    assert offset == 0 and body["cost_amount"] == "1.5"
    ((svc_key, svc_env),) = sent.records[topics.BY_SERVICE]
    assert svc_key == "rds" and [g[3] for g in groups(svc_env)] == ["rds"]
    dead = sent.on(topics.DEADLETTER)
    assert [d["error"] for d in dead] == [
        "cost_amount: must be finite",
        "not valid JSON: str is not valid UTF-8: surrogates not allowed: line 1 column 1 (char 0)",
    ]
    assert [d["field"] for d in dead] == ["cost_amount", None]
    assert [d["offset"] for d in dead] == [1, 2] and dead[1]["raw_size"] == len(b"\xff\xfe not utf-8")


async def test_business_intake_pseudonymises_and_scrubs(app_factory) -> None:
    _, ctx, sent = app_factory()
    raw = {
        "event_id": "b1",
        "timestamp": "2026-01-01 09:30:00",
        "user_id": "user_12345",
        "revenue_impact": 199.99,
        "business_unit": "ecommerce",
        "metadata": {"order_id": "ORD-1", "email": "a@b.c", "items_count": 3},
    }
    await Intake(ctx).process(records(ctx.settings, topics.BUSINESS_EVENTS_RAW, orjson.dumps(raw)))
    ((key, value),) = sent.records[topics.BUSINESS_EVENTS]
    assert key == value["user_id"] and value["user_id"].startswith("p_") and "12345" not in value["user_id"]
    assert "email" not in value["metadata"] and value["metadata"]["items_count"] == 3
    assert value["metadata"]["order_id"].startswith("p_")
    assert b"user_12345" not in orjson.dumps(value)


def _cost(i: int, ts: int, amount: float, unit: str = "ecommerce") -> bytes:
    body = parse_cost(
        {
            "event_id": f"a{i}",
            "timestamp": iso(ts),
            "service": "ec2",
            "cost_amount": f"{amount:.4f}",
            "business_unit": unit,
            "region": "us-east-1",
            "resource_id": f"i-{unit}",
        },
        LIMITS,
    )
    return orjson.dumps({"k": "cost", "p": 0, "o": i, "t": ts, "e": body})


async def test_spike_after_warm_up_opens_one_anomaly_with_drivers(app_factory) -> None:
    app, _, sent = app_factory(
        anomaly_bucket_seconds=300, allowed_lateness_seconds=0, anomaly_region_series=False
    )
    bucket = 300_000
    async with app.agents["cost_anomalies"].test_context() as a:
        n = 0
        for b in range(60):  # 5 hours of steady cost: ~10 per bucket in two units
            for unit in ("ecommerce", "analytics"):
                n += 1
                await a.put(_cost(n, T0 + b * bucket + 1000, 5.0 + (b % 3) * 0.1, unit), key=b"ec2")
        assert sent.on(topics.ANOMALIES) == []
        spike_at = T0 + 60 * bucket + 1000
        n += 1
        await a.put(_cost(n, spike_at, 80.0, "ecommerce"), key=b"ec2")
        await a.put(_cost(n + 1, spike_at + 1000, 5.0, "analytics"), key=b"ec2")  # analytics stays normal
        # the next bucket closes the spike's bucket: the alert comes early (running sum over the bound)
        # when the detector is up to date, else at the latest when the bucket is scored
        await a.put(_cost(n + 2, spike_at + bucket, 5.0, "ecommerce"), key=b"ec2")
        await a.put(_cost(n + 3, spike_at + bucket + 1000, 5.0, "analytics"), key=b"ec2")
        await sent.wait_for(lambda s: len(s.on(topics.ANOMALIES)) >= 2)
    opened = [r for r in sent.on(topics.ANOMALIES) if r["status"] == "open"]
    by_series = {r["series"]: r for r in opened}
    assert set(by_series) == {"ec2", "ec2|bu=ecommerce"}
    top = by_series["ec2"]
    assert top["severity"] == "CRITICAL" and top["deviation_percent"] > 100
    assert float(top["current_cost"]) >= 80 and 9 < float(top["historical_average"]) < 11.5
    assert top["drivers"][0] == {**top["drivers"][0], "dimension": "business_unit", "value": "ecommerce"}
    assert top["window_start"] == iso(spike_at - 1000)
