"""Ledger: finops.stream.by-id (events of re-sending sources, key event_id) -> by-unit, by-service.

Thin wiring of ``core.ledger`` over the ``ledger`` table: first arrivals pass, identical
repeats are dropped, restated amounts become corrections. The forwarded records carry this
topic's partition and a slot of its offset (source tag ``l``, ``ledger_offset``), so downstream
de-duplication stays exact.
"""

from __future__ import annotations

from typing import Any

import orjson

from finops_app.agents.common import delivered, envelope, run_batches
from finops_app.context import Context
from finops_app.core import ledger
from finops_app.tables.state import decode_key


def ledger_offset(event: Any, slot: int) -> int:
    """The source offset of the ``slot``-th correction derived from a by-id record.

    Downstream high-water marks skip an item whose offset is not above the last one applied, so
    the corrections of one record get ``offset * core.ledger.SLOTS + slot``: distinct, and growing with the
    by-id offset, so a replayed record is still recognised as applied.
    """
    if not 0 <= slot < ledger.SLOTS:
        raise ValueError(f"a by-id record gave more than {ledger.SLOTS} corrections")
    return int(event.message.offset) * ledger.SLOTS + slot


def register(ctx: Context) -> None:
    app, settings, topics, metrics = ctx.app, ctx.settings, ctx.topics, ctx.metrics
    table = ctx.tables.ledger

    async def process(partition: int, events: list[Any]) -> None:
        entries: dict[str, Any] = {}  # written once the corrections are acknowledged
        sent: list[Any] = []
        for event in events:
            env = orjson.loads(event.value)
            key = decode_key(event.message.key)
            entry, out = ledger.apply(entries[key] if key in entries else table.get(key), env["e"])
            if entry is not None:
                entries[key] = entry
            if not out:
                metrics.inc("restatements_unchanged_total")
            for slot, body in enumerate(out):
                metrics.inc("restatements_total", labels={"kind": body["charge_category"]})
                # a re-attribution sends two corrections, often to the same unit or service: each
                # needs its own offset there, or the second looks like a repeat of the first
                value = envelope("cost", event, body, source="l", offset=ledger_offset(event, slot))
                sent.append(await ctx.send(topics.by_unit, body["business_unit"], value))
                sent.append(await ctx.send(topics.by_service, body["service"], value))
        # the corrections first: an entry says its restatement was sent (common.delivered)
        await delivered(sent)
        for key, entry in entries.items():
            table[key] = entry

    @app.agent(topics.by_id, name="restatements")
    async def restatements(stream: Any) -> None:
        """Count each event id once; turn restated amounts into corrections."""
        await run_batches(stream, ctx, "restatements", process, within=settings.batch_within_seconds)
