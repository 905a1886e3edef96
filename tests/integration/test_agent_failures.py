"""A stateful agent whose batch raises must not lose the batch.

Faust's ``take_events`` acks a batch's records in the ``finally`` of its ``yield``, so an agent
that let an exception out would have its in-flight records committed as done, and the agent
restarted by Faust's supervisor would go on with the next batch: those events never counted.
``agents.common.run_batches`` retries the batch in place (the state is written only after the
batch's outputs were acknowledged, so a retry starts from the state before it) and, when the
failure outlasts ``FINOPS_AGENT_RETRY_SECONDS``, stops the worker with exit code 1 without
acking the batch, so that the next worker replays it.

The fault is injected into a real ``finops worker`` process through a ``sitecustomize`` module on
its PYTHONPATH: while a marker file exists, every unit state the unit agent loads raises.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

from finops_app import topics
from tests.integration.test_restart_exactness import UNITS, cost
from tests.support.faults import latest
from tests.support.kafka import produce, read_topic

SITECUSTOMIZE = """
import os

_MARK = os.environ.get("TEST_FAULT_FILE")
if _MARK:
    import finops_app.agents.units as _units

    _real = _units.load_unit

    def _load_unit(table, unit):
        if os.path.exists(_MARK):
            raise RuntimeError("injected fault: unit state unreadable")
        return _real(table, unit)

    _units.load_unit = _load_unit
"""


def fault_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    mark = tmp_path / "fault-on"
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "TEST_FAULT_FILE": str(mark)}, mark


def workload() -> tuple[list[dict[str, object]], dict[tuple[str, str], Decimal]]:
    costs = [cost(i) for i in range(120)]  # 10:00 .. 10:13
    costs += [  # one zero-cost event per unit at 10:29:59 closes every window with data
        {
            **cost(0),
            "event_id": f"rx-end-{u}",
            "timestamp": "2026-02-01T10:29:59Z",
            "cost_amount": "0",
            "business_unit": u,
        }
        for u in UNITS
    ]
    expected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for c in costs:
        m = int(str(c["timestamp"])[14:16])
        key = (str(c["business_unit"]), f"2026-02-01T10:{m - m % 5:02d}:00.000Z")
        expected[key] += Decimal(str(c["cost_amount"]))
    return costs, dict(expected)


async def totals_exact(settings, expected, timeout: float) -> None:  # type: ignore[no-untyped-def]
    def complete(rs: list[dict]) -> bool:
        got = latest(rs)
        return all(k in got and Decimal(got[k]["total_cost"]) == v for k, v in expected.items())

    records = await read_topic(settings, topics.AGGREGATIONS, complete, timeout=timeout)
    final = {k: Decimal(r["total_cost"]) for k, r in latest(records).items()}
    assert final == expected, {k: (final.get(k), v) for k, v in expected.items() if final.get(k) != v}


async def wait_log(worker, text: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while text not in worker.log_tail(200_000):
        assert time.monotonic() < deadline, f"no {text!r} in the log:\n{worker.log_tail()}"
        await asyncio.sleep(0.2)


async def test_a_failing_batch_is_retried_and_then_stops_the_worker_uncommitted(
    settings_factory, worker_factory, tmp_path
) -> None:
    """A short fault: the batch is retried, health says so, the worker stays up. A fault outlasting
    FINOPS_AGENT_RETRY_SECONDS: the worker exits 1 without committing the batch. The next worker
    (the fault gone) replays it, and every window total counts each event once."""
    settings = settings_factory(
        window_seconds=300, allowed_lateness_seconds=0, idle_timeout_seconds=2.0, agent_retry_seconds=8.0
    )
    env, mark = fault_env(tmp_path)
    costs, expected = workload()
    worker = worker_factory.start(settings, extra_env=env)
    worker.wait_healthy()

    mark.touch()  # a short fault: ~3 s
    await produce(settings, topics.COST_EVENTS, [(str(c["resource_id"]), c) for c in costs[:40]])
    await wait_log(worker, "injected fault")
    await asyncio.sleep(2.0)  # several failed attempts
    status, health = worker.get("/finops/health/")
    assert status == 503 and health["status"] == "degraded", health
    failure = health["agent_failures"]["unit_windows"]
    assert failure["attempts"] >= 3 and "injected fault" in failure["error"], failure
    mark.unlink()
    await wait_log(worker, "passed at attempt")
    assert worker.alive()
    assert worker.get("/finops/health/")[1]["agent_failures"] == {}

    mark.touch()  # a fault past the retry time
    await produce(settings, topics.COST_EVENTS, [(str(c["resource_id"]), c) for c in costs[40:80]])
    assert worker.proc is not None
    code = await asyncio.to_thread(worker.proc.wait, 90)
    log = worker.log_tail(200_000)
    assert code == 1, log[-4000:]
    assert "stopping the worker without committing it" in log, log[-4000:]

    mark.unlink()
    worker = worker_factory.start(settings, extra_env=env)
    worker.wait_healthy()
    await produce(settings, topics.COST_EVENTS, [(str(c["resource_id"]), c) for c in costs[80:]])
    await totals_exact(settings, expected, timeout=90)
