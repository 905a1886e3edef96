"""Money as exact decimals: parse, add, round to Snowflake's NUMBER(15,4) at the edges only."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

FOUR_PLACES = Decimal("0.0001")


def to_str(amount: Decimal) -> str:
    """Exact decimal string without exponent (``1E-7`` -> ``0.0000001``)."""
    s = format(amount, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def q4(amount: Decimal) -> Decimal:
    """Round half-even to 4 places, as output records and Snowflake NUMBER(15,4) carry money."""
    return amount.quantize(FOUR_PLACES, rounding=ROUND_HALF_EVEN)


def q4s(amount: Decimal) -> str:
    """``q4`` as a fixed 4-place string."""
    return format(q4(amount), "f")
