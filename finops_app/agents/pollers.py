"""Scheduled sources inside the worker: Cost Explorer and CloudWatch polls (leader only).

Intervals come from ``FINOPS_CE_POLL_SECONDS`` and ``FINOPS_CLOUDWATCH_POLL_SECONDS`` (0 disables).
Each poll re-reads the look-back window and produces full figures; the ledger agent turns
restated figures into corrections and drops unchanged repeats, so polling is idempotent. A
failed poll is logged with its request context and counted (``source_errors_total``); the next
poll retries.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from finops_app.context import Context
from finops_app.errors import FinOpsError

logger = logging.getLogger(__name__)


def register(ctx: Context) -> None:
    app, settings, topics, metrics = ctx.app, ctx.settings, ctx.topics, ctx.metrics

    async def produce(topic: Any, events: list[dict[str, Any]], key: str) -> None:
        for e in events:
            await ctx.send(topic, e[key], orjson.dumps(e))
        metrics.inc("events_in_total", len(events), labels={"topic": f"poll:{topic.get_topic_name()}"})

    if settings.ce_poll_seconds > 0:

        @app.timer(settings.ce_poll_seconds, on_leader=True, name="cost_explorer_poll")
        async def cost_explorer_poll() -> None:
            """Read AWS Cost Explorer's look-back window and produce cost events."""
            from finops_app.sources import create_client
            from finops_app.sources.cost_explorer import poll_costs

            try:
                async with create_client(settings, "ce") as client:
                    events = await poll_costs(client, settings, datetime.now(UTC), state={})
            except (FinOpsError, OSError) as exc:
                metrics.inc("source_errors_total", labels={"source": "cost_explorer"})
                logger.error("Cost Explorer poll failed, retrying next interval: %s", exc)
                return
            await produce(topics.cost_events, events, "resource_id")

    if settings.cloudwatch_poll_seconds > 0:

        @app.timer(settings.cloudwatch_poll_seconds, on_leader=True, name="cloudwatch_poll")
        async def cloudwatch_poll() -> None:
            """Read CloudWatch utilisation of the EC2 instances in scope and produce samples."""
            from datetime import timedelta

            from finops_app.sources import create_client
            from finops_app.sources.cloudwatch import discover_ec2, poll_utilisation

            lookback = timedelta(seconds=max(300.0, settings.cloudwatch_poll_seconds))
            try:
                async with create_client(settings, "ec2") as ec2:
                    resources = await discover_ec2(ec2, settings)
                async with create_client(settings, "cloudwatch") as cw:
                    events = await poll_utilisation(
                        cw, settings, resources, datetime.now(UTC), lookback=lookback
                    )
            except (FinOpsError, OSError) as exc:
                metrics.inc("source_errors_total", labels={"source": "cloudwatch"})
                logger.error("CloudWatch poll failed, retrying next interval: %s", exc)
                return
            await produce(topics.resource_events, events, "resource_id")
