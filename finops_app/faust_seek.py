"""A fix for records lost when a partition changes owner before its first offset commit.

Found with the SIGKILL variant of tests/integration/test_scaling.py, which lost events in about
one run in three (traced on 2026-11-27 with logs of every fetch, ack, commit and seek):

1. A worker is SIGKILLed after processing records of a partition but before its first offset
   commit of that partition (commits run every ``broker_commit_interval``), so the partition has
   no committed offset at all.
2. The worker that takes the partition over fetches records of it while the rebalance is still
   going on; Faust drops them (the flow is stopped or the generation changed) and relies on
   ``perform_seek`` to go back to the committed offset once recovery is over.
3. aiokafka's ``seek_to_committed`` seeks only when the committed offset is a number above 0:
   with none (or 0) it leaves the fetch position after the dropped records.
4. Faust's ``_resume_streams`` resumes the stream partitions *before* its seek, so the records
   after that position are delivered first and advance Faust's read offset; when the seek does
   reach the log start, Faust discards the re-fetched records as already read.

Records of the new owner's first batch therefore started at, say, offset 19 or 26 instead of 0
or 12; the skipped ones were never counted (window totals short for the units of that
partition). Partitions *with* a committed offset above 0 were only safe because the seek moved
them back before the resume in most runs.

The fix has two parts, both installed by ``install()`` (idempotent, called by ``create_app``):

- ``_seek_to_committed``: after aiokafka's seek, a non-changelog partition without a committed
  offset (or with 0) is moved to its log start, as ``auto_offset_reset=earliest`` means
  (changelog partitions are left alone: recovery positions them itself);
- ``_resume_streams``: the stream partitions are sought while still paused, before Faust's own
  resume (whose second seek is then harmless: it lands on the same positions).

Records read twice this way are counted once downstream (each event's source offset is checked
against the high-water mark in its key's table value, ``agents.common.fresh``).
"""

from __future__ import annotations

import logging
from typing import Any

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
    """Seek the stream partitions while they are still paused, then Faust's own resume."""
    app = self.app
    if app.consumer_generation_id == generation_id and app.consumer.assignment():
        await self._wait(app.consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
    await _originals["_resume_streams"](self, generation_id)


def install() -> None:
    """Patch Faust's aiokafka consumer thread and its table recovery (idempotent)."""
    from faust.tables.recovery import Recovery
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if AIOKafkaConsumerThread.seek_to_committed is _seek_to_committed:
        return
    _originals["seek_to_committed"] = AIOKafkaConsumerThread.seek_to_committed
    _originals["_resume_streams"] = Recovery._resume_streams
    AIOKafkaConsumerThread.seek_to_committed = _seek_to_committed  # type: ignore[method-assign]
    Recovery._resume_streams = _resume_streams  # type: ignore[method-assign]


def installed() -> bool:
    from faust.tables.recovery import Recovery
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    return (
        AIOKafkaConsumerThread.seek_to_committed is _seek_to_committed
        and Recovery._resume_streams is _resume_streams
    )
