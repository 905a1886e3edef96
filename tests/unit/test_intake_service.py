"""The intake service's offset handling: commit only the acknowledged prefix, rewind on a failed send.

The Kafka consumer is a stand-in (what the service calls on it); sends return futures the test
resolves, so each ordering of acknowledgements is checked without a broker (the integration
tests run the same service against the real one).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from finops_app import kafka, topics
from finops_app.agents.common import groups
from finops_app.agents.intake import Intake, IntakeService
from finops_app.app import create_app
from finops_app.config import Settings


class FakeConsumer:
    def __init__(self, tps: list[Any]) -> None:
        self.tps = set(tps)
        self.commits: list[dict[Any, int]] = []
        self.seeks: list[tuple[Any, int]] = []

    def assignment(self) -> set[Any]:
        return self.tps

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.append(dict(offsets))

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))

    def highwater(self, tp: Any) -> int:
        return 1000


def cost(i: int) -> bytes:
    return orjson.dumps(
        {"event_id": f"e{i}", "timestamp": "2026-01-01 00:00:00", "service": "ec2", "cost_amount": "1.5"}
    )


@pytest.fixture
def service(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    app = create_app(Settings(data_dir=tmp_path))
    ctx = app.finops  # type: ignore[attr-defined]
    futures: list[asyncio.Future[Any]] = []

    async def send(topic: Any, key: Any, value: bytes, partition: Any = None) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        futures.append(fut)
        return fut

    monkeypatch.setattr(ctx, "send", send)
    svc = IntakeService(ctx)
    name = kafka.topic_name(ctx.settings, topics.COST_EVENTS)
    tp0, tp1 = TopicPartition(name, 0), TopicPartition(name, 1)
    svc._consumer = FakeConsumer([tp0, tp1])
    return svc, futures, tp0, tp1


def batch(tp: Any, first: int, n: int) -> list[Any]:
    return [
        SimpleNamespace(
            topic=tp.topic, partition=tp.partition, offset=o, timestamp=0, key=None, value=cost(o)
        )
        for o in range(first, first + n)
    ]


def committed(consumer: FakeConsumer) -> dict[Any, int]:
    out: dict[Any, int] = {}
    for c in consumer.commits:
        out.update(c)
    return out


async def test_a_batch_is_sent_only_after_the_one_before_is_acknowledged(service: Any) -> None:
    svc, futures, tp0, tp1 = service
    await svc._process({tp0: batch(tp0, 0, 3), tp1: batch(tp1, 10, 2)})
    first = list(futures)
    second = asyncio.create_task(svc._process({tp0: batch(tp0, 3, 2)}))
    await asyncio.sleep(0.05)
    assert len(futures) == len(first) and not second.done()  # validated, not sent
    assert svc._consumer.commits == []
    for f in first:
        f.set_result(None)
    await asyncio.wait_for(second, 5)
    assert len(futures) > len(first)  # sent now
    for f in futures[len(first) :]:
        f.set_result(None)
    await svc._advance(force=True)
    assert committed(svc._consumer) == {tp0: 5, tp1: 12}
    assert svc.status()["pending_batches"] == 0 and svc.stats["records"] == 7


async def test_a_failed_send_rewinds_before_anything_later_goes_out(service: Any) -> None:
    """A produce can fail (its batch expired without a leader) while a later one succeeds; had the
    later batch gone out, the failed records' re-send would look like repeats downstream."""
    svc, futures, tp0, tp1 = service
    await svc._process({tp0: batch(tp0, 0, 2)})
    for f in futures:
        f.set_result(None)
    await svc._advance(force=True)
    assert svc._consumer.commits == [{tp0: 2}]
    n = len(futures)
    await svc._process({tp0: batch(tp0, 2, 3), tp1: batch(tp1, 0, 1)})
    later = asyncio.create_task(svc._process({tp0: batch(tp0, 5, 1)}))
    await asyncio.sleep(0.05)
    futures[n].set_exception(ConnectionError("broker gone"))
    for f in futures[n + 1 :]:
        f.set_result(None)
    await asyncio.wait_for(later, 5)
    assert len(futures) == n + 2  # the failed batch's two records; the later batch was never sent
    assert svc._consumer.seeks == [(tp0, 2), (tp1, 0)]  # everything not acknowledged is read again
    assert svc._consumer.commits == [{tp0: 2}] and svc.stats["rewinds"] == 1
    assert svc.status()["pending_batches"] == 0 and "broker gone" in svc.stats["last_error"]


async def test_bad_records_are_dead_lettered_and_their_offsets_committed(service: Any) -> None:
    svc, futures, tp0, _ = service
    recs = batch(tp0, 0, 2)
    recs[1].value = b"{not json"
    await svc._process({tp0: recs})
    for f in futures:
        f.set_result(None)
    await svc._advance(force=True)
    assert svc._consumer.commits == [{tp0: 2}]
    assert svc.ctx.metrics.counters["deadletters_total"]


async def test_envelopes_go_where_the_producers_partitioner_puts_each_key(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every key of a destination partition shares one record, on the partition a keyed send uses."""
    app = create_app(Settings(data_dir=tmp_path))
    ctx = app.finops  # type: ignore[attr-defined]
    sent: list[tuple[str, Any, bytes, Any]] = []

    async def send(topic: Any, key: Any, value: bytes, partition: Any = None) -> asyncio.Future[Any]:
        sent.append((topic.get_topic_name(), key, value, partition))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def partitions(topic: Any) -> list[int]:
        return [0, 1, 2, 3]

    monkeypatch.setattr(ctx, "send", send)
    monkeypatch.setattr(ctx, "partitions", partitions)
    units = [f"unit-{i}" for i in range(12)]
    records = [
        SimpleNamespace(
            topic=kafka.topic_name(ctx.settings, topics.COST_EVENTS),
            partition=i % 2,
            offset=100 + i,
            timestamp=0,
            key=None,
            value=orjson.dumps(
                {
                    "event_id": f"e{i}",
                    "timestamp": "2026-01-01 00:00:00",
                    "service": f"svc-{i % 3}",
                    "cost_amount": "1.5",
                    "business_unit": units[i % len(units)],
                }
            ),
        )
        for i in range(48)
    ]
    await Intake(ctx).process(records)
    expected = DefaultPartitioner()
    by_unit = kafka.topic_name(ctx.settings, topics.BY_UNIT)
    by_service = kafka.topic_name(ctx.settings, topics.BY_SERVICE)
    seen: dict[str, list[int]] = {}
    for topic, key, value, partition in sent:
        assert topic in (by_unit, by_service) and key is None and partition in (0, 1, 2, 3)
        for _, _, _, gkey, items in groups(orjson.loads(value)):
            assert partition == expected(gkey.encode(), [0, 1, 2, 3], [0, 1, 2, 3]), gkey
            seen.setdefault(gkey, []).extend(i[0] for i in items)
    # one record per (topic, destination partition) that has keys, not one per key
    assert len(sent) == len({(t, p) for t, _, _, p in sent}) < len(units) + 3
    assert sorted(seen) == sorted([*units, "svc-0", "svc-1", "svc-2"])
    assert sorted(o for u in units for o in seen[u]) == list(range(100, 148))
