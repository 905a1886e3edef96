"""REFERENCE implementation of core.validate: a verbatim copy of the parsers before the speed-up.

``finops_app.core.validate`` was made faster (memoised ISO parsing and formatting, fast paths for
well-formed strings and plain decimals) without changing any observable behaviour. This module
keeps the original code, unchanged except for these imports, so that
``test_validate_equivalence.py`` can hold the fast one to it on generated inputs, and so that
``bench/validate_bench.py --compare tests.unit.test_validate_reference`` can time both in one run.
It has no tests of its own; do not "fix" it: it is the specification of the behaviour.

Copied from finops_app/core/validate.py at commit 0cfc71e (``Limits`` is shared, not copied).
One deliberate change since, made in both: a timestamp outside years 1000 to 9998 (reachable only
with very wide age/future limits) is a ValidationError instead of a ValueError out of ``iso``
(which crashed the intake instead of dead-lettering the record) or a malformed three-digit year.
"""

# ruff: noqa

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from finops_app.core.money import to_str
from finops_app.core.validate import Limits
from finops_app.errors import TooLargeError, ValidationError

SCHEMA_VERSION = 1
UNALLOCATED = "unallocated"
PROVIDERS = frozenset({"aws", "azure", "gcp", "oci", "onprem", "other"})
NEGATIVE_OK = frozenset({"credit", "refund", "adjustment", "correction"})
CHARGE_CATEGORIES = frozenset({"usage", "purchase", "tax"}) | NEGATIVE_OK
_ID_RE = re.compile(r"^[\w.:/@+=,\-$#*]{1,256}$")
_UNKNOWN_UNITS = frozenset({"", "unknown", "none", "null", UNALLOCATED})
MAX_TEXT = 256
MAX_DECIMALS = 18


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
    value = d.get(key)
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
    if value is None or value == "":
        if default is None:
            raise ValidationError("is required", key)
        return default
    if isinstance(value, bool):
        raise ValidationError("expected a timestamp, got a boolean", key)
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError("must be finite", key)
        if not -1e15 < value < 1e15:
            raise ValidationError("is out of range for a timestamp", key)
        ms = int(value if value > 1e11 else value * 1000)
    elif isinstance(value, str):
        s = value.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            raise ValidationError(f"{value[:40]!r} is not an ISO-8601 timestamp", key) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ms = int(dt.timestamp() * 1000)
    else:
        raise ValidationError(f"expected a timestamp, got {type(value).__name__}", key)
    if not -30_610_224_000_000 <= ms <= 253_370_764_799_999:
        raise ValidationError("is out of range for a timestamp (years 1000 to 9998)", key)
    now_s = limits.now()
    if ms > (now_s + limits.max_future_s) * 1000:
        raise ValidationError("is too far in the future", key)
    if ms < (now_s - limits.max_age_s) * 1000:
        raise ValidationError("is too far in the past", key)
    return ms


def iso(ms: int) -> str:
    """Epoch milliseconds -> ``2025-01-15T09:30:00.000Z``."""
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


def parse_cost(raw: bytes | str | Mapping[str, Any], limits: Limits) -> dict[str, Any]:
    """Validate one cost event (the article's CostEvent plus provider, currency, periods)."""
    d = _obj(load_json(raw, limits) if isinstance(raw, bytes | str) else raw)
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
    d = _obj(load_json(raw, limits) if isinstance(raw, bytes | str) else raw)
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
    d = _obj(load_json(raw, limits) if isinstance(raw, bytes | str) else raw)
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
