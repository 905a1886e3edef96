"""core.ledger: repeats count once, restatements become deltas, re-attribution moves the amount."""

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from finops_app.core.ledger import apply


def ev(amount: str, unit: str = "ecommerce") -> dict:
    return {
        "event_id": "ce:1",
        "cost_amount": amount,
        "business_unit": unit,
        "service": "ec2",
        "region": "us-east-1",
        "resource_id": "r",
        "currency": "USD",
        "charge_category": "usage",
        "metadata": {},
    }


def test_first_repeat_restate_and_reattribute() -> None:
    entry, out = apply(None, ev("10.5"))
    assert [o["cost_amount"] for o in out] == ["10.5"]
    same, out = apply(entry, ev("10.5"))
    assert (same, out) == (None, [])
    entry2, out = apply(entry, ev("12"))
    assert [(o["event_id"], o["cost_amount"], o["charge_category"]) for o in out] == [
        ("ce:1:r1", "1.5", "correction")
    ]
    entry3, out = apply(entry2, ev("12", unit="analytics"))
    assert [(o["event_id"], o["business_unit"], o["cost_amount"]) for o in out] == [
        ("ce:1:r2", "ecommerce", "-12"),
        ("ce:1:r3", "analytics", "12"),
    ]
    assert entry3 is not None and entry3["rev"] == 3


@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["a", "b", "c"])), min_size=1, max_size=30))
def test_counted_sum_per_unit_equals_latest_figure(arrivals: list[tuple[int, str]]) -> None:
    entry = None
    counted: dict[str, Decimal] = {}
    for cents, unit in arrivals:
        new, out = apply(entry, ev(str(Decimal(cents) / 100), unit))
        entry = new or entry
        for o in out:
            counted[o["business_unit"]] = counted.get(o["business_unit"], Decimal(0)) + Decimal(
                o["cost_amount"]
            )
    last_cents, last_unit = arrivals[-1]
    assert {u: v for u, v in counted.items() if v} == (
        {last_unit: Decimal(last_cents) / 100} if last_cents else {}
    )
