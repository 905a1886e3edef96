"""Intake: raw input topics -> validated, re-keyed ``finops.stream.*`` records, or dead letters.

- finops.cost.events -> by-unit (key business_unit; whole events, which the Snowflake sink also
  loads) and by-service (key service; the fields the anomaly series read); events of re-sending
  sources (``FINOPS_LEDGER_SOURCES``) -> by-id (key event_id) for the restatement ledger
- finops.business.events.raw -> finops.business.events (pseudonymised)
- finops.business.events -> by-unit (user ids pseudonymised if still raw)
- finops.resource.events -> by-resource (key resource_id)

Validation is ``core.validate``; a bad record goes to finops.deadletter with its reason and source
position, and the batch goes on. Re-keying here is the repartition step of ``group_by``, done
explicitly so one parse serves every downstream path; the re-keyed events of a batch go out as
batch envelopes (``common.Outbox``): one record per key and source partition, every event with its
own source offset.

Intake is stateless, so it runs as a service beside the Faust agents (``IntakeService``) with its
own consumer group ``<app_id>-intake``, reading in bulk with aiokafka's ``getmany``: Faust's
per-record stream machinery costs more per record than validating and re-keying it (bench/run:
"bare Faust agent"), and nothing here needs a table. Offsets are committed only after every record
derived from them was acknowledged by the broker (at-least-once); a batch delivered again after a
crash is counted once downstream, because every event carries its source partition and offset
(``common.first_delivery``). A batch is sent only once the one before it was acknowledged (the
next is validated meanwhile), and a failed send rewinds the consumer to its first offsets before
anything later goes out: downstream skips an offset at or below the highest it applied, so a later
batch written ahead of a failed one would make the failed one's re-send look like a repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import ConsumerStoppedError, KafkaError
from mode import Service

from finops_app.agents.common import Outbox, dead_letter_record, encode_item, envelope_at
from finops_app.context import Context
from finops_app.core.privacy import protect_business
from finops_app.core.validate import parse_business, parse_cost, parse_resource
from finops_app.errors import FinOpsError
from finops_app.kafka import client_kwargs

logger = logging.getLogger(__name__)

Parser = Callable[[Any, Any], dict[str, Any]]
Send = Callable[[], Awaitable[Any]]  # one send, made once the batch may go out
Route = Callable[[Outbox, Any, dict[str, Any], list[Send]], None]
SERIES_FIELDS = ("service", "ts_ms", "cost_amount", "business_unit", "region", "resource_id")
COMMIT_INTERVAL_S = 0.5
_BUSY = {"agent": "intake"}


class Intake:
    """Validation and routing of a batch of raw records (aiokafka ConsumerRecord-like objects).

    ``process`` returns the delivery futures of everything it sent; pure apart from ``ctx.send``.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        settings, topics = ctx.settings, ctx.topics
        self.ledger_sources = frozenset(settings.ledger_sources)
        self.routes: dict[str, tuple[str, Parser, Route]] = {
            topics.cost_events.get_topic_name(): ("cost_intake", parse_cost, self._cost),
            topics.business_events_raw.get_topic_name(): (
                "business_raw_intake",
                parse_business,
                self._business_raw,
            ),
            topics.business_events.get_topic_name(): ("business_intake", parse_business, self._business),
            topics.resource_events.get_topic_name(): ("resource_intake", parse_resource, self._resource),
        }

        self._grouped = (topics.by_unit, topics.by_service)  # topics that get partition envelopes
        self._dest: dict[tuple[Any, str], tuple[int, int]] = {}  # (topic, key) -> (partitions, partition)

    async def _partition_of(self) -> Callable[[Any, str], int | None] | None:
        """Where the producer's partitioner puts a key of by-unit/by-service, from its metadata now.

        Memoised per key and partition count (a topic that grew gets its keys placed again, as
        the producer would); None (one record per key) while the metadata is unknown.
        """
        counts: dict[Any, list[int]] = {}
        for topic in self._grouped:
            parts = await self.ctx.partitions(topic)
            if parts is None:
                return None
            counts[topic] = parts
        dest, partitioner = self._dest, self.ctx.partitioner()

        def partition_of(topic: Any, key: str) -> int | None:
            parts = counts.get(topic)
            if parts is None:
                return None
            known = dest.get((topic, key))
            if known is not None and known[0] == len(parts):
                return known[1]
            partition: int = partitioner(key.encode(), parts, parts)
            if len(dest) >= 100_000:
                dest.clear()
            dest[(topic, key)] = (len(parts), partition)
            return partition

        return partition_of

    @property
    def topic_names(self) -> list[str]:
        return list(self.routes)

    async def process(
        self, records: Sequence[Any], gate: Callable[[], Awaitable[bool]] | None = None
    ) -> list[Any] | None:
        """Validate and route ``records`` (any topics, each partition in offset order); returns the
        delivery futures of everything sent.

        The records are validated and routed first and sent after, once ``gate`` (if given) says
        they may go; when it says no, nothing is sent and None is returned.
        """
        ctx, metrics, limits = self.ctx, self.ctx.metrics, self.ctx.limits
        outbox = Outbox(await self._partition_of())
        sends: list[Send] = []  # in record order: single records of one key stay in offset order
        counts: dict[str, int] = {}
        for rec in records:
            _, parser, route = self.routes[rec.topic]
            counts[rec.topic] = counts.get(rec.topic, 0) + 1
            try:
                body = parser(rec.value, limits)
            except FinOpsError as exc:
                sends.append(
                    functools.partial(
                        dead_letter_record, ctx, rec.topic, rec.partition, rec.offset, rec.value, exc
                    )
                )
                continue
            route(outbox, rec, body, sends)
        if gate is not None and not await gate():
            return None
        futures = [await send() for send in sends]
        for topic, key, value, partition in outbox.records():
            futures.append(await ctx.send(topic, key, value, partition))
        for topic, n in counts.items():
            metrics.inc("events_in_total", n, labels={"topic": topic})
            metrics.inc("batches_total", labels={"agent": self.routes[topic][0]})
        return [f for f in futures if f is not None]

    def _cost(self, outbox: Outbox, rec: Any, body: dict[str, Any], sends: list[Send]) -> None:
        topics, part = self.ctx.topics, rec.partition
        if body["source"] in self.ledger_sources:
            value = envelope_at("cost", part, rec.offset, rec.timestamp, body)
            sends.append(functools.partial(self.ctx.send, topics.by_id, body["event_id"], value))
            return
        outbox.add(
            topics.by_unit, body["business_unit"], "cost", part, encode_item(rec.offset, rec.timestamp, body)
        )
        # the anomaly series read six fields: a third of the bytes of the whole event
        series = {f: body[f] for f in SERIES_FIELDS}
        outbox.add(
            topics.by_service, body["service"], "cost", part, encode_item(rec.offset, rec.timestamp, series)
        )

    def _business_raw(self, outbox: Outbox, rec: Any, body: dict[str, Any], sends: list[Send]) -> None:
        protected = protect_business(body, self.ctx.settings)
        value = orjson.dumps(protected)
        sends.append(
            functools.partial(self.ctx.send, self.ctx.topics.business_events, protected["user_id"], value)
        )

    def _business(self, outbox: Outbox, rec: Any, body: dict[str, Any], sends: list[Send]) -> None:
        protected = protect_business(body, self.ctx.settings)
        item = encode_item(rec.offset, rec.timestamp, protected)
        outbox.add(self.ctx.topics.by_unit, protected["business_unit"], "biz", rec.partition, item)

    def _resource(self, outbox: Outbox, rec: Any, body: dict[str, Any], sends: list[Send]) -> None:
        value = envelope_at("res", rec.partition, rec.offset, rec.timestamp, body)
        sends.append(
            functools.partial(self.ctx.send, self.ctx.topics.by_resource, body["resource_id"], value)
        )


@dataclass
class _Batch:
    futures: list[Any]
    first: dict[Any, int]  # tp -> first offset of the batch
    next: dict[Any, int]  # tp -> offset to commit once every future is done

    def done(self) -> bool:
        return all(f.done() for f in self.futures)

    def failed(self) -> BaseException | None:
        """The first send that did not succeed (call once ``done()``)."""
        for f in self.futures:
            if f.cancelled():
                return asyncio.CancelledError()
            error: BaseException | None = f.exception()
            if error is not None:
                return error
        return None


class IntakeService(Service):
    """Bulk consumer of the input topics (see the module docstring); one per worker."""

    def __init__(
        self, ctx: Context, *, consumer_factory: Callable[..., Any] | None = None, **kwargs: Any
    ) -> None:
        self.ctx = ctx
        self.intake = Intake(ctx)
        self.group_id = f"{ctx.settings.app_id}-intake"
        self._consumer_factory = consumer_factory
        self._consumer: Any = None
        self._pending: deque[_Batch] = deque()
        self._lock = asyncio.Lock()
        self._last_commit = 0.0
        self._carry: dict[Any, int] = {}  # acknowledged offsets not committed yet
        self.stats: dict[str, Any] = {
            "records": 0,
            "batches": 0,
            "commits": 0,
            "rewinds": 0,
            "assigned": [],
            "last_batch_at": None,
            "last_error": None,
        }
        super().__init__(**kwargs)

    async def on_start(self) -> None:
        settings = self.ctx.settings
        factory = self._consumer_factory or AIOKafkaConsumer
        self._consumer = factory(
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.batch_size,
            max_partition_fetch_bytes=max(4 << 20, 2 * settings.max_message_bytes),
            # at low rates, let the broker gather a batch for up to the batch wait instead of answering
            # every fetch with a record or two (a round trip each: most of an idle worker's CPU)
            fetch_min_bytes=64 * 1024,
            fetch_max_wait_ms=max(1, int(settings.batch_within_seconds * 1000)),
            **client_kwargs(settings),
        )
        await self._consumer.start()
        self._consumer.subscribe(self.intake.topic_names, listener=_Rebalance(self))
        logger.info("intake consuming %s as group %s", ", ".join(self.intake.topic_names), self.group_id)

    async def on_stop(self) -> None:
        if self._consumer is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.settle(), 15.0)
        try:
            await self._consumer.stop()
        except Exception as exc:  # noqa: BLE001 - stopping a broken client must not block shutdown
            logger.warning("stopping the intake consumer: %s", exc)

    @Service.task
    async def _consume(self) -> None:
        settings = self.ctx.settings
        timeout_ms = max(1, int(settings.batch_within_seconds * 1000))
        while not self.should_stop:
            try:
                batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=settings.batch_size)
            except ConsumerStoppedError:
                return
            except KafkaError as exc:
                self.stats["last_error"] = str(exc)
                logger.warning("intake consumer: %s", exc)
                await self.sleep(1.0)
                continue
            if batch:
                async with self._lock:
                    await self._process(batch)
            await self._advance(force=False)

    async def _process(self, batch: dict[Any, list[Any]]) -> None:
        started = time.perf_counter()
        records = [m for msgs in batch.values() for m in msgs]
        futures = await self.intake.process(records, gate=self._acknowledged)
        self.ctx.metrics.inc("agent_busy_seconds_total", time.perf_counter() - started, labels=_BUSY)
        if futures is None:  # an earlier batch failed: the consumer was rewound, these come again
            return
        self._pending.append(
            _Batch(
                futures=futures,
                first={tp: msgs[0].offset for tp, msgs in batch.items()},
                next={tp: msgs[-1].offset + 1 for tp, msgs in batch.items()},
            )
        )
        self.stats["records"] += len(records)
        self.stats["batches"] += 1
        self.stats["last_batch_at"] = time.time()
        self._lag(batch)

    async def _acknowledged(self) -> bool:
        """Wait until every batch sent before is acknowledged; False when one failed (rewound).

        A batch goes out only after the one before it was acknowledged. Downstream, each key keeps
        the highest source offset it applied and skips anything at or below it; had a later batch
        been written while an earlier one failed (a produce that timed out without a leader), the
        earlier records, sent again after the rewind, would have been skipped: lost. Validating and
        routing the next batch still overlaps the wait.
        """
        while self._pending:
            pending = [f for b in self._pending for f in b.futures if not f.done()]
            if pending:
                await asyncio.wait(pending)
            if not await self._advance(force=False):
                return False
        return True

    def _lag(self, batch: dict[Any, list[Any]]) -> None:
        for tp, msgs in batch.items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                self.ctx.metrics.set(
                    "consumer_lag",
                    max(0, highwater - msgs[-1].offset - 1),
                    labels={"topic": tp.topic, "partition": str(tp.partition)},
                )

    async def _advance(self, force: bool) -> bool:
        """Commit the acknowledged prefix of the pending batches (every COMMIT_INTERVAL_S, or now);
        False when a failed send rewound the consumer."""
        while self._pending and self._pending[0].done():
            head = self._pending[0]
            error = head.failed()
            if error is not None:
                self._rewind(error)
                return False
            self._carry.update(head.next)
            self._pending.popleft()
        if self._carry and (force or time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S):
            await self._commit()
        return True

    async def _commit(self) -> None:
        assigned = self._consumer.assignment()
        offsets = {tp: off for tp, off in self._carry.items() if tp in assigned}
        self._carry = {}
        self._last_commit = time.monotonic()
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
            self.stats["commits"] += 1
        except KafkaError as exc:  # e.g. a rebalance took the partitions: their records are re-read
            self.stats["last_error"] = str(exc)
            logger.warning("intake commit failed (records will be read again, counted once): %s", exc)

    def _rewind(self, error: BaseException) -> None:
        """A send failed: re-read every unacknowledged record (downstream counts each event once)."""
        starts: dict[Any, int] = {}
        for b in self._pending:
            for tp, off in b.first.items():
                starts.setdefault(tp, off)
        self._pending.clear()
        assigned = self._consumer.assignment()
        for tp, off in starts.items():
            if tp in assigned:
                self._consumer.seek(tp, off)
        self.stats["rewinds"] += 1
        self.stats["last_error"] = str(error)
        logger.warning("intake send failed, re-reading from %s: %s", starts, error)

    async def settle(self) -> None:
        """Wait for every pending batch to be acknowledged and commit (stop, rebalance)."""
        async with self._lock:
            for b in list(self._pending):
                if b.futures:
                    await asyncio.wait(b.futures, timeout=10.0)
            await self._advance(force=True)

    def status(self) -> dict[str, Any]:
        return {
            **self.stats,
            "group": self.group_id,
            "pending_batches": len(self._pending),
        }


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits what was acknowledged before partitions move to another worker."""

    def __init__(self, service: IntakeService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        try:
            await asyncio.wait_for(self.service.settle(), 20.0)
        except (TimeoutError, Exception) as exc:  # noqa: BLE001 - the rebalance must go on
            logger.warning("intake: partitions revoked before every send was acknowledged: %s", exc)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.service.stats["assigned"] = sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned)


def register(ctx: Context) -> None:
    """Run the intake service with the worker (started after table recovery, like every service)."""

    class Intake_(IntakeService):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(ctx, **kwargs)
            ctx.extras["intake"] = self

    ctx.app.service(Intake_)
