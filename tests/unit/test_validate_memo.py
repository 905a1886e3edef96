"""The memos of core.validate never give a stale or foreign result.

``parse_cost``, ``parse_business`` and ``parse_resource`` remember, for a decoded JSON document,
the validated values of the low-cardinality string fields (keyed by their raw values, in a fixed
order) and, for a timestamp string, its milliseconds and ``iso()``. Each test here runs a
*sequence* of inputs through the fast module, each input right after others that fill the memos
with near misses (the same raw value under another field, the same value padded, under other
limits or another clock, an invalid value after a valid one, more entries than a memo holds), and
holds every outcome to the reference implementation's (``test_validate_reference``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from finops_app.core import validate as fast
from finops_app.core.money import to_str
from finops_app.core.validate import Limits
from finops_app.errors import TooLargeError
from tests.unit import test_validate_equivalence as eq
from tests.unit import test_validate_reference as ref

NOW_S = eq.NOW_S
LIMITS = eq.LIMITS["default"]
TIGHT = eq.LIMITS["tight"]  # USD only, amounts up to 100, 30 days back, 60 s ahead
WIDE = dataclasses.replace(eq.LIMITS["wide"], max_bytes=100_000)  # iso() overflows; no size limit
T0 = "2025-12-31T10:00:00.000Z"  # within every limit of eq.LIMITS
T1 = "2025-12-31T11:00:00.000Z"
COST: dict[str, Any] = {
    "event_id": "c-1",
    "timestamp": T0,
    "service": "ec2",
    "region": "us-east-1",
    "cost_amount": "1.50",
    "business_unit": "retail",
    "project_id": "p-1",
    "environment": "production",
    "provider": "aws",
    "currency": "USD",
    "charge_category": "usage",
    "charge_period_start": T0,
    "charge_period_end": T1,
    "account_id": "123",
    "source": "demo",
    "event_type": "cloud_cost_incurred",
    "resource_id": "i-1",
}
BUSINESS: dict[str, Any] = {
    "event_id": "b-1",
    "timestamp": T0,
    "event_type": "feature_usage",
    "user_id": "u-1",
    "feature": "checkout",
    "action": "buy",
    "revenue_impact": "19.99",
    "currency": "EUR",
    "business_unit": "retail",
    "source": "demo",
}
RESOURCE: dict[str, Any] = {
    "event_id": "r-1",
    "timestamp": T0,
    "resource_id": "i-1",
    "utilisation": 0.5,
    "hourly_cost": "0.096",
    "service": "ec2",
    "region": "us-east-1",
    "metric": "cpu",
    "business_unit": "retail",
    "project_id": "p-1",
    "environment": "production",
    "provider": "aws",
    "source": "demo",
    "metadata": {"instance_type": "m5.large"},
}
BASE = {"cost": COST, "business": BUSINESS, "resource": RESOURCE}
KINDS = tuple(BASE)


def clear_memos() -> None:
    for memo in (fast._COST_MEMO, fast._BUSINESS_MEMO, fast._RESOURCE_MEMO, fast._STAMPS, fast._ISO_MS):
        memo.clear()


def check(kind: str, events: Iterable[dict[str, Any]], limits: Limits = LIMITS) -> list[tuple[Any, ...]]:
    """Each event as JSON bytes, in order, through both implementations: the same outcomes."""
    outcomes = []
    for event in events:
        raw = orjson.dumps(event)
        expected = eq.outcome(getattr(ref, f"parse_{kind}"), raw, limits)
        got = eq.outcome(getattr(fast, f"parse_{kind}"), raw, limits)
        assert got == expected, (kind, event)
        assert got[1] is not TooLargeError  # not a test of the memos
        outcomes.append(got)
    return outcomes


def variant(kind: str, **changes: Any) -> dict[str, Any]:
    event = dict(BASE[kind])
    for name, value in changes.items():
        if value is ...:
            event.pop(name, None)
        else:
            event[name] = value
    return event


def test_the_memos_are_used() -> None:
    """Guard against vacuous tests: a repeated combination is looked up, not validated again."""
    clear_memos()
    for kind in KINDS:
        check(kind, [BASE[kind], variant(kind, event_id="x-2")])
    assert len(fast._COST_MEMO) == len(fast._BUSINESS_MEMO) == len(fast._RESOURCE_MEMO) == 1
    assert T0 in fast._STAMPS and T1 in fast._STAMPS


@pytest.mark.parametrize("kind", KINDS)
def test_same_value_under_other_fields(kind: str) -> None:
    """One raw value moved from field to field: each outcome is that of its own position."""
    clear_memos()
    names = [k for k, v in BASE[kind].items() if type(v) is str and k not in ("timestamp", "event_id")]
    events = [BASE[kind]]
    for name in names:
        events.append(variant(kind, **{name: "retail"}))
        events.append(variant(kind, **{name: "usd"}))
        events.append(variant(kind, **{name: ...}))
    check(kind, events + events)


@pytest.mark.parametrize("kind", KINDS)
def test_padded_and_cased_values(kind: str) -> None:
    """Surrounding whitespace and case: equal after stripping, different keys of the memo."""
    clear_memos()
    events = []
    for name in ("service", "region", "business_unit", "currency", "provider", "charge_category", "source"):
        value = BASE[kind].get(name, "x")
        for v in (value, f" {value} ", f"\t{value}\n", value.upper(), value.title(), f"{value} x"):
            events.append(variant(kind, **{name: v}))
    events += [variant(kind, business_unit=v) for v in ("unknown", " None ", "NULL", "", " ", "unallocated")]
    check(kind, events + events[::-1])


def test_negative_amounts_follow_the_category() -> None:
    """The sign check runs on every call: a memoised 'usage' still rejects a negative amount."""
    clear_memos()
    outcomes = check(
        "cost",
        [
            variant("cost", charge_category="usage"),
            variant("cost", charge_category="usage", cost_amount="-1"),
            variant("cost", charge_category=" CREDIT ", cost_amount="-1"),
            variant("cost", charge_category=" CREDIT ", cost_amount="-1.5"),
            variant("cost", charge_category="usage", cost_amount=-0.5),
            variant("cost", charge_category=..., cost_amount="-1"),
            variant("cost", charge_category=..., cost_amount="2"),
        ],
    )
    ok, error = "ok", "ValidationError"
    assert [o[0] for o in outcomes] == [ok, error, ok, ok, error, error, ok]


@pytest.mark.parametrize("kind", ["cost", "business"])
def test_currency_is_checked_against_each_limits(kind: str) -> None:
    """A currency memoised under limits that accept it is still rejected by limits that do not."""
    clear_memos()
    tight, wide = TIGHT, WIDE  # USD only; USD, EUR, JPY, usd
    events = [variant(kind, currency=c, revenue_impact="1") for c in ("EUR", "eur", "JPY", "USD", "usd")]
    for limits in (wide, tight, LIMITS, tight, wide):
        check(kind, events, limits)


@pytest.mark.parametrize("kind", KINDS)
def test_invalid_after_valid(kind: str) -> None:
    """Values equal to a memoised key in Python (1 == 1.0 == True) but not in type, and invalid ones."""
    clear_memos()
    events = []
    for name in ("service", "region", "business_unit", "currency", "provider", "source", "event_type"):
        for value in ("1", 1, 1.0, True, "1", False, 0, "0", None, "", [], ["1"], {}, {"a": 1}, "x" * 257):
            events.append(variant(kind, **{name: value}))
        events.append(variant(kind, **{name: "x" * 256}))
        events.append(variant(kind, **{name: " " * 300 + "x"}))  # too long to be kept, valid
    outcomes = check(kind, events + events)
    assert {o[0] for o in outcomes} == {"ok", "ValidationError"}
    assert all(len(v) <= fast.MAX_TEXT for key in fast._COST_MEMO for v in key if v is not None)


@pytest.mark.parametrize("kind", KINDS)
def test_other_fields_are_validated_on_a_hit(kind: str) -> None:
    """A memoised combination with a bad id, amount, timestamp or metadata: the same first error."""
    clear_memos()
    bad: dict[str, list[Any]] = {
        "event_id": ["", "a b", 5, None],
        "timestamp": ["", "nope", T0 + "x", None, 1e20, True],
        "cost_amount": ["x", "1e999", None, "1" * 40],
        "revenue_impact": ["x", "NaN", 1e300],
        "hourly_cost": ["x", "-inf"],
        "utilisation": [2.0, "x", None],
        "resource_id": ["", None, "r" * 300],
        "metadata": [[], "x", 3],
        "charge_period_start": ["", "bad", "2025-12-31T12:00:00Z", 0],
        "charge_period_end": ["", "bad", "2025-12-31T09:00:00Z", None],
    }
    events = [BASE[kind]]
    for name, values in bad.items():
        for value in values:
            events += [variant(kind, **{name: value}), BASE[kind]]
    # several bad fields at once: the order of the checks decides which error is reported
    events += [variant(kind, event_id="", timestamp="nope", cost_amount="x", metadata=[])]
    events += [variant(kind, cost_amount="x", charge_period_end="bad", currency="JPY", resource_id="")]
    events += [variant(kind, currency="JPY", resource_id="", metadata=[])]
    events += [variant(kind, resource_type=[], instance_type={}, utilisation="x", hourly_cost="x")]
    events += [variant(kind, instance_type={}, utilisation="x", hourly_cost="x", user_id=[])]
    events += [variant(kind, utilisation="x", hourly_cost="x", event_id="")]
    events += [variant(kind, event_id="", resource_id="", user_id=[], currency="JPY")]
    events += [
        variant(kind, resource_id="", user_id=[], currency="JPY", timestamp="0001-01-01T00:00:00+01:00")
    ]
    check(kind, events)
    check(kind, events, TIGHT)
    check(kind, events, WIDE)


@pytest.mark.parametrize("kind", KINDS)
def test_timestamps_are_range_checked_on_every_call(kind: str) -> None:
    """A memoised timestamp string is checked against the clock of each call."""
    clear_memos()
    now = {"s": NOW_S}
    limits = Limits(max_age_s=86400.0, max_future_s=60.0, now=lambda: now["s"])
    events = [
        variant(kind, timestamp=T0),
        variant(kind, timestamp=T0, charge_period_start=T1),
        variant(kind, timestamp=T1, charge_period_start=T0, charge_period_end=T0),
    ]
    for clock in (NOW_S, NOW_S - 86400.0 + 3600.0, NOW_S + 2 * 86400.0, NOW_S - 86400.0 * 3, NOW_S):
        now["s"] = clock
        check(kind, events, limits)


def test_a_clock_called_each_time() -> None:
    """A clock that moves between the calls of one event (each range check reads it anew)."""
    clear_memos()

    def ticking(step: float) -> Limits:
        """Limits whose clock starts a day before NOW_S and advances ``step`` seconds a reading."""
        now = [NOW_S - 86400.0]

        def clock() -> float:
            now[0] += step
            return now[0]

        return Limits(max_age_s=86400.0, max_future_s=60.0, now=clock)

    events = [COST, variant("cost", event_id="c-2"), variant("cost", timestamp=T1)]
    for step in (0.0, 1800.0, 3 * 3600.0):
        lim_fast, lim_ref = ticking(step), ticking(step)
        for event in events:
            raw = orjson.dumps(event)
            assert eq.outcome(fast.parse_cost, raw, lim_fast) == eq.outcome(ref.parse_cost, raw, lim_ref)
            assert lim_fast.now() == lim_ref.now()  # as many readings


def test_period_defaults_are_not_memoised_as_strings() -> None:
    """An empty or missing period bound takes its default from this event, not a previous one."""
    clear_memos()
    events = []
    for ts in (T0, T1, "2025-12-31T10:30:00Z", "2025-12-31 10:30:00", 1767175200):
        for start in ("", None, ..., T0, ts):
            for end in ("", None, ..., T1, ts):
                events.append(variant("cost", timestamp=ts, charge_period_start=start, charge_period_end=end))
    check("cost", events + events[::-1])


def test_one_string_as_each_timestamp() -> None:
    """The same string as the time, the period start and the period end, padded or not."""
    clear_memos()
    values = [T0, f" {T0}", f"{T0} ", T0.replace("Z", "+00:00"), T0.lower(), "2025-12-31", T1, "bad"]
    events = [
        variant("cost", **{name: v})
        for v in values
        for name in ("timestamp", "charge_period_start", "charge_period_end")
    ]
    check("cost", events + events[::-1])
    for kind in ("business", "resource"):
        check(kind, [variant(kind, timestamp=v) for v in values * 2])


def test_iso_errors_are_not_memoised() -> None:
    """Far timestamps (``iso`` overflows) raise on the first and on every later call."""
    clear_memos()
    wide = WIDE
    far = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999Z"]
    for kind in KINDS:
        events = [variant(kind, timestamp=v) for v in far] + [BASE[kind]]
        events += [variant(kind, charge_period_start=v) for v in far]
        events += [variant(kind, charge_period_end=v) for v in far]
        for bad in ({"cost_amount": "x"}, {"revenue_impact": "x"}, {"event_id": ""}, {"currency": "GBP"}):
            events += [
                variant(kind, timestamp=far[0], **bad),
                variant(kind, charge_period_start=far[1], **bad),
            ]
        check(kind, events * 2, wide)


@pytest.mark.parametrize("kind", KINDS)
def test_beyond_the_bounds(kind: str) -> None:
    """More combinations and timestamps than a memo holds: cleared when full, results unchanged."""
    clear_memos()
    rng = random.Random(kind)
    base = datetime(2025, 12, 1, tzinfo=UTC)
    events = []
    for i in range(2 * fast._MEMO_SIZE + 10):
        ts = (base + timedelta(seconds=61 * i, milliseconds=i % 1000)).isoformat()
        events.append(
            variant(
                kind,
                event_id=f"e-{i}",
                timestamp=ts,
                service=f"svc-{i}",
                region=rng.choice(["us-east-1", "eu-west-1"]),
                feature=f"f-{i}",
                metric=f"m-{i}",
            )
        )
    events += events[:50] + events[-50:]
    check(kind, events)
    for memo in (fast._COST_MEMO, fast._BUSINESS_MEMO, fast._RESOURCE_MEMO, fast._STAMPS):
        assert len(memo) <= fast._MEMO_SIZE


def test_long_strings_are_not_kept() -> None:
    """Keys of the memos are bounded: padded values are validated but not remembered."""
    clear_memos()
    padded_ts = " " * 100 + T0
    check("cost", [variant("cost", service=" " * 1000 + "ec2", timestamp=padded_ts)] * 2)
    assert padded_ts not in fast._STAMPS
    assert not fast._COST_MEMO


@pytest.mark.parametrize("kind", KINDS)
def test_mappings_are_not_memoised(kind: str) -> None:
    """A Mapping (not decoded by us) may hold str subclasses or other types: the general path."""

    class Text(str):
        def strip(self, chars: str | None = None) -> str:
            return "stripped"

    clear_memos()
    for value in ("ec2", Text("ec2"), "ec2"):
        event = variant(kind, service=value, currency=value, source=value)
        for limits in (LIMITS, TIGHT, WIDE):
            assert eq.outcome(getattr(fast, f"parse_{kind}"), event, limits) == eq.outcome(
                getattr(ref, f"parse_{kind}"), event, limits
            )
    assert not (fast._COST_MEMO or fast._BUSINESS_MEMO or fast._RESOURCE_MEMO)


def test_demo_stream_in_order() -> None:
    """The demo generator's stream as the intake sees it: one memo state carried throughout."""
    clear_memos()
    end = int(NOW_S * 1000) - 3_600_000
    from finops_app import demo

    for topic, _key, event in demo.generate(end - 30 * 60_000, end, seed=5):
        kind = next(k for k in KINDS if k in topic)
        check(kind, [event])


@given(st.decimals(allow_nan=True, allow_infinity=True) | st.decimals(places=20) | st.integers().map(Decimal))
def test_amount_str(amount: Decimal) -> None:
    assert fast._amount_str(amount) == to_str(amount)


@given(st.floats())
@example(0.0012345678901234567)  # 19 places: not a plain decimal
@example(0.001234567890123456)  # 18 places
@example(1e-05)
@example(1e16)
@example(123456789012345.67)
def test_money_of_floats(value: float) -> None:
    for limits in eq.LIMITS.values():
        eq.same("money", {"a": value}, "a", limits)
        eq.same("money", {"a": -value}, "a", limits)


def test_identifiers_without_the_regex() -> None:
    """The set check of identifiers agrees with the regex on every character and at the length limit."""
    for i in range(0x3000):
        c = chr(i)
        for s in (c, f"a{c}", f"{c}b", c * 256, c * 257):
            eq.same("text", {"k": s}, "k", ident=True)
