"""The fast core.validate behaves exactly as the original one (``test_validate_reference``).

For every generated input, each parser and helper of ``finops_app.core.validate`` and its
REFERENCE copy must give the same outcome: the same returned value (compared by ``repr``, so
key order, value types, ``-0.0`` and NaN count too) or the same exception (class, message and,
for a ValidationError, ``field`` and ``reason``). The fast module memoises ISO parsing and
formatting, so each input goes through it twice (cold, then memoised) and both must match.

Inputs: the demo generator's events; realistic events with fields replaced by timestamps in
every ISO-8601 shape (offsets, fractions, ``Z``/``z``, naive, date only, padded, far past and
future), epoch numbers, amounts as strings/floats/ints (exponents, signs, underscores, non-ASCII
digits, 18/19 places, huge), identifiers, wrong types and missing fields; arbitrary JSON values
and raw bytes; and several ``Limits`` (default, tight, and wide enough for ``iso`` to overflow).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from finops_app import demo
from finops_app.core import validate as fast
from finops_app.core.validate import Limits
from finops_app.errors import ValidationError
from tests.unit import test_validate_reference as ref
from tests.unit.test_validate_props import FIELDS, VALID, json_values

NOW_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z: a fixed clock, the same for both implementations
LIMITS = {
    "default": Limits(now=lambda: NOW_S),
    "tight": Limits(
        currencies=frozenset({"USD"}),
        max_age_s=30 * 86400.0,
        max_future_s=60.0,
        max_amount=Decimal("100"),
        now=lambda: NOW_S,
    ),
    # Everything in range: timestamps reach years 0 and 10000+ (iso raises) and amounts 1e40.
    "wide": Limits(
        currencies=frozenset({"USD", "EUR", "JPY", "usd"}),
        max_age_s=1e17,
        max_future_s=1e17,
        max_amount=Decimal("1e40"),
        max_bytes=400,
        now=lambda: NOW_S,
    ),
}
KINDS = ("cost", "business", "resource")
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    try:
        result = fn(*args, **kwargs)
    except ValidationError as exc:
        return ("ValidationError", type(exc), str(exc), exc.field, exc.reason, exc.args)
    except Exception as exc:  # noqa: BLE001  (any other exception must match too)
        return ("exception", type(exc), str(exc), exc.args)
    return ("ok", type(result), repr(result))


def same(name: str, *args: Any, **kwargs: Any) -> None:
    """``fast.<name>`` (cold, then memoised) gives the outcome of ``ref.<name>``."""
    expected = outcome(getattr(ref, name), *args, **kwargs)
    for attempt in ("cold", "memoised"):
        got = outcome(getattr(fast, name), *args, **kwargs)
        assert got == expected, f"{name}{args!r} ({attempt})"


def same_parse(kind: str, raw: Any) -> None:
    for limits in LIMITS.values():
        same(f"parse_{kind}", raw, limits)


# -- input strategies ---------------------------------------------------------------------------

MIN_MS = int(datetime(1, 1, 1, tzinfo=UTC).timestamp() * 1000)
MAX_MS = int(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC).timestamp() * 1000)
DAY_MS = 86_400_000

millis = (
    st.integers(min_value=MIN_MS - 3 * DAY_MS, max_value=MAX_MS + 3 * DAY_MS)
    | st.integers(min_value=-(2**40), max_value=2**42)  # around the epoch and today
    | st.integers(min_value=-(10**14), max_value=10**14).map(lambda x: x - x % 1000 + 999)
    | st.sampled_from([MIN_MS, MIN_MS - 1, MAX_MS, MAX_MS + 1, 0, -1, 999, -999, -1000, -1001])
    | st.integers()  # beyond every range: OverflowError / OSError / ValueError
)

offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda m: timezone(timedelta(minutes=m))
)
datetimes = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.one_of(st.none(), offsets)
) | st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1))


@st.composite
def iso_strings(draw: st.DrawFn) -> str:
    dt = draw(datetimes)
    form = draw(st.integers(min_value=0, max_value=9))
    timespec = draw(st.sampled_from(["auto", "hours", "minutes", "seconds", "milliseconds", "microseconds"]))
    if form == 0:
        s = dt.isoformat(timespec=timespec)
    elif form == 1:
        s = dt.isoformat(sep=" ", timespec=timespec)
    elif form == 2:
        s = dt.replace(tzinfo=None).isoformat(timespec=timespec) + draw(st.sampled_from(["Z", "z"]))
    elif form == 3:
        s = str(dt)  # what json.dumps(..., default=str) writes
    elif form == 4:
        s = dt.date().isoformat()
    elif form == 5:
        s = dt.strftime("%Y%m%dT%H%M%S")  # basic format
    elif form == 6:
        s = ref.iso(int(dt.replace(tzinfo=dt.tzinfo or UTC).timestamp() * 1000))
    elif form == 7:  # surrounding whitespace, a trailing Z after an offset, a cut-off string
        s = (
            draw(st.sampled_from([" ", "\t", "\n", ""]))
            + dt.isoformat()
            + draw(st.sampled_from([" ", "\n", "Z", "+00:00Z", ""]))
        )
    elif form == 8:
        s = dt.isoformat()[: draw(st.integers(min_value=0, max_value=32))]
    else:
        s = draw(st.text(alphabet="0123456789-:T.+Zz ", max_size=30))
    return s


numbers_as_text = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(0, 20)
    .flatmap(lambda p: st.decimals(allow_nan=False, allow_infinity=False, places=p))
    .map(str),
    st.floats().map(repr),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.from_regex(r"[ \t]?[+-]?[0-9]{0,35}(\.[0-9]{0,22})?([eE][+-]?[0-9]{1,3})?[ \t\n]?", fullmatch=True),
    st.sampled_from(
        [
            "0.000000000000000001",
            "0.0000000000000000001",
            "1.000000000000000000",
            "1.0000000000000000000",
            "-0",
            "-0.0",
            "+5",
            ".5",
            "5.",
            "1_000",
            "١٢٣",  # Arabic-Indic digits: Decimal accepts them
            "１２.５",  # fullwidth digits
            "100000000",
            "100000000.0000000001",
            "-100000000",
            "1" * 31,
            "1" * 32,
            "9" * 64,
            "9" * 65,
            "0" * 60 + "1",
            "sNaN",
            "-Infinity",
            "1e999999999",
            "",
            " ",
        ]
    ),
)
amounts = (
    numbers_as_text
    | st.floats()
    | st.integers(min_value=-(10**45), max_value=10**45)
    | st.integers()
    | st.booleans()
    | st.none()
    | st.sampled_from([[], {}, "abc", 2**128, 2**129, -(2**128)])
)
identifiers = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + "_.:/@+=,-$#*", min_size=1, max_size=40),
    st.text(max_size=12),
    st.text(min_size=250, max_size=262, alphabet="ab "),
    st.sampled_from(["", " ", "  x  ", "a b", "é", "ü-1", "x\n", "\nx", "$#*", "-"]),
    st.integers(min_value=-(10**19), max_value=10**19),
    st.sampled_from([10**18, 10**18 - 1, -(10**18), True, False, 1.5, None, [], {}]),
)
timestamps = (
    iso_strings()
    | st.integers(min_value=-(10**16), max_value=10**16)
    | st.floats()
    | st.sampled_from([1e11, 1e11 + 1, 1e15, -1e15, 10**15 - 1, 1736933400, 1736933400.5, True, "", None])
    | json_values
)
field_values: dict[str, st.SearchStrategy[Any]] = {
    "timestamp": timestamps,
    "charge_period_start": timestamps,
    "charge_period_end": timestamps,
    "cost_amount": amounts,
    "revenue_impact": amounts,
    "hourly_cost": amounts,
    "event_id": identifiers,
    "currency": st.sampled_from(["usd", " EUR ", "JPY", "GBP", "", None, 1, "ＵＳＤ"]) | identifiers,
    "charge_category": st.sampled_from(["usage", "CREDIT", " refund ", "tax", "other", ""]) | identifiers,
    "provider": st.sampled_from(["aws", "AZURE", "gcp ", "ibm", ""]) | identifiers,
    "business_unit": st.sampled_from(["retail", "Unknown", " none ", "NULL", "unallocated", ""])
    | identifiers,
    "utilisation": amounts,
    "utilization": amounts,
    "unit": st.sampled_from(["percent", "PERCENT", "ratio"]) | json_values,
    "metadata": json_values,
}
fields = st.sampled_from(sorted(set(FIELDS) | set(field_values)))


def value_for(name: str) -> st.SearchStrategy[Any]:
    return field_values.get(name, identifiers | json_values)


@st.composite
def near_valid(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    event = dict(VALID[kind])
    for name in draw(st.lists(fields, max_size=4, unique=True)):
        if draw(st.integers(min_value=0, max_value=5)) == 0:
            event.pop(name, None)
        else:
            event[name] = draw(value_for(name))
    return event


# -- the parsers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
@example(data=None)
def test_near_valid_events(kind: str, data: st.DataObject | None) -> None:
    event = dict(VALID[kind]) if data is None else data.draw(near_valid(kind))
    same_parse(kind, event)
    try:
        raw = orjson.dumps(event)
    except TypeError:  # integers beyond 64 bits have no JSON encoding in orjson
        return
    same_parse(kind, raw)
    same_parse(kind, raw.decode())


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values | st.binary(max_size=120) | st.text(max_size=60))
def test_any_value(kind: str, value: Any) -> None:
    same_parse(kind, value)


def test_demo_events() -> None:
    """Every event the demo generator produces, around the fixed clock and long before it."""
    end = int(NOW_S * 1000) - 3_600_000
    counts = dict.fromkeys(KINDS, 0)
    for start in (end - 45 * 60_000, end - 400 * 86_400_000):
        for topic, _key, event in demo.generate(start, start + 45 * 60_000, seed=3):
            kind = next(k for k in KINDS if k in topic)
            counts[kind] += 1
            same_parse(kind, event)
            same_parse(kind, orjson.dumps(event))
    assert min(counts.values()) > 50


def test_demo_events_are_parsed_at_all() -> None:
    """Guard against a vacuous comparison: the demo events are valid under the default limits."""
    end = int(NOW_S * 1000) - 3_600_000
    for topic, _key, event in demo.generate(end - 10 * 60_000, end):
        kind = next(k for k in KINDS if k in topic)
        assert fast.__dict__[f"parse_{kind}"](orjson.dumps(event), LIMITS["default"])["ts_ms"] > 0


def test_article_shape() -> None:
    """The article's producer: naive ``str(datetime)`` timestamps, float amounts."""
    rng = random.Random(5)
    for i in range(3000):
        ts = datetime(2025, 1, 1) + timedelta(microseconds=rng.randrange(366 * 86400 * 10**6))
        if i % 3 == 0:
            ts = ts.replace(microsecond=0)
        event = {
            "event_id": f"e-{i}",
            "timestamp": str(ts),
            "service": rng.choice(["ec2", "s3"]),
            "region": "us-east-1",
            "cost_amount": rng.choice(
                [round(rng.lognormvariate(0, 2), rng.randrange(8)), rng.random() * 1e-6]
            ),
            "business_unit": rng.choice(["retail", "unknown", "none", " Retail "]),
        }
        same_parse("cost", orjson.dumps(event))


# -- the helpers ----------------------------------------------------------------------------------


@settings(max_examples=2000, deadline=None)
@given(ms=millis)
@example(ms=MIN_MS)
@example(ms=MAX_MS)
def test_iso(ms: int) -> None:
    same("iso", ms)
    same("iso", ms + 1)  # the next millisecond is usually on a memoised day
    same("iso", ms - ms % DAY_MS + DAY_MS - 1)  # the last millisecond of that day


@given(value=st.floats() | st.booleans() | st.decimals(allow_nan=False) | st.none() | st.text(max_size=3))
def test_iso_of_other_types(value: Any) -> None:
    same("iso", value)


def test_iso_every_day_and_the_memo_limit() -> None:
    """More distinct days than the memo holds, twice over (the memo is cleared when full)."""
    rng = random.Random(1)
    start = -(2**40)
    for day in range(2 * fast._MEMO_SIZE + 10):
        ms = start + day * DAY_MS + rng.randrange(DAY_MS)
        same("iso", ms)
    for ms in range(MAX_MS - 2 * DAY_MS, MAX_MS + 2 * DAY_MS, 3_600_000 - 1):
        same("iso", ms)
    for ms in range(MIN_MS - 2 * DAY_MS, MIN_MS + 2 * DAY_MS, 3_600_000 - 1):
        same("iso", ms)


@settings(max_examples=1500, deadline=None)
@given(value=timestamps, key=st.sampled_from(["timestamp", "charge_period_end"]), default=st.none() | millis)
def test_timestamp_ms(value: Any, key: str, default: int | None) -> None:
    for limits in LIMITS.values():
        same("timestamp_ms", {key: value}, key, limits, default)


def test_timestamp_memo_limit() -> None:
    """More distinct strings than the memo holds; long (padded) strings are parsed, not kept."""
    base = datetime(2025, 6, 1, tzinfo=UTC)
    for i in range(2 * fast._MEMO_SIZE + 10):
        value = (base + timedelta(seconds=61 * i, microseconds=i)).isoformat()
        same("timestamp_ms", {"t": value}, "t", LIMITS["wide"])
    padded = " " * 10_000 + "2025-06-01T00:00:00Z"
    same("timestamp_ms", {"t": padded}, "t", LIMITS["wide"])
    assert padded not in fast._ISO_MS


@settings(max_examples=1500, deadline=None)
@given(value=amounts, default=st.none() | st.sampled_from([Decimal(0), Decimal("-1.50")]))
def test_money(value: Any, default: Decimal | None) -> None:
    for limits in LIMITS.values():
        same("money", {"amount": value}, "amount", limits, default)


@settings(max_examples=1500, deadline=None)
@given(
    value=identifiers | json_values,
    default=st.none() | st.sampled_from(["", "x", "global", ref.UNALLOCATED]),
    ident=st.booleans(),
)
def test_text(value: Any, default: str | None, ident: bool) -> None:
    same("text", {"k": value}, "k", default, ident=ident)
    same("text", {}, "k", default, ident=ident)


@given(value=identifiers | json_values)
def test_unit_currency_metadata(value: Any) -> None:
    for key in ("business_unit", "currency", "metadata"):
        d: Mapping[str, Any] = {key: value}
        same("_unit", d)
        for limits in LIMITS.values():
            same("_currency", d, limits)
        same("_metadata", d)


ratios = (
    st.floats() | st.floats(min_value=-0.0, max_value=1.0) | st.sampled_from([0.0, -0.0, 1.0, 1.5, 100.0])
)


@settings(max_examples=1000, deadline=None)
@given(
    top=st.dictionaries(st.sampled_from(["utilisation", "utilization"]), ratios | amounts, max_size=2),
    meta=st.none() | st.dictionaries(st.sampled_from(["utilisation", "utilization"]), ratios | amounts),
    unit=st.none() | st.sampled_from(["percent", "Percent", "ratio", 1]),
)
def test_utilisation(top: dict[str, Any], meta: dict[str, Any] | None, unit: Any) -> None:
    d: dict[str, Any] = dict(top)
    if meta is not None:
        d["metadata"] = meta
    if unit is not None:
        d["unit"] = unit
    same("_utilisation", d)


def test_public_names_are_kept() -> None:
    """Everything the original module offered is still there, with the same constant values."""
    for name, value in vars(ref).items():
        if name.startswith(("__", "@")) or name in {"annotations", "Limits"}:  # @: pytest rewriting
            continue
        assert hasattr(fast, name), name
        if name.lstrip("_").isupper():  # constants, private ones included
            assert getattr(fast, name) == value, name
