"""A stateful agent's failing batch is retried in place, and a batch given up is never committed
(``agents.common.retrying`` and ``hold``; the whole path on a real worker and broker is in
tests/integration/test_agent_failures.py)."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from finops_app.agents.common import hold, retrying
from finops_app.web.views import health


class Ev:
    def __init__(self, message: ConsumerMessage) -> None:
        self.message = message


def events(topic: str, offsets: range, partition: int = 0) -> list[Any]:
    return [
        Ev(
            ConsumerMessage(
                topic, partition, o, time.time(), 0, None, b"k", b"{}", None, tp=TP(topic, partition)
            )
        )
        for o in offsets
    ]


async def test_a_failing_batch_is_retried_until_it_passes(app_factory) -> None:
    _app, ctx, _ = app_factory()
    calls: list[tuple[int, int]] = []
    seen_health: list[dict[str, Any]] = []

    async def process(partition: int, evs: list[Any]) -> None:
        calls.append((partition, len(evs)))
        if len(calls) <= 2:
            raise KeyError("ob")
        seen_health.append(health(ctx))

    batch = events("t.by-unit", range(10, 15), partition=1)
    assert await retrying(ctx, "unit_windows", 1, batch, process) is None
    assert calls == [(1, 5)] * 3
    assert ctx.metrics.counters["agent_errors_total"] == {(("agent", "unit_windows"),): 2.0}
    # while it failed, health said which records and why; once it passed, the failure is gone
    (during,) = seen_health
    assert during["status"] == "degraded"
    assert during["agent_failures"]["unit_windows"]["records"] == "t.by-unit[1] offsets 10..14"
    assert during["agent_failures"]["unit_windows"]["attempts"] == 2
    assert during["agent_failures"]["unit_windows"]["error"] == "KeyError: 'ob'"
    assert ctx.extras["agent_failures"] == {}


@pytest.mark.parametrize(
    ("seconds", "min_calls", "max_calls"),
    # 0.5 s: attempts after 0.1, 0.2 and 0.2 s (capped at the time left); 0: no retry at all
    [(0.5, 4, 6), (0.0, 1, 1)],
)
async def test_a_batch_failing_past_the_retry_time_is_given_up(
    app_factory, seconds: float, min_calls: int, max_calls: int
) -> None:
    _app, ctx, _ = app_factory(agent_retry_seconds=seconds)
    calls = 0

    async def process(partition: int, evs: list[Any]) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("broker gone")

    started = time.monotonic()
    error = await retrying(ctx, "cost_anomalies", 0, events("t", range(3)), process)
    took = time.monotonic() - started
    assert isinstance(error, RuntimeError) and str(error) == "broker gone"
    assert seconds <= took < seconds + 1.5, took
    assert min_calls <= calls <= max_calls
    assert ctx.extras["agent_failures"]["cost_anomalies"]["attempts"] == calls


async def test_held_records_are_never_committed(app_factory) -> None:
    """Faust's take_events acks a batch in its ``finally`` whatever happened to it; records held
    first must not move the partition's committable offset past the first of them."""
    app, _ctx, _ = app_factory()
    topic = "t.by-unit"
    tp = TP(topic, 0)
    consumer = app.consumer
    app.topics._acking_topics.add(topic)  # an agent subscribed to it (done when the worker starts)
    done, failed, after = events(topic, range(0, 3)), events(topic, range(3, 6)), events(topic, range(6, 9))
    hold(failed)
    for ev in done + failed + after:  # what take_events' finally and later batches do
        ev.message.ack(consumer)
    assert consumer._new_offset(tp) == 3  # commits 0..2 only: the next worker starts at offset 3

    # the same acks without the hold would commit past the failed records
    app2, _, _ = app_factory()
    app2.topics._acking_topics.add(topic)
    for ev in events(topic, range(0, 9)):
        ev.message.ack(app2.consumer)
    assert app2.consumer._new_offset(tp) == 9


async def test_the_anomaly_agent_drops_its_cold_cache_on_a_failed_batch_and_a_rebalance(
    app_factory, monkeypatch
) -> None:
    """The cached cold parts are the objects a batch mutates: a failed batch may have changed them
    without writing the table, and another worker may write them while it owns the partition."""
    from finops_app.core import costseries
    from tests.functional.test_intake_and_anomalies import T0, _cost

    app, ctx, _ = app_factory(anomaly_bucket_seconds=300, allowed_lateness_seconds=0)
    cache = ctx.extras["cold_cache"]
    real = costseries.observe_many
    failures = [RuntimeError("injected")]

    def observe_many(state: Any, observed: Any, *args: Any, **kwargs: Any) -> Any:
        if failures and any(body["event_id"] == "a3" for body, _ in observed):
            raise failures.pop()
        return real(state, observed, *args, **kwargs)

    async def until(predicate: Any, what: str) -> None:
        deadline = time.monotonic() + 10
        while not predicate():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.02)

    monkeypatch.setattr(costseries, "observe_many", observe_many)
    async with app.agents["cost_anomalies"].test_context() as a:
        await a.put(_cost(1, T0, 5.0, "ecommerce"), key=b"ec2")
        await until(lambda: len(cache) == 1, "the first batch caches the cold part it wrote")
        await a.put(_cost(2, T0 + 1000, 5.0, "ecommerce"), key=b"ec2")
        await until(lambda: cache.hits >= 1, "the second batch reads the cached cold part")
        misses = cache.misses
        await a.put(_cost(3, T0 + 2000, 5.0, "ecommerce"), key=b"ec2")
        await until(lambda: not failures and ctx.extras["agent_failures"] == {}, "a failure, then a pass")
        assert ctx.metrics.counters["agent_errors_total"] == {(("agent", "cost_anomalies"),): 1.0}
        # the retry found the cache empty: it read the table again (a miss), then cached it again
        assert cache.misses == misses + 1 and len(cache) == 1
        await app.on_partitions_revoked.send(set())
        assert len(cache) == 0


class Stream:
    """The part of a Faust stream ``run_batches`` uses, acking like ``take_events``: every record
    of a batch in the ``finally`` of its ``yield``, whatever happened to the batch."""

    def __init__(self, batches: list[list[Any]], consumer: Any) -> None:
        self.batches, self.consumer = batches, consumer
        self.finished = asyncio.Event()

    async def take_events(self, max_: int, within: float) -> Any:
        for batch in self.batches:
            try:
                yield batch
            finally:
                for ev in batch:
                    ev.message.ack(self.consumer)
                self.finished.set()
        await asyncio.Event().wait()


async def test_a_batch_cancelled_half_way_commits_only_what_was_processed(app_factory) -> None:
    """The worker stopping while a batch is processed: the partitions done are committed, the one
    in progress and those after it are not (the next worker replays them)."""
    from finops_app.agents.common import run_batches

    app, ctx, _ = app_factory()
    topic = "t.by-unit"
    app.topics._acking_topics.add(topic)
    batch = events(topic, range(0, 3), partition=0) + events(topic, range(0, 3), partition=1)
    for ev in batch:
        ev.message.refcount = 1  # delivered to one stream
    stream = Stream([batch], app.consumer)
    started: list[int] = []

    async def process(partition: int, evs: list[Any]) -> None:
        started.append(partition)
        if partition == 1:
            await asyncio.Event().wait()  # still processing when the worker stops

    task = asyncio.create_task(run_batches(stream, ctx, "unit_windows", process))
    while started != [0, 1]:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):  # the generator is closed (and its finally run) when it is collected
        gc.collect()
        if stream.finished.is_set():
            break
        await asyncio.sleep(0.01)
    assert stream.finished.is_set()
    assert app.consumer._new_offset(TP(topic, 0)) == 3  # processed: committed
    assert app.consumer._new_offset(TP(topic, 1)) is None  # cancelled half way: not committed


def test_the_stop_watchdog_exits_the_process_with_code_1_and_says_why() -> None:
    """If Faust's graceful stop hangs after a batch was given up, ``stop_worker``'s watchdog ends
    the process (nothing past the held records can have been committed)."""
    import subprocess
    import sys

    code = (
        "import logging, threading, time\n"
        "logging.basicConfig()\n"
        "from finops_app.agents import common\n"
        "common.STOP_GRACE_S = 0.2\n"
        "t = threading.Timer(common.STOP_GRACE_S, common._exit_now, args=('unit_windows',))\n"
        "t.daemon = True\n"
        "t.start()\n"
        "time.sleep(30)  # a stop that hangs\n"
    )
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - started < 20
    assert "agent unit_windows: the worker did not stop within 0 s" in proc.stderr, proc.stderr
