"""Ledger: finops.stream.by-id (events of re-sending sources, key event_id) -> by-unit, by-service.

Thin wiring of ``core.ledger`` over the ``ledger`` table: first arrivals pass, identical
repeats are dropped, restated amounts become corrections. The forwarded records carry this
topic's partition/offset (source tag ``l``), so downstream de-duplication stays exact.
"""

from __future__ import annotations

from typing import Any

import orjson

from finops_app.agents.common import delivered, envelope, run_batches
from finops_app.context import Context
from finops_app.core import ledger
from finops_app.tables.state import decode_key


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
            for body in out:
                metrics.inc("restatements_total", labels={"kind": body["charge_category"]})
                value = envelope("cost", event, body, source="l")
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
