"""Boundary validation: raw bytes or JSON values in, canonical event dicts out.

Every source (Kafka topics, the HTTP endpoint, Cost Explorer, FOCUS files, CloudWatch) ends in
one of ``parse_cost``, ``parse_business`` or ``parse_resource``. They either return a canonical
dict (trusted types: money as an exact decimal string, time as ISO-8601 UTC plus ``ts_ms``) or
raise :class:`~finops_app.errors.ValidationError` with the field and the reason; no other
exception escapes, whatever the input (a Hypothesis property test holds them to that).

The article's producer writes ``json.dumps(asdict(event), default=str)``: naive timestamps such
as ``2025-01-15 09:30:00`` are taken as UTC, floats as their shortest decimal repr.

This is the per-event hot path of the stream workers: well-formed strings and plain decimals take
short paths, parsed ISO timestamps and formatted days are memoised, and every other value goes
through the general code. For a decoded JSON document, each parser also memoises the validated
values of its low-cardinality string fields (service, region, unit...: one key per combination of
raw values) and, per timestamp string, its milliseconds and ``iso()``; ids, amounts, the range of
times against the clock and the currency against the limits are checked on every call.
``tests/unit/test_validate_equivalence.py`` holds the results and the errors to those of the
original implementation, kept in ``tests/unit/test_validate_reference.py``, and
``tests/unit/test_validate_memo.py`` runs sequences of near misses through the memos.
"""

from __future__ import annotations

import math
import re
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from finops_app.core.money import to_str
from finops_app.errors import TooLargeError, ValidationError

SCHEMA_VERSION = 1
UNALLOCATED = "unallocated"
PROVIDERS = frozenset({"aws", "azure", "gcp", "oci", "onprem", "other"})
NEGATIVE_OK = frozenset({"credit", "refund", "adjustment", "correction"})
CHARGE_CATEGORIES = frozenset({"usage", "purchase", "tax"}) | NEGATIVE_OK
_ID_RE = re.compile(r"^[\w.:/@+=,\-$#*]{1,256}$")
# The ASCII characters of _ID_RE's class: a string of 1 to 256 of them matches it, without the regex.
_ID_CHARS = frozenset(string.ascii_letters + string.digits + "_.:/@+=,-$#*")
_UNKNOWN_UNITS = frozenset({"", "unknown", "none", "null", UNALLOCATED})
MAX_TEXT = 256
MAX_DECIMALS = 18
_PLAIN_DECIMAL = re.compile(rf"-?[0-9]+(?:\.[0-9]{{0,{MAX_DECIMALS}}})?")  # ASCII digits only


@dataclass(frozen=True, slots=True)
class Limits:
    """What the validators accept; built from Settings by ``Limits.from_settings``."""

    currencies: frozenset[str] = frozenset({"USD", "EUR", "GBP"})
    max_age_s: float = 3650 * 86400.0
    max_future_s: float = 86400.0
    max_amount: Decimal = Decimal("100000000")
    max_bytes: int = 1_000_000
    now: Callable[[], float] = time.time

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            currencies=frozenset(settings.currencies),
            max_age_s=settings.max_event_age_days * 86400.0,
            max_future_s=float(settings.max_future_seconds),
            max_amount=settings.max_cost_amount,
            max_bytes=settings.max_message_bytes,
        )


# -- primitive checks ---------------------------------------------------------------------------


def load_json(raw: bytes | str, limits: Limits) -> Any:
    """Decode one JSON document; invalid UTF-8, bad syntax and oversize are ValidationErrors."""
    if len(raw) > limits.max_bytes:
        raise TooLargeError(f"message of {len(raw)} bytes exceeds the {limits.max_bytes}-byte limit")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"not valid JSON: {exc}") from None


def _obj(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(f"expected a JSON object, got {type(value).__name__}")
    return value


def text(d: Mapping[str, Any], key: str, default: str | None = None, *, ident: bool = False) -> str:
    """A short string field; ``default`` None means required."""
    value = d.get(key)
    if type(value) is str:  # the common case: a well-formed JSON string
        s = value.strip()
        if s and len(s) <= MAX_TEXT and (not ident or _ID_CHARS.issuperset(s) or _ID_RE.match(s)):
            return s
    elif value is None and default is not None:
        return default
    return _text(value, key, default, ident)


def _text(value: Any, key: str, default: str | None, ident: bool) -> str:
    """``text`` for every other value: the defaults, the errors, numbers, ``str`` subclasses."""
    if isinstance(value, str):
        value = value.strip()
    if value is None or value == "":
        if default is None:
            raise ValidationError("is required", key)
        return default
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValidationError(f"expected a string, got {type(value).__name__}", key)
    if isinstance(value, int) and abs(value) >= 10**18:
        raise ValidationError("number too large for an identifier", key)
    s = str(value)
    if len(s) > MAX_TEXT:
        raise ValidationError(f"longer than {MAX_TEXT} characters", key)
    if ident and not _ID_RE.match(s):
        raise ValidationError("has characters not allowed in an identifier", key)
    return s


def money(d: Mapping[str, Any], key: str, limits: Limits, default: Decimal | None = None) -> Decimal:
    """A finite decimal amount within the configured bounds (sign is checked by the caller)."""
    value: Any = d.get(key)
    t = type(value)
    if t is str:
        digits = value if len(value) <= 64 and _PLAIN_DECIMAL.fullmatch(value) else None
    elif t is float:
        # repr() of a finite float is "-?[0-9]+\.[0-9]+" unless it has an exponent ("1e-05") or
        # is "inf" or "nan": _PLAIN_DECIMAL matches it iff it has at most MAX_DECIMALS places.
        digits = repr(value)
        if "e" in digits or "n" in digits or len(digits) - digits.index(".") > MAX_DECIMALS + 1:
            digits = None
    else:
        digits = None
    if digits is not None:
        # The common case: a plain decimal string (or float) is finite and has at most
        # MAX_DECIMALS places by its pattern; only the magnitude is left to check.
        try:
            amount = Decimal(digits)
            if (amount and amount.adjusted() > 30) or abs(amount) > limits.max_amount:
                raise ValidationError(f"magnitude exceeds {limits.max_amount}", key)
        except ArithmeticError:
            raise ValidationError(f"{str(value)[:40]!r} is not a number", key) from None
        return amount
    return _money(value, key, limits, default)


def _amount_str(amount: Decimal) -> str:
    """``to_str(amount)``, faster: a finite decimal's ``str`` without an exponent is its ``"f"`` format."""
    s = str(amount)
    if "E" in s or not amount.is_finite():
        return to_str(amount)
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _money(value: Any, key: str, limits: Limits, default: Decimal | None) -> Decimal:
    """``money`` for every other value: defaults, errors, ints, exponents, padded strings."""
    if value is None:
        if default is None:
            raise ValidationError("is required", key)
        return default
    if isinstance(value, bool):
        raise ValidationError("expected a number, got a boolean", key)
    if isinstance(value, int) and value.bit_length() > 128:
        raise ValidationError(f"magnitude exceeds {limits.max_amount}", key)
    if isinstance(value, str) and len(value) > 64:
        raise ValidationError("is longer than 64 characters", key)
    try:
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValidationError("must be finite", key)
            amount = Decimal(repr(value))
        elif isinstance(value, int | str):
            amount = Decimal(str(value).strip())
        else:
            raise ValidationError(f"expected a number, got {type(value).__name__}", key)
        if not amount.is_finite():
            raise ValidationError("must be finite", key)
        if amount and amount.adjusted() > 30:
            raise ValidationError(f"magnitude exceeds {limits.max_amount}", key)
        if amount.as_tuple().exponent < -MAX_DECIMALS:  # type: ignore[operator]
            raise ValidationError(f"has more than {MAX_DECIMALS} decimal places", key)
        if abs(amount) > limits.max_amount:
            raise ValidationError(f"magnitude exceeds {limits.max_amount}", key)
    except ArithmeticError:  # InvalidOperation, Overflow: not a usable number
        raise ValidationError(f"{str(value)[:40]!r} is not a number", key) from None
    return amount


def timestamp_ms(d: Mapping[str, Any], key: str, limits: Limits, default: int | None = None) -> int:
    """ISO-8601 (naive means UTC) or epoch seconds/milliseconds -> epoch milliseconds."""
    value = d.get(key)
    if type(value) is str and value:
        # Parsing depends on the string alone, not on the clock: a repeated timestamp (every
        # resource's sample of one minute, a period start equal to the event time) is parsed
        # once. The range check against limits.now() below runs every time.
        ms = _ISO_MS.get(value)
        if ms is None:
            ms = _iso_to_ms(value, key)
            if len(value) <= _MEMO_KEY_MAX:
                if len(_ISO_MS) >= _MEMO_SIZE:
                    _ISO_MS.clear()
                _ISO_MS[value] = ms
    elif value is None or value == "":
        if default is None:
            raise ValidationError("is required", key)
        return default
    elif isinstance(value, bool):
        raise ValidationError("expected a timestamp, got a boolean", key)
    elif isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError("must be finite", key)
        if not -1e15 < value < 1e15:
            raise ValidationError("is out of range for a timestamp", key)
        ms = int(value if value > 1e11 else value * 1000)
    elif isinstance(value, str):
        ms = _iso_to_ms(value, key)
    else:
        raise ValidationError(f"expected a timestamp, got {type(value).__name__}", key)
    return _in_range(ms, key, limits)


# what ``iso`` formats as four-digit years, with room for a derived period end (start + 1 h):
# reachable only with very wide age/future limits
_MIN_MS = -30_610_224_000_000  # 1000-01-01T00:00:00Z
_MAX_MS = 253_370_764_799_999  # 9998-12-31T23:59:59.999Z


def _in_range(ms: int, key: str, limits: Limits) -> int:
    """The range check of ``timestamp_ms``: ``ms`` neither too far in the future nor in the past."""
    if not _MIN_MS <= ms <= _MAX_MS:
        raise ValidationError("is out of range for a timestamp (years 1000 to 9998)", key)
    now_s = limits.now()
    if ms > (now_s + limits.max_future_s) * 1000:
        raise ValidationError("is too far in the future", key)
    if ms < (now_s - limits.max_age_s) * 1000:
        raise ValidationError("is too far in the past", key)
    return ms


def _iso_of(raw: Any, ms: int) -> str:
    """``iso(ms)``, remembered in _STAMPS when ``ms`` was parsed from ``raw``, a non-empty string."""
    out = iso(ms)
    if type(raw) is str and raw and len(raw) <= _MEMO_KEY_MAX:
        if len(_STAMPS) >= _MEMO_SIZE:
            _STAMPS.clear()
        _STAMPS[raw] = (ms, out)
    return out


_MEMO_SIZE = 4096  # entries of each memo (timestamps parsed, days formatted); cleared when full
_MEMO_KEY_MAX = 64  # characters of a memoised timestamp string (padding is not kept in memory)
_ISO_MS: dict[str, int] = {}  # ISO-8601 string -> epoch milliseconds (successful parses only)
_STAMPS: dict[str, tuple[int, str]] = {}  # timestamp string -> its milliseconds and their iso()


def _iso_to_ms(value: str, key: str) -> int:
    """An ISO-8601 string (naive means UTC) -> epoch milliseconds, as float seconds truncated."""
    s = value.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValidationError(f"{value[:40]!r} is not an ISO-8601 timestamp", key) from None
    if dt.tzinfo is None:  # taken as UTC: what ``dt.replace(tzinfo=UTC).timestamp()`` computes,
        # (the microseconds since the epoch divided by 10**6), without the slow replace()
        return int((dt - _EPOCH) / _SECOND * 1000)
    return int(dt.timestamp() * 1000)


_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)


_DAY_MS = 86_400_000
_DAY_PREFIX: dict[int, str] = {}  # epoch day -> "2025-01-15T"
_TWO = tuple(f"{i:02d}" for i in range(60))
_THREE = tuple(f"{i:03d}" for i in range(1000))


def iso(ms: int) -> str:
    """Epoch milliseconds -> ``2025-01-15T09:30:00.000Z``."""
    if type(ms) is not int:
        return _iso(ms)
    day, ms_of_day = divmod(ms, _DAY_MS)
    prefix = _DAY_PREFIX.get(day)
    if prefix is None:  # the first time of this day: datetime formats it (or raises, out of range)
        out = _iso(ms)
        if len(_DAY_PREFIX) >= _MEMO_SIZE:
            _DAY_PREFIX.clear()
        _DAY_PREFIX[day] = out[: out.index("T") + 1]
        return out
    # The time of day is plain arithmetic on the milliseconds (UTC has no leap seconds).
    s, milli = divmod(ms_of_day, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{prefix}{_TWO[h]}:{_TWO[m]}:{_TWO[s]}.{_THREE[milli]}Z"


def _iso(ms: int) -> str:
    """``iso`` by datetime: for a day's first call, values of other types, and out-of-range errors."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _metadata(d: Mapping[str, Any]) -> dict[str, Any]:
    value = d.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError("expected an object", "metadata")
    return value


def _unit(d: Mapping[str, Any], key: str = "business_unit") -> str:
    value = d.get(key)
    if value is None or (isinstance(value, str) and value.strip().lower() in _UNKNOWN_UNITS):
        return UNALLOCATED
    return text(d, key, UNALLOCATED)


def _currency(d: Mapping[str, Any], limits: Limits) -> str:
    cur = text(d, "currency", "USD").upper()
    if cur not in limits.currencies:
        raise ValidationError(f"unknown currency {cur!r}", "currency")
    return cur


# -- the three event kinds ------------------------------------------------------------------------


class _FieldMemo(dict[tuple[Any, ...], tuple[str, ...]]):
    """Raw values of an event kind's low-cardinality string fields -> their validated values.

    The key is the tuple of the raw values (from a decoded JSON document only, whose values are
    str, int, float, bool, None, list or dict): a stored key holds only str (of at most MAX_TEXT
    characters) and None, so it equals no tuple holding anything else, and a list or dict makes the
    key unhashable (no lookup). An entry is stored only after the whole event passed; the
    currency is kept upper-cased but is checked against the limits on every call.
    """

    def __init__(self, fields: tuple[str, ...]) -> None:
        super().__init__()
        self.fields = fields

    def lookup(self, key: tuple[Any, ...]) -> tuple[str, ...] | None:
        """The validated values for ``key`` (the raw values of ``fields``, in order), if known."""
        try:
            return self.get(key)
        except TypeError:  # a list or an object among them
            return None

    def remember(self, key: tuple[Any, ...], out: Mapping[str, Any]) -> None:
        if all(v is None or (type(v) is str and len(v) <= MAX_TEXT) for v in key):
            if len(self) >= _MEMO_SIZE:
                self.clear()
            self[key] = tuple(out[f] for f in self.fields)


def _known(
    raw: bytes | str | Mapping[str, Any],
    limits: Limits,
    memo: _FieldMemo,
    parse: Callable[[Mapping[str, Any], Limits], dict[str, Any]],
) -> tuple[tuple[str, ...] | None, dict[str, Any]]:
    """``(memoised string fields, decoded document)``, or ``(None, the full parse)`` when unknown.

    Only a decoded JSON document is looked up (its values are JSON types, see _FieldMemo); a
    mapping given directly is always parsed in full. A full parse of a document is remembered.
    """
    if not isinstance(raw, bytes | str):
        return None, parse(_obj(raw), limits)
    d: dict[str, Any] = load_json(raw, limits)
    _obj(d)  # a JSON object, else ValidationError
    key = tuple(map(d.get, memo.fields))
    known = memo.lookup(key)
    if known is not None:
        return known, d
    out = parse(d, limits)
    memo.remember(key, out)
    return None, out


def _stamped(
    d: Mapping[str, Any], limits: Limits, key: str = "timestamp", default: int | None = None
) -> tuple[int, Any, tuple[int, str] | None]:
    """``timestamp_ms(d, key, limits, default)``, the raw value, and its memo entry if it had one.

    A timestamp string seen before comes with its milliseconds and its iso(); its range is checked
    against the clock again.
    """
    raw = d.get(key)
    stamp = _STAMPS.get(raw) if type(raw) is str else None
    ms = timestamp_ms(d, key, limits, default) if stamp is None else _in_range(stamp[0], key, limits)
    return ms, raw, stamp


_COST_MEMO = _FieldMemo(
    (
        "service",
        "region",
        "charge_category",
        "provider",
        "event_type",
        "currency",
        "business_unit",
        "project_id",
        "environment",
        "account_id",
        "source",
    )
)
_BUSINESS_MEMO = _FieldMemo(("event_type", "feature", "action", "currency", "business_unit", "source"))
_RESOURCE_MEMO = _FieldMemo(
    ("service", "region", "metric", "business_unit", "project_id", "environment", "provider", "source")
)


def parse_cost(raw: bytes | str | Mapping[str, Any], limits: Limits) -> dict[str, Any]:
    """Validate one cost event (the article's CostEvent plus provider, currency, periods)."""
    # These string fields repeat from event to event (a few services, regions, units...): once a
    # combination has passed, its validated values are looked up (_FieldMemo, keyed by the raw
    # values of _COST_MEMO.fields). Everything else (ids, times, amounts, the currency against the
    # limits, the clock) is checked on every call, in the order of _parse_cost.
    known, d = _known(raw, limits, _COST_MEMO, _parse_cost)
    if known is None:
        return d  # not memoised: the full parse
    (
        service,
        region,
        category,
        provider,
        event_type,
        currency,
        unit,
        project_id,
        environment,
        account_id,
        source,
    ) = known
    event_id = text(d, "event_id", ident=True)
    # iso() of the timestamp is called where _parse_cost calls it (it can raise)
    ts, raw_ts, stamp = _stamped(d, limits)
    amount = money(d, "cost_amount", limits)
    if amount < 0 and category not in NEGATIVE_OK:
        raise ValidationError(
            "is negative; only credit, refund, adjustment or correction charges may be", "cost_amount"
        )
    start, raw_start, start_stamp = _stamped(d, limits, "charge_period_start", ts)
    end, raw_end, end_stamp = _stamped(d, limits, "charge_period_end", start + 3_600_000)
    if end < start:
        raise ValidationError("ends before charge_period_start", "charge_period_end")
    ts_iso = _iso_of(raw_ts, ts) if stamp is None else stamp[1]
    amount_str = _amount_str(amount)
    if currency not in limits.currencies:
        raise ValidationError(f"unknown currency {currency!r}", "currency")
    resource_id = text(d, "resource_id", f"{service}_{region}")
    if start_stamp is not None:
        start_iso = start_stamp[1]
    else:
        start_iso = ts_iso if start == ts else _iso_of(raw_start, start)
    if end_stamp is not None:
        end_iso = end_stamp[1]
    elif end == start:
        end_iso = start_iso
    else:
        end_iso = _iso_of(raw_end, end)
    return {
        "event_id": event_id,
        "timestamp": ts_iso,
        "ts_ms": ts,
        "event_type": event_type,
        "service": service,
        "region": region,
        "cost_amount": amount_str,
        "currency": currency,
        "resource_id": resource_id,
        "business_unit": unit,
        "project_id": project_id,
        "environment": environment,
        "provider": provider,
        "account_id": account_id,
        "charge_category": category,
        "charge_period_start": start_iso,
        "charge_period_end": end_iso,
        "source": source,
        "schema_version": SCHEMA_VERSION,
        "metadata": _metadata(d),
    }


def _parse_cost(d: Mapping[str, Any], limits: Limits) -> dict[str, Any]:
    """``parse_cost`` by the field helpers: the first event of a combination, and every Mapping."""
    event_id = text(d, "event_id", ident=True)
    ts = timestamp_ms(d, "timestamp", limits)
    service = text(d, "service")
    region = text(d, "region", "global")
    category = text(d, "charge_category", "usage").lower()
    if category not in CHARGE_CATEGORIES:
        raise ValidationError(f"unknown charge category {category!r}", "charge_category")
    amount = money(d, "cost_amount", limits)
    if amount < 0 and category not in NEGATIVE_OK:
        raise ValidationError(
            "is negative; only credit, refund, adjustment or correction charges may be", "cost_amount"
        )
    provider = text(d, "provider", "aws").lower()
    if provider not in PROVIDERS:
        raise ValidationError(f"unknown provider {provider!r}", "provider")
    start = timestamp_ms(d, "charge_period_start", limits, ts)
    end = timestamp_ms(d, "charge_period_end", limits, start + 3_600_000)
    if end < start:
        raise ValidationError("ends before charge_period_start", "charge_period_end")
    return {
        "event_id": event_id,
        "timestamp": iso(ts),
        "ts_ms": ts,
        "event_type": text(d, "event_type", "cloud_cost_incurred"),
        "service": service,
        "region": region,
        "cost_amount": to_str(amount),
        "currency": _currency(d, limits),
        "resource_id": text(d, "resource_id", f"{service}_{region}"),
        "business_unit": _unit(d),
        "project_id": text(d, "project_id", UNALLOCATED),
        "environment": text(d, "environment", "unknown"),
        "provider": provider,
        "account_id": text(d, "account_id", ""),
        "charge_category": category,
        "charge_period_start": iso(start),
        "charge_period_end": iso(end),
        "source": text(d, "source", "kafka"),
        "schema_version": SCHEMA_VERSION,
        "metadata": _metadata(d),
    }


def parse_business(raw: bytes | str | Mapping[str, Any], limits: Limits) -> dict[str, Any]:
    """Validate one business event (the article's BusinessEvent plus currency and source)."""
    known, d = _known(raw, limits, _BUSINESS_MEMO, _parse_business)
    if known is None:
        return d  # not memoised: the full parse
    event_type, feature, action, currency, unit, source = known
    ts, raw_ts, stamp = _stamped(d, limits)
    revenue = money(d, "revenue_impact", limits, Decimal(0))
    event_id = text(d, "event_id", ident=True)
    ts_iso = _iso_of(raw_ts, ts) if stamp is None else stamp[1]
    user_id = text(d, "user_id", "anonymous")
    revenue_str = _amount_str(revenue)
    if currency not in limits.currencies:
        raise ValidationError(f"unknown currency {currency!r}", "currency")
    return {
        "event_id": event_id,
        "timestamp": ts_iso,
        "ts_ms": ts,
        "event_type": event_type,
        "user_id": user_id,
        "feature": feature,
        "action": action,
        "revenue_impact": revenue_str,
        "currency": currency,
        "business_unit": unit,
        "source": source,
        "schema_version": SCHEMA_VERSION,
        "metadata": _metadata(d),
    }


def _parse_business(d: Mapping[str, Any], limits: Limits) -> dict[str, Any]:
    """``parse_business`` by the field helpers: the first event of a combination, and every Mapping."""
    ts = timestamp_ms(d, "timestamp", limits)
    revenue = money(d, "revenue_impact", limits, Decimal(0))
    return {
        "event_id": text(d, "event_id", ident=True),
        "timestamp": iso(ts),
        "ts_ms": ts,
        "event_type": text(d, "event_type", "business_event"),
        "user_id": text(d, "user_id", "anonymous"),
        "feature": text(d, "feature", ""),
        "action": text(d, "action", ""),
        "revenue_impact": to_str(revenue),
        "currency": _currency(d, limits),
        "business_unit": _unit(d),
        "source": text(d, "source", "kafka"),
        "schema_version": SCHEMA_VERSION,
        "metadata": _metadata(d),
    }


def _utilisation(d: Mapping[str, Any]) -> float:
    value = d.get("utilisation")
    if type(value) is float and 0.0 <= value <= 1.0:  # the common case: a ratio under the first key
        return value
    meta = d.get("metadata") if isinstance(d.get("metadata"), dict) else {}
    for container, key in (
        (d, "utilisation"),
        (d, "utilization"),
        (meta, "utilization"),
        (meta, "utilisation"),
    ):
        if isinstance(container, Mapping) and key in container:
            value = container[key]
            break
    else:
        raise ValidationError("is required", "utilisation")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationError("expected a number", "utilisation")
    try:
        u = float(value)
    except (ValueError, OverflowError):
        raise ValidationError(f"{str(value)[:40]!r} is not a number", "utilisation") from None
    if not math.isfinite(u):
        raise ValidationError("must be finite", "utilisation")
    if u > 1.0 and u <= 100.0 and isinstance(d.get("unit"), str) and d["unit"].lower() == "percent":
        u /= 100.0
    if not 0.0 <= u <= 1.0:
        raise ValidationError(f"{u} is outside [0, 1]", "utilisation")
    return u


def parse_resource(raw: bytes | str | Mapping[str, Any], limits: Limits) -> dict[str, Any]:
    """Validate one utilisation sample (ResourceEvent; the article's shape is accepted too)."""
    known, d = _known(raw, limits, _RESOURCE_MEMO, _parse_resource)
    if known is None:
        return d  # not memoised: the full parse
    get = d.get
    service, region, metric, unit, project_id, environment, provider, source = known
    ts, raw_ts, stamp = _stamped(d, limits)
    meta = _metadata(d)
    hourly = get("hourly_cost", meta.get("hourly_cost"))
    event_id = text(d, "event_id", ident=True)
    ts_iso = _iso_of(raw_ts, ts) if stamp is None else stamp[1]
    resource_id = text(d, "resource_id")
    resource_type = text(d, "resource_type", str(meta.get("resource_type") or "instance"))
    instance_type = text(d, "instance_type", str(meta.get("instance_type") or ""))
    utilisation = _utilisation(d)
    hourly_str = _amount_str(money({"hourly_cost": hourly}, "hourly_cost", limits, Decimal(0)))
    return {
        "event_id": event_id,
        "timestamp": ts_iso,
        "ts_ms": ts,
        "resource_id": resource_id,
        "resource_type": resource_type,
        "instance_type": instance_type,
        "metric": metric,
        "utilisation": utilisation,
        "hourly_cost": hourly_str,
        "service": service,
        "region": region,
        "business_unit": unit,
        "project_id": project_id,
        "environment": environment,
        "provider": provider,
        "stateless": bool(get("stateless", meta.get("stateless", False))),
        "source": source,
        "schema_version": SCHEMA_VERSION,
        "metadata": meta,
    }


def _parse_resource(d: Mapping[str, Any], limits: Limits) -> dict[str, Any]:
    """``parse_resource`` by the field helpers: the first sample of a combination, and every Mapping."""
    ts = timestamp_ms(d, "timestamp", limits)
    meta = _metadata(d)
    service = text(d, "service", "ec2")
    region = text(d, "region", "global")
    hourly = d.get("hourly_cost", meta.get("hourly_cost"))
    return {
        "event_id": text(d, "event_id", ident=True),
        "timestamp": iso(ts),
        "ts_ms": ts,
        "resource_id": text(d, "resource_id"),
        "resource_type": text(d, "resource_type", str(meta.get("resource_type") or "instance")),
        "instance_type": text(d, "instance_type", str(meta.get("instance_type") or "")),
        "metric": text(d, "metric", "cpu"),
        "utilisation": _utilisation(d),
        "hourly_cost": to_str(money({"hourly_cost": hourly}, "hourly_cost", limits, Decimal(0))),
        "service": service,
        "region": region,
        "business_unit": _unit(d),
        "project_id": text(d, "project_id", UNALLOCATED),
        "environment": text(d, "environment", "unknown"),
        "provider": text(d, "provider", "aws").lower(),
        "stateless": bool(d.get("stateless", meta.get("stateless", False))),
        "source": text(d, "source", "kafka"),
        "schema_version": SCHEMA_VERSION,
        "metadata": meta,
    }
