"""What the restatement and recommendation agents send, first time and on a replay.

The agents' ``process`` run for real over dict tables, with a context that records what is sent;
downstream de-duplication is applied exactly as the unit and anomaly agents apply it (``groups`` +
``fresh_items`` against a per-key high-water mark).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from finops_app import actions
from finops_app.agents import common
from finops_app.agents import ledger as ledger_agent
from finops_app.agents import recommendations as recs_agent
from finops_app.config import Settings
from finops_app.core import rightsizing as rs
from finops_app.core.prices import DEFAULT_PRICES
from finops_app.sinks import rows
from tests.unit.test_rightsizing import sample as rightsizing_sample

HOUR = 3_600_000
T0 = 1_736_899_200_000  # 2025-01-15T00:00:00Z
Sent = list[tuple[str, str, bytes]]


def capture_process(
    module: Any, monkeypatch: pytest.MonkeyPatch, settings: Any, table: dict[str, Any]
) -> tuple[Callable[..., Any], Sent, list[tuple[str, dict[str, Any]]]]:
    """The agent's batch function, what it sends, and the metrics it counts."""
    captured: dict[str, Any] = {}
    sent: Sent = []
    counted: list[tuple[str, dict[str, Any]]] = []
    agents: list[Any] = []

    async def fake_run_batches(stream: Any, ctx: Any, agent: str, process: Any, within: Any = None) -> None:
        captured["process"] = process

    async def send(topic: Any, key: str, value: bytes, partition: int | None = None) -> None:
        sent.append((topic, key, value))

    def agent(topic: Any, name: str | None = None) -> Any:
        def deco(fn: Any) -> Any:
            agents.append(fn)
            return fn

        return deco

    ctx = SimpleNamespace(
        app=SimpleNamespace(agent=agent),
        settings=settings,
        topics=SimpleNamespace(
            by_id="by-id",
            by_unit="by-unit",
            by_service="by-service",
            by_resource="by-resource",
            recommendations=SimpleNamespace(get_topic_name=lambda: "recommendations"),
            actions="actions",
        ),
        metrics=SimpleNamespace(inc=lambda name, *a, **k: counted.append((name, k.get("labels") or {}))),
        tables=SimpleNamespace(ledger=table, resource_state=table),
        extras={},
        send=send,
    )
    monkeypatch.setattr(module, "run_batches", fake_run_batches)
    module.register(ctx)
    asyncio.run(agents[0](None))
    return captured["process"], sent, counted


def record(partition: int, offset: int, key: str, value: bytes) -> Any:
    msg = SimpleNamespace(key=key.encode(), partition=partition, offset=offset, timestamp=T0 / 1000)
    return SimpleNamespace(value=value, message=msg)


# -- restatements -------------------------------------------------------------------------------


def cost(amount: str, unit: str, service: str = "ec2", region: str = "us-east-1") -> dict[str, Any]:
    return {
        "event_id": "ce:1",
        "source": "cost_explorer",
        "cost_amount": amount,
        "business_unit": unit,
        "service": service,
        "region": region,
        "resource_id": "r",
        "currency": "USD",
        "charge_category": "usage",
        "ts_ms": T0,
        "metadata": {},
    }


def by_id(offset: int, body: dict[str, Any]) -> Any:
    """A finops.stream.by-id record as intake sends it (single envelope, key event_id)."""
    return record(0, offset, body["event_id"], common.envelope_at("cost", 3, 100 + offset, T0, body))


def counted_downstream(sent: Sent, topic: str) -> dict[str, Decimal]:
    """What the unit and anomaly agents count per key of ``topic`` from these records."""
    states: dict[str, dict[str, Any]] = {}
    totals: dict[str, Decimal] = {}
    for t, key, value in sent:
        if t != topic:
            continue
        for _, src, spart, k, group in common.groups(orjson.loads(value), key):
            items, _ = common.fresh_items(states.setdefault(k, {"h": {}}), f"{src}{spart}", group)
            for _, _, body in items:
                totals[k] = totals.get(k, Decimal(0)) + Decimal(body["cost_amount"])
    return totals


def ledger(
    monkeypatch: pytest.MonkeyPatch, table: dict[str, Any] | None = None
) -> tuple[Callable[..., Any], Sent]:
    settings = SimpleNamespace(batch_within_seconds=0.01)
    process, sent, _ = capture_process(ledger_agent, monkeypatch, settings, {} if table is None else table)
    return process, sent


def test_a_reattribution_between_units_keeps_the_service_total(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted at unit a, restated to unit b with the same service: the reversal and the new amount
    both go to service ec2 from one by-id record, and both must count there."""
    process, sent = ledger(monkeypatch)
    asyncio.run(process(0, [by_id(0, cost("10", "a")), by_id(1, cost("10", "b"))]))
    assert counted_downstream(sent, "by-unit") == {"a": Decimal(0), "b": Decimal(10)}
    assert counted_downstream(sent, "by-service") == {"ec2": Decimal(10)}


def test_a_region_restatement_keeps_the_unit_total(monkeypatch: pytest.MonkeyPatch) -> None:
    process, sent = ledger(monkeypatch)
    asyncio.run(process(0, [by_id(0, cost("10", "a")), by_id(1, cost("12", "a", region="eu-west-1"))]))
    assert counted_downstream(sent, "by-unit") == {"a": Decimal(12)}
    assert counted_downstream(sent, "by-service") == {"ec2": Decimal(12)}


def test_a_replayed_restatement_is_counted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker died after sending a re-attribution's corrections and before the ledger entry
    was written: the next worker, on the ledger as it was, sends the same corrections with the same
    offsets, and downstream skips them."""
    table: dict[str, Any] = {}
    process, sent = ledger(monkeypatch, table)
    asyncio.run(process(0, [by_id(0, cost("10", "a"))]))
    before = {k: orjson.loads(orjson.dumps(v)) for k, v in table.items()}
    asyncio.run(process(0, [by_id(1, cost("10", "b"))]))
    replay, sent_again = ledger(monkeypatch, before)
    asyncio.run(replay(0, [by_id(1, cost("10", "b"))]))
    assert len(sent_again) == 4  # two corrections, each to a unit and a service
    assert counted_downstream(sent + sent_again, "by-unit") == {"a": Decimal(0), "b": Decimal(10)}
    assert counted_downstream(sent + sent_again, "by-service") == {"ec2": Decimal(10)}


def test_the_sink_names_the_by_id_record_a_correction_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    process, sent = ledger(monkeypatch)
    asyncio.run(process(0, [by_id(0, cost("10", "a")), by_id(7, cost("10", "b"))]))
    lineage = []
    for topic, _, value in sent:
        if topic == "by-unit":
            for _, row in rows.map_message("finops.stream.by-unit", 0, 0, value):
                lineage.append((row["event_id"], row["source_partition"], row["source_offset"]))
    assert lineage == [("ce:1", 0, 0), ("ce:1:r1", 0, 7), ("ce:1:r2", 0, 7)]


# -- actions ------------------------------------------------------------------------------------


class FakeEC2:
    """Just enough of an aiobotocore EC2 client for a resize, counting the changes it makes."""

    def __init__(self, itype: str, state: str = "running") -> None:
        self.itype, self.state = itype, state
        self.modified = 0

    async def __aenter__(self) -> FakeEC2:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def describe_instances(self, **_: Any) -> dict[str, Any]:
        inst = {"InstanceType": self.itype, "State": {"Name": self.state}}
        return {"Reservations": [{"Instances": [inst]}]}

    async def stop_instances(self, **_: Any) -> dict[str, Any]:
        prev, self.state = self.state, "stopped"
        change = {"PreviousState": {"Name": prev}, "CurrentState": {"Name": "stopping"}}
        return {"StoppingInstances": [change]}

    def get_waiter(self, name: str) -> Any:
        async def wait(**kwargs: Any) -> None:
            return None

        return SimpleNamespace(wait=wait)

    async def modify_instance_attribute(self, InstanceType: dict[str, str], **_: Any) -> None:
        self.itype = InstanceType["Value"]
        self.modified += 1

    async def start_instances(self, **_: Any) -> None:
        self.state = "running"


def sample(ts_ms: int, u: float, itype: str) -> dict[str, Any]:
    return rightsizing_sample(ts_ms, u, instance_type=itype)


LIVE = Settings(actions_enabled=True, actions_dry_run=False)


def test_two_resizes_of_one_instance_on_one_day_are_two_actions() -> None:
    """t3.xlarge -> t3.large runs; an hour later the same history proposes t3.medium for the now
    t3.large instance. Both share the day's recommendation id; their action ids must differ, or the
    sink's MERGE on action_id keeps only the second resize."""
    state = rs.new_state()
    for i in range(48 * 4):  # 48 h at ~20 % CPU on a t3.xlarge
        state = rs.observe(state, sample(T0 + i * HOUR // 4, 0.2, "t3.xlarge"))
    ec2 = FakeEC2("t3.xlarge")
    done = []
    for now, itype in ((T0 + 48 * HOUR, "t3.xlarge"), (T0 + 49 * HOUR, "t3.large")):
        state = rs.observe(state, sample(now, 0.2, itype))
        found = rs.recommend(state, sample(now, 0.2, itype), DEFAULT_PRICES, LIVE, now)
        state, fresh = rs.mark_evaluated(state, found, now)
        done += [
            asyncio.run(actions.execute(r, LIVE, lambda: ec2)) for r in fresh if r["kind"] == "rightsize"
        ]
    assert [(a["status"], a["detail"]["target_type"]) for a in done] == [
        ("succeeded", "t3.large"),
        ("succeeded", "t3.medium"),
    ]
    assert len({a["recommendation_id"] for a in done}) == 1
    assert done[0]["action_id"] != done[1]["action_id"]


def test_a_replayed_batch_resends_its_action_record_and_does_not_act_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The resize ran and its record went out; the worker died before the resource's state was
    written, so the batch comes again and the recommendation is made again. Acting again would
    find the instance at the target and record "already t3.large" under the same action id, over
    the record of the resize that happened."""
    ec2 = FakeEC2("t3.xlarge")
    monkeypatch.setattr(actions, "ec2_client", lambda settings: lambda: ec2)
    table: dict[str, Any] = {}
    process, sent, counted = capture_process(recs_agent, monkeypatch, LIVE, table)
    history = [
        record(
            0,
            i,
            "i-0abc",
            common.envelope_at("resource", 0, i, T0, sample(T0 + i * HOUR // 4, 0.2, "t3.xlarge")),
        )
        for i in range(48 * 4)
    ]
    asyncio.run(process(0, history))  # the last sample makes 48 h: the recommendation and its action
    first = [orjson.loads(v) for t, _, v in sent if t == "actions"]
    assert [(a["status"], a["reason"]) for a in first] == [("succeeded", "resized t3.xlarge -> t3.large")]
    assert ec2.itype == "t3.large" and ec2.modified == 1

    sent.clear()
    del table["i-0abc"]  # the state write of the batch was lost: it comes again
    asyncio.run(process(0, history))
    again = [orjson.loads(v) for t, _, v in sent if t == "actions"]
    assert again == first  # the same record, not "already t3.large"
    assert ec2.modified == 1
    assert ("actions_replayed_total", {"kind": "resize"}) in counted


def test_the_action_records_kept_per_resource_are_bounded() -> None:
    table: dict[str, Any] = {}
    runs = []

    async def run() -> dict[str, Any]:
        runs.append(len(runs))
        return {"action_id": f"a{len(runs)}"}

    def rec(i: int) -> dict[str, Any]:
        return {"recommendation_id": f"rec{i}", "kind": "stop_idle", "proposed": ""}

    n = recs_agent.ACTIONS_KEPT + 5
    for i in range(n):
        assert asyncio.run(recs_agent.act_once(table, "i-1", rec(i), run)) == (
            {"action_id": f"a{i + 1}"},
            False,
        )
    kept = table[recs_agent.actions_key("i-1")]
    assert len(kept) == recs_agent.ACTIONS_KEPT
    assert asyncio.run(recs_agent.act_once(table, "i-1", rec(n - 1), run)) == ({"action_id": f"a{n}"}, True)
    assert len(runs) == n  # the latest ones are replayed, not run again
    asyncio.run(recs_agent.act_once(table, "i-1", rec(0), run))  # the oldest was dropped: run again
    assert len(runs) == n + 1
