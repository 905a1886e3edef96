"""What every agent, view and command is given: the app and its settings, topics and tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka.partitioner import DefaultPartitioner

from finops_app.config import Settings
from finops_app.core.validate import Limits
from finops_app.metrics import Metrics
from finops_app.tables.declare import Tables
from finops_app.topics import Topics


@dataclass
class Context:
    app: faust.App
    settings: Settings
    topics: Topics
    tables: Tables
    metrics: Metrics
    limits: Limits
    # runtime objects other parts look up (sink service, last poll results, recent records)
    extras: dict[str, Any] = field(default_factory=dict)

    async def send(
        self, topic: Any, key: str | bytes | None, value: bytes, partition: int | None = None
    ) -> Any:
        """Hand one record to the app's producer; returns the delivery future.

        Straight to the producer, not through ``Topic.send`` (whose channel and attachment
        machinery costs ~0.5 ms a record). At-least-once holds: Faust flushes the producer
        before it commits consumed offsets.
        """
        raw_key = key.encode() if isinstance(key, str) else key
        return await self.app.producer.send(topic.get_topic_name(), raw_key, value, partition, None, None)

    async def partitions(self, topic: Any) -> list[int] | None:
        """The topic's partitions as the app's producer sees them (its cached metadata), or None.

        None when the producer is not running or does not know the topic: callers then let the
        producer's partitioner place each key (``send`` with no partition).
        """
        try:
            producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
            found = await producer.partitions_for(topic.get_topic_name())
        except Exception:  # noqa: BLE001 - no producer yet, or no metadata: the caller falls back
            return None
        return sorted(found) if found else None

    def partitioner(self) -> Any:
        """The partitioner the app's producer applies to keyed records (aiokafka's murmur2 default)."""
        return getattr(self.app.producer, "partitioner", None) or DefaultPartitioner()
