"""A failed intake send must not be followed by a later send of the same key before the rewind.

Downstream agents keep, per key, the highest source offset applied per (source tag, source
partition) (``fresh_items``) and skip anything at or below it. So every derived record of a source
partition must reach its key in offset order, with no gap that is filled later. These tests feed
the records the broker acknowledged, in the order it appended them, through ``groups`` and
``fresh_items`` exactly as a by-unit agent would, and check every source offset is applied.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import NotLeaderForPartitionError

from finops_app import kafka, topics
from finops_app.agents.common import fresh_items, groups
from finops_app.agents.intake import IntakeService
from finops_app.app import create_app
from finops_app.config import Settings


def cost(i: int) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"e{i}",
            "timestamp": "2026-01-01 00:00:00",
            "service": "ec2",
            "cost_amount": "1.5",
            "business_unit": "unit-a",
        }
    )


def batch(tp: Any, first: int, n: int) -> list[Any]:
    return [
        SimpleNamespace(
            topic=tp.topic, partition=tp.partition, offset=o, timestamp=0, key=None, value=cost(o)
        )
        for o in range(first, first + n)
    ]


class FakeConsumer:
    def __init__(self, tps: list[Any], journal: list[Any], script: list[Any] | None = None) -> None:
        self.tps = set(tps)
        self.journal = journal
        self.script = list(script or [])
        self.commits: list[dict[Any, int]] = []
        self.service: Any = None
        self.on_getmany: Any = None

    def assignment(self) -> set[Any]:
        return self.tps

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits.append(dict(offsets))

    def seek(self, tp: Any, offset: int) -> None:
        self.journal.append(("seek", tp, offset))

    def highwater(self, tp: Any) -> int:
        return 1000

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        if self.on_getmany is not None:
            self.on_getmany(len(self.script))
        if not self.script:
            self.service._stopped.set()
            return {}
        await asyncio.sleep(0)
        return self.script.pop(0)


@pytest.fixture
def env(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    app = create_app(Settings(data_dir=tmp_path))
    ctx = app.finops  # type: ignore[attr-defined]
    journal: list[Any] = []  # ("send", topic, key, value, partition, future) and ("seek", tp, offset)

    async def send(topic: Any, key: Any, value: bytes, partition: Any = None) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        journal.append(("send", topic.get_topic_name(), key, value, partition, fut))
        return fut

    monkeypatch.setattr(ctx, "send", send)
    svc = IntakeService(ctx)
    name = kafka.topic_name(ctx.settings, topics.COST_EVENTS)
    tp0 = TopicPartition(name, 0)
    svc._consumer = FakeConsumer([tp0], journal)
    svc._consumer.service = svc
    by_unit = kafka.topic_name(ctx.settings, topics.BY_UNIT)
    return svc, journal, tp0, by_unit


def sends(journal: list[Any]) -> list[Any]:
    return [e for e in journal if e[0] == "send"]


def apply_downstream(log: list[Any], topic: str) -> dict[str, list[int]]:
    """Offsets applied per key of ``topic``, as a stateful agent de-duplicating with fresh_items."""
    states: dict[str, dict[str, Any]] = {}
    applied: dict[str, list[int]] = {}
    for _, t, key, value, _, _ in log:
        if t != topic:
            continue
        for _kind, src, part, gkey, items in groups(orjson.loads(value), key):
            state = states.setdefault(gkey, {"h": {}})
            fresh, _ = fresh_items(state, f"{src}{part}", items)
            applied.setdefault(gkey, []).extend(i[0] for i in fresh)
    return applied


async def test_every_offset_reaches_its_key_when_a_send_fails_under_the_consume_loop(env: Any) -> None:
    """The real ``_consume`` loop: B1 (0..2) is sent and fails before the next fetch returns B2
    (3..5). B2 must not go out before the rewind; the re-read 0..5 then reaches the key in order,
    and a by-unit agent de-duplicating with ``fresh_items`` applies every offset once."""
    svc, journal, tp0, by_unit = env
    svc._consumer.script = [{tp0: batch(tp0, 0, 3)}, {tp0: batch(tp0, 3, 3)}, {tp0: batch(tp0, 0, 6)}]

    def before_getmany(left: int) -> None:
        for s in sends(journal):
            if not s[5].done():
                if left == 2:  # B1 was sent; its produce fails before the next fetch returns
                    s[5].set_exception(NotLeaderForPartitionError())
                else:
                    s[5].set_result(None)

    svc._consumer.on_getmany = before_getmany
    await IntakeService.__dict__["_consume"].fun(svc)  # the service task, run to its end here
    seek_at = next(i for i, e in enumerate(journal) if e[0] == "seek")
    later = [
        i
        for i, e in enumerate(journal)
        if e[0] == "send"
        and e[1] == by_unit
        and any(item[0] >= 3 for g in groups(orjson.loads(e[3]), e[2]) for item in g[4])
    ]
    assert later and min(later) > seek_at  # nothing of offsets 3.. went out before the rewind
    written = [e for e in sends(journal) if e[5].done() and e[5].exception() is None]
    assert apply_downstream(written, by_unit) == {"unit-a": [0, 1, 2, 3, 4, 5]}
