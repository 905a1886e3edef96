"""A fix for faust-streaming 0.15.x's per-message cost of handing a fetched record to its stream.

Faust's consumer loop (``faust.transport.consumer.Consumer._drain_messages``) delivers every
record with ``await self.wait_first(callback(message), self.suspend_flow.wait())``: four asyncio
tasks and an ``asyncio.wait`` per record, only so that a delivery blocked on a full stream
buffer can be interrupted when a rebalance suspends the flow. Measured on this project's machine
(bench/run, "bare Faust agent" rows): a Faust agent that does nothing reads ~4,000 records/s
with it; the same agent reads ~7,000/s with the loop below, which a pipeline of three agents
per event pays three times.

The loop below keeps Faust's behaviour (read offsets, gap tracking for acks, commit every N,
yielding to the event loop every 100 records, stop and crash handling) and changes one thing:
the callback is started in place, and only when it actually has to wait (its stream's buffer is
full) is the rest of it run as a task raced against ``suspend_flow`` as before. A delivery that
does not wait, the common case, costs no task. While the flow is suspended (a rebalance), every record
goes through Faust's own race, unchanged.

``LeanMonitor`` is the second per-record cost removed here: Faust's default sensor times every
record, event, table read/write and send into dicts and deques (its ``/stats`` page). The lean one
keeps what Faust itself reads (the last inbound time per partition, for its "stream is slow"
warnings; read offsets; counters) and drops the timing; the app's own Prometheus metrics
(``finops_app.metrics``) are unaffected.

``install()`` is idempotent and is called by ``create_app``; both are **off by default** and
turned on with ``FINOPS_FAUST_FAST_DELIVERY=true`` (``Settings.faust_fast_delivery``): with them on,
the SIGKILL failover test (tests/integration/test_scaling.py) lost events in about one run in three
(6 of 6 passed with them off); with the two failover holes fixed in ``faust_seek.py`` it still
failed 1 of 5 runs, so another cause remains (RELIABILITY.md). The bare-agent figures
in bench/results.md use them explicitly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from time import monotonic
from typing import Any

from faust.sensors import Monitor
from faust.transport import consumer as faust_consumer

_ORIGINAL = faust_consumer.Consumer._drain_messages
YIELD_EVERY = 100  # records between explicit yields to the event loop (as Faust)


async def _continue(coro: Coroutine[Any, Any, Any], awaiting: Any) -> Any:
    """Run the rest of a coroutine that was started by hand and is now waiting on ``awaiting``."""
    while True:
        try:
            if awaiting is None:  # a bare ``yield`` (asyncio.sleep(0))
                await asyncio.sleep(0)
            else:
                awaiting._asyncio_future_blocking = False
                await awaiting
        except BaseException as exc:  # noqa: BLE001 - handed to the coroutine, as a task would
            try:
                awaiting = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            awaiting = coro.send(None)
        except StopIteration as stop:
            return stop.value


def start(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro`` until it first waits: (True, None) if it finished, else (False, what it awaits).

    Exceptions raised before it waits propagate, as they would from ``await coro``.
    """
    try:
        awaiting = coro.send(None)
    except StopIteration:
        return True, None
    return False, awaiting


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - exercised by workers
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    fetching = faust_consumer.CONSUMER_FETCHING
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    flow_suspended = self.suspend_flow.is_set
    since_yield = 0
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(fetching)
            records = getmany(timeout=1.0)
            await asyncio.sleep(0)
            if not self.should_stop:
                async for tp, message in records:
                    since_yield += 1
                    if since_yield > YIELD_EVERY:
                        await asyncio.sleep(0)
                        since_yield = 0
                    offset = message.offset
                    read = get_read_offset(tp)
                    if read is not None and offset < read:
                        continue  # already delivered (Faust logs these at dev level)
                    if read and offset - read > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, read + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if flow_suspended():  # a rebalance: exactly Faust's own race
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    else:
                        coro = callback(message)
                        done, awaiting = start(coro)
                        if not done:
                            await self.wait_first(_continue(coro, awaiting), self.suspend_flow.wait())
                    set_read_offset(tp, offset)
            unset_flag(fetching)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(fetching)


class LeanMonitor(Monitor):
    """Faust's Monitor without per-record timing (see the module docstring)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        self.messages_received_total += 1
        self.tp_read_offsets[tp] = offset

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        self.events_total += 1
        self.stream_inbound_time[tp] = monotonic()

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_table_get(self, table: Any, key: Any) -> None:
        return None

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        return None

    def on_send_initiated(self, producer: Any, topic: str, message: Any, keysize: int, valsize: int) -> None:
        self.messages_sent += 1

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        return None


def install(enabled: bool = True) -> None:
    """Use the task-free delivery loop (or Faust's own when ``enabled`` is false)."""
    faust_consumer.Consumer._drain_messages = _drain_messages if enabled else _ORIGINAL  # type: ignore[method-assign]


def installed() -> bool:
    return faust_consumer.Consumer._drain_messages is _drain_messages
