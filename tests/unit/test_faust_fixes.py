"""The task-free delivery loop (finops_app/faust_fixes.py) against a stand-in for Faust's consumer.

The stand-in has exactly the attributes the loop reads; the checks are the ones that matter in a
worker: every record delivered once and in order, read offsets advanced, no asyncio task per
record when delivery does not wait, a waiting delivery still completes, and a delivery blocked
on a full buffer is abandoned when a rebalance suspends the flow (as in Faust).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport import consumer as faust_consumer
from mode import Service

from finops_app import faust_fixes


class FakeConsumer(Service):
    """What ``_drain_messages`` touches on Faust's Consumer, and nothing else."""

    consumer_stopped_errors = (ConnectionError,)

    def __init__(self, batches: list[list[int]], callback: Callable[[Any], Any]) -> None:
        super().__init__()
        self.batches = list(batches)
        self.callback = callback
        self._read_offset: dict[Any, int | None] = {"tp": None}
        self.diag = SimpleNamespace(set_flag=lambda flag: None, unset_flag=lambda flag: None)
        self._commit_every = None
        self._n_acked = 0
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
        self.suspend_flow = asyncio.Event()
        self.gaps: list[tuple[int, int]] = []
        self.transport = SimpleNamespace(app=SimpleNamespace(should_stop=False))
        self.fetched = asyncio.Event()

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[str, Any]]:
        if not self.batches:
            self.fetched.set()
            await asyncio.sleep(0.01)
            return
        for offset in self.batches.pop(0):
            yield "tp", SimpleNamespace(offset=offset, topic="t")

    async def _add_gap(self, tp: Any, start: int, end: int) -> None:
        self.gaps.append((start, end))

    async def commit(self) -> None:  # pragma: no cover - commit_every is None here
        raise AssertionError("not expected")


async def drain(consumer: FakeConsumer, until: Callable[[], bool]) -> None:
    fetcher = Service()
    task = asyncio.ensure_future(faust_fixes._drain_messages(consumer, fetcher))
    try:
        for _ in range(500):
            if until():
                break
            await asyncio.sleep(0.005)
    finally:
        fetcher._stopped.set()
        task.cancel()
        consumer.transport.app.should_stop = True
        await asyncio.gather(task, return_exceptions=True)


def count_tasks(loop: asyncio.AbstractEventLoop) -> list[int]:
    created = [0]
    factory = loop.get_task_factory()

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        created[0] += 1
        if factory is not None:
            return factory(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)
    return created


async def test_records_are_delivered_in_order_without_a_task_each() -> None:
    seen: list[int] = []

    async def callback(message: Any) -> None:
        seen.append(message.offset)

    consumer = FakeConsumer([list(range(0, 300)), list(range(300, 600))], callback)
    loop = asyncio.get_running_loop()
    created = count_tasks(loop)
    try:
        await drain(consumer, lambda: len(seen) >= 600)
    finally:
        loop.set_task_factory(None)
    assert seen == list(range(600))
    assert consumer._read_offset["tp"] == 599
    assert created[0] < 20  # Faust's own loop creates 4 tasks per record: 2,400 here


async def test_faust_loop_creates_tasks_per_record_which_the_fix_avoids() -> None:
    """The measurement behind the fix, as a check: Faust's loop makes ~4 tasks per record."""
    seen: list[int] = []

    async def callback(message: Any) -> None:
        seen.append(message.offset)

    consumer = FakeConsumer([list(range(100))], callback)
    fetcher = Service()
    loop = asyncio.get_running_loop()
    created = count_tasks(loop)
    task = asyncio.ensure_future(faust_fixes._ORIGINAL(consumer, fetcher))
    try:
        for _ in range(400):
            if len(seen) >= 100:
                break
            await asyncio.sleep(0.005)
    finally:
        loop.set_task_factory(None)
        fetcher._stopped.set()
        consumer.transport.app.should_stop = True
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert seen == list(range(100))
    assert created[0] >= 300


async def test_a_delivery_that_waits_still_completes_with_its_value() -> None:
    seen: list[int] = []
    gate = asyncio.Event()

    async def callback(message: Any) -> None:
        if message.offset == 2:
            await gate.wait()  # a full stream buffer
            await asyncio.sleep(0)  # a bare yield on the way
        seen.append(message.offset)

    consumer = FakeConsumer([[0, 1, 2, 3, 4]], callback)
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, gate.set)
    await drain(consumer, lambda: len(seen) >= 5)
    assert seen == [0, 1, 2, 3, 4]


async def test_a_blocked_delivery_is_abandoned_when_the_flow_is_suspended() -> None:
    seen: list[int] = []
    cancelled: list[int] = []

    async def callback(message: Any) -> None:
        if message.offset == 1:
            try:
                await asyncio.Event().wait()  # blocked until the rebalance interrupts it
            except asyncio.CancelledError:
                cancelled.append(message.offset)
                raise
        seen.append(message.offset)

    consumer = FakeConsumer([[0, 1, 2]], callback)
    asyncio.get_running_loop().call_later(0.05, consumer.suspend_flow.set)
    await drain(consumer, lambda: len(cancelled) == 1 and consumer._read_offset["tp"] == 2)
    assert cancelled == [1]
    assert seen == [0, 2]  # 1 abandoned; 2 still handed over by Faust's own race while suspended


async def test_errors_in_a_delivery_propagate() -> None:
    async def boom() -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        faust_fixes.start(boom())


async def test_gaps_are_recorded_for_acks() -> None:
    async def callback(message: Any) -> None:
        return None

    consumer = FakeConsumer([[0, 1, 5, 6]], callback)
    await drain(consumer, lambda: consumer._read_offset["tp"] == 6)
    assert consumer.gaps == [(2, 5)]


def test_install_is_reversible() -> None:
    before = faust_consumer.Consumer._drain_messages
    try:
        faust_fixes.install(False)
        assert not faust_fixes.installed()
        faust_fixes.install(True)
        assert faust_fixes.installed()
    finally:
        faust_consumer.Consumer._drain_messages = before  # type: ignore[method-assign]


def test_lean_monitor_keeps_what_faust_reads_and_drops_per_record_timing() -> None:
    monitor = faust_fixes.LeanMonitor()
    message = SimpleNamespace(time_in=None)
    monitor.on_message_in("tp", 41, message)
    monitor.on_stream_event_in("tp", 41, object(), object())
    monitor.on_stream_event_out("tp", 41, object(), object(), None)
    monitor.on_message_out("tp", 41, message)
    assert monitor.tp_read_offsets["tp"] == 41 and "tp" in monitor.stream_inbound_time
    assert monitor.messages_received_total == 1 and monitor.events_total == 1
    assert message.time_in is None and len(monitor.events_runtime) == 0


def test_create_app_uses_the_lean_monitor_only_when_fast_delivery_is_on() -> None:
    from finops_app.app import create_app
    from finops_app.config import Settings

    before = faust_consumer.Consumer._drain_messages
    try:
        assert Settings().faust_fast_delivery is False  # off by default (RELIABILITY.md)
        assert type(create_app(Settings(faust_fast_delivery=True)).monitor) is faust_fixes.LeanMonitor
        assert faust_fixes.installed()
        slow = create_app(Settings())
        assert type(slow.monitor) is not faust_fixes.LeanMonitor and not faust_fixes.installed()
    finally:
        faust_consumer.Consumer._drain_messages = before  # type: ignore[method-assign]
