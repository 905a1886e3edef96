"""Restatements without double counting: an event id's amounts over time in, what to count out.

Cost Explorer re-reads recent periods and billing exports are rewritten, so the same event id
arrives again, sometimes with a new amount. The ledger remembers, per event id, what was already
counted and where (business unit, service, region); ``apply`` turns each arrival into the events
to count: the first arrival as is, an identical repeat as nothing, a changed amount as a
correction carrying the delta (``<id>:r<n>``, charge category ``correction``), and a change of
attribution as a reversal at the old place plus the full amount at the new one. Downstream sums
therefore always equal the latest figure.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from finops_app.core.money import to_str

PLACE = ("business_unit", "service", "region", "resource_id", "currency")
SLOTS = 2  # events one arrival can give (``apply``): a reversal and the amount at its new place


def apply(
    entry: dict[str, Any] | None, event: dict[str, Any]
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(new ledger entry, events to count) for one arrival of ``event``; never mutates inputs."""
    amount = Decimal(event["cost_amount"])
    place = {k: event[k] for k in PLACE}
    if entry is None:
        return {"a": to_str(amount), "rev": 0, "place": place}, [event]
    previous = Decimal(entry["a"])
    if amount == previous and place == entry["place"]:
        return None, []
    rev = entry["rev"] + 1
    out: list[dict[str, Any]] = []
    if place == entry["place"]:
        out.append(_correction(event, rev, amount - previous, previous, amount))
    else:  # re-attributed: take it back where it was counted, count it where it belongs now
        out.append(_correction({**event, **entry["place"]}, rev, -previous, previous, Decimal(0)))
        rev += 1
        out.append(_correction(event, rev, amount, Decimal(0), amount))
    return {"a": to_str(amount), "rev": rev, "place": place}, out


def _correction(
    event: dict[str, Any], rev: int, delta: Decimal, previous: Decimal, now: Decimal
) -> dict[str, Any]:
    base = event["event_id"]
    meta = dict(event.get("metadata") or {})
    meta.update(corrects=base, revision=rev, previous=to_str(previous), restated=to_str(now))
    return {
        **event,
        "event_id": f"{base}:r{rev}",
        "cost_amount": to_str(delta),
        "charge_category": "correction",
        "metadata": meta,
    }
