"""Sink topics in (its own Kafka consumer), Snowflake tables out, offsets committed only after loads.

:class:`SinkService` is a ``mode.Service`` the Faust worker runs beside its agents:

- consumes the sink topics (:data:`~finops_app.sinks.rows.SINK_TOPICS`) with its own aiokafka
  consumer (group ``<app_id>-sink``, no auto-commit, from the earliest offset), maps each message
  to rows (:mod:`~finops_app.sinks.rows`) and buffers them per target table;
- loads a table when its buffer holds ``sink_batch_rows`` rows or its oldest row is
  ``sink_max_age_seconds`` old, through :class:`~finops_app.sinks.loader.BulkLoader` on a single
  worker thread (the event loop never waits on Snowflake);
- commits, per partition, the offset after the highest contiguous message whose rows were all
  accepted by Snowflake (or dead-lettered): a crash replays at most the unloaded tail, and the
  MERGE on natural keys makes the replay harmless;
- retries a failed load with capped, jittered exponential backoff per table (one table's trouble
  does not hold up the others) and pauses fetching while buffers are full (bounded memory);
- produces rows Snowflake will never accept, and messages that do not map, to finops.deadletter
  (stage ``sink``); they then count as handled.

``status()`` is what health checks and metrics read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import ConsumerRebalanceListener
from mode import Service

from finops_app import topics as topic_names
from finops_app.errors import SinkError, ValidationError
from finops_app.sinks.loader import BulkLoader, LoadResult
from finops_app.sinks.rows import SINK_TOPICS, TABLES, map_message

if TYPE_CHECKING:
    from finops_app.config import Settings
    from finops_app.sinks.connection import Connector

logger = logging.getLogger(__name__)

TP = Any  # aiokafka TopicPartition (a (topic, partition) named tuple)
REVOKE_WAIT_S = 30.0  # how long a rebalance waits for this worker's load in flight (on_revoked)


class OffsetTracker:
    """Per partition, offsets in arrival order with the rows still pending for each.

    ``committable()`` gives, for each partition that moved, the offset to commit: one past the
    last offset of the unbroken run of fully handled offsets at the front.
    """

    def __init__(self) -> None:
        self._queues: dict[TP, deque[list[int]]] = {}
        self._pending: dict[TP, dict[int, list[int]]] = {}
        self._position: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}

    def add(self, tp: TP, offset: int, rows: int) -> None:
        cell = [offset, rows]
        self._queues.setdefault(tp, deque()).append(cell)
        self._pending.setdefault(tp, {})[offset] = cell

    def done(self, tp: TP, offset: int, rows: int = 1) -> None:
        cell = self._pending.get(tp, {}).get(offset)
        if cell is not None:
            cell[1] -= rows

    def committable(self) -> dict[TP, int]:
        out: dict[TP, int] = {}
        for tp, queue in self._queues.items():
            while queue and queue[0][1] <= 0:
                offset = queue.popleft()[0]
                self._pending[tp].pop(offset, None)
                self._position[tp] = offset + 1
            pos = self._position.get(tp)
            if pos is not None and pos > self._committed.get(tp, -1):
                out[tp] = pos
        return out

    def committed(self, positions: dict[TP, int]) -> None:
        self._committed.update(positions)

    def drop(self, tp: TP) -> None:
        for d in (self._queues, self._pending, self._position, self._committed):
            d.pop(tp, None)

    def pending_offsets(self) -> int:
        return sum(len(q) for q in self._queues.values())


@dataclass
class _Entry:
    row: dict[str, Any]
    tp: TP
    offset: int
    generation: int
    raw: bytes | None


@dataclass
class _Buffer:
    entries: list[_Entry] = field(default_factory=list)
    since: float | None = None  # monotonic time the oldest buffered row arrived
    failures: int = 0
    next_attempt: float = 0.0
    last_error: str | None = None


@dataclass
class _DeadLetter:
    tp: TP
    offset: int
    generation: int
    raw: bytes | None
    error: str
    field: str | None = None


class SinkService(Service):
    """The Kafka -> Snowflake sink of one worker (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        client_kwargs: dict[str, Any] | None = None,
        connector: Connector | None = None,
        loader: BulkLoader | None = None,
        topics: tuple[str, ...] = SINK_TOPICS,
        consumer_factory: Callable[..., Any] | None = None,
        producer_factory: Callable[..., Any] | None = None,
        max_buffered_rows: int | None = None,
        retry_base_seconds: float = 1.0,
        retry_max_seconds: float = 60.0,
        stop_flush_seconds: float = 15.0,
        **kwargs: Any,
    ) -> None:
        self.settings = settings
        self._client_kwargs = client_kwargs
        if connector is None and loader is None:
            from finops_app.sinks.connection import Connector

            connector = Connector(settings)
        self.connector = connector
        self.loader = loader or BulkLoader(connector)  # type: ignore[arg-type]
        self.topic_names = tuple(settings.topic_prefix + name for name in topics)
        self._deadletter_topic = settings.topic_prefix + topic_names.DEADLETTER
        self._consumer_factory = consumer_factory
        self._producer_factory = producer_factory
        self.batch_rows = max(1, settings.sink_batch_rows)
        self._load_started: float | None = None  # monotonic start of the load in flight
        self._load_in_flight: asyncio.Future[Any] | None = None  # the executor's future of that load
        self._revoking: set[TP] = set()  # partitions being revoked: no new load takes their rows
        self.max_age = settings.sink_max_age_seconds
        self.max_buffered = max_buffered_rows or max(4 * self.batch_rows, 20_000)
        self.retry_base = retry_base_seconds
        self.retry_max = retry_max_seconds
        self.stop_flush_seconds = stop_flush_seconds
        self._buffers: dict[str, _Buffer] = {}
        self._deadletters: deque[_DeadLetter] = deque()
        self._dlq_retry_at = 0.0
        self._tracker = OffsetTracker()
        self._generation: dict[TP, int] = {}
        self._paused = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="finops-sink")
        self._flush_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._consumer: Any = None
        self._producer: Any = None
        self.stats: dict[str, Any] = {
            "rows_loaded": 0,
            "rows_inserted": 0,
            "rows_updated": 0,
            "batches_loaded": 0,
            "batches_failed": 0,
            "rows_rejected": 0,
            "messages_deadlettered": 0,
            "messages_consumed": 0,
            "commits": 0,
            "last_success": None,
            "last_error": None,
            "connected": False,
        }
        super().__init__(**kwargs)

    # -- lifecycle ------------------------------------------------------------------------------

    def kafka_kwargs(self) -> dict[str, Any]:
        if self._client_kwargs is not None:
            return dict(self._client_kwargs)
        from finops_app.kafka import client_kwargs

        return client_kwargs(self.settings)

    async def on_start(self) -> None:
        kwargs = self.kafka_kwargs()
        if self._consumer_factory is None:
            from aiokafka import AIOKafkaConsumer

            self._consumer = AIOKafkaConsumer(
                group_id=f"{self.settings.app_id}-sink",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=self.batch_rows,
                **kwargs,
            )
        else:
            self._consumer = self._consumer_factory(**kwargs)
        if self._producer_factory is None:
            from aiokafka import AIOKafkaProducer

            self._producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **kwargs)
        else:
            self._producer = self._producer_factory(**kwargs)
        await self._producer.start()
        await self._consumer.start()
        self._consumer.subscribe(list(self.topic_names), listener=_Rebalance(self))
        logger.info("sink consuming %d topics as group %s-sink", len(self.topic_names), self.settings.app_id)

    async def on_stop(self) -> None:
        """Load what is buffered (bounded time), commit, then close Kafka and Snowflake clients."""
        if self._consumer is not None:
            try:
                await asyncio.wait_for(self.flush(force=True), self.stop_flush_seconds)
            except (TimeoutError, SinkError) as exc:
                logger.warning("sink stopping with unloaded rows (they will be consumed again): %s", exc)
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    await client.stop()
                except Exception as exc:  # noqa: BLE001 - stopping a broken client must not block shutdown
                    logger.warning("stopping a Kafka client: %s", exc)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_connection)
        self._executor.shutdown(wait=False)

    def _close_connection(self) -> None:
        if self.connector is not None:
            self.connector.close()

    @Service.task
    async def _consume_loop(self) -> None:
        from aiokafka.errors import ConsumerStoppedError, KafkaError

        while not self.should_stop:
            self._backpressure()
            try:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=self.batch_rows)
            except ConsumerStoppedError:
                return  # on_stop closed the consumer
            except KafkaError as exc:
                logger.warning("sink consumer: %s", exc)
                await self.sleep(1.0)
                continue
            for tp, messages in batch.items():
                for msg in messages:
                    self.ingest(tp, msg)
            if batch and any(self._due(b, time.monotonic(), False) for b in self._buffers.values()):
                self._wake.set()

    @Service.task
    async def _flush_loop(self) -> None:
        while not self.should_stop:
            await self.flush()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(0.25, max(self.max_age / 4, 0.01)))

    # -- consuming ------------------------------------------------------------------------------

    def ingest(self, tp: TP, msg: Any) -> None:
        """Map one consumed message to buffered rows (or to a dead letter)."""
        self.stats["messages_consumed"] += 1
        gen = self._generation.get(tp, 0)
        logical = msg.topic[len(self.settings.topic_prefix) :] if self.settings.topic_prefix else msg.topic
        try:
            mapped = map_message(
                logical, msg.partition, msg.offset, msg.value, msg.key, msg.timestamp, topic_name=msg.topic
            )
        except ValidationError as exc:
            if msg.topic == self._deadletter_topic:  # never dead-letter a dead letter: that could loop
                logger.error(
                    "unreadable dead letter %s[%d]@%d dropped: %s", msg.topic, msg.partition, msg.offset, exc
                )
                self._tracker.add(tp, msg.offset, 0)
                return
            self._tracker.add(tp, msg.offset, 1)
            self._deadletters.append(_DeadLetter(tp, msg.offset, gen, msg.value, str(exc), exc.field))
            return
        self._tracker.add(tp, msg.offset, len(mapped))
        now = time.monotonic()
        for table, row in mapped:
            buf = self._buffers.setdefault(table, _Buffer())
            if not buf.entries:
                buf.since = now
            buf.entries.append(_Entry(row, tp, msg.offset, gen, msg.value))

    def _backpressure(self) -> None:
        buffered = self.buffered_rows()
        assignment = self._consumer.assignment()
        if not self._paused and buffered >= self.max_buffered:
            logger.warning(
                "sink buffers full (%d rows): pausing consumption until Snowflake catches up", buffered
            )
            self._consumer.pause(*assignment)
            self._paused = True
        elif self._paused and buffered <= self.max_buffered // 2:
            self._consumer.resume(*assignment)
            self._paused = False
            logger.info("sink consumption resumed")

    def buffered_rows(self) -> int:
        return sum(len(b.entries) for b in self._buffers.values()) + len(self._deadletters)

    # -- loading --------------------------------------------------------------------------------

    def _due(self, buf: _Buffer, now: float, force: bool) -> bool:
        if not buf.entries or (now < buf.next_attempt and not force):
            return False
        full = len(buf.entries) >= self.batch_rows
        old = buf.since is not None and now - buf.since >= self.max_age
        return force or full or old

    async def flush(self, force: bool = False) -> None:
        """Load every due table, produce pending dead letters, commit what is complete."""
        async with self._flush_lock:
            for table in list(self._buffers):
                buf = self._buffers[table]
                self._drop_stale(buf)
                while self._due(buf, time.monotonic(), force):
                    if not await self._load(table, buf):
                        if force:
                            raise SinkError(buf.last_error or "load failed")
                        break
            await self._produce_deadletters(force)
            await self.commit()

    def _drop_stale(self, buf: _Buffer) -> None:
        """Forget rows of partitions this worker no longer owns (their new owner reloads them)."""
        revoking = self._revoking
        keep = [
            e
            for e in buf.entries
            if self._generation.get(e.tp, 0) == e.generation and (not revoking or e.tp not in revoking)
        ]
        if len(keep) != len(buf.entries):
            buf.entries = keep
            if not keep:
                buf.since = None

    async def _load(self, table: str, buf: _Buffer) -> bool:
        self._drop_stale(buf)  # partitions can move between two loads of one flush
        chunk = buf.entries[: self.batch_rows]
        if not chunk:
            return True
        spec = TABLES[table]
        loop = asyncio.get_running_loop()
        self._load_started = time.monotonic()
        self._load_in_flight = loop.run_in_executor(
            self._executor, self.loader.load, spec, [e.row for e in chunk]
        )
        try:
            result: LoadResult = await self._load_in_flight
        except Exception as exc:
            self._load_started = self._load_in_flight = None
            if not isinstance(exc, SinkError):
                logger.exception("sink: unexpected error loading %s", table)
            buf.failures += 1
            delay = min(self.retry_max, self.retry_base * 2 ** (buf.failures - 1)) * random.uniform(0.5, 1.0)
            buf.next_attempt = time.monotonic() + delay
            buf.last_error = str(exc)
            self.stats.update(
                batches_failed=self.stats["batches_failed"] + 1, last_error=str(exc), connected=False
            )
            logger.warning(
                "sink: loading %d rows into %s failed (retry in %.1fs): %s", len(chunk), table, delay, exc
            )
            return False
        self._load_started = self._load_in_flight = None
        del buf.entries[: len(chunk)]
        buf.since = time.monotonic() if buf.entries else None
        buf.failures, buf.next_attempt, buf.last_error = 0, 0.0, None
        rejected = {r.index: r.error for r in result.rejected}
        for i, entry in enumerate(chunk):
            if self._generation.get(entry.tp, 0) != entry.generation:
                continue
            if i in rejected and entry.tp.topic != self._deadletter_topic:
                self._deadletters.append(
                    _DeadLetter(
                        entry.tp, entry.offset, entry.generation, entry.raw, f"{table}: {rejected[i]}"
                    )
                )
                continue
            if i in rejected:  # a dead letter that cannot load: logged, never dead-lettered again (no loop)
                logger.error("dead letter %s@%d not loadable: %s", entry.tp, entry.offset, rejected[i])
            self._tracker.done(entry.tp, entry.offset)
        s = self.stats
        s.update(
            rows_loaded=s["rows_loaded"] + result.accepted,
            rows_inserted=s["rows_inserted"] + result.inserted,
            rows_updated=s["rows_updated"] + result.updated,
            rows_rejected=s["rows_rejected"] + len(result.rejected),
            batches_loaded=s["batches_loaded"] + 1,
            last_success=time.time(),
            connected=True,
        )
        logger.debug("sink: %s %d rows in %.2fs", table, result.rows, result.seconds)
        return True

    async def _produce_deadletters(self, force: bool) -> None:
        from finops_app.agents.common import dead_letter_value

        if not self._deadletters or (time.monotonic() < self._dlq_retry_at and not force):
            return
        topic = self._deadletter_topic
        while self._deadletters:
            item = self._deadletters[0]
            if self._generation.get(item.tp, 0) != item.generation:
                self._deadletters.popleft()
                continue
            value = dead_letter_value(
                item.tp.topic, item.tp.partition, item.offset, item.raw, item.error, "sink"
            )
            try:
                await self._producer.send_and_wait(topic, value=value, key=item.tp.topic.encode())
            except Exception as exc:  # noqa: BLE001 - Kafka down: keep the dead letter, retry later
                self._dlq_retry_at = time.monotonic() + self.retry_base
                self.stats["last_error"] = f"dead-letter produce failed: {exc}"
                logger.warning("sink: cannot produce a dead letter yet: %s", exc)
                if force:
                    raise SinkError(f"cannot produce dead letters: {exc}") from None
                return
            self._deadletters.popleft()
            self._tracker.done(item.tp, item.offset)
            self.stats["messages_deadlettered"] += 1

    async def commit(self, only: set[TP] | None = None) -> None:
        """Commit the complete prefix of every partition (only those in ``only`` if given)."""
        from aiokafka.errors import KafkaError

        positions = self._tracker.committable()
        assigned = set(self._consumer.assignment())
        positions = {
            tp: pos for tp, pos in positions.items() if tp in assigned and (only is None or tp in only)
        }
        if not positions:
            return
        try:
            await self._consumer.commit(positions)
        except KafkaError as exc:
            logger.warning("sink: commit failed (the rows will be consumed and merged again): %s", exc)
            return
        self._tracker.committed(positions)
        self.stats["commits"] += 1

    # -- rebalancing ----------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TP]) -> None:
        """Before the partitions move: let a load in flight finish, commit what is complete, and
        forget the rest (the new owner loads it again).

        Returning lets the rebalance go on and the new owner start loading. A load of this worker
        still running then could MERGE an older row of the same key and revision over the new
        owner's later one (equal revisions: the later row wins only within one load), so it is
        waited for, for up to ``REVOKE_WAIT_S``.
        """
        self._revoking |= revoked  # a flush going on meanwhile starts no load with their rows
        try:
            inflight = self._load_in_flight
            if inflight is not None and not inflight.done():
                started = time.monotonic()
                done, _ = await asyncio.wait({inflight}, timeout=REVOKE_WAIT_S)
                if not done:
                    logger.warning(
                        "sink: a load is still running %.0f s after partitions were revoked; they move "
                        "anyway, and its rows may be merged after the new owner's",
                        time.monotonic() - started,
                    )
                await asyncio.sleep(0)  # the load's own bookkeeping first (its rows marked done)
            await self.commit(only=set(revoked))
        finally:
            for tp in revoked:
                self._tracker.drop(tp)
                self._generation[tp] = self._generation.get(tp, 0) + 1
            self._revoking -= revoked

    def on_assigned(self, assigned: set[TP]) -> None:
        if self._paused and assigned:
            self._consumer.pause(*assigned)

    # -- health ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        tables = {
            table: {
                "buffered_rows": len(b.entries),
                "oldest_row_age_seconds": round(now - b.since, 3)
                if b.since is not None and b.entries
                else 0.0,
                "failures": b.failures,
                "retry_in_seconds": round(max(0.0, b.next_attempt - now), 3) if b.failures else 0.0,
                "last_error": b.last_error,
            }
            for table, b in sorted(self._buffers.items())
        }
        in_flight = now - self._load_started if self._load_started else 0.0
        # a load hanging in the connector's retries past the stall limit holds an open connection
        # object to a Snowflake that does not answer: that is not "connected"
        stalled = in_flight >= self.settings.sink_stall_seconds
        return {
            **self.stats,
            "load_in_flight_seconds": round(in_flight, 3),
            "connected": bool(self.connector.connected) and not stalled
            if self.connector is not None
            else self.stats["connected"],
            "buffered_rows": self.buffered_rows(),
            "pending_deadletters": len(self._deadletters),
            "paused": self._paused,
            "tables": tables,
        }


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commit what is complete before partitions move; forget their buffered rows after."""

    def __init__(self, service: SinkService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.service.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.service.on_assigned(set(assigned))


def sink_service_class(settings: Settings, **options: Any) -> type[SinkService]:
    """A SinkService subclass bound to ``settings``, for ``app.service(...)`` (which calls ``cls()``)."""

    class BoundSinkService(SinkService):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(settings, **options, **kwargs)

    return BoundSinkService
