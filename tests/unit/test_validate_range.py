"""Timestamps outside years 1000 to 9998 are a ValidationError (a dead letter), whatever the limits.

With very wide ``FINOPS_MAX_EVENT_AGE_DAYS`` / ``FINOPS_MAX_FUTURE_SECONDS`` such a timestamp passed
the age check and ``iso`` raised ValueError out of ``parse_cost``: the intake crashed on the record
instead of dead-lettering it (found by the "wide" limits of test_validate_equivalence.py); a year
below 1000 came out as a malformed ISO string ("1-01-01T..."), and a default period end one hour
after 9999-12-31T23:00 overflowed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from finops_app.core import validate
from finops_app.errors import ValidationError
from tests.unit import test_validate_equivalence as eq

COST = {
    "event_id": "c-1",
    "timestamp": "2026-01-01T00:00:00Z",
    "service": "ec2",
    "cost_amount": "1.25",
    "business_unit": "retail",
}


@pytest.mark.parametrize(
    "value", ["9999-01-01T00:00:00Z", "0999-12-31T23:59:59Z", "9998-12-31T23:30:00-01:00", 3e14, -6.3e13]
)
def test_timestamps_outside_years_1000_to_9998_are_dead_lettered(value: Any) -> None:
    wide = dataclasses.replace(eq.LIMITS["wide"], max_bytes=1_000_000)
    with pytest.raises(ValidationError, match="out of range for a timestamp") as caught:
        validate.parse_cost(orjson.dumps({**COST, "timestamp": value}), wide)
    assert caught.value.field == "timestamp"


@pytest.mark.parametrize("value", ["9998-12-31T23:59:59Z", "1000-01-01T00:00:00Z"])
def test_the_first_and_last_formattable_instants_still_parse(value: str) -> None:
    wide = dataclasses.replace(eq.LIMITS["wide"], max_bytes=1_000_000)
    event = validate.parse_cost(orjson.dumps({**COST, "timestamp": value}), wide)
    assert event["timestamp"].startswith(value[:19])
