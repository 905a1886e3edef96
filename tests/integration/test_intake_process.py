"""Intake in a child process of the worker (FINOPS_INTAKE_PROCESS): same results, supervised.

A real ``finops worker`` on the real broker with ``intake_process`` on: window totals exact, a bad
record dead-lettered, the child's counters on the worker's /metrics and its status in health; the
child killed mid-stream is started again and nothing is counted twice or lost; the worker killed
with SIGKILL takes the child with it (no orphan keeps consuming).
"""

from __future__ import annotations

import os
import signal
import time
from decimal import Decimal

from finops_app import kafka, topics
from tests.support.kafka import produce, read_topic


def cost(i: int, unit: str, minute: int, amount: str) -> dict[str, object]:
    return {
        "event_id": f"ip-{i}",
        "timestamp": f"2026-01-01 00:{minute:02d}:00",
        "service": "ec2",
        "cost_amount": amount,
        "resource_id": f"i-{i % 5}",
        "business_unit": unit,
    }


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is gone for our purpose
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(predicate, timeout: float, what: str, worker) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{worker.log_tail()}")


async def test_intake_in_a_child_process_exact_supervised_and_never_orphaned(
    settings_factory, worker_factory
) -> None:
    settings = settings_factory(
        window_seconds=300, allowed_lateness_seconds=600, roi_window_seconds=600, intake_process=True
    )
    worker = worker_factory.start(settings)
    worker.wait_healthy()
    intake = worker.get("/finops/health/")[1]["intake"]
    child = intake["process"]["pid"]
    assert intake["process"]["alive"] and child and child != worker.proc.pid, intake

    events = [cost(i, "ecommerce" if i % 2 else "analytics", i % 10, f"{i}.0125") for i in range(60)]
    await produce(settings, topics.COST_EVENTS, [(e["resource_id"], e) for e in events[:30]])
    await produce(settings, topics.COST_EVENTS, [("i-bad", b'{"event_id": "broken", "cost_amount": ')])
    # wait until the child read the first part, then kill it mid-stream: the worker starts another
    wait_for(
        lambda: (worker.get("/finops/health/")[1]["intake"].get("records") or 0) >= 31,
        60,
        "first records",
        worker,
    )
    os.kill(child, signal.SIGKILL)
    await produce(settings, topics.COST_EVENTS, [(e["resource_id"], e) for e in events[30:]])
    wait_for(
        lambda: worker.get("/finops/health/")[1]["intake"]["process"]["restarts"] >= 1,
        30,
        "a restart",
        worker,
    )
    closer = [cost(100 + k, unit, 25, "0") for k, unit in enumerate(("ecommerce", "analytics"))]
    await produce(settings, topics.COST_EVENTS, [(e["resource_id"], e) for e in closer])

    expected: dict[tuple[str, str], Decimal] = {}
    for e in events:
        minute = int(str(e["timestamp"])[14:16])
        key = (str(e["business_unit"]), f"2026-01-01T00:{minute - minute % 5:02d}:00.000Z")
        expected[key] = expected.get(key, Decimal(0)) + Decimal(str(e["cost_amount"]))
    totals = await read_topic(settings, topics.AGGREGATIONS, lambda rs: len(rs) >= len(expected), timeout=90)
    got = {(t["business_unit"], t["window_start"]): Decimal(t["total_cost"]) for t in totals}
    assert got == expected, worker.log_tail()  # each event once, although the child was killed
    assert sum(t["event_count"] for t in totals) == len(events)
    dead = await read_topic(settings, topics.DEADLETTER, lambda rs: len(rs) >= 1, timeout=30)
    assert [d["offset"] for d in dead if "not valid JSON" in d["error"]], dead

    health = worker.get("/finops/health/")[1]
    intake = health["intake"]
    assert intake["group"] == f"{settings.app_id}-intake" and intake["process"]["alive"], intake
    assert intake["process"]["pid"] != child and intake["process"]["restarts"] == 1, intake
    assert health["deadletters"] >= 1 and health["status"] == "ok", health
    # the child's counters are merged into the worker's /metrics (a restarted child adds to them)
    status, text = worker.get("/metrics")
    assert status == 200
    name = kafka.topic_name(settings, topics.COST_EVENTS)
    line = next(ln for ln in text.splitlines() if ln.startswith(f'finops_events_in_total{{topic="{name}"}}'))
    assert float(line.rsplit(" ", 1)[1]) >= len(events) + len(closer) + 1, line

    # SIGKILL of the worker alone (not its process group): the kernel takes the child with it
    second = intake["process"]["pid"]
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(timeout=30)
    wait_for(lambda: not pid_alive(second), 15, f"intake process {second} to end with the worker", worker)

    # SIGTERM to the process group (Ctrl-C, a service manager): the child stops first, cleanly,
    # and the stopping worker does not start another one (it logged a restart before)
    other = worker_factory.start(settings)
    other.wait_healthy()
    other.stop()
    assert other.proc is not None and other.proc.returncode == 0, other.log_tail()
    assert "starting it again" not in other.log_tail(200_000), other.log_tail()
