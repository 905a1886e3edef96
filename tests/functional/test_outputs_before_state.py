"""A stateful agent writes the state that records a batch's outputs only once the broker has
acknowledged those outputs (``agents.common.delivered``).

Otherwise a changelog record could reach the broker before an output sent earlier in the same
batch (the producer sends each partition when its own linger expires); a worker killed between the
two restores a state that says "emitted" and skips the replayed input as already applied, and the
output is lost (a window total never published after a SIGKILL restart: seen in
tests/integration/test_restart_exactness.py). Here the sends return delivery futures that the test
holds: while they are pending, the unit's and the service's stored state must not move.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson

from finops_app import topics
from tests.functional.test_intake_and_anomalies import T0, _cost
from tests.functional.test_unit_windows import cost, env


class Gate:
    """``ctx.send`` whose delivery futures resolve at once, or, while held, when released."""

    def __init__(self, sent: Any) -> None:
        self.sent = sent
        self.held = False
        self.pending: list[asyncio.Future[None]] = []

    async def send(self, topic: Any, key: Any, value: bytes, partition: Any = None) -> asyncio.Future[None]:
        key = key.decode() if isinstance(key, bytes) else key
        self.sent.records.setdefault(topic.get_topic_name(), []).append((key, orjson.loads(value)))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.held:
            self.pending.append(fut)
        else:
            fut.set_result(None)
        return fut

    def release(self) -> None:
        self.held = False
        for fut in self.pending:
            fut.set_result(None)
        self.pending.clear()


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Writes:
    """Every table write (key, source offsets in the value) from now on.

    The ``memory://`` store keeps the very objects the agent mutates, so the stored values cannot
    show when a write happened; the writes themselves are recorded (``Table.__setitem__``).
    """

    def __init__(self, table: Any, monkeypatch: Any) -> None:
        self.log: list[tuple[str, dict[str, int]]] = []
        cls = type(table)
        real = cls.__setitem__

        def setitem(tbl: Any, key: Any, value: Any) -> None:
            if tbl is table:
                self.log.append((key, dict(value.get("h") or {}) if isinstance(value, dict) else {}))
            real(tbl, key, value)

        monkeypatch.setattr(cls, "__setitem__", setitem)

    def applied(self, key: str) -> dict[str, int]:
        """The source offsets of the last write of ``key`` (what ``fresh_items`` would count)."""
        return next((h for k, h in reversed(self.log) if k == key), {})


async def test_unit_state_waits_for_its_window_totals(app_factory, monkeypatch) -> None:
    app, ctx, sent = app_factory(
        window_seconds=300, roi_window_seconds=600, allowed_lateness_seconds=0, idle_timeout_seconds=0.0
    )
    gate = Gate(sent)
    monkeypatch.setattr(ctx, "send", gate.send)
    writes = Writes(ctx.tables.unit_state, monkeypatch)
    async with app.agents["unit_windows"].test_context() as a:
        await a.put(env("cost", cost(1, 1, "10.10"), 0, 1), key=b"ecommerce", partition=0)
        await eventually(lambda: writes.applied("ecommerce") == {"c0": 1}, "the first event applied")
        gate.held = True
        # 00:07 closes [00:00, 00:05): a window total goes out, its delivery held
        await a.put(env("cost", cost(2, 7, "1.00"), 0, 2), key=b"ecommerce", partition=0)
        await sent.wait_for(lambda s: len(s.on(topics.AGGREGATIONS)) >= 1)
        await asyncio.sleep(0.3)
        assert gate.pending, "the window total's delivery is held"
        assert writes.applied("ecommerce") == {"c0": 1}, "state written before its output was acknowledged"
        gate.release()
        await eventually(lambda: writes.applied("ecommerce") == {"c0": 2}, "the state once acknowledged")
    (total,) = sent.on(topics.AGGREGATIONS)
    assert (total["window_start"], total["total_cost"]) == ("2026-01-01T00:00:00.000Z", "10.1000")


async def test_series_state_waits_for_its_anomaly_records(app_factory, monkeypatch) -> None:
    app, ctx, sent = app_factory(
        anomaly_bucket_seconds=300, allowed_lateness_seconds=0, anomaly_region_series=False
    )
    gate = Gate(sent)
    monkeypatch.setattr(ctx, "send", gate.send)
    writes = Writes(ctx.tables.series_state, monkeypatch)
    bucket = 300_000
    async with app.agents["cost_anomalies"].test_context() as a:
        n = 0
        for b in range(60):  # 5 hours of steady cost
            n += 1
            await a.put(_cost(n, T0 + b * bucket + 1000, 5.0 + (b % 3) * 0.1), key=b"ec2")
        await eventually(lambda: writes.applied("ec2") == {"c0": n}, "the warm-up applied")
        assert sent.on(topics.ANOMALIES) == []
        gate.held = True
        spike_at = T0 + 60 * bucket + 1000
        await a.put(_cost(n + 1, spike_at, 80.0), key=b"ec2")
        await a.put(_cost(n + 2, spike_at + bucket, 5.0), key=b"ec2")  # closes the spike's bucket
        await sent.wait_for(lambda s: any(r["status"] == "open" for r in s.on(topics.ANOMALIES)))
        await asyncio.sleep(0.3)
        assert gate.pending
        assert writes.applied("ec2") == {"c0": n}, "state written before its anomaly was acknowledged"
        gate.release()
        await eventually(lambda: writes.applied("ec2") == {"c0": n + 2}, "the state once acknowledged")


async def test_budget_alerts_wait_too_and_the_state_keeps_only_alert_keys(app_factory, monkeypatch) -> None:
    """A budget alert's delivery is held like a window total's; the unit's record of sent alerts
    keeps the alerts' keys only (a delivery future stored in it broke the changelog's JSON: CI,
    2026-11-28), and every value written is JSON as the changelog needs."""
    from decimal import Decimal

    app, ctx, sent = app_factory(
        window_seconds=300,
        roi_window_seconds=600,
        allowed_lateness_seconds=0,
        idle_timeout_seconds=0.0,
        budgets={"ecommerce": Decimal("5")},
    )
    gate = Gate(sent)
    monkeypatch.setattr(ctx, "send", gate.send)
    writes = Writes(ctx.tables.unit_state, monkeypatch)
    written: list[Any] = []
    real = type(ctx.tables.unit_state).__setitem__

    def encode_each(tbl: Any, key: Any, value: Any) -> None:
        written.append(orjson.dumps(value))  # raises on a value the changelog could not carry
        real(tbl, key, value)

    monkeypatch.setattr(type(ctx.tables.unit_state), "__setitem__", encode_each)
    async with app.agents["unit_windows"].test_context() as a:
        gate.held = True
        await a.put(env("cost", cost(1, 1, "10.10"), 0, 1), key=b"ecommerce", partition=0)
        await sent.wait_for(lambda s: len(s.on(topics.BUDGET_ALERTS)) >= 1)
        await asyncio.sleep(0.3)
        assert gate.pending and not writes.applied("ecommerce"), (
            "state written before its alert was acknowledged"
        )
        gate.release()
        await eventually(lambda: writes.applied("ecommerce") == {"c0": 1}, "the state once acknowledged")
    state = ctx.tables.unit_state["ecommerce"]
    assert state["ma"] and all(isinstance(k, str) for keys in state["ma"].values() for k in keys), state["ma"]
    assert written
