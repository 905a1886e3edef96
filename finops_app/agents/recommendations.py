"""Savings from utilisation: finops.stream.by-resource -> recommendations and the action audit trail.

Each resource's bounded utilisation history lives in ``resource_state``; after a batch, resources
due for evaluation (hourly, event time) are run through ``core.rightsizing``; new or changed
recommendations go to finops.optimization.recommendations, and stop/resize candidates through
``actions.execute`` (dry-run unless enabled), whose result is recorded on finops.actions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from finops_app import actions
from finops_app.agents.common import delivered, first_delivery, run_batches
from finops_app.context import Context
from finops_app.core import rightsizing
from finops_app.core.prices import load_overrides
from finops_app.tables.state import decode_key

ACTIONABLE = frozenset({"stop_idle", "rightsize"})
ACTIONS_KEPT = 16  # action records kept per resource for replays (see ``act``)


def actions_key(resource_id: str) -> str:
    """Table key of a resource's recent action records, apart from its utilisation state."""
    return f"\x00actions/{resource_id}"


async def act_once(
    table: Any, rid: str, rec: dict[str, Any], run: Callable[[], Awaitable[dict[str, Any]]]
) -> tuple[dict[str, Any], bool]:
    """(the action record of ``rec``, whether it is a replay's): ``run`` acts at most once.

    A replayed batch (a retry, or a restart before the resource's state was written) makes the
    same recommendation again. Acting again would find the instance already changed and record
    "already t3.large" under the same action id, over the record of the resize that happened; the
    stored record is sent again instead. It is written to the table as soon as ``run`` returns,
    with no await between, and the last ``ACTIONS_KEPT`` records per resource are kept.
    """
    key = "/".join((str(rec.get("recommendation_id")), str(rec["kind"]), str(rec.get("proposed"))))
    done: dict[str, Any] = table.get(actions_key(rid)) or {}
    action = done.get(key)
    if action is not None:
        return action, True
    action = await run()
    kept = list(done.items())[-(ACTIONS_KEPT - 1) :]
    table[actions_key(rid)] = {**dict(kept), key: action}
    return action, False


def register(ctx: Context) -> None:
    app, settings, topics, metrics = ctx.app, ctx.settings, ctx.topics, ctx.metrics
    table = ctx.tables.resource_state
    prices = load_overrides(settings.price_table or None)
    ec2 = actions.ec2_client(settings)
    lookback = settings.utilisation_lookback_hours

    async def evaluate(rid: str, st: dict[str, Any], sent: list[Any]) -> None:
        now_ms = st["r"].get("last_ts_ms") or 0
        if not rightsizing.should_reevaluate(st["r"], now_ms):
            return
        recs = rightsizing.recommend(st["r"], st["res"], prices, settings, now_ms)
        st["r"], fresh = rightsizing.mark_evaluated(st["r"], recs, now_ms)
        for rec in fresh:
            sent.append(await ctx.send(topics.recommendations, rid, orjson.dumps(rec)))
            metrics.inc("events_out_total", labels={"topic": topics.recommendations.get_topic_name()})
            if rec["kind"] in ACTIONABLE:
                action = await act(rid, rec)
                sent.append(await ctx.send(topics.actions, rid, orjson.dumps(action)))

    async def act(rid: str, rec: dict[str, Any]) -> dict[str, Any]:
        action, replayed = await act_once(table, rid, rec, lambda: actions.execute(rec, settings, ec2))
        if replayed:
            metrics.inc("actions_replayed_total", labels={"kind": action["kind"]})
        else:
            metrics.inc("actions_total", labels={"kind": action["kind"], "status": action["status"]})
        return action

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
