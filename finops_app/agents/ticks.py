"""Idle partitions: a timer advances their watermark so open windows still close.

Each stream agent reports, per partition, the watermark after every batch and whether real
events moved it (``Clock.observe``). Every ``idle_timeout / 2`` seconds the timer looks at the
partitions this worker owns; one that saw no real event for ``idle_timeout`` gets a tick record
whose watermark is the last real watermark plus the wall-clock time elapsed since (event time is
assumed to run at wall-clock speed while a source is quiet). Ticks travel through the topic
itself, so the agent closes windows in stream context (tables can be written) and every worker
does this for exactly the partitions it owns. After a restart, a partition's watermark comes
from its table record and the clock starts at boot.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from finops_app.agents.common import tick
from finops_app.context import Context
from finops_app.tables.state import partition_key

logger = logging.getLogger(__name__)


class Clock:
    """Last real watermark per (topic, partition) and when it was seen (wall clock)."""

    def __init__(self, now: Any = time.time) -> None:
        self._now = now
        self.base: dict[tuple[str, int], tuple[int, float]] = {}
        self.current: dict[tuple[str, int], int] = {}

    def forget(self, *_: Any, **__: Any) -> None:
        """Drop every partition's clock (a Faust rebalance signal receiver): the timer then starts a
        partition again from its table record, as a worker new to it does, instead of extrapolating
        from when this worker last had it."""
        self.base.clear()
        self.current.clear()

    def observe(self, topic: str, partition: int, watermark: int, latest: int | None) -> None:
        """After a batch: the partition's watermark, and its latest event time if real events
        arrived (the point from which a quiet partition's event time is extrapolated)."""
        tp = (topic, partition)
        self.current[tp] = watermark
        if latest is not None or tp not in self.base:
            self.base[tp] = (max(watermark, latest or 0), self._now())

    def idle_watermark(self, topic: str, partition: int, idle_s: float) -> int | None:
        """The watermark to tick with, or None while the partition is not idle."""
        base = self.base.get((topic, partition))
        if base is None:
            return None
        wm, seen = base
        elapsed = self._now() - seen
        if elapsed < idle_s or wm <= 0:
            return None
        return wm + int(elapsed * 1000)


def register(ctx: Context, clock: Clock, table_by_topic: dict[str, Any]) -> None:
    app, settings = ctx.app, ctx.settings
    interval = max(0.5, settings.idle_timeout_seconds / 2)
    app.on_partitions_revoked.connect(clock.forget)
    app.on_partitions_assigned.connect(clock.forget)
    topics = {t.get_topic_name(): t for t in (ctx.topics.by_unit, ctx.topics.by_service)}

    @app.timer(interval, name="idle_ticks")
    async def idle_ticks() -> None:
        """Advance the watermark of idle partitions so their windows close."""
        assigned = app.assignor.assigned_actives() if app.assignor else set()
        for tp in assigned:
            topic = topics.get(tp.topic)
            if topic is None:
                continue
            key = (tp.topic, tp.partition)
            if key not in clock.base:
                record = table_by_topic[tp.topic].get(partition_key(tp.partition))
                if record and record.get("wm"):
                    clock.observe(
                        tp.topic,
                        tp.partition,
                        record["wm"],
                        latest=max((record.get("src") or {}).values(), default=record["wm"]),
                    )
                continue
            wm = clock.idle_watermark(tp.topic, tp.partition, settings.idle_timeout_seconds)
            if wm is not None and wm > clock.current.get(key, 0):
                await ctx.send(topic, None, tick(wm), partition=tp.partition)
                ctx.metrics.inc("ticks_total", labels={"topic": tp.topic})
