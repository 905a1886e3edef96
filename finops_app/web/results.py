"""Every result topic in (all partitions, no consumer group), a ``ResultStore`` for the views out.

Each worker runs one ``ResultsConsumer``: a plain aiokafka consumer with manually assigned
partitions of finops.cost.aggregations, finops.roi.calculations, finops.cost.anomalies,
finops.optimization.recommendations, finops.budget.alerts, finops.actions and finops.deadletter,
so any worker answers the list endpoints for the whole system, whichever worker produced the
records. It commits nothing and joins no group.

Look-back on start, per partition: records produced since ``lookback_ms`` ago (window totals:
since the start of the current UTC month, for month-to-date burn), and never more than the last
``max_records`` of the partition. Every ``check_interval`` seconds it asks the broker for the end
offsets: that answers "broker reachable", gives the lag (also as ``results_view_lag`` gauges) and
the dead-letter count; topics or partitions that appear later are assigned then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import InvalidOperation
from typing import Any

import orjson
from mode import Service

from finops_app import kafka, topics
from finops_app.config import Settings
from finops_app.core import budget as budget_core
from finops_app.metrics import Metrics
from finops_app.web.store import DAY_MS, ResultStore

logger = logging.getLogger(__name__)

BAD_RECORD = (orjson.JSONDecodeError, KeyError, ValueError, TypeError, InvalidOperation, AttributeError)


class ResultsConsumer(Service):
    """Reads the result topics into ``self.store``; ``status()`` reports reachability and lag."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        store: ResultStore | None = None,
        lookback_ms: int = 7 * DAY_MS,
        max_records: int = 100_000,
        check_interval: float = 5.0,
        **kwargs: Any,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store or ResultStore(
            horizon_ms=max(48 * 3_600_000, 2 * settings.window_retention_seconds * 1000)
        )
        self.lookback_ms = lookback_ms
        self.max_records = max_records
        self.check_interval = check_interval
        self.names = {kafka.topic_name(settings, t): t for t in topics.RESULTS}
        self.consumer: Any = None
        self.assigned: set[Any] = set()
        self.initial_end: dict[Any, int] = {}
        self.end: dict[Any, int] = {}
        self.beginning: dict[Any, int] = {}
        self.positions: dict[Any, int] = {}  # next offset to read, per assigned partition
        self.reachable: bool | None = None
        self.last_check_ms = 0
        self.bad_records = 0
        self.error: str | None = None
        self.disabled = False
        super().__init__(**kwargs)

    # -- status -------------------------------------------------------------------------------
    def lag(self) -> int | None:
        if self.consumer is None or not self.end:
            return None
        return sum(max(0, end - self._position(tp)) for tp, end in self.end.items())

    def caught_up(self) -> bool:
        return bool(self.initial_end) and all(self._position(tp) >= e for tp, e in self.initial_end.items())

    def deadletter_total(self) -> int | None:
        name = kafka.topic_name(self.settings, topics.DEADLETTER)
        tps = [tp for tp in self.end if tp.topic == name]
        if not tps or any(tp not in self.beginning for tp in tps):
            return None
        return sum(self.end[tp] - self.beginning[tp] for tp in tps)

    def status(self) -> dict[str, Any]:
        return {
            "broker_reachable": self.reachable,
            "partitions": len(self.assigned),
            "lag": self.lag(),
            "caught_up": self.caught_up(),
            "records": self.store.records,
            "bad_records": self.bad_records,
            "last_check_age_seconds": round(time.time() - self.last_check_ms / 1000, 1)
            if self.last_check_ms
            else None,
            "error": self.error,
        }

    def _position(self, tp: Any) -> int:
        return self.positions.get(tp, 0)

    # -- lifecycle ----------------------------------------------------------------------------
    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
            self.consumer = None

    @Service.task
    async def _run(self) -> None:
        from aiokafka.errors import KafkaError

        if self.disabled:
            return
        while not self.should_stop:
            try:
                if self.consumer is None:
                    await self._connect()
                await self._consume()
            except (KafkaError, OSError) as exc:  # OSError includes TimeoutError
                if self.should_stop:
                    return  # the consumer was closed under us by on_stop
                self.reachable, self.error = False, f"{type(exc).__name__}: {exc}"
                logger.warning("results view: %s; retrying", self.error)
                await self._drop_consumer()
                await self.sleep(2.0)

    async def _connect(self) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{self.settings.app_id}-results-view",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            **kafka.client_kwargs(self.settings),
        )
        self.consumer = consumer
        await asyncio.wait_for(consumer.start(), timeout=30)
        self.assigned = set()
        await self._check()

    async def _drop_consumer(self) -> None:
        consumer, self.consumer = self.consumer, None
        self.assigned = set()
        if consumer is not None:
            try:
                await consumer.stop()
            except asyncio.CancelledError:
                # aiokafka re-raises the cancellation of its own fetch tasks from stop(); only a
                # cancellation of this task itself may end the loop
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                logger.debug("results view: the consumer's tasks were cancelled while stopping")
            except Exception:  # a half-started client may fail to stop; it is dropped anyway
                logger.debug("results view: stopping the consumer failed", exc_info=True)

    async def _consume(self) -> None:
        next_check = time.monotonic() + self.check_interval
        while not self.should_stop:
            if not self.assigned:
                await self.sleep(0.5)
            else:
                batch = await self.consumer.getmany(timeout_ms=500, max_records=5000)
                for tp, messages in batch.items():
                    base = self.names[tp.topic]
                    for m in messages:
                        self._apply(base, m)
                    if messages:
                        self.positions[tp] = messages[-1].offset + 1
            if time.monotonic() >= next_check:
                await self._check()
                next_check = time.monotonic() + self.check_interval

    def _apply(self, base: str, message: Any) -> None:
        try:
            self.store.apply(base, orjson.loads(message.value), message.timestamp)
        except BAD_RECORD as exc:
            self.bad_records += 1
            self.metrics.inc("results_view_bad_records_total", labels={"topic": base})
            logger.warning(
                "results view: skipped %s[%d]@%d: %s", message.topic, message.partition, message.offset, exc
            )

    async def _check(self) -> None:
        """Assign new partitions, refresh end offsets and lag; raises if the broker is unreachable."""
        from aiokafka import TopicPartition

        consumer = self.consumer
        # fetch_all_metadata: a fresh metadata request (partitions_for_topic only knows tracked topics)
        cluster = await asyncio.wait_for(consumer._client.fetch_all_metadata(), timeout=15)
        wanted = {
            TopicPartition(name, p) for name in self.names for p in (cluster.partitions_for_topic(name) or ())
        }
        if wanted - self.assigned:
            await self._assign(wanted)
        if self.assigned:
            tps = sorted(self.assigned)
            self.end = dict(await asyncio.wait_for(consumer.end_offsets(tps), timeout=15))
            self.beginning = dict(await asyncio.wait_for(consumer.beginning_offsets(tps), timeout=15))
            for tp in tps:
                self.metrics.set(
                    "results_view_lag",
                    max(0, self.end[tp] - self._position(tp)),
                    labels={"topic": tp.topic, "partition": str(tp.partition)},
                )
        self.reachable, self.error = True, None
        self.last_check_ms = int(time.time() * 1000)
        self.metrics.set("results_view_broker_reachable", 1.0)

    async def _assign(self, wanted: set[Any]) -> None:
        """Assign ``wanted``: known partitions resume where they were, new ones start at the look-back."""
        consumer = self.consumer
        fresh = sorted(tp for tp in wanted if tp not in self.positions)
        consumer.assign(sorted(wanted))
        for tp in wanted - set(fresh):
            consumer.seek(tp, self.positions[tp])
        if fresh:
            begin = await consumer.beginning_offsets(fresh)
            end = await consumer.end_offsets(fresh)
            now = int(time.time() * 1000)
            month_start, _, _ = budget_core.month_bounds(now)
            agg = kafka.topic_name(self.settings, topics.AGGREGATIONS)
            since = {
                tp: min(month_start, now - DAY_MS) if tp.topic == agg else now - self.lookback_ms
                for tp in fresh
            }
            by_time = await consumer.offsets_for_times(since)
            for tp in fresh:
                found = by_time.get(tp)
                start = max(
                    begin[tp], end[tp] - self.max_records, found.offset if found is not None else end[tp]
                )
                consumer.seek(tp, start)
                self.positions[tp] = start
                self.initial_end[tp] = end[tp]
            logger.info("results view: reading %d new partitions of the result topics", len(fresh))
        self.assigned = set(wanted)
