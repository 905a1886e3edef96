"""Replay: move a consumer group's committed offsets on a topic back to a point in time.

The group's workers must be stopped (Kafka only lets an empty group's offsets be moved); when
they start again they re-read from there. Everything downstream is idempotent, so replaying
never double counts: windows remember source offsets, the ledger event ids, the sink MERGEs.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from finops_app import kafka
from finops_app.config import Settings


async def _group_members(settings: Settings, group_id: str) -> int:
    admin = AIOKafkaAdminClient(**kafka.client_kwargs(settings))
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([group_id])
    finally:
        await admin.close()
    members = 0
    for resp in described:
        for group in getattr(resp, "groups", []):
            # (error_code, group_id, state, protocol_type, protocol, members, ...)
            members += len(group[5]) if len(group) > 5 else 0
    return members


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """Partition numbers of ``topic`` (a consumer only caches metadata of its subscriptions)."""
    cluster = await consumer._client.fetch_all_metadata()
    return set(cluster.partitions_for_topic(topic) or ())


async def rewind(settings: Settings, topic: str, group_id: str, since: datetime) -> list[dict[str, Any]]:
    """Commit, for every partition of ``topic``, the first offset at or after ``since``."""
    if await _group_members(settings, group_id):
        raise SystemExit(
            f"consumer group {group_id!r} has active members: stop its workers first, then replay again"
        )
    consumer = AIOKafkaConsumer(group_id=group_id, enable_auto_commit=False, **kafka.client_kwargs(settings))
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        if not partitions:
            await consumer.stop()
            raise SystemExit(f"topic {topic!r} does not exist (is FINOPS_TOPIC_PREFIX right?)")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
        moved = []
        new: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp in tps:
            committed = await consumer.committed(tp)
            target = found[tp].offset if found.get(tp) is not None else ends[tp]
            new[tp] = OffsetAndMetadata(target, "")
            moved.append(
                {
                    "partition": tp.partition,
                    "committed": committed,
                    "offset": target,
                    "to_process": ends[tp] - target,
                }
            )
        await consumer.commit(new)
        return moved
    finally:
        await consumer.stop()


async def lag(settings: Settings, topic: str, group_id: str) -> int:
    consumer = AIOKafkaConsumer(group_id=group_id, enable_auto_commit=False, **kafka.client_kwargs(settings))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        ends = await consumer.end_offsets(tps)
        total = 0
        for tp in tps:
            committed = await consumer.committed(tp)
            total += ends[tp] - (committed or 0)
        return total
    finally:
        await consumer.stop()


async def wait_caught_up(settings: Settings, topic: str, group_id: str, total: int, timeout: float) -> None:
    """A progress bar of re-processed records until the group's lag on ``topic`` is zero."""
    from tqdm import tqdm

    with tqdm(total=total, desc="re-processed", unit="rec") as bar:
        while time.time() < timeout:
            remaining = await lag(settings, topic, group_id)
            bar.n = max(0, total - remaining)
            bar.refresh()
            if remaining <= 0:
                return
            await asyncio.sleep(1.0)
