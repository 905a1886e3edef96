"""Plain aiokafka helpers for tests: produce records, read a topic until a condition holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from finops_app import kafka
from finops_app.cli import produce_all
from finops_app.config import Settings


async def produce(settings: Settings, topic: str, records: Iterable[tuple[str | None, Any]]) -> int:
    """Send (key, value) pairs to the app topic ``topic`` (prefix applied); waits for acks."""
    await kafka.ensure_topics(settings)
    return await produce_all(settings, ((topic, k, v) for k, v in records))


async def read_topic(
    settings: Settings,
    topic: str,
    until: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 60.0,
    decode: bool = True,
) -> list[Any]:
    """Read ``topic`` from the beginning until ``until(records)`` is true or ``timeout`` passes."""
    consumer = AIOKafkaConsumer(
        kafka.topic_name(settings, topic),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        **kafka.client_kwargs(settings),
    )
    await consumer.start()
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for m in messages:
                    out.append(orjson.loads(m.value) if decode else m)
            if until(out):
                return out
        return out
    finally:
        await consumer.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)
