"""Demo traffic: reproducible, realistic volumes, and the injected incidents really in the data."""

from collections import Counter
from decimal import Decimal

from finops_app import demo, topics

END = 1_795_000_000_000 - 1_795_000_000_000 % demo.STEP_MS
START = END - 6 * 3_600_000


def test_same_seed_same_traffic_and_sane_volumes() -> None:
    a = list(demo.generate(START, END, 7))
    assert a == list(demo.generate(START, END, 7))
    counts = Counter(t for t, _, _ in a)
    assert counts[topics.COST_EVENTS] == 6 * 60 * 32 + sum(
        1 for t, k, _ in a if k == "ec2-marketing-runaway" and t == topics.COST_EVENTS
    )
    assert counts[topics.BUSINESS_EVENTS_RAW] < 3 * counts[topics.COST_EVENTS]  # revenue follows traffic
    assert 0.5 < demo.traffic(END, demo.GROWTH_FROM_MS) < 2.5


def test_spike_is_in_the_data() -> None:
    incidents = demo.plan_incidents(START, END, __import__("random").Random(7))
    spike = next(i for i in incidents if i.kind == "spike")

    def cost_at(ts: int) -> Decimal:
        return sum(
            (
                Decimal(str(v["cost_amount"]))
                for t, k, v in demo.generate(ts, ts + demo.STEP_MS, 7, incidents)
                if t == topics.COST_EVENTS and k == spike.resource_id
            ),
            Decimal(0),
        )

    assert cost_at(spike.start_ms) > 4 * cost_at(spike.start_ms - 30 * demo.STEP_MS)
