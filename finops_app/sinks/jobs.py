"""Scheduled SQL over the curated tables: daily summary, SQL anomaly check, forecasting queries.

Each function takes an open connection (and what it needs), runs set-based SQL, and returns data;
none prints. Run them from the worker's timer (``FINOPS_SQL_JOBS_INTERVAL_SECONDS``), from the
CLI, or, on a real account, as Snowflake TASKs (``sql/snowflake_only``: same SQL, CURRENT_TIMESTAMP
in place of the bound hour).

- :func:`refresh_daily_summary`: budgets upserted from settings, then MERGE of the last N days of
  finops_aggregated.daily_cost_summary (cost trend and week-over-week against the calendar day 7
  days earlier, month-to-date budget utilisation).
- :func:`sql_anomalies`: the article's scheduled check done right. The last complete hour's cost
  per service (an hourly SUM) is compared with the mean and standard deviation of the same
  service's hourly sums at the same hour of day on each of the previous 7 days (hours without cost
  count as 0) - not with a per-event average. Deterministic anomaly ids (MD5 of service and epoch hour)
  and a MERGE make a second run a no-op.
- :func:`daily_costs`, :func:`run_forecast`, :func:`forecast_sql`: the forecast's training series,
  the Python forecast on it, and the article's regression as a plain REGR_SLOPE/REGR_INTERCEPT
  query (for parity).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from finops_app.core.forecast import ForecastResult, forecast, t_quantile
from finops_app.core.money import q4

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection

    from finops_app.config import Settings

SUMMARY_DAYS = 35
TREND_FLAT_BAND = "0.01"  # within 1 percent of the day a week earlier counts as flat
ANOMALY_MIN_COST = Decimal("10")  # the article's minimum hourly cost
ANOMALY_MIN_HISTORY_DAYS = 3  # warm-up: history hours with cost needed before a service can alert

DAILY_SUMMARY_SQL = f"""
MERGE INTO finops_aggregated.daily_cost_summary t USING (
    WITH daily AS (
        SELECT
            CAST(ce.timestamp AS DATE) AS date,
            ce.business_unit,
            ce.service,
            COALESCE(ce.environment, 'unknown') AS environment,
            ce.currency,
            SUM(CAST(ce.cost_amount AS NUMBER(38, 10))) AS total_cost,
            COUNT(*) AS event_count
        FROM finops_curated.cost_events ce
        WHERE ce.timestamp >= %(scan_start)s::TIMESTAMP_NTZ AND ce.timestamp < %(end)s::TIMESTAMP_NTZ
        GROUP BY CAST(ce.timestamp AS DATE), ce.business_unit, ce.service,
            COALESCE(ce.environment, 'unknown'), ce.currency
    ),
    unit_daily AS (
        SELECT d.date, d.business_unit, d.currency, SUM(CAST(d.total_cost AS NUMBER(38, 10))) AS unit_cost
        FROM daily d
        GROUP BY d.date, d.business_unit, d.currency
    ),
    unit_mtd AS (
        SELECT u.date, u.business_unit, u.currency,
            SUM(CAST(u.unit_cost AS NUMBER(38, 10))) OVER (
                PARTITION BY u.business_unit, u.currency, DATE_TRUNC('MONTH', u.date)
                ORDER BY u.date ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
            ) AS mtd_cost
        FROM unit_daily u
    )
    SELECT
        cur.date, cur.business_unit, cur.service, cur.environment, cur.currency,
        CAST(cur.total_cost AS NUMBER(18, 4)) AS total_cost,
        cur.event_count,
        CASE
            WHEN prev.total_cost IS NULL THEN NULL
            WHEN cur.total_cost > prev.total_cost + ABS(prev.total_cost) * {TREND_FLAT_BAND} THEN 'up'
            WHEN cur.total_cost < prev.total_cost - ABS(prev.total_cost) * {TREND_FLAT_BAND} THEN 'down'
            ELSE 'flat'
        END AS cost_trend,
        CASE
            WHEN prev.total_cost IS NULL OR prev.total_cost = 0 THEN NULL
            ELSE CAST((cur.total_cost - prev.total_cost) / ABS(prev.total_cost) * 100 AS NUMBER(38, 4))
        END AS week_over_week_change,
        CASE
            WHEN bg.amount IS NULL OR bg.amount = 0 THEN NULL
            ELSE CAST(m.mtd_cost / bg.amount * 100 AS NUMBER(38, 2))
        END AS budget_utilization,
        SYSDATE() AS updated_at
    FROM daily cur
    LEFT JOIN daily prev
        ON prev.business_unit = cur.business_unit AND prev.service = cur.service
        AND prev.environment = cur.environment AND prev.currency = cur.currency
        AND cur.date = DATEADD(day, 7, prev.date)
    LEFT JOIN unit_mtd m
        ON m.business_unit = cur.business_unit AND m.currency = cur.currency AND m.date = cur.date
    LEFT JOIN finops_aggregated.budgets bg
        ON bg.business_unit = cur.business_unit AND bg.month = CAST(DATE_TRUNC('MONTH', cur.date) AS DATE)
    WHERE cur.date >= %(start)s::DATE
) src
ON t.date = src.date AND t.business_unit = src.business_unit AND t.service = src.service
    AND t.environment = src.environment AND t.currency = src.currency
WHEN MATCHED THEN UPDATE SET
    total_cost = src.total_cost, event_count = src.event_count, cost_trend = src.cost_trend,
    week_over_week_change = src.week_over_week_change, budget_utilization = src.budget_utilization,
    updated_at = src.updated_at
WHEN NOT MATCHED THEN INSERT (
    date, business_unit, service, environment, currency, total_cost, event_count, cost_trend,
    week_over_week_change, budget_utilization, updated_at
) VALUES (
    src.date, src.business_unit, src.service, src.environment, src.currency, src.total_cost,
    src.event_count, src.cost_trend, src.week_over_week_change, src.budget_utilization, src.updated_at
)
"""

# rows of the refreshed range whose cost moved away (a restated event changed unit or service)
DAILY_SUMMARY_PRUNE_SQL = """
DELETE FROM finops_aggregated.daily_cost_summary s
WHERE s.date >= %(start)s::DATE AND s.date < %(end)s::DATE
AND NOT EXISTS (
    SELECT 1 FROM finops_curated.cost_events ce
    WHERE ce.timestamp >= s.date AND ce.timestamp < DATEADD(day, 1, s.date)
    AND ce.business_unit = s.business_unit AND ce.service = s.service
    AND COALESCE(ce.environment, 'unknown') = s.environment AND ce.currency = s.currency
)
"""

# {hour} is the start of the hour checked: a bound parameter here, an expression in the TASK
ANOMALY_SQL_TEMPLATE = """
MERGE INTO finops_aggregated.cost_anomalies t USING (
    WITH bounds AS (
        SELECT {hour} AS hour_start
    ),
    current_hour AS (
        SELECT ce.service, SUM(CAST(ce.cost_amount AS NUMBER(38, 10))) AS current_cost
        FROM finops_curated.cost_events ce CROSS JOIN bounds b
        WHERE ce.timestamp >= b.hour_start AND ce.timestamp < DATEADD(hour, 1, b.hour_start)
        GROUP BY ce.service
    ),
    top_unit AS (
        SELECT ce.service, ce.business_unit, SUM(CAST(ce.cost_amount AS NUMBER(38, 10))) AS unit_cost
        FROM finops_curated.cost_events ce CROSS JOIN bounds b
        WHERE ce.timestamp >= b.hour_start AND ce.timestamp < DATEADD(hour, 1, b.hour_start)
        GROUP BY ce.service, ce.business_unit
        QUALIFY ROW_NUMBER() OVER (
            PARTITION BY ce.service
            ORDER BY SUM(CAST(ce.cost_amount AS NUMBER(38, 10))) DESC, ce.business_unit
        ) = 1
    ),
    days AS (
        SELECT column1 AS days_back FROM VALUES (1), (2), (3), (4), (5), (6), (7)
    ),
    history AS (
        SELECT c.service, d.days_back,
            COALESCE(SUM(CAST(ce.cost_amount AS NUMBER(38, 10))), 0) AS hourly_cost,
            COUNT(ce.event_id) AS events
        FROM current_hour c
        CROSS JOIN days d
        CROSS JOIN bounds b
        LEFT JOIN finops_curated.cost_events ce
            ON ce.service = c.service
            AND ce.timestamp >= DATEADD(day, -d.days_back, b.hour_start)
            AND ce.timestamp < DATEADD(hour, 1, DATEADD(day, -d.days_back, b.hour_start))
        GROUP BY c.service, d.days_back
    ),
    stats AS (
        SELECT service,
            AVG(CAST(hourly_cost AS NUMBER(38, 10))) AS mean_cost,
            STDDEV_SAMP(hourly_cost) AS std_cost,
            COUNT_IF(events > 0) AS history_days
        FROM history
        GROUP BY service
    ),
    flagged AS (
        SELECT c.service, c.current_cost, s.mean_cost, s.std_cost, b.hour_start,
            CASE WHEN s.mean_cost = 0 THEN NULL
                ELSE (c.current_cost - s.mean_cost) / ABS(s.mean_cost) * 100 END AS deviation
        FROM current_hour c
        JOIN stats s ON s.service = c.service
        CROSS JOIN bounds b
        WHERE s.history_days >= %(min_history_days)s
        AND c.current_cost > s.mean_cost + 2 * COALESCE(s.std_cost, 0)
        AND c.current_cost > CAST(%(min_cost)s AS NUMBER(38, 10))
    )
    SELECT
        MD5(
            'sql|' || f.service || '|'
            || CAST(DATEDIFF(hour, CAST('1970-01-01' AS TIMESTAMP_NTZ), f.hour_start) AS STRING)
        ) AS anomaly_id,
        SYSDATE() AS detected_at,
        'cost_spike' AS anomaly_type,
        f.service,
        CAST(f.current_cost AS NUMBER(18, 4)) AS cost_amount,
        CAST(f.mean_cost AS NUMBER(18, 4)) AS expected_amount,
        CAST(f.deviation AS NUMBER(18, 4)) AS deviation_percent,
        CASE
            WHEN f.deviation IS NULL OR f.deviation > 100 THEN 'CRITICAL'
            WHEN f.deviation > 50 THEN 'HIGH'
            ELSE 'MEDIUM'
        END AS business_impact,
        'service:' || f.service AS series,
        CASE WHEN COALESCE(f.std_cost, 0) = 0 THEN NULL
            ELSE CAST((f.current_cost - f.mean_cost) / f.std_cost AS FLOAT) END AS score,
        ARRAY_CONSTRUCT(OBJECT_CONSTRUCT(
            'dimension', 'business_unit', 'value', tu.business_unit,
            'cost', CAST(tu.unit_cost AS NUMBER(18, 4)),
            'share', CAST(tu.unit_cost / NULLIF(f.current_cost, 0) AS NUMBER(9, 4))
        )) AS drivers,
        f.hour_start AS window_start,
        DATEADD(hour, 1, f.hour_start) AS window_end,
        DATEDIFF(millisecond, DATEADD(hour, 1, f.hour_start), SYSDATE()) AS detection_latency_ms
    FROM flagged f
    LEFT JOIN top_unit tu ON tu.service = f.service
) src
ON t.anomaly_id = src.anomaly_id
WHEN MATCHED AND (t.cost_amount <> src.cost_amount OR t.expected_amount <> src.expected_amount)
THEN UPDATE SET
    cost_amount = src.cost_amount, expected_amount = src.expected_amount,
    deviation_percent = src.deviation_percent, business_impact = src.business_impact, score = src.score,
    drivers = src.drivers, detected_at = src.detected_at, status = 'updated', revision = t.revision + 1,
    loaded_at = src.detected_at
WHEN NOT MATCHED THEN INSERT (
    anomaly_id, detected_at, anomaly_type, service, cost_amount, expected_amount, deviation_percent,
    business_impact, resolved, series, score, drivers, window_start, window_end, timestamp, first_seen,
    detection_latency_ms, status, revision, source, loaded_at
) VALUES (
    src.anomaly_id, src.detected_at, src.anomaly_type, src.service, src.cost_amount, src.expected_amount,
    src.deviation_percent, src.business_impact, FALSE, src.series, src.score, src.drivers, src.window_start,
    src.window_end, src.window_start, src.detected_at, src.detection_latency_ms, 'open', 1, 'sql',
    src.detected_at
)
"""
ANOMALY_SQL = ANOMALY_SQL_TEMPLATE.format(hour="%(hour_start)s::TIMESTAMP_NTZ")

DAILY_COSTS_SQL = """
SELECT CAST(ce.timestamp AS DATE) AS cost_date,
    CAST(SUM(CAST(ce.cost_amount AS NUMBER(38, 10))) AS NUMBER(38, 4)) AS daily_cost
FROM finops_curated.cost_events ce
WHERE ce.business_unit = %(unit)s
AND ce.timestamp >= %(start)s::TIMESTAMP_NTZ AND ce.timestamp < %(end)s::TIMESTAMP_NTZ
GROUP BY CAST(ce.timestamp AS DATE)
ORDER BY cost_date
"""

# the article's regression as one plain query: x is the calendar day number, not ROW_NUMBER
FORECAST_SQL = """
WITH daily AS (
    SELECT CAST(ce.timestamp AS DATE) AS cost_date, SUM(CAST(ce.cost_amount AS NUMBER(38, 10))) AS daily_cost
    FROM finops_curated.cost_events ce
    WHERE ce.business_unit = %(unit)s
    AND ce.timestamp >= %(start)s::TIMESTAMP_NTZ AND ce.timestamp < %(end)s::TIMESTAMP_NTZ
    GROUP BY CAST(ce.timestamp AS DATE)
),
numbered AS (
    SELECT cost_date, CAST(daily_cost AS FLOAT) AS y,
        CAST(DATEDIFF(day, MIN(cost_date) OVER (), cost_date) AS FLOAT) AS x
    FROM daily
),
regression AS (
    SELECT REGR_SLOPE(y, x) AS slope, REGR_INTERCEPT(y, x) AS intercept, COUNT(*) AS n,
        AVG(x) AS mean_x, MAX(x) AS last_x, MIN(cost_date) AS first_date, MAX(cost_date) AS last_date
    FROM numbered
),
fit AS (
    SELECT r.slope, r.intercept, r.n, r.mean_x, r.last_x, r.first_date, r.last_date,
        SUM(POWER(h.y - (r.intercept + r.slope * h.x), 2)) AS sse,
        SUM(POWER(h.x - r.mean_x, 2)) AS sxx
    FROM regression r CROSS JOIN numbered h
    GROUP BY r.slope, r.intercept, r.n, r.mean_x, r.last_x, r.first_date, r.last_date
),
horizon AS (
    SELECT ROW_NUMBER() OVER (ORDER BY SEQ4()) AS k FROM TABLE(GENERATOR(ROWCOUNT => %(days)s))
)
SELECT DATEADD(day, hz.k, f.last_date) AS forecast_date,
    f.intercept + f.slope * (f.last_x + hz.k) AS predicted,
    f.last_x + hz.k AS x, f.slope, f.intercept, f.n, f.mean_x, f.sse, f.sxx, f.first_date
FROM fit f CROSS JOIN horizon hz
ORDER BY forecast_date
"""


@dataclass(frozen=True)
class SqlForecast:
    slope: float | None
    intercept: float | None  # value on the first history date
    n: int
    first_date: date | None
    points: list[tuple[date, Decimal, Decimal, Decimal]]  # (date, predicted, lower, upper)


def _today(today: date | None) -> date:
    return today or datetime.now(UTC).date()


def _iso(day: date) -> str:
    return day.isoformat() + " 00:00:00"


def refresh_daily_summary(
    conn: SnowflakeConnection, settings: Settings, days: int = SUMMARY_DAYS, today: date | None = None
) -> int:
    """Upsert budgets and the last ``days`` days (up to ``today``) of daily_cost_summary; rows merged."""
    end = _today(today) + timedelta(days=1)
    start = end - timedelta(days=days)
    scan_start = min(start.replace(day=1), start - timedelta(days=7))
    cur = conn.cursor()
    try:
        upsert_budgets(cur, settings.budgets, start, end)
        cur.execute(
            DAILY_SUMMARY_SQL,
            {"scan_start": _iso(scan_start), "start": start.isoformat(), "end": _iso(end)},
        )
        merged = sum(int(v or 0) for v in (cur.fetchone() or ()))
        cur.execute(DAILY_SUMMARY_PRUNE_SQL, {"start": start.isoformat(), "end": end.isoformat()})
        return merged
    finally:
        cur.close()


def upsert_budgets(cur: Any, budgets: Any, start: date, end: date) -> None:
    """One row per business unit and month from ``start`` to ``end`` with the configured budget."""
    if not budgets:
        return
    months = []
    month = start.replace(day=1)
    while month < end:
        months.append(month)
        month = (month + timedelta(days=32)).replace(day=1)
    values, params = [], {}
    for i, (unit, amount) in enumerate(sorted(budgets.items())):
        for j, m in enumerate(months):
            values.append(f"(%(u{i})s, %(m{j})s, %(a{i})s)")
            params[f"u{i}"], params[f"m{j}"], params[f"a{i}"] = unit, m.isoformat(), str(amount)
    cur.execute(
        f"""MERGE INTO finops_aggregated.budgets t USING (
            SELECT column1 AS business_unit, CAST(column2 AS DATE) AS month,
                CAST(column3 AS NUMBER(18, 4)) AS amount, SYSDATE() AS updated_at
            FROM VALUES {", ".join(values)}
        ) src ON t.business_unit = src.business_unit AND t.month = src.month
        WHEN MATCHED THEN UPDATE SET amount = src.amount, updated_at = src.updated_at
        WHEN NOT MATCHED THEN INSERT (business_unit, month, amount, updated_at)
            VALUES (src.business_unit, src.month, src.amount, src.updated_at)""",
        params,
    )


def last_complete_hour(now: datetime | None = None) -> datetime:
    """Start of the last complete UTC hour before ``now`` (naive UTC)."""
    now = now or datetime.now(UTC)
    if now.tzinfo is not None:
        now = now.astimezone(UTC).replace(tzinfo=None)
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


def sql_anomalies(
    conn: SnowflakeConnection,
    now: datetime | None = None,
    *,
    min_cost: Decimal = ANOMALY_MIN_COST,
    min_history_days: int = ANOMALY_MIN_HISTORY_DAYS,
) -> int:
    """Check the last complete hour before ``now``; return how many new anomalies were recorded."""
    hour = last_complete_hour(now)
    cur = conn.cursor()
    try:
        cur.execute(
            ANOMALY_SQL,
            {
                "hour_start": hour.isoformat(sep=" "),
                "min_cost": str(min_cost),
                "min_history_days": int(min_history_days),
            },
        )
        names = [d[0].lower() for d in cur.description or ()]
        counts = dict(zip(names, cur.fetchone() or (), strict=False))
        return int(counts.get("number of rows inserted") or 0)
    finally:
        cur.close()


def daily_costs(
    conn: SnowflakeConnection, business_unit: str, days: int = 90, today: date | None = None
) -> list[tuple[date, Decimal]]:
    """Daily cost of ``business_unit`` over the ``days`` complete days before ``today``."""
    end = _today(today)
    cur = conn.cursor()
    try:
        cur.execute(
            DAILY_COSTS_SQL,
            {"unit": business_unit, "start": _iso(end - timedelta(days=days)), "end": _iso(end)},
        )
        return [(_as_date(d), Decimal(v)) for d, v in cur.fetchall()]
    finally:
        cur.close()


def run_forecast(
    conn: SnowflakeConnection,
    business_unit: str,
    days: int,
    history_days: int = 90,
    today: date | None = None,
    **options: Any,
) -> ForecastResult:
    """``finops forecast``: the unit's daily costs, then :func:`core.forecast.forecast` on them."""
    return forecast(daily_costs(conn, business_unit, history_days, today), days, **options)


def forecast_sql(
    conn: SnowflakeConnection,
    business_unit: str,
    days: int,
    history_days: int = 90,
    today: date | None = None,
    confidence: float = 0.95,
) -> SqlForecast:
    """The linear forecast computed in SQL (REGR_SLOPE / REGR_INTERCEPT) with its interval."""
    end = _today(today)
    cur = conn.cursor()
    try:
        cur.execute(
            FORECAST_SQL,
            {
                "unit": business_unit,
                "start": _iso(end - timedelta(days=history_days)),
                "end": _iso(end),
                "days": max(int(days), 1),
            },
        )
        rows = cur.fetchall()
    finally:
        cur.close()
    if not rows or rows[0][3] is None:
        return SqlForecast(None, None, int(rows[0][5] or 0) if rows else 0, None, [])
    _, _, _, slope, intercept, n, mean_x, sse, sxx, first = rows[0]
    n = int(n)
    s = math.sqrt(float(sse) / (n - 2)) if n > 2 else 0.0
    tq = t_quantile(0.5 + confidence / 2, n - 2) if n > 2 else math.inf
    points = []
    for forecast_date, predicted, x, *_ in rows[: max(int(days), 0)]:
        lev = 1.0 + 1.0 / n + ((float(x) - float(mean_x)) ** 2 / float(sxx) if float(sxx) else 0.0)
        half = tq * s * math.sqrt(lev) if n > 2 else 0.0
        p = float(predicted)
        points.append((_as_date(forecast_date), _q(p), _q(p - half), _q(p + half)))
    return SqlForecast(float(slope), float(intercept), n, _as_date(first), points)


def _q(value: float) -> Decimal:
    return q4(Decimal(repr(value)))


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


# -- the same SQL as Snowflake TASK bodies (sql/snowflake_only/002_tasks.sql) -----------------------

TASK_HOUR = (
    "DATEADD(hour, -1, DATE_TRUNC('HOUR', CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP())::TIMESTAMP_NTZ))"
)


def anomaly_task_sql(
    min_cost: Decimal = ANOMALY_MIN_COST, min_history_days: int = ANOMALY_MIN_HISTORY_DAYS
) -> str:
    """:data:`ANOMALY_SQL` with the hour taken from the clock, for a scheduled TASK."""
    return ANOMALY_SQL_TEMPLATE.format(hour=TASK_HOUR) % {
        "min_cost": f"'{min_cost}'",
        "min_history_days": str(int(min_history_days)),
    }


def daily_summary_task_sql(days: int = SUMMARY_DAYS) -> str:
    """:data:`DAILY_SUMMARY_SQL` and its prune over the last ``days`` days, for a scheduled TASK."""
    start = f"DATEADD(day, {1 - int(days)}, CURRENT_DATE())"
    params = {
        "start": f"({start})",
        "end": "(DATEADD(day, 1, CURRENT_DATE()))",
        "scan_start": f"(LEAST(DATE_TRUNC('MONTH', {start}), DATEADD(day, -7, {start})))",
    }
    return f"{DAILY_SUMMARY_SQL.strip() % params};\n{DAILY_SUMMARY_PRUNE_SQL.strip() % params};"


def run_sql_jobs(
    conn: SnowflakeConnection, settings: Settings, now: datetime | None = None
) -> dict[str, int]:
    """One round of the scheduled jobs (the worker's timer runs it every FINOPS_SQL_JOBS_INTERVAL_SECONDS).

    Both statements are idempotent MERGEs: several workers running them only repeat work; run them
    on the leader (``app.timer(..., on_leader=True)``) to avoid that.
    """
    today = (now or datetime.now(UTC)).date()
    return {
        "daily_summary_rows": refresh_daily_summary(conn, settings, today=today),
        "sql_anomalies": sql_anomalies(conn, now, min_cost=ANOMALY_MIN_COST),
    }


def with_connection(settings: Settings, job: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``job(conn, *args, **kwargs)`` on a fresh connection (for CLI commands), then close it."""
    from finops_app.sinks.connection import connect

    conn = connect(settings)
    try:
        return job(conn, *args, **kwargs)
    finally:
        conn.close()
