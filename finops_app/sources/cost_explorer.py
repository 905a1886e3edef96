"""AWS Cost Explorer (``GetCostAndUsage``) -> canonical cost events, restatements as corrections.

What the article got wrong and this module does instead:

* at most two GroupBy keys per request: SERVICE x the cost-allocation tag (``ce_group_tag``) gives
  the cost events; an optional second query SERVICE x REGION only *enriches* them (never summed);
* HOURLY bounds are ``YYYY-MM-DDThh:mm:ssZ`` (DAILY ``YYYY-MM-DD``) and End is after Start;
* event ids come from (account, period, granularity, metric, dimensions), never the poll time; the
  lookback window is re-read on every poll and a changed figure yields a ``correction`` event with
  the delta, so downstream sums equal the latest figure;
* throttling and transient errors are retried with backoff; persistent ones raise SourceError.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

from finops_app.core.money import to_str
from finops_app.core.validate import UNALLOCATED, Limits, parse_cost
from finops_app.errors import SourceError, ValidationError
from finops_app.sources import OnReject, Sleep, call_with_retry, create_client, stable_id

__all__ = ["call_with_retry", "create_client", "poll_costs", "poll_window", "time_period"]

logger = logging.getLogger(__name__)


MAX_GROUP_BY = 2
MAX_PAGES = 1000
RowKey = tuple[str, str, tuple[str, ...]]  # (period start, period end, group keys)
_PERIOD = {"HOURLY": timedelta(hours=1), "DAILY": timedelta(days=1)}
_DEFAULT_STATE: dict[str, Any] = {}  # process-wide restatement state when none is injected


# -- requests -------------------------------------------------------------------------------------


def floor_period(moment: datetime, granularity: str) -> datetime:
    """The start of the hour (HOURLY) or day (DAILY) containing ``moment``, in UTC."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if granularity == "DAILY" else moment


def time_period(start: datetime, end: datetime, granularity: str) -> dict[str, str]:
    """Cost Explorer's TimePeriod: ``YYYY-MM-DDThh:mm:ssZ`` for HOURLY, ``YYYY-MM-DD`` for DAILY.

    Bounds are floored to the granularity; an empty range (End not after Start) is a ValueError.
    """
    if granularity not in _PERIOD:
        raise ValueError(f"granularity must be HOURLY or DAILY, got {granularity!r}")
    start, end = floor_period(start, granularity), floor_period(end, granularity)
    if end <= start:
        raise ValueError(
            f"empty {granularity} range: End {end.isoformat()} is not after Start {start.isoformat()}"
        )
    fmt = "%Y-%m-%dT%H:%M:%SZ" if granularity == "HOURLY" else "%Y-%m-%d"
    return {"Start": start.strftime(fmt), "End": end.strftime(fmt)}


def poll_window(now: datetime, settings: Any) -> tuple[datetime, datetime]:
    """Completed periods of the lookback: ``[floor(now - lookback), floor(now))``, one at least."""
    granularity = settings.ce_granularity
    end = floor_period(now, granularity)
    lookback = floor_period(now - timedelta(hours=settings.ce_lookback_hours), granularity)
    start = min(lookback, end - _PERIOD[granularity])
    return start, end


def build_request(
    period: dict[str, str], granularity: str, metric: str, group_by: list[dict[str, str]]
) -> dict[str, Any]:
    if len(group_by) > MAX_GROUP_BY:
        raise ValueError(f"Cost Explorer accepts at most {MAX_GROUP_BY} GroupBy keys, got {len(group_by)}")
    return {"TimePeriod": period, "Granularity": granularity, "Metrics": [metric], "GroupBy": group_by}


async def fetch_results(
    client: Any, request: dict[str, Any], *, sleep: Sleep = asyncio.sleep
) -> list[dict[str, Any]]:
    """Every ``ResultsByTime`` entry of a request, following ``NextPageToken``."""
    results: list[dict[str, Any]] = []
    token: str | None = None
    for page in range(1, MAX_PAGES + 1):
        params = dict(request, NextPageToken=token) if token else dict(request)
        context = f"ce.get_cost_and_usage {request['TimePeriod']} {request['Granularity']} page {page}"
        call = partial(client.get_cost_and_usage, **params)
        response = await call_with_retry(call, context=context, sleep=sleep)
        results.extend(response.get("ResultsByTime") or [])
        token = response.get("NextPageToken") or None
        if not token:
            return results
    raise SourceError(f"ce.get_cost_and_usage {request['TimePeriod']}: more than {MAX_PAGES} pages")


# -- rows -> events -------------------------------------------------------------------------------


def _tag_value(key: str) -> str:
    """``BusinessUnit$ecommerce`` -> ``ecommerce``; ``BusinessUnit$`` (untagged) -> ``unallocated``."""
    value = key.split("$", 1)[1] if "$" in key else key
    return value.strip() or UNALLOCATED


def _rows(results: list[dict[str, Any]], metric: str) -> dict[RowKey, dict[str, Any]]:
    """(period start, period end, group keys) -> {amount, unit, estimated}; last one wins."""
    rows: dict[RowKey, dict[str, Any]] = {}
    for result in results:
        period = result.get("TimePeriod") or {}
        for group in result.get("Groups") or []:
            value = (group.get("Metrics") or {}).get(metric) or {}
            key = (
                str(period.get("Start")),
                str(period.get("End")),
                tuple(str(k) for k in group.get("Keys") or []),
            )
            if key in rows:
                logger.warning("Cost Explorer returned %s twice; keeping the last figure", key)
            unit, estimated = value.get("Unit") or "USD", bool(result.get("Estimated", False))
            rows[key] = {"amount": value.get("Amount"), "unit": unit, "estimated": estimated}
    return rows


def _regions(
    rows: dict[RowKey, dict[str, Any]],
) -> dict[tuple[str, str], dict[str, str]]:
    """SERVICE x REGION rows -> (period start, service) -> {region: amount} (enrichment only)."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for (start, _end, keys), row in rows.items():
        if len(keys) == 2 and row["amount"] not in (None, "0", "0.0"):
            out.setdefault((start, keys[0]), {})[keys[1] or "global"] = str(row["amount"])
    return out


def _period_ms(start: str) -> int:
    """``2024-01-01`` or ``2024-01-01T05:00:00Z`` -> epoch milliseconds."""
    dt = datetime.fromisoformat(start.replace("Z", "+00:00"))
    return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)


def _emit(
    wire: dict[str, Any], amount: Decimal, state: MutableMapping[str, Any], *, sig: str, limits: Limits
) -> dict[str, Any]:
    """The base event or a correction for ``amount``, validated; on success the state records
    the amount (the caller checked that it changed). A ValidationError leaves the state as it was.
    """
    base_id: str = wire["event_id"]
    prev = state.get(base_id)
    event, revision = wire, 0
    if prev is not None:
        previous, revision = Decimal(prev["amount"]), int(prev["rev"]) + 1
        meta = {"corrects": base_id, "previous": to_str(previous), "restated": to_str(amount)}
        event = dict(
            wire,
            event_id=f"{base_id}:r{revision}",
            cost_amount=to_str(amount - previous),
            charge_category="correction",
            metadata=dict(wire["metadata"], revision=revision, **meta),
        )
    canonical = parse_cost(event, limits)
    period_ms = _period_ms(wire["timestamp"])
    state[base_id] = {
        "amount": to_str(amount),
        "rev": revision,
        "sig": sig,
        "period_ms": period_ms,
        "wire": wire,
    }
    return canonical


def _log_reject(wire: dict[str, Any], exc: ValidationError) -> None:
    logger.error("Cost Explorer row rejected (%s): %s", exc, wire)


@dataclass(frozen=True, slots=True)
class _Query:
    account_id: str
    granularity: str
    metric: str
    tag: str

    @property
    def sig(self) -> str:
        return stable_id("q", self.account_id, self.granularity, self.metric, self.tag)


def _wire(
    q: _Query, key: RowKey, row: dict[str, Any], regions: dict[tuple[str, str], dict[str, str]]
) -> dict[str, Any]:
    """The base event of one SERVICE x TAG row; its id is the row's identity, never the poll time."""
    account_id, granularity, metric, tag = q.account_id, q.granularity, q.metric, q.tag
    p_start, p_end, keys = key
    service = keys[0] if keys else "unknown"
    tag_raw = keys[1] if len(keys) > 1 else ""
    split = regions.get((p_start, service), {})
    meta: dict[str, Any] = {
        "estimated": row["estimated"],
        "granularity": granularity,
        "metric": metric,
        "group_tag": tag,
        "tag_key": tag_raw,
        **({"region_costs": split} if len(split) > 1 else {}),
    }
    amount = str(row["amount"])
    negative = amount.strip().startswith("-")
    return {
        "event_id": stable_id("ce", "aws", account_id, p_start, granularity, metric, service, tag, tag_raw),
        "timestamp": p_start,
        "charge_period_start": p_start,
        "charge_period_end": p_end,
        "service": service,
        "region": next(iter(split)) if len(split) == 1 else ("multiple" if split else "global"),
        "cost_amount": amount,
        "currency": row["unit"],
        "resource_id": f"aws-ce/{account_id or 'default'}/{service}",
        "business_unit": _tag_value(tag_raw) if tag else UNALLOCATED,
        "provider": "aws",
        "account_id": account_id,
        "charge_category": "tax" if service == "Tax" else ("adjustment" if negative else "usage"),
        "source": "cost_explorer",
        "metadata": meta,
    }


async def poll_costs(
    client: Any,
    settings: Any,
    now: datetime,
    state: MutableMapping[str, Any] | None = None,
    *,
    account_id: str = "",
    metric: str = "UnblendedCost",
    enrich_regions: bool = False,
    on_reject: OnReject = _log_reject,
    sleep: Sleep = asyncio.sleep,
    limits: Limits | None = None,
) -> list[dict[str, Any]]:
    """Read the lookback window and return the new canonical cost events (base or correction).

    ``state`` maps base event id -> last figure seen (a Faust table in the worker; a process-wide
    dict by default): an unchanged figure emits nothing, a changed one a ``correction`` with the
    delta, a group that vanished from a re-read period a correction to zero. Rows that fail
    validation go to ``on_reject`` (dead-letter them) and leave the state as it was.
    """
    state = _DEFAULT_STATE if state is None else state
    limits = limits or Limits.from_settings(settings)
    granularity, tag = settings.ce_granularity, settings.ce_group_tag
    start, end = poll_window(now, settings)
    period = time_period(start, end, granularity)
    group_by = [{"Type": "DIMENSION", "Key": "SERVICE"}] + ([{"Type": "TAG", "Key": tag}] if tag else [])
    request = build_request(period, granularity, metric, group_by)
    rows = _rows(await fetch_results(client, request, sleep=sleep), metric)
    regions: dict[tuple[str, str], dict[str, str]] = {}
    if enrich_regions:  # a second, disjoint query: it only labels the events of the first
        by_region = [{"Type": "DIMENSION", "Key": "SERVICE"}, {"Type": "DIMENSION", "Key": "REGION"}]
        request = build_request(period, granularity, metric, by_region)
        regions = _regions(_rows(await fetch_results(client, request, sleep=sleep), metric))
    query = _Query(account_id, granularity, metric, tag)
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    todo: list[tuple[dict[str, Any], Decimal]] = []
    seen: set[str] = set()  # every row read, rejected ones too: none of them vanished
    for key, row in sorted(rows.items()):
        wire = _wire(query, key, row, regions)
        seen.add(wire["event_id"])
        try:
            amount = Decimal(wire["cost_amount"])
            if not amount.is_finite():
                raise InvalidOperation
            todo.append((wire, amount))
        except InvalidOperation:
            on_reject(wire, ValidationError(f"{wire['cost_amount']!r} is not a number", "cost_amount"))
    for base_id, prev in list(state.items()):
        if prev["period_ms"] < start_ms:
            del state[base_id]  # no longer re-read: forget it
        elif prev["sig"] == query.sig and base_id not in seen and prev["period_ms"] < end_ms:
            todo.append((prev["wire"], Decimal(0)))  # the group vanished from a re-read period
    events: list[dict[str, Any]] = []
    for wire, amount in todo:
        prev = state.get(wire["event_id"])
        if (amount == 0 and prev is None) or (prev is not None and Decimal(prev["amount"]) == amount):
            continue
        try:
            events.append(_emit(wire, amount, state, sig=query.sig, limits=limits))
        except ValidationError as exc:
            on_reject(wire, exc)
    return events
