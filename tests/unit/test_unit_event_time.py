"""Event time in the unit windows agent and its clocks: month ends, rebalances and retries.

The agent's ``process`` runs for real over a dict table with a context that records what is sent
(the style of test_agent_replays.py).
"""

from __future__ import annotations

import asyncio
from collections import namedtuple
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from finops_app.agents import common, ticks
from finops_app.agents import units as units_agent
from finops_app.tables.state import partition_key

T0 = 1_736_899_200_000  # 2025-01-15T00:00:00Z
FEB = 1_738_368_000_000  # 2025-02-01T00:00:00Z
MIN = 60_000


class Signal:
    """Enough of a Faust app signal: receivers connected, then sent to."""

    def __init__(self) -> None:
        self.receivers: list[Any] = []

    def connect(self, fn: Any) -> None:
        self.receivers.append(fn)

    def send(self) -> None:
        for fn in self.receivers:
            fn(None, revoked=set())


APPS: list[Any] = []  # every fake app made, last one last


def fake_app(**kw: Any) -> Any:
    APPS.append(SimpleNamespace(on_partitions_revoked=Signal(), on_partitions_assigned=Signal(), **kw))
    return APPS[-1]


def unit_agent(
    monkeypatch: pytest.MonkeyPatch, table: dict[str, Any], budgets: dict[str, Decimal] | None = None
) -> tuple[Any, list[tuple[str, str, dict[str, Any]]]]:
    captured: dict[str, Any] = {}
    sent: list[tuple[str, str, dict[str, Any]]] = []
    agents: list[Any] = []

    async def fake_run_batches(stream: Any, ctx: Any, agent: str, process: Any, within: Any = None) -> None:
        captured["process"] = process

    async def send(topic: Any, key: str, value: bytes, partition: int | None = None) -> None:
        sent.append((topic.get_topic_name(), key, orjson.loads(value)))

    def agent(topic: Any, name: str | None = None) -> Any:
        def deco(fn: Any) -> Any:
            agents.append(fn)
            return fn

        return deco

    def topic(name: str) -> Any:
        return SimpleNamespace(get_topic_name=lambda: name)

    settings = SimpleNamespace(
        allowed_lateness_seconds=60,
        window_retention_seconds=86_400,
        window_seconds=300,
        roi_window_seconds=1800,
        budgets=budgets or {},
        idle_timeout_seconds=30.0,
    )
    ctx = SimpleNamespace(
        app=fake_app(agent=agent),
        settings=settings,
        topics=SimpleNamespace(
            by_unit=topic("by-unit"),
            aggregations=topic("aggregations"),
            roi=topic("roi"),
            budget_alerts=topic("budget-alerts"),
            deadletter=topic("deadletter"),
        ),
        metrics=SimpleNamespace(inc=lambda *a, **k: None, observe=lambda *a, **k: None),
        tables=SimpleNamespace(unit_state=table),
        extras={},
        send=send,
    )
    monkeypatch.setattr(units_agent, "run_batches", fake_run_batches)
    units_agent.register(ctx, ticks.Clock())
    asyncio.run(agents[0](None))
    return captured["process"], sent


def cost(ts: int, amount: str) -> dict[str, Any]:
    return {"ts_ms": ts, "cost_amount": amount, "currency": "USD"}


def grp(offset: int, *groups: tuple[int, str, list[tuple[int, dict[str, Any]]]]) -> Any:
    """A by-unit partition envelope: (source partition, unit, [(source offset, body)]) per group."""
    value = orjson.dumps(
        {
            "k": "grp",
            "g": [["cost", "c", sp, unit, [[o, T0, b] for o, b in items]] for sp, unit, items in groups],
        }
    )
    msg = SimpleNamespace(key=None, partition=0, offset=offset, timestamp=T0 / 1000, topic="by-unit")
    return SimpleNamespace(value=value, message=msg)


# -- budget alerts of a month the watermark has left -----------------------------------------------


def test_budget_alert_for_a_month_is_sent_when_the_batch_crosses_into_the_next_month(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100 of spend on Jan 31 23:59 (the whole January budget) and 1 on Feb 1 00:01, in one batch:
    the watermark ends in February, and only February's spend was checked, so January's burn
    alerts were never sent (in two batches they were)."""
    process, sent = unit_agent(monkeypatch, {}, budgets={"u": Decimal(100)})
    asyncio.run(process(0, [grp(0, (0, "u", [(0, cost(FEB - MIN, "100")), (1, cost(FEB + MIN, "1"))]))]))
    alerts = {(a["month"], a["kind"], a["threshold_percent"]) for t, _, a in sent if t == "budget-alerts"}
    assert ("2025-01", "burn", 100) in alerts, alerts


# -- in-memory clocks across a partition's reassignment ---------------------------------------------


def test_source_clock_does_not_ignore_sources_after_the_partition_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Partition 0 is read here at wall time 0 (sources c0, c1), moves to another worker for an hour
    (c1 two minutes behind c0 there: its marks in the partition record say so) and comes back. The
    first batch here holds only c0. Without forgetting when c1 was last seen here (an hour ago) it
    counted as idle and the watermark jumped to c0, two minutes past c1; the unit agent forgets on
    every rebalance, as a worker new to the partition starts."""
    now = [1000.0]
    monkeypatch.setattr(common.time, "time", lambda: now[0])
    stale = common.SourceClock(30.0)
    prec: dict[str, Any] = {"wm": 0}
    stale.observe_source(prec, 0, "c0", T0)
    stale.observe_source(prec, 0, "c1", T0)
    assert stale.watermark(prec, 0, 0) == T0

    now[0] += 3600  # the other worker's hour
    prec = {"wm": T0 + 58 * MIN, "src": {"c0": T0 + 60 * MIN, "c1": T0 + 58 * MIN}}

    def first_batch(clock: common.SourceClock) -> int:
        p = orjson.loads(orjson.dumps(prec))
        clock.observe_source(p, 0, "c0", T0 + 61 * MIN)
        return clock.watermark(p, 0, p["wm"])

    assert first_batch(stale) == T0 + 61 * MIN  # what it did without the rebalance signal
    stale.forget()
    assert first_batch(stale) == T0 + 58 * MIN
    assert first_batch(common.SourceClock(30.0)) == T0 + 58 * MIN  # as a worker new to it


def test_the_unit_agent_forgets_its_source_clock_on_every_rebalance(monkeypatch: pytest.MonkeyPatch) -> None:
    unit_agent(monkeypatch, {})
    app = APPS[-1]
    for signal in (app.on_partitions_revoked, app.on_partitions_assigned):
        assert any(isinstance(getattr(r, "__self__", None), common.SourceClock) for r in signal.receivers)


TP = namedtuple("TP", "topic partition")


def test_no_tick_for_a_partition_that_just_came_back_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Partition 0 was last observed here at wall 0 with watermark T0; another worker then had it
    for an hour of real events whose event time reached only T0 + 5 min (its record says so). Back
    here, the first timer run sent a tick of T0 + 1 h (extrapolated from this worker's old clock),
    55 minutes past the partition's real progress. The clock is now dropped on every rebalance and
    started again from the record, as on a worker new to the partition."""
    now = [0.0]
    clock = ticks.Clock(now=lambda: now[0])
    clock.observe("by-unit", 0, T0, T0)
    now[0] = 3600.0
    table = {partition_key(0): {"wm": T0 + 5 * MIN, "src": {"c0": T0 + 5 * MIN}, "due": {}}}

    sent: list[Any] = []
    timers: list[Any] = []

    async def send(topic: Any, key: Any, value: bytes, partition: int | None = None) -> None:
        sent.append(orjson.loads(value)["wm"])

    def timer(interval: float, name: str | None = None) -> Any:
        def deco(fn: Any) -> Any:
            timers.append(fn)
            return fn

        return deco

    by_unit = SimpleNamespace(get_topic_name=lambda: "by-unit")
    by_service = SimpleNamespace(get_topic_name=lambda: "by-service")
    ctx = SimpleNamespace(
        app=fake_app(timer=timer, assignor=SimpleNamespace(assigned_actives=lambda: {TP("by-unit", 0)})),
        settings=SimpleNamespace(idle_timeout_seconds=30.0),
        topics=SimpleNamespace(by_unit=by_unit, by_service=by_service),
        metrics=SimpleNamespace(inc=lambda *a, **k: None),
        send=send,
    )
    ticks.register(ctx, clock, {"by-unit": table, "by-service": {}})
    ctx.app.on_partitions_assigned.send()  # the partition comes back
    asyncio.run(timers[0]())
    assert sent == [], [(wm - T0) // MIN for wm in sent]
    now[0] += 31.0  # idle from here on: ticks from the record's watermark, not from an hour ago
    asyncio.run(timers[0]())
    assert [(wm - T0) // 1000 for wm in sent] == [5 * 60 + 31]


# -- a retried batch repeats its outputs -------------------------------------------------------------


class FailOnce(dict):  # type: ignore[type-arg]
    """A table whose first write of ``key`` fails (the batch fails between two unit writes)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key, self.failed = key, False

    def __setitem__(self, k: str, v: Any) -> None:
        if k == self.key and not self.failed and self.armed:
            self.failed = True
            raise RuntimeError("write failed")
        super().__setitem__(k, orjson.loads(orjson.dumps(v)))

    def get(self, k: str, default: Any = None) -> Any:  # a fresh copy per read, as RocksDB gives
        v = super().get(k, default)
        return orjson.loads(orjson.dumps(v)) if v is not None else v

    armed = False


def test_a_retried_batch_repeats_its_outputs_with_the_same_revisions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch failing between two unit writes is retried, and its outputs must repeat with the same
    revisions. Units a (source c1) and b (source c0): batch 2 moves both sources past window 0's
    close and emits a/0 and b/0 (revision 1, b's cost 1); the write of b fails after a's. On the
    retry a's events are repeats; their event time must still move c1, or the watermark stays at
    batch 1's, b/0 stays open, and a later event for it emitted b/0 again as revision 1 with cost 6
    instead of a revision-2 correction."""
    table = FailOnce("b")
    process, sent = unit_agent(monkeypatch, table)
    asyncio.run(
        process(0, [grp(0, (1, "a", [(0, cost(T0 + 100, "1"))]), (0, "b", [(0, cost(T0 + 100, "1"))]))])
    )
    table.armed = True
    batch2 = [grp(1, (1, "a", [(1, cost(T0 + 400_000, "1"))]), (0, "b", [(1, cost(T0 + 400_000, "1"))]))]
    with pytest.raises(RuntimeError):
        asyncio.run(process(0, batch2))
    asyncio.run(process(0, batch2))  # the retry
    asyncio.run(
        process(0, [grp(2, (1, "a", [(2, cost(T0 + 400_000, "1"))]), (0, "b", [(2, cost(T0 + 200, "5"))]))])
    )
    b0 = [
        (r["revision"], r["total_cost"])
        for t, k, r in sent
        if t == "aggregations" and k == "b" and r["window_start"].endswith("T00:00:00.000Z")
    ]
    # the retry repeats revision 1 as it was; the late event is the revision-2 correction
    assert b0 == [(1, "1.0000"), (1, "1.0000"), (2, "6.0000")], b0
