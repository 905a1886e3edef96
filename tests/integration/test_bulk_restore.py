"""A new worker restores a large table changelog in bulk (finops_app/faust_restore.py).

The changelog of ``resource_state`` is written straight to the real broker, in the format the
worker writes (JSON key, JSON value; ``None`` a tombstone), with rewritten and deleted keys. A
worker with an empty data directory must serve the latest value of every key, have read the
changelog through the bulk path (its log says how many records), and persist the offsets: a
restart on the same directory reads only what was written since.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from finops_app import kafka
from finops_app.config import Settings

KEYS = 10_000
REWRITTEN = range(0, 1_000)  # written twice: the second value must win
DELETED = range(1_000, 1_200)  # then tombstoned: must be gone
ADDED_LATER = range(KEYS, KEYS + 5_000)  # written while the worker is down, before its restart


def value(i: int, version: int) -> dict[str, Any]:
    return {"res": {"resource_id": f"i-{i:06d}", "version": version}, "h": {"r0": i}}


async def create_changelog(settings: Settings, topic: str) -> None:
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(settings))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, settings.topic_partitions, 1, topic_configs={"cleanup.policy": "compact"})]
        )
    finally:
        await admin.close()


async def write(settings: Settings, topic: str, records: list[tuple[int, dict[str, Any] | None]]) -> None:
    producer = AIOKafkaProducer(linger_ms=5, **kafka.client_kwargs(settings))
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic, key=orjson.dumps(f"i-{i:06d}"), value=None if v is None else orjson.dumps(v)
            )
            for i, v in records
        ]
        for f in futures:
            await f
    finally:
        await producer.stop()


def bulk_records(log: str) -> list[int]:
    return [int(n) for n in re.findall(r"bulk restore: (\d+) records of", log)]


def lookup(worker: Any, i: int) -> tuple[int, Any]:
    status, body = worker.get(f"/finops/tables/resource_state/i-{i:06d}/", timeout=10)
    return status, body.get("value") if isinstance(body, dict) else body


def assert_latest(worker: Any, keys: tuple[int, ...]) -> None:
    """The worker serves each key's last written value, and no deleted key."""
    for i in keys:
        status, got = lookup(worker, i)
        if i in DELETED:
            assert status == 404, (i, status, got)
        else:
            assert status == 200, (i, status, got)
            assert got == value(i, 2 if i in REWRITTEN else 1), i


async def test_new_worker_restores_a_large_changelog_in_bulk(settings_factory, worker_factory) -> None:
    settings = settings_factory()
    topic = f"{settings.app_id}-resource_state-changelog"
    await create_changelog(settings, topic)
    first: list[tuple[int, dict[str, Any] | None]] = [(i, value(i, 1)) for i in range(KEYS)]
    first += [(i, value(i, 2)) for i in REWRITTEN]
    first += [(i, None) for i in DELETED]
    await write(settings, topic, first)

    worker = worker_factory.start(settings)
    worker.wait_healthy(timeout=120)
    log = worker.log_path.read_text(errors="replace")
    # every record of the changelog went through the bulk read, none record by record
    assert bulk_records(log) == [len(first)], log[-3000:]
    assert_latest(worker, (0, 999, 1_000, 1_199, 1_200, 5_000, KEYS - 1))
    worker.stop()

    # the applied offsets were persisted: a restart reads only the records written since
    later = [(i, value(i, 1)) for i in ADDED_LATER]
    await write(settings, topic, later)
    again = worker_factory.start(settings)
    again.wait_healthy(timeout=120)
    log2 = again.log_path.read_text(errors="replace")
    assert bulk_records(log2) == [len(later)], log2[-3000:]
    assert_latest(again, (0, 1_000, 5_000, KEYS, KEYS + 4_999))


async def test_bulk_restore_off_leaves_it_to_faust(settings_factory, worker_factory) -> None:
    settings = settings_factory(restore_bulk_seconds=0)
    topic = f"{settings.app_id}-resource_state-changelog"
    await create_changelog(settings, topic)
    records: list[tuple[int, dict[str, Any] | None]] = [(i, value(i, 1)) for i in range(3_000)]
    await write(settings, topic, records)
    worker = worker_factory.start(settings)
    worker.wait_healthy(timeout=120)
    log = worker.log_path.read_text(errors="replace")
    assert bulk_records(log) == [] and "Restoring state from changelog topics" in log, log[-3000:]
    assert lookup(worker, 2_999) == (200, value(2_999, 1))
