"""Shared agent plumbing: internal envelopes, dead letters and batched sends."""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

import orjson
from faust.types import EventT

from finops_app.context import Context
from finops_app.core.validate import iso
from finops_app.errors import FinOpsError, ValidationError

logger = logging.getLogger(__name__)


def envelope(kind: str, event: EventT[Any], body: dict[str, Any]) -> bytes:
    """Internal record: kind, source partition/offset (for idempotence), produce time, event."""
    msg = event.message
    return orjson.dumps(
        {"k": kind, "p": msg.partition, "o": msg.offset, "t": int(msg.timestamp * 1000), "e": body}
    )


def tick(watermark_ms: int) -> bytes:
    """A control record that advances an idle partition's watermark."""
    return orjson.dumps({"k": "tick", "wm": watermark_ms, "t": int(time.time() * 1000)})


def dead_letter_value(
    source_topic: str,
    partition: int,
    offset: int,
    raw: bytes | None,
    error: FinOpsError | str,
    stage: str = "intake",
) -> bytes:
    field = error.field if isinstance(error, ValidationError) else None
    raw = raw or b""
    return orjson.dumps(
        {
            "source_topic": source_topic,
            "partition": partition,
            "offset": offset,
            "error": str(error),
            "field": field,
            "raw": base64.b64encode(raw).decode(),
            "raw_size": len(raw),
            "timestamp": iso(int(time.time() * 1000)),
            "stage": stage,
        }
    )


async def dead_letter(
    ctx: Context, event: EventT[Any], error: FinOpsError | str, stage: str = "intake"
) -> None:
    """Send the event's raw bytes with the reason to finops.deadletter and count it."""
    msg = event.message
    raw = msg.value if isinstance(msg.value, bytes) else None
    if raw is None and isinstance(event.value, bytes):
        raw = event.value
    value = dead_letter_value(msg.topic, msg.partition, msg.offset, raw, error, stage)
    await ctx.topics.deadletter.send(key=msg.topic, value=value)
    ctx.metrics.inc("deadletters_total", labels={"topic": msg.topic, "stage": stage})
    logger.info("dead-lettered %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, error)
