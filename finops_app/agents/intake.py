"""Intake agents: raw input topics -> validated, re-keyed ``finops.stream.*`` topics or dead letters.

- ``cost_intake``: finops.cost.events -> by-unit (key business_unit; whole events, which the
  Snowflake sink also loads) and by-service (key service; the fields the anomaly series read)
- ``business_raw_intake``: finops.business.events.raw -> finops.business.events (pseudonymised)
- ``business_intake``: finops.business.events -> by-unit (user ids pseudonymised if still raw)
- ``resource_intake``: finops.resource.events -> by-resource (key resource_id)

Validation is ``core.validate``; a bad record goes to finops.deadletter with its reason and
source position, and the batch goes on. Re-keying here is the repartition step of ``group_by``,
done explicitly so one parse serves every downstream path. The re-keyed events of a batch go out
as batch envelopes (``common.Outbox``): one record per key and source partition, each event with
its own source offset.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from finops_app.agents.common import Outbox, dead_letter, encode_item, envelope
from finops_app.context import Context
from finops_app.core.privacy import protect_business
from finops_app.core.validate import parse_business, parse_cost, parse_resource
from finops_app.errors import FinOpsError

logger = logging.getLogger(__name__)

Parser = Callable[[Any, Any], dict[str, Any]]
SERIES_FIELDS = ("service", "ts_ms", "cost_amount", "business_unit", "region", "resource_id")
Route = Callable[[Outbox, Any, dict[str, Any]], Awaitable[None]]


def register(ctx: Context) -> None:
    app, settings, topics, metrics = ctx.app, ctx.settings, ctx.topics, ctx.metrics
    size, within = settings.batch_size, settings.batch_within_seconds

    async def intake(stream: Any, name: str, parser: Parser, route: Route) -> None:
        async for batch in stream.take_events(size, within=within):
            metrics.inc("events_in_total", len(batch), labels={"topic": batch[0].message.topic})
            outbox = Outbox()
            for event in batch:
                try:
                    body = parser(event.value, ctx.limits)
                except FinOpsError as exc:
                    await dead_letter(ctx, event, exc)
                    continue
                await route(outbox, event, body)
            await outbox.flush(ctx)
            metrics.inc("batches_total", labels={"agent": name})

    ledger_sources = frozenset(settings.ledger_sources)

    async def route_cost(outbox: Outbox, event: Any, body: dict[str, Any]) -> None:
        if body["source"] in ledger_sources:
            await ctx.send(topics.by_id, body["event_id"], envelope("cost", event, body))
            return
        part = event.message.partition
        outbox.add(topics.by_unit, body["business_unit"], "cost", part, encode_item(event, body))
        # the anomaly series read six fields: a third of the bytes of the whole event
        series = {f: body[f] for f in SERIES_FIELDS}
        outbox.add(topics.by_service, body["service"], "cost", part, encode_item(event, series))

    async def route_business_raw(outbox: Outbox, event: Any, body: dict[str, Any]) -> None:
        protected = protect_business(body, settings)
        await ctx.send(topics.business_events, protected["user_id"], orjson.dumps(protected))

    async def route_business(outbox: Outbox, event: Any, body: dict[str, Any]) -> None:
        protected = protect_business(body, settings)
        outbox.add(
            topics.by_unit,
            protected["business_unit"],
            "biz",
            event.message.partition,
            encode_item(event, protected),
        )

    async def route_resource(outbox: Outbox, event: Any, body: dict[str, Any]) -> None:
        await ctx.send(topics.by_resource, body["resource_id"], envelope("res", event, body))

    @app.agent(topics.cost_events, name="cost_intake")
    async def cost_intake(stream: Any) -> None:
        """Validate cost events; re-key by business unit and by service."""
        await intake(stream, "cost_intake", parse_cost, route_cost)

    @app.agent(topics.business_events_raw, name="business_raw_intake")
    async def business_raw_intake(stream: Any) -> None:
        """Validate raw business events; pseudonymise them onto finops.business.events."""
        await intake(stream, "business_raw_intake", parse_business, route_business_raw)

    @app.agent(topics.business_events, name="business_intake")
    async def business_intake(stream: Any) -> None:
        """Validate business events; re-key by business unit for the ROI join."""
        await intake(stream, "business_intake", parse_business, route_business)

    @app.agent(topics.resource_events, name="resource_intake")
    async def resource_intake(stream: Any) -> None:
        """Validate utilisation samples; re-key by resource id."""
        await intake(stream, "resource_intake", parse_resource, route_resource)
