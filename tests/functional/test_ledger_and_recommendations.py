"""restatements and recommendations agents through test_context."""

from __future__ import annotations

import orjson

from finops_app import topics
from finops_app.core.validate import Limits, iso, parse_cost, parse_resource

LIMITS = Limits(currencies=frozenset({"USD"}))
T0 = 1_767_225_600_000


def by_id(offset: int, amount: str) -> bytes:
    body = parse_cost(
        {
            "event_id": "ce:aws:1",
            "timestamp": iso(T0),
            "service": "ec2",
            "cost_amount": amount,
            "business_unit": "ecommerce",
            "source": "cost_explorer",
        },
        LIMITS,
    )
    return orjson.dumps({"k": "cost", "s": "c", "p": 0, "o": offset, "t": 0, "e": body})


async def test_restatements_count_each_id_once(app_factory) -> None:
    app, _, sent = app_factory()
    async with app.agents["restatements"].test_context() as a:
        for offset, amount in enumerate(["10", "10", "12.5", "12.5"]):
            await a.put(by_id(offset, amount), key=b"ce:aws:1")
        await sent.wait_for(lambda s: len(s.on(topics.BY_UNIT)) >= 2)
    forwarded = [e["e"] for e in sent.on(topics.BY_UNIT)]
    assert [(e["event_id"], e["cost_amount"], e["charge_category"]) for e in forwarded] == [
        ("ce:aws:1", "10", "usage"),
        ("ce:aws:1:r1", "2.5", "correction"),
    ]
    assert {e["s"] for e in sent.on(topics.BY_UNIT)} == {"l"}  # offsets of the ledger topic, not the raw one


async def test_idle_staging_instance_gets_stop_recommendation_and_dry_run_action(app_factory) -> None:
    app, _, sent = app_factory()
    async with app.agents["recommendations"].test_context() as a:
        for i in range(30 * 12):  # 30 hours of 5-minute samples at ~2 % CPU
            body = parse_resource(
                {
                    "event_id": f"u{i}",
                    "timestamp": iso(T0 + i * 300_000),
                    "resource_id": "i-0abc",
                    "utilisation": 0.02,
                    "instance_type": "m5.2xlarge",
                    "environment": "staging",
                    "business_unit": "analytics",
                    "hourly_cost": "0.384",
                },
                LIMITS,
            )
            await a.put(
                orjson.dumps({"k": "res", "s": "r", "p": 0, "o": i, "t": 0, "e": body}), key=b"i-0abc"
            )
        await sent.wait_for(lambda s: len(s.on(topics.ACTIONS)) >= 1)
    recs = sent.on(topics.RECOMMENDATIONS)  # one per day of evidence at most
    assert recs and {r["kind"] for r in recs} == {"stop_idle"}
    rec = recs[0]
    assert rec["resource_id"] == "i-0abc" and float(rec["monthly_saving"]) > 100
    assert rec["evidence"]["p95"] <= 0.03
    actions = sent.on(topics.ACTIONS)  # actions are disabled by default: refused, recorded, nothing called
    assert {(x["kind"], x["dry_run"], x["status"]) for x in actions} == {("stop", True, "refused")}
