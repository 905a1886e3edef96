"""Kill -9 a worker mid-stream, restart it: window totals and ROI stay exact, and windows opened
before the crash still close (by idle ticks, with no further events). Run with intake in its child
process (the default) and in the worker's event loop: the two commit and re-read differently."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest

from finops_app import topics
from tests.support.faults import latest  # the later record wins on equal revisions
from tests.support.kafka import produce, read_topic

UNITS = ("ecommerce", "analytics", "platform")


def cost(i: int) -> dict[str, object]:
    minute, second = divmod(i * 7, 60)  # ~8.6 events per minute, in time order
    return {
        "event_id": f"rx-{i}",
        "timestamp": f"2026-02-01T10:{minute % 60:02d}:{second:02d}Z",
        "service": ("ec2", "rds", "s3")[i % 3],
        "cost_amount": f"{(i % 13) + 0.0137:.4f}",
        "business_unit": UNITS[i % len(UNITS)],
        "resource_id": f"r-{i % 11}",
    }


def revenue(i: int) -> dict[str, object]:
    minute, second = divmod(i * 11, 60)
    return {
        "event_id": f"rv-{i}",
        "timestamp": f"2026-02-01T10:{minute % 60:02d}:{second:02d}Z",
        "user_id": f"u{i}",
        "revenue_impact": f"{(i % 5) * 3 + 1}.25",
        "business_unit": UNITS[i % len(UNITS)],
    }


@pytest.mark.parametrize("intake_process", [True, False], ids=["intake-child", "intake-in-loop"])
async def test_sigkill_mid_stream_keeps_totals_exact(
    settings_factory, worker_factory, intake_process: bool
) -> None:
    settings = settings_factory(
        window_seconds=300,
        roi_window_seconds=600,
        allowed_lateness_seconds=0,
        idle_timeout_seconds=2.0,
        intake_process=intake_process,
    )
    costs = [cost(i) for i in range(240)]  # 10:00 .. 10:28
    # one zero-cost event per unit at 10:29:59: the idle timer extrapolates event time at wall-clock
    # speed from the last event, so the last windows close a second after the partition falls idle
    costs += [
        {
            **cost(0),
            "event_id": f"rx-end-{u}",
            "timestamp": "2026-02-01T10:29:59Z",
            "cost_amount": "0",
            "business_unit": u,
        }
        for u in UNITS
    ]
    revs = [revenue(i) for i in range(150)]
    expected_cost: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    expected_roi: dict[tuple[str, str], tuple[Decimal, Decimal]] = defaultdict(
        lambda: (Decimal(0), Decimal(0))
    )
    for c in costs:
        m = int(str(c["timestamp"])[14:16])
        expected_cost[(str(c["business_unit"]), f"2026-02-01T10:{m - m % 5:02d}:00.000Z")] += Decimal(
            str(c["cost_amount"])
        )
        k = (str(c["business_unit"]), f"2026-02-01T10:{m - m % 10:02d}:00.000Z")
        expected_roi[k] = (expected_roi[k][0] + Decimal(str(c["cost_amount"])), expected_roi[k][1])
    for r in revs:
        m = int(str(r["timestamp"])[14:16])
        k = (str(r["business_unit"]), f"2026-02-01T10:{m - m % 10:02d}:00.000Z")
        expected_roi[k] = (expected_roi[k][0], expected_roi[k][1] + Decimal(str(r["revenue_impact"])))

    worker = worker_factory.start(settings)
    worker.wait_healthy()
    await produce(settings, topics.COST_EVENTS, [(str(c["resource_id"]), c) for c in costs[:150]])
    await produce(settings, topics.BUSINESS_EVENTS, [(str(r["user_id"]), r) for r in revs[:90]])
    await read_topic(settings, topics.AGGREGATIONS, lambda rs: len(rs) >= 3, timeout=60)
    worker.kill()  # SIGKILL: no flush, no commit, no clean shutdown

    worker = worker_factory.start(settings)
    worker.wait_healthy()
    await produce(settings, topics.COST_EVENTS, [(str(c["resource_id"]), c) for c in costs[150:]])
    await produce(settings, topics.BUSINESS_EVENTS, [(str(r["user_id"]), r) for r in revs[90:]])

    def complete(rs: list[dict]) -> bool:
        got = latest(rs)
        return all(k in got and Decimal(got[k]["total_cost"]) == v for k, v in expected_cost.items())

    totals = await read_topic(settings, topics.AGGREGATIONS, complete, timeout=120)
    final = {k: Decimal(r["total_cost"]) for k, r in latest(totals).items()}
    assert final == dict(expected_cost), {
        k: (final.get(k), v) for k, v in expected_cost.items() if final.get(k) != v
    }
    counts = {k: r["event_count"] for k, r in latest(totals).items()}
    assert sum(counts.values()) == len(costs)

    want_roi = {
        k: (c.quantize(Decimal("0.0001")), v.quantize(Decimal("0.0001")))
        for k, (c, v) in expected_roi.items()
    }

    def roi_of(rs: list[dict]) -> dict[tuple[str, str], tuple[Decimal, Decimal]]:
        return {k: (Decimal(r["cost"]), Decimal(r["revenue"])) for k, r in latest(rs).items()}

    # a ROI window can close on cost before its revenue arrives (the business source is not known
    # yet) and be corrected (revision + 1) when the revenue comes: wait for the final figures. A
    # window the killed worker emitted just before it died (its state write lost) is emitted again
    # with the same revision and the revenue in it: ``latest`` takes the later record, as the sink's
    # MERGE and the dashboard do (CI, 2026-11-28: the first record won and the wait timed out)
    rois = await read_topic(
        settings,
        topics.ROI,
        lambda rs: all(roi_of(rs).get(k) == v for k, v in want_roi.items()),
        timeout=90,
    )
    assert roi_of(rois) == want_roi
