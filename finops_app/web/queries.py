"""A ``ResultStore`` in, the JSON bodies of the ``/finops/...`` list endpoints and KPIs out.

Times are ISO-8601 UTC strings, money decimal strings with 4 places, shares and ROI floats.
"Recent" is measured in event time back from the newest window end seen (``as_of``), so a replay
of last week's data shows last week; freshness KPIs compare with the wall clock given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from finops_app.core import budget as budget_core
from finops_app.core import forecast
from finops_app.core.money import q4s
from finops_app.core.validate import iso
from finops_app.web.store import HOUR_MS, ResultStore, ms

UNALLOCATED = frozenset({"unallocated", ""})


def _as_of(store: ResultStore) -> str | None:
    return iso(store.newest_window_end_ms) if store.newest_window_end_ms else None


def windows(store: ResultStore, unit: str | None = None, hours: float = 24.0) -> dict[str, Any]:
    cutoff = store.newest_window_end_ms - int(hours * HOUR_MS)
    rows = []
    totals: dict[str, Decimal] = {}
    for u, per_unit in store.windows.items():
        if unit and u != unit:
            continue
        for start, w in per_unit.items():
            if w.end_ms <= cutoff:
                continue
            totals[u] = totals.get(u, Decimal(0)) + w.total
            rows.append(
                {
                    "business_unit": u,
                    "window_start": iso(start),
                    "window_end": iso(w.end_ms),
                    "total_cost": q4s(w.total),
                    "event_count": w.count,
                    "revision": w.revision,
                    "late": w.late,
                    "currency": w.currency,
                }
            )
    rows.sort(key=lambda r: (r["window_start"], r["business_unit"]))
    return {
        "as_of": _as_of(store),
        "hours": hours,
        "units": sorted(totals),
        "totals": {u: q4s(t) for u, t in sorted(totals.items())},
        "windows": rows,
    }


def roi(store: ResultStore, unit: str | None = None, hours: float = 24.0) -> dict[str, Any]:
    cutoff = store.newest_window_end_ms - int(hours * HOUR_MS)
    units = []
    for u, per_unit in sorted(store.roi.items()):
        if (unit and u != unit) or not per_unit:
            continue
        recent = [per_unit[s] for s in sorted(per_unit) if ms(per_unit[s]["window_end"]) > cutoff]
        cost = sum((Decimal(r["cost"]) for r in recent), Decimal(0))
        revenue = sum((Decimal(r["revenue"]) for r in recent), Decimal(0))
        units.append(
            {
                "business_unit": u,
                "cost": q4s(cost),
                "revenue": q4s(revenue),
                "roi": float((revenue - cost) / cost) if cost else None,
                "latest": per_unit[max(per_unit)],
                "windows": recent,
            }
        )
    return {"as_of": _as_of(store), "hours": hours, "units": units}


def anomalies(store: ResultStore, status: str = "open", limit: int = 100) -> dict[str, Any]:
    rows = [
        {**a, "open_detection_latency_ms": store.open_latency_ms.get(a["anomaly_id"])}
        for a in store.anomalies.values()
        if status == "all" or (a["status"] != "closed") == (status == "open")
    ]
    rows.sort(key=lambda a: (a["window_start"], a["detected_at"]), reverse=True)
    return {"status": status, "count": len(rows), "anomalies": rows[:limit]}


def current_recommendations(store: ResultStore) -> list[dict[str, Any]]:
    """The newest recommendation per (resource, kind): ids change daily, the advice stands."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for rec in store.recommendations.values():
        key = (rec["resource_id"], rec["kind"])
        if key not in latest or rec["timestamp"] >= latest[key]["timestamp"]:
            latest[key] = rec
    return sorted(latest.values(), key=lambda r: Decimal(r["monthly_saving"]), reverse=True)


def recommendations(store: ResultStore, limit: int = 100) -> dict[str, Any]:
    rows = current_recommendations(store)
    return {
        "count": len(rows),
        "monthly_saving_total": q4s(sum((Decimal(r["monthly_saving"]) for r in rows), Decimal(0))),
        "recommendations": rows[:limit],
        "actions": list(reversed(store.actions))[:limit],
    }


def budgets(store: ResultStore, amounts: Mapping[str, Decimal]) -> dict[str, Any]:
    now = store.newest_window_end_ms
    if not now:
        return {
            "month": None,
            "as_of": None,
            "units": [_budget_row(u, b, None, None, []) for u, b in amounts.items()],
        }
    start, end, month = budget_core.month_bounds(now - 1)
    spent: dict[str, Decimal] = {}
    first, last = iso(start)[:10], iso(end - 1)[:10]
    for (unit, day), amount in store.daily().items():
        if first <= day <= last:
            spent[unit] = spent.get(unit, Decimal(0)) + amount
    alerts: dict[str, list[dict[str, Any]]] = {}
    for alert in store.budget_alerts.values():
        if alert["month"] == month:
            alerts.setdefault(alert["business_unit"], []).append(alert)
    units = sorted(set(amounts) | set(spent))
    rows = []
    for unit in units:
        s = spent.get(unit, Decimal(0))
        fc = budget_core.forecast_month_end(s, now, start, end)
        rows.append(_budget_row(unit, amounts.get(unit), s, fc, alerts.get(unit, [])))
    return {"month": month, "as_of": iso(now), "units": rows}


def _budget_row(
    unit: str, amount: Decimal | None, spent: Decimal | None, fc: Decimal | None, alerts: list[dict[str, Any]]
) -> dict[str, Any]:
    burn = budget_core.burn(spent, amount) if spent is not None and amount is not None else None
    fburn = budget_core.burn(fc, amount) if fc is not None and amount is not None else None
    return {
        "business_unit": unit,
        "budget": q4s(amount) if amount is not None else None,
        "spent": q4s(spent) if spent is not None else None,
        "burn_percent": round(float(burn) * 100, 2) if burn is not None else None,
        "forecast": q4s(fc) if fc is not None else None,
        "forecast_percent": round(float(fburn) * 100, 2) if fburn is not None else None,
        "alerts": sorted(alerts, key=lambda a: a["timestamp"]),
    }


def deadletters(store: ResultStore, total: int | None, limit: int = 50) -> dict[str, Any]:
    return {
        "total": store.deadletters_seen if total is None else total,
        "seen": store.deadletters_seen,
        "by_source_topic": dict(store.deadletters_by_source.most_common()),
        "by_stage": dict(store.deadletters_by_stage.most_common()),
        "recent": list(reversed(store.deadletters))[:limit],
    }


def percentile(values: list[int], q: float) -> int | None:
    """Nearest-rank percentile (``q`` in 0..1); None for no values."""
    if not values:
        return None
    data = sorted(values)
    return data[max(0, math.ceil(q * len(data)) - 1)]


def forecast_error(store: ResultStore) -> dict[str, Any] | None:
    """Backtest MAPE of the linear daily-cost forecast over whole days held, or None (< 8 days)."""
    per_day: dict[str, Decimal] = {}
    for (_, day), amount in store.daily().items():
        per_day[day] = per_day.get(day, Decimal(0)) + amount
    days = sorted(per_day)[1:-1]  # the first and the last day are partial
    if len(days) < 8:
        return None
    holdout = min(7, len(days) // 4)
    series = [(date.fromisoformat(d), per_day[d]) for d in days]
    mape = forecast.backtest(series, holdout_days=holdout, model="linear")
    if mape is None:
        return None
    return {"mape_percent": round(mape, 2), "days": len(days), "holdout_days": holdout, "model": "linear"}


def kpis(store: ResultStore, now_ms: int, deadletter_total: int | None = None) -> dict[str, Any]:
    latencies = list(store.open_latency_ms.values())
    day = windows(store, hours=24.0)
    total = sum((Decimal(t) for t in day["totals"].values()), Decimal(0))
    unallocated = sum((Decimal(t) for u, t in day["totals"].items() if u in UNALLOCATED), Decimal(0))
    recs = current_recommendations(store)
    return {
        "as_of": iso(now_ms),
        "event_time_as_of": _as_of(store),
        "detection_latency_ms": {
            "p50": percentile(latencies, 0.50),
            "p95": percentile(latencies, 0.95),
            "samples": len(latencies),
        },
        "cost_attribution": {
            "hours": 24,
            "total_cost": q4s(total),
            "allocated_cost": q4s(total - unallocated),
            "unallocated_cost": q4s(unallocated),
            "allocated_share": float((total - unallocated) / total) if total else None,
        },
        "roi_freshness_seconds": (
            round((now_ms - store.newest_roi_emitted_ms) / 1000, 1) if store.newest_roi_emitted_ms else None
        ),
        "roi_event_time_lag_seconds": (
            round((now_ms - store.newest_roi_window_end_ms) / 1000, 1)
            if store.newest_roi_window_end_ms
            else None
        ),
        "roi_newest_window_end": iso(store.newest_roi_window_end_ms)
        if store.newest_roi_window_end_ms
        else None,
        "forecast_error": forecast_error(store),
        "open_anomalies": sum(1 for a in store.anomalies.values() if a["status"] != "closed"),
        "monthly_saving_total": q4s(sum((Decimal(r["monthly_saving"]) for r in recs), Decimal(0))),
        "deadletters": store.deadletters_seen if deadletter_total is None else deadletter_total,
    }
