"""The boundary contract of core.validate: whatever comes in, a dict or a ValidationError comes out.

Every parser is fed arbitrary JSON values, near-valid events with one or more fields replaced by
arbitrary values, raw bytes (invalid UTF-8 included) and JSON documents with bytes spliced in.
Any exception other than ValidationError is a crash of an agent, so it fails the property.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from finops_app.core.validate import Limits, parse_business, parse_cost, parse_resource
from finops_app.errors import ValidationError

LIMITS = Limits()
Parser = Callable[[Any, Limits], dict[str, Any]]
PARSERS: dict[str, Parser] = {"cost": parse_cost, "business": parse_business, "resource": parse_resource}
VALID: dict[str, dict[str, Any]] = {
    "cost": {
        "event_id": "e-1",
        "timestamp": "2025-01-15 09:30:00",
        "service": "ec2",
        "region": "us-east-1",
        "cost_amount": 12.5,
        "business_unit": "retail",
        "metadata": {"k": "v"},
    },
    "business": {
        "event_id": "b-1",
        "timestamp": "2025-01-15T09:30:00Z",
        "user_id": "u1",
        "revenue_impact": "19.99",
        "currency": "EUR",
    },
    "resource": {
        "event_id": "r-1",
        "timestamp": 1736933400,
        "resource_id": "i-123",
        "utilisation": 0.42,
        "hourly_cost": "0.096",
        "metadata": {"instance_type": "m5.large"},
    },
}
FIELDS = sorted(
    {k for v in VALID.values() for k in v}
    | {"charge_category", "provider", "charge_period_start", "charge_period_end", "currency", "unit"}
    | {"utilization", "stateless", "project_id", "environment", "account_id", "event_type", "source"}
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["", " ", "NaN", "-Infinity", "1e999999999", "-1e-7", "2025-01-15", "percent", "sNaN"])
    | st.sampled_from([1e308, -1e308, 2**63, -(2**63), 10**400, 1e11, -1e11, 99.5, 100.0])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _holds(parser: Parser, raw: Any) -> None:
    try:
        result = parser(raw, LIMITS)
    except ValidationError:
        return
    assert isinstance(result, dict)


@pytest.mark.parametrize("kind", sorted(PARSERS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_any_json_value(kind: str, value: Any) -> None:
    _holds(PARSERS[kind], value)


@pytest.mark.parametrize("kind", sorted(PARSERS))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values, max_size=4))
@example(changes={"timestamp": -1e308})
@example(
    changes={"cost_amount": "1e999999999", "revenue_impact": "1e999999999", "hourly_cost": "1e999999999"}
)
@example(changes={"timestamp": 10**400, "utilisation": 10**400})
def test_near_valid_events(kind: str, changes: Mapping[str, Any]) -> None:
    _holds(PARSERS[kind], {**VALID[kind], **changes})


@pytest.mark.parametrize("kind", sorted(PARSERS))
@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200))
def test_random_bytes(kind: str, raw: bytes) -> None:
    _holds(PARSERS[kind], raw)


@pytest.mark.parametrize("kind", sorted(PARSERS))
@settings(max_examples=300, deadline=None)
@given(
    changes=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=3),
    splice=st.binary(min_size=1, max_size=4) | st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]),
    at=st.integers(min_value=0),
)
def test_json_documents_with_bytes_spliced_in(
    kind: str, changes: Mapping[str, Any], splice: bytes, at: int
) -> None:
    try:
        doc = orjson.dumps({**VALID[kind], **changes}, default=str)
    except TypeError:  # integers beyond 64 bits have no orjson encoding
        assume(False)
    cut = at % (len(doc) + 1)
    _holds(PARSERS[kind], doc)
    _holds(PARSERS[kind], doc[:cut] + splice + doc[cut:])
    _holds(PARSERS[kind], doc.decode("utf-8", "replace")[:cut] + splice.decode("latin-1"))


@pytest.mark.parametrize("kind", sorted(PARSERS))
def test_the_valid_examples_pass(kind: str) -> None:
    assert isinstance(PARSERS[kind](VALID[kind], LIMITS), dict)
    assert PARSERS[kind](orjson.dumps(VALID[kind]), LIMITS) == PARSERS[kind](VALID[kind], LIMITS)
