"""unit_windows through test_context: exact totals, ROI join, duplicates ignored, late corrections."""

from __future__ import annotations

import orjson

from finops_app import topics
from finops_app.core.validate import Limits, parse_business, parse_cost

LIMITS = Limits(currencies=frozenset({"USD"}))


def env(kind: str, body: dict, partition: int, offset: int) -> bytes:
    return orjson.dumps({"k": kind, "p": partition, "o": offset, "t": 0, "e": body})


def cost(i: int, minute: int, amount: str, unit: str = "ecommerce") -> dict:
    return parse_cost(
        {
            "event_id": f"c{i}",
            "timestamp": f"2026-01-01 00:{minute:02d}:00",
            "service": "ec2",
            "cost_amount": amount,
            "business_unit": unit,
        },
        LIMITS,
    )


def biz(i: int, minute: int, revenue: str, unit: str = "ecommerce") -> dict:
    return parse_business(
        {
            "event_id": f"b{i}",
            "timestamp": f"2026-01-01 00:{minute:02d}:30",
            "revenue_impact": revenue,
            "business_unit": unit,
            "user_id": "p_" + "0" * 32,
        },
        LIMITS,
    )


async def test_totals_roi_duplicates_and_late_correction(app_factory) -> None:
    # idle_timeout 0: no source alignment (every source counts as idle), the plain max watermark
    app, ctx, sent = app_factory(
        window_seconds=300, roi_window_seconds=600, allowed_lateness_seconds=60, idle_timeout_seconds=0.0
    )
    agent = app.agents["unit_windows"]
    async with agent.test_context() as a:
        records = [
            env("cost", cost(1, 1, "10.10"), 0, 1),
            env("cost", cost(2, 3, "5.05"), 0, 2),
            env("cost", cost(2, 3, "5.05"), 0, 2),  # redelivered: same source offset
            env("biz", biz(1, 2, "30.00"), 1, 7),
            env("cost", cost(3, 7, "1.00"), 0, 3),
            env("cost", cost(4, 12, "2.00"), 0, 4),  # watermark 00:12 closes [00:00, 00:05)
        ]
        for r in records:
            await a.put(r, key=b"ecommerce", partition=0)
        await sent.wait_for(lambda s: len(s.on(topics.AGGREGATIONS)) >= 2 and len(s.on(topics.ROI)) >= 1)
        first, second = sent.on(topics.AGGREGATIONS)
        assert first["window_start"] == "2026-01-01T00:00:00.000Z"
        assert (first["total_cost"], first["event_count"], first["revision"]) == ("15.1500", 2, 1)
        assert (second["window_start"], second["total_cost"]) == ("2026-01-01T00:05:00.000Z", "1.0000")
        (roi,) = sent.on(topics.ROI)
        assert (roi["cost"], roi["revenue"], roi["cost_events"], roi["revenue_events"]) == (
            "16.1500",
            "30.0000",
            3,
            1,
        )
        assert abs(roi["roi"] - (30 - 16.15) / 16.15) < 1e-9 and roi["unit_cost"] == "16.1500"

        await a.put(
            env("cost", cost(5, 4, "0.85"), 0, 5), key=b"ecommerce", partition=0
        )  # late, within retention
        await sent.wait_for(lambda s: len(s.on(topics.AGGREGATIONS)) >= 3 and len(s.on(topics.ROI)) >= 2)
        correction = sent.on(topics.AGGREGATIONS)[2]
        assert (correction["window_start"], correction["total_cost"]) == (
            "2026-01-01T00:00:00.000Z",
            "16.0000",
        )
        assert correction["revision"] == 2 and correction["late"] is True
        roi2 = sent.on(topics.ROI)[1]
        assert (roi2["cost"], roi2["revision"]) == ("17.0000", 2)
        state = ctx.tables.unit_state["ecommerce"]
        assert state["h"] == {"c0": 5, "b1": 7}


async def test_watermark_waits_for_the_slowest_upstream_partition(app_factory) -> None:
    app, _, sent = app_factory(
        window_seconds=300, roi_window_seconds=600, allowed_lateness_seconds=0, idle_timeout_seconds=60.0
    )
    async with app.agents["unit_windows"].test_context() as a:
        await a.put(env("cost", cost(1, 1, "1"), 0, 1), key=b"ecommerce", partition=0)  # source c0 at 00:01
        await a.put(env("cost", cost(2, 2, "2"), 1, 1), key=b"ecommerce", partition=0)  # source c1 at 00:02
        await a.put(env("cost", cost(3, 16, "4"), 0, 2), key=b"ecommerce", partition=0)  # c0 runs ahead
        await a.put(
            env("cost", cost(4, 3, "8"), 1, 2), key=b"ecommerce", partition=0
        )  # c1 still in 00:00-00:05
        await a.put(env("cost", cost(5, 6, "16"), 1, 3), key=b"ecommerce", partition=0)  # c1 passes 00:05
        await sent.wait_for(lambda s: len(s.on(topics.AGGREGATIONS)) >= 1)
    (total,) = sent.on(topics.AGGREGATIONS)  # one final figure, no correction: c1's 00:03 was not late
    assert (total["window_start"], total["total_cost"], total["revision"]) == (
        "2026-01-01T00:00:00.000Z",
        "11.0000",
        1,
    )
