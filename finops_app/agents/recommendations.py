"""Savings from utilisation: finops.stream.by-resource -> recommendations and the action audit trail.

Each resource's bounded utilisation history lives in ``resource_state``; after a batch, resources
due for evaluation (hourly, event time) are run through ``core.rightsizing``; new or changed
recommendations go to finops.optimization.recommendations, and stop/resize candidates through
``actions.execute`` (dry-run unless enabled), whose result is recorded on finops.actions.
"""

from __future__ import annotations

from typing import Any

import orjson

from finops_app import actions
from finops_app.agents.common import delivered, first_delivery, run_batches
from finops_app.context import Context
from finops_app.core import rightsizing
from finops_app.core.prices import load_overrides
from finops_app.tables.state import decode_key

ACTIONABLE = frozenset({"stop_idle", "rightsize"})


def register(ctx: Context) -> None:
    app, settings, topics, metrics = ctx.app, ctx.settings, ctx.topics, ctx.metrics
    table = ctx.tables.resource_state
    prices = load_overrides(settings.price_table or None)
    ec2 = actions.ec2_client(settings)
    lookback = settings.utilisation_lookback_hours
    recent: list[dict[str, Any]] = ctx.extras.setdefault("recent_recommendations", [])

    async def evaluate(rid: str, st: dict[str, Any], sent: list[Any]) -> None:
        now_ms = st["r"].get("last_ts_ms") or 0
        if not rightsizing.should_reevaluate(st["r"], now_ms):
            return
        recs = rightsizing.recommend(st["r"], st["res"], prices, settings, now_ms)
        st["r"], fresh = rightsizing.mark_evaluated(st["r"], recs, now_ms)
        for rec in fresh:
            sent.append(await ctx.send(topics.recommendations, rid, orjson.dumps(rec)))
            metrics.inc("events_out_total", labels={"topic": topics.recommendations.get_topic_name()})
            recent.append(rec)
            if rec["kind"] in ACTIONABLE:
                action = await actions.execute(rec, settings, ec2)
                sent.append(await ctx.send(topics.actions, rid, orjson.dumps(action)))
                metrics.inc("actions_total", labels={"kind": action["kind"], "status": action["status"]})
        del recent[:-500]

    async def process(partition: int, events: list[Any]) -> None:
        states: dict[str, dict[str, Any]] = {}
        for event in events:
            env = orjson.loads(event.value)
            rid = decode_key(event.message.key)
            st = states.get(rid) or table.get(rid) or {"r": rightsizing.new_state(), "h": {}}
            states[rid] = st
            if not first_delivery(st, env):
                metrics.inc("duplicates_skipped_total", labels={"agent": "recommendations"})
                continue
            st["r"] = rightsizing.observe(st["r"], env["e"], lookback_hours=lookback)
            st["res"] = env["e"]
        sent: list[Any] = []
        for rid, st in states.items():
            if "res" in st:
                await evaluate(rid, st, sent)
        # the recommendations and actions first: a state says they were sent
        await delivered(sent)
        for rid, st in states.items():
            table[rid] = st

    @app.agent(topics.by_resource, name="recommendations")
    async def recommendations(stream: Any) -> None:
        """Right-size, stop, spot and storage-tier recommendations from utilisation."""
        await run_batches(stream, ctx, "recommendations", process, within=settings.batch_within_seconds)
