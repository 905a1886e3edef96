"""Partitions leaving the sink while it loads: the load in flight finishes first, later loads skip them.

A rebalance goes on when ``on_revoked`` returns, and the new owner starts loading the same rows
again. A load of the old owner still running after that could MERGE an older record of a key and
revision over the new owner's later one (equal revisions: the later row wins only within a load).
"""

from __future__ import annotations

import asyncio
import threading
from collections import namedtuple
from types import SimpleNamespace
from typing import Any

import orjson

from finops_app import topics
from finops_app.config import Settings
from finops_app.sinks.loader import LoadResult
from finops_app.sinks.service import SinkService

TP = namedtuple("TP", "topic partition")


class BlockingLoader:
    """Loads nothing; each load waits until the test releases it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.loads: list[tuple[str, int]] = []  # (table, rows) of every load

    def load(self, spec: Any, rows: list[dict[str, Any]]) -> LoadResult:
        self.loads.append((spec.name, len(rows)))
        self.started.set()
        assert self.release.wait(10), "the test never released the load"
        return LoadResult(table=spec.name, rows=len(rows), inserted=len(rows))


class Consumer:
    def __init__(self, tps: set[Any]) -> None:
        self.tps = tps
        self.commits: list[dict[Any, int]] = []

    def assignment(self) -> set[Any]:
        return set(self.tps)

    async def commit(self, positions: dict[Any, int]) -> None:
        self.commits.append(dict(positions))


def cost_event(offset: int, tp: Any) -> Any:
    """A by-unit record with one cost event: one row of finops_curated.cost_events."""
    body = {"event_id": f"e{offset}", "cost_amount": "1.5", "business_unit": "eng"}
    value = orjson.dumps({"k": "cost", "s": "c", "p": 0, "o": offset, "t": 0, "e": body})
    return SimpleNamespace(
        topic=tp.topic, partition=tp.partition, offset=offset, value=value, key=b"eng", timestamp=0
    )


def sink(batch_rows: int) -> tuple[SinkService, BlockingLoader, Consumer, Any]:
    tp = TP(topics.BY_UNIT, 0)
    loader = BlockingLoader()
    svc = SinkService(Settings(sink_batch_rows=batch_rows), loader=loader)  # type: ignore[arg-type]
    consumer = Consumer({tp})
    svc._consumer = consumer
    return svc, loader, consumer, tp


async def wait_for_load(loader: BlockingLoader) -> None:
    for _ in range(500):
        if loader.started.is_set():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no load started")


async def revoke_during_a_load(batch_rows: int) -> tuple[Any, Any, BlockingLoader, Consumer, Any]:
    """Three rows of one partition buffered, a flush started, and the partition revoked while the
    flush's first load runs: (flush task, revoke task, loader, consumer, partition)."""
    svc, loader, consumer, tp = sink(batch_rows)
    for offset in range(3):
        svc.ingest(tp, cost_event(offset, tp))
    flush = asyncio.create_task(svc.flush(force=True))
    await wait_for_load(loader)
    revoke = asyncio.create_task(svc.on_revoked({tp}))
    return flush, revoke, loader, consumer, tp


async def test_a_revocation_waits_for_the_load_in_flight_and_commits_its_rows() -> None:
    flush, revoke, loader, consumer, tp = await revoke_during_a_load(batch_rows=10)
    await asyncio.sleep(0.3)
    assert not revoke.done()  # the rebalance waits: the new owner cannot load these rows yet
    loader.release.set()
    await asyncio.wait_for(revoke, 10)
    await asyncio.wait_for(flush, 10)
    assert consumer.commits[0] == {tp: 3}  # the loaded rows are committed before the partition moves


async def test_rows_of_a_revoked_partition_are_not_loaded_by_a_later_load_of_the_same_flush() -> None:
    flush, revoke, loader, consumer, tp = await revoke_during_a_load(batch_rows=1)
    await asyncio.sleep(0.05)
    loader.release.set()
    await asyncio.wait_for(revoke, 10)
    await asyncio.wait_for(flush, 10)
    assert loader.loads == [("cost_events", 1)]  # offsets 1 and 2 belong to the new owner now
    assert consumer.commits == [{tp: 1}]
