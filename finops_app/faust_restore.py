"""Bulk restore of the tables' changelogs when a worker takes over partitions (Faust 0.15.x).

Faust restores a table by passing every changelog record through its stream machinery: the
consumer's per-record delivery (four asyncio tasks a record), a queue, an ``asyncio.wait_for`` per
record in ``Recovery._slurp_changelogs`` and a remaining-offsets count per record. Measured on
this machine (bench/run, phase 5): ~3,000 records/s, so a new worker with a 1,000,000-key table was
not healthy after 5 minutes, while a plain consumer reads the same changelog at ~70,000/s.

``_build_offsets`` (wraps Faust's): before Faust positions the active changelog partitions, every
partition with at least ``MIN_RECORDS`` records to restore is read here instead, with a private
aiokafka consumer in bulk (``getmany``), and written to the table's RocksDB store the way Faust's own
restore writes it (``Store.apply_changelog_batch``: raw key and value bytes in one write batch per
chunk, tombstones as deletes, then the chunk's last offset as the persisted offset). Faust then
starts from that offset and restores the rest, records written meanwhile, itself, so its hand-over
to the streams is unchanged.

- The bulk phase runs inside Faust's ``_build_offsets`` step, which Faust cancels when another
  rebalance starts, and which must end within ``broker_request_timeout`` (Faust stops its recovery
  service otherwise). So it stops after ``FINOPS_RESTORE_BULK_SECONDS`` (at most 0.8 of that timeout)
  and leaves what is left to Faust. Each applied chunk is complete with its persisted offset, so a
  cancel or a stop leaves a consistent store.
- Only actives: standby replicas keep following their changelog through Faust, as before.
- Only RocksDB stores without an ``on_changelog_event`` callback (the app's tables); any other
  table is left to Faust.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from finops_app.faust_patch import wrap
from finops_app.kafka import client_kwargs

logger = logging.getLogger(__name__)

MIN_RECORDS = 2_000  # fewer records to restore than this: Faust's own path is quick enough
FETCH_RECORDS = 20_000  # records per getmany
PROGRESS_EVERY_S = 5.0
TIMEOUT_SHARE = 0.8  # of broker_request_timeout, the most the bulk phase may take

_originals: dict[str, Any] = {}


class _Message:
    """The fields of a changelog record that ``Store.apply_changelog_batch`` reads."""

    __slots__ = ("key", "offset", "partition", "tp", "value")

    def __init__(self, tp: Any, offset: int, key: bytes | None, value: bytes | None) -> None:
        self.tp = tp
        self.partition = tp.partition
        self.offset = offset
        self.key = key
        self.value = value


class _Event:
    __slots__ = ("message",)

    def __init__(self, message: _Message) -> None:
        self.message = message


def bulk_capable(table: Any) -> bool:
    """True for a table this module may restore: a RocksDB store and no changelog callback."""
    from faust.stores.rocksdb import Store

    return isinstance(getattr(table, "data", None), Store) and not getattr(table, "_on_changelog_event", None)


def plan(
    tps: Iterable[Any], offsets: Any, highwaters: Any, tables: Any, min_records: int = MIN_RECORDS
) -> dict[Any, tuple[int, int]]:
    """Changelog partitions worth a bulk read: tp -> (first offset to read, last offset to read).

    ``offsets[tp]`` is the last offset already in the store (None: none), ``highwaters[tp]`` the
    partition's last offset (-1: empty), as Faust's recovery keeps them.
    """
    out: dict[Any, tuple[int, int]] = {}
    for tp in tps:
        last = highwaters.get(tp)
        have = offsets.get(tp)
        start = 0 if have is None else have + 1
        if last is None or last - start + 1 < min_records:
            continue
        if not bulk_capable(tables.get(tp)):
            continue
        out[tp] = (start, last)
    return out


async def restore(
    settings: Any,
    todo: dict[Any, tuple[int, int]],
    tables: dict[Any, Any],
    offsets: Any,
    budget_s: float,
    consumer_factory: Any = AIOKafkaConsumer,
) -> dict[str, Any]:
    """Read each planned partition up to its last offset and apply it; updates ``offsets[tp]``.

    Returns counts (records, partitions finished, seconds, whether the budget ran out).
    """
    started = time.monotonic()
    deadline = started + budget_s
    total = sum(last - start + 1 for start, last in todo.values())
    logger.info(
        "Bulk restore of %d changelog records in %d partitions (at most %.0f s)", total, len(todo), budget_s
    )
    consumer = consumer_factory(
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # a start already compacted away: read from the log start
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
        **client_kwargs(settings),
    )
    await consumer.start()
    applied = 0
    by_ktp = {TopicPartition(tp.topic, tp.partition): tp for tp in todo}
    left = set(by_ktp)
    next_log = started + PROGRESS_EVERY_S
    try:
        consumer.assign(list(by_ktp))
        for ktp, tp in by_ktp.items():
            consumer.seek(ktp, todo[tp][0])
        while left and time.monotonic() < deadline:
            batch = await consumer.getmany(*left, timeout_ms=200, max_records=FETCH_RECORDS)
            for ktp, records in batch.items():
                tp = by_ktp[ktp]
                last = todo[tp][1]
                events = [_Event(_Message(tp, r.offset, r.key, r.value)) for r in records if r.offset <= last]
                if events:
                    # Faust's own restore write: one write batch, then the persisted offset
                    tables[tp].apply_changelog_batch(events)
                    offsets[tp] = events[-1].message.offset
                    applied += len(events)
            for ktp in list(left):
                if await consumer.position(ktp) > todo[by_ktp[ktp]][1]:
                    left.discard(ktp)
                    consumer.pause(ktp)
            now = time.monotonic()
            if now >= next_log:
                next_log = now + PROGRESS_EVERY_S
                rate = applied / (now - started)
                logger.info("bulk restore: %d of %d changelog records (%.0f/s)", applied, total, rate)
            await asyncio.sleep(0)  # let the web server and heartbeats run between chunks
    finally:
        await consumer.stop()
    seconds = time.monotonic() - started
    stats = {
        "records": applied,
        "partitions": len(todo),
        "partitions_done": len(todo) - len(left),
        "seconds": round(seconds, 3),
        "budget_exhausted": bool(left),
    }
    logger.info(
        "bulk restore: %d records of %d/%d changelog partitions in %.2f s (%.0f/s)%s",
        applied,
        stats["partitions_done"],
        len(todo),
        seconds,
        applied / seconds if seconds > 0 else 0.0,
        "; time budget reached, Faust restores the rest" if left else "",
    )
    return stats


async def _build_offsets(self: Any, consumer: Any, tps: Any, destination: Any, title: str) -> None:
    """Faust's ``Recovery._build_offsets``, after a bulk read of the active partitions (see above)."""
    ctx = getattr(self.app, "finops", None)
    if title == "active" and tps and ctx is not None and ctx.settings.restore_bulk_seconds > 0:
        settings = ctx.settings
        todo = plan(tps, destination, self.active_highwaters, self.tp_to_table)
        if todo:
            budget = min(settings.restore_bulk_seconds, TIMEOUT_SHARE * self.app.conf.broker_request_timeout)
            stats = await restore(settings, todo, self.tp_to_table, destination, budget)
            ctx.metrics.inc("restore_bulk_records_total", stats["records"])
    await _originals["_build_offsets"](self, consumer, tps, destination, title)


def install() -> None:
    """Wrap Faust's ``Recovery._build_offsets`` (idempotent)."""
    from faust.tables.recovery import Recovery

    wrap(Recovery, "_build_offsets", _build_offsets, _originals)


def installed() -> bool:
    from faust.tables.recovery import Recovery

    return Recovery._build_offsets is _build_offsets
