"""Fixes for records lost when partitions change owner (Faust 0.15.x with aiokafka).

Found with the SIGKILL variant of tests/integration/test_scaling.py, traced on 2026-11-27 with
logs of every fetch, ack, commit, seek and applied event. Two holes, both in the hand-over from
Faust's table recovery to the streams:

**A partition never committed kept a fetch position past dropped records.**

1. A worker is SIGKILLed after processing records of a partition but before its first offset
   commit of it (commits run every ``broker_commit_interval``): no committed offset at all.
2. The worker that takes it over fetches records of it during the rebalance; Faust drops them
   (flow stopped, generation changed) and relies on ``perform_seek`` to go back to the committed
   offset afterwards.
3. aiokafka's ``seek_to_committed`` seeks only when the committed offset is above 0, so with none
   the position stayed after the dropped records, and later records were delivered first; the
   new owner's first record was offset 19 or 26 instead of 0 or 12.

``_seek_to_committed``: after aiokafka's seek, a non-changelog partition without a committed
offset (or with 0) is moved to its log start, as ``auto_offset_reset=earliest`` means (changelog
partitions are left alone: recovery positions them itself).

**Records delivered after the seek were cleared from the streams' queues.** Faust's
``Recovery._resume_streams`` resumes the stream partitions, seeks them, then calls
``app.flow_control.resume()``, which *always* clears every stream queue (mode's
``FlowControlEvent.resume``), while the consumer's flow has been running since recovery began.
A record fetched after the seek and queued before that call was dropped, and Faust's read offset
said it had been read, so it was never fetched again (seen: a by-unit record at offset 10
fetched, never applied, offsets 9 and 11 applied; seven events of two units lost).

``_resume_streams`` (replaces Faust's): stop the consumer's flow, clear the queues, seek the
still-paused stream partitions, resume them, then resume the flow; nothing is delivered between
the seek and the clearing.

Both are installed by ``install()`` (idempotent, called by ``create_app``). Records read twice
because of a seek back are counted once downstream (each event's source offset is checked against
the high-water mark in its key's table value, ``agents.common.fresh``).
"""

from __future__ import annotations

import logging
from typing import Any

from finops_app.faust_patch import wrap

logger = logging.getLogger(__name__)

_originals: dict[str, Any] = {}


async def _seek_to_committed(self: Any) -> Any:
    """aiokafka's seek to committed offsets, then never-committed partitions to their log start."""
    committed = await _originals["seek_to_committed"](self)
    app = self.app
    if app.conf.consumer_auto_offset_reset != "earliest":
        return committed
    changelogs = set(app.tables.changelog_topics)
    never = [tp for tp, offset in committed.items() if not offset and tp.topic not in changelogs]
    if never:
        starts = await self.earliest_offsets(*never)
        positions = {tp: starts[tp] for tp in never if starts.get(tp) is not None}
        logger.info("no committed offset yet, reading from the log start: %s", positions)
        await self.seek_wait(positions)
    return committed


async def _resume_streams(self: Any, generation_id: int = 0) -> None:
    """Faust's ``Recovery._resume_streams`` in an order that cannot drop a delivered record."""
    app = self.app
    consumer = app.consumer
    await app.on_rebalance_complete.send()
    assignment = consumer.assignment()
    if app.consumer_generation_id != generation_id:
        self.log.warning("Recovery rebalancing again")
        return
    consumer.stop_flow()  # no delivery until the end: a record queued now would be cleared below
    app.flow_control.resume()  # clears every stream queue (as Faust does, but before the seek)
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    else:
        self.log.info("Resuming streams with empty assignment")
    self.completed.set()
    self.log.info("Resuming flow...")
    consumer.resume_flow()
    await app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


def install() -> None:
    """Patch Faust's aiokafka consumer thread and its table recovery (idempotent)."""
    from faust.tables.recovery import Recovery
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    wrap(AIOKafkaConsumerThread, "seek_to_committed", _seek_to_committed, _originals)
    Recovery._resume_streams = _resume_streams  # type: ignore[method-assign]


def installed() -> bool:
    from faust.tables.recovery import Recovery
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    return (
        AIOKafkaConsumerThread.seek_to_committed is _seek_to_committed
        and Recovery._resume_streams is _resume_streams
    )
