"""The SQL data model on the fakesnow server through the real connector: migrations, views, jobs."""

from __future__ import annotations

import hashlib
import random
import shutil
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from finops_app.core.forecast import fit, forecast
from finops_app.sinks import jobs
from finops_app.sinks.migrate import SQL_DIR, MigrationError, migrate, migration_files, statements
from finops_app.sinks.rows import TABLES
from tests.integration import snowflake_fixtures
from tests.integration.snowflake_fixtures import (
    SnowflakeTestDatabase,
    business_event,
    cost_event,
    load_events,
)

sf_conn = snowflake_fixtures.sf_conn  # the fixture, requested by name below

COST = "finops_curated.cost_events"
BIZ = "finops_curated.business_events"
Q4 = Decimal("0.0001")


def _sql_type(c) -> str:  # type: ignore[no-untyped-def]
    return {"STRING": "TEXT"}.get(c.type, c.type)


def test_migrate_twice_applies_nothing_and_schema_matches_the_loader(
    sf_conn: SnowflakeTestDatabase, tmp_path: Path
) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(SQL_DIR, sql_dir)
    conn = sf_conn()
    numbered = sorted(p.name for p in SQL_DIR.glob("[0-9][0-9][0-9]_*.sql"))
    assert migrate(conn, sql_dir) == numbered
    assert migrate(conn, sql_dir) == []
    recorded = dict(sf_conn.query("SELECT filename, checksum FROM finops_meta.schema_migrations"))
    assert recorded == {n: hashlib.sha256((sql_dir / n).read_bytes()).hexdigest() for n in numbered}

    # every table the sink writes exists with exactly the loader's columns, types and NOT NULLs
    info = sf_conn.query(
        "SELECT table_schema, table_name, column_name, data_type, numeric_precision, numeric_scale, "
        "is_nullable FROM information_schema.columns WHERE table_schema LIKE 'FINOPS%' "
        "ORDER BY ordinal_position"
    )
    columns: dict[str, list[tuple]] = {}
    for schema, table, *col in info:
        columns.setdefault(f"{schema}.{table}".lower(), []).append(tuple(col))
    for fqn, spec in TABLES.items():
        expected = [
            (
                c.name.upper(),
                _sql_type(c),
                *((c.precision, c.scale) if c.type == "NUMBER" else (None, None)),
                "YES" if c.nullable else "NO",
            )
            for c in spec.columns
        ]
        expected.append(("LOADED_AT", "TIMESTAMP_NTZ", None, None, "YES"))
        assert columns[fqn] == expected, fqn
    for extra in ("finops_aggregated.daily_cost_summary", "finops_aggregated.budgets"):
        assert extra in columns
    for view in ("cost_by_business_unit", "roi_analysis"):
        assert sf_conn.query(f"SELECT * FROM finops_reporting.{view} LIMIT 0") == []

    # an applied file must not change; a new numbered file is applied; snowflake_only stays out
    original = (sql_dir / "005_views.sql").read_text()
    (sql_dir / "005_views.sql").write_text(original + "\n-- edited after it was applied\n")
    with pytest.raises(MigrationError, match=r"005_views\.sql"):
        migrate(conn, sql_dir)
    (sql_dir / "005_views.sql").write_text(original)
    (sql_dir / "006_extra.sql").write_text(
        "CREATE OR REPLACE VIEW finops_reporting.extra AS SELECT 1 AS one;\n"
    )
    assert migrate(conn, sql_dir) == ["006_extra.sql"]
    assert not any(name.startswith("snowflake_only") for name in recorded)


def test_cost_by_business_unit_compares_with_the_calendar_day_a_week_earlier(
    sf_conn: SnowflakeTestDatabase,
) -> None:
    sf_conn.migrate()
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=k) for k in range(36, -1, -1)]
    missing = today - timedelta(days=15)
    expected: dict[tuple[str, date], Decimal] = {}
    events = []
    for unit, base in (("alpha", Decimal("100.1234567891")), ("beta", Decimal("7.0000000003"))):
        for i, day in enumerate(days):
            if unit == "alpha" and day == missing:
                continue
            amounts = [base + Decimal(i) * Decimal("1.37"), Decimal("0.0000123456") * (i + 1)]
            for j, amount in enumerate(amounts):
                ts = datetime(day.year, day.month, day.day, 6 + 12 * j, 30)
                events.append(cost_event(f"{unit}-{day}-{j}", ts, amount, unit=unit))
            expected[(unit, day)] = sum(amounts, Decimal(0))
    load_events(sf_conn, COST, events)

    rows = sf_conn.query(
        "SELECT business_unit, cost_date, daily_cost, cost_7_days_ago, week_over_week_change, event_count "
        "FROM finops_reporting.cost_by_business_unit"
    )
    window = {d for d in days if d >= today - timedelta(days=30)}
    assert {(u, d) for u, d, *_ in rows} == {k for k in expected if k[1] in window}
    for unit, day, daily, prev, wow, count in rows:
        assert daily == expected[(unit, day)].quantize(Q4), (unit, day)
        assert count == 2
        before = expected.get((unit, day - timedelta(days=7)))
        if before is None:
            assert prev is None and wow is None, (unit, day)
        else:
            assert prev == before.quantize(Q4)
            assert abs(wow - ((expected[(unit, day)] - before) / before * 100)) <= Q4
    by_key = {(u, d): (prev, wow) for u, d, _, prev, wow, _ in rows}
    # the day a week after the gap has nothing to compare with (LAG(…, 7) over rows would pick the
    # day before the gap); the days after it compare with exactly seven calendar days earlier
    assert by_key[("alpha", missing + timedelta(days=7))] == (None, None)
    assert by_key[("alpha", missing + timedelta(days=8))][0] == expected[
        ("alpha", missing + timedelta(days=1))
    ].quantize(Q4)
    assert by_key[("beta", missing + timedelta(days=7))][0] == expected[("beta", missing)].quantize(Q4)


def test_roi_analysis_sums_cost_and_revenue_without_fan_out(sf_conn: SnowflakeTestDatabase) -> None:
    sf_conn.migrate()
    hour = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0) - timedelta(hours=3)
    at = lambda h, m: hour + timedelta(hours=h, minutes=m)  # noqa: E731
    costs = [
        ("c1", at(0, 1), "10.5"),
        ("c2", at(0, 20), "20.25"),
        ("c3", at(0, 59), "4.0000000001"),
        ("c4", at(-1, 5), "7"),
    ]
    revenue = [
        ("b1", at(0, 2), "100"),
        ("b2", at(0, 30), "50.5"),
        ("b3", at(0, 31), "0"),
        ("b4", at(0, 40), "-10"),
        ("b5", at(1, 0), "30"),
    ]
    load_events(
        sf_conn,
        COST,
        [cost_event(i, ts, a, unit="shop") for i, ts, a in costs]
        + [cost_event("o1", at(0, 5), "1", unit="other")],
    )
    load_events(
        sf_conn,
        BIZ,
        [business_event(i, ts, a, unit="shop") for i, ts, a in revenue]
        + [business_event("o2", at(0, 6), "2", unit="other")],
    )

    rows = sf_conn.query(
        "SELECT analysis_hour, total_cost, total_revenue, roi, roi_percentage, cost_events, revenue_events "
        "FROM finops_reporting.roi_analysis WHERE business_unit = 'shop' ORDER BY analysis_hour"
    )
    assert [r[0] for r in rows] == [at(-1, 0), at(0, 0), at(1, 0)]
    only_cost, both, only_revenue = rows
    cost, rev = Decimal("34.7500000001"), Decimal("140.5")
    # an event-by-event join would report 4 x cost and 3 x revenue here
    assert both[1:3] == (cost.quantize(Q4), rev)
    assert both[3] == ((rev - cost) / cost).quantize(Decimal("0.000001"))
    assert abs(both[4] - (rev - cost) / cost * 100) <= Q4
    assert both[5:] == (3, 3)
    assert only_cost[1:] == (
        Decimal("7.0000"),
        Decimal("0.0000"),
        Decimal("-1.000000"),
        Decimal("-100.0000"),
        1,
        0,
    )
    assert only_revenue[1:] == (Decimal("0.0000"), Decimal("30.0000"), None, None, 0, 1)


def test_sql_anomalies_flags_an_hourly_spike_once(sf_conn: SnowflakeTestDatabase) -> None:
    sf_conn.migrate()
    now = datetime.now(UTC)
    hour = jobs.last_complete_hour(now)
    rng = random.Random(4)
    events, ec2_history = [], []
    s3_sums = ["5.7", "6.3", "5.9", "6.1", "6.0", "6.2", "5.8"]  # mean 6.0, sample std 0.216
    for d in range(1, 8):
        start = hour - timedelta(days=d)
        parts = [Decimal(2) + Decimal(rng.randint(-20, 20)) / 100 for _ in range(3)]
        ec2_history.append(sum(parts, Decimal(0)))
        for j, amount in enumerate(parts):  # three events per hour: hourly sums ~6, per-event ~2
            events.append(
                cost_event(f"ec2-{d}-{j}", start + timedelta(minutes=10 * j + 1), amount, service="ec2")
            )
            s3_part = Decimal(s3_sums[d - 1]) / 3
            events.append(
                cost_event(f"s3-{d}-{j}", start + timedelta(minutes=10 * j + 2), s3_part, service="s3")
            )
        events.append(cost_event(f"ec2-other-hour-{d}", start - timedelta(hours=1), "500", service="ec2"))
        if d <= 2:  # rds has only two days of history: still warming up
            events.append(cost_event(f"rds-{d}", start + timedelta(minutes=5), "1", service="rds"))
    for j, amount in enumerate(("20", "25", "5")):
        events.append(
            cost_event(
                f"ec2-now-{j}",
                hour + timedelta(minutes=5 + j),
                amount,
                service="ec2",
                unit="web" if j else "data",
            )
        )
    for j in range(
        3
    ):  # 6.3 per hour: within 2 std of the hourly sums (6.0 +- 0.22), a "spike" against events of ~2
        events.append(cost_event(f"s3-now-{j}", hour + timedelta(minutes=7 + j), "2.1", service="s3"))
    events.append(cost_event("rds-now", hour + timedelta(minutes=9), "400", service="rds"))
    events.append(cost_event("ec2-previous-hour", hour - timedelta(minutes=30), "900", service="ec2"))
    load_events(sf_conn, COST, events)

    conn = sf_conn()
    assert jobs.sql_anomalies(conn, now, min_cost=Decimal(1)) == 1
    assert jobs.sql_anomalies(conn, now, min_cost=Decimal(1)) == 0
    rows = sf_conn.query(
        "SELECT anomaly_id, service, cost_amount, expected_amount, deviation_percent, business_impact, "
        "window_start, window_end, source, status, revision, resolved FROM finops_aggregated.cost_anomalies"
    )
    assert len(rows) == 1
    (
        anomaly_id,
        service,
        current,
        expected,
        deviation,
        impact,
        start,
        end,
        source,
        status,
        revision,
        resolved,
    ) = rows[0]
    mean = sum(ec2_history, Decimal(0)) / 7
    epoch_hour = int(hour.replace(tzinfo=UTC).timestamp()) // 3600
    assert anomaly_id == hashlib.md5(f"sql|ec2|{epoch_hour}".encode()).hexdigest()
    assert (service, current, source, status, revision, resolved) == (
        "ec2",
        Decimal("50.0000"),
        "sql",
        "open",
        1,
        False,
    )
    assert expected == mean.quantize(Q4)  # the mean of hourly sums, not of single events
    assert abs(deviation - (Decimal(50) - mean) / mean * 100) <= Q4
    assert impact == "CRITICAL"
    assert (start, end) == (hour, hour + timedelta(hours=1))

    # a late event in that hour updates the same anomaly (one row, next revision), not a new one
    load_events(sf_conn, COST, [cost_event("ec2-late", hour + timedelta(minutes=50), "10", service="ec2")])
    assert jobs.sql_anomalies(conn, now, min_cost=Decimal(1)) == 0
    assert sf_conn.query("SELECT cost_amount, revision, status FROM finops_aggregated.cost_anomalies") == [
        (Decimal("60.0000"), 2, "updated")
    ]


def test_daily_summary_trend_budget_and_restatement(sf_conn: SnowflakeTestDatabase) -> None:
    sf_conn.migrate()
    today = datetime.now(UTC).date()
    settings = sf_conn.settings.__class__(**{**sf_conn.settings.__dict__, "budgets": {"eng": Decimal(1000)}})
    events = []
    for k in range(40, -1, -1):
        day = today - timedelta(days=k)
        ts = datetime(day.year, day.month, day.day, 12)
        events.append(cost_event(f"ec2-{day}", ts, "20" if k <= 7 else "10", service="ec2", unit="eng"))
        if k != 3:
            events.append(cost_event(f"s3-{day}", ts, "5", service="s3", unit="eng"))
    load_events(sf_conn, COST, events)

    conn = sf_conn()
    merged = jobs.refresh_daily_summary(conn, settings, days=14, today=today)
    query = (
        "SELECT date, service, total_cost, cost_trend, week_over_week_change, budget_utilization "
        "FROM finops_aggregated.daily_cost_summary WHERE business_unit = 'eng'"
    )
    rows = {(d, s): rest for d, s, *rest in sf_conn.query(query)}
    assert merged == len(rows) == 14 + 13  # s3 has no row for the missing day
    assert rows[(today, "ec2")][:3] == [Decimal("20.0000"), "flat", Decimal("0.0000")]
    assert rows[(today - timedelta(days=1), "ec2")][:3] == [Decimal("20.0000"), "up", Decimal("100.0000")]
    assert rows[(today - timedelta(days=8), "ec2")][:3] == [Decimal("10.0000"), "flat", Decimal("0.0000")]
    assert (today - timedelta(days=3), "s3") not in rows
    for (day, _service), (_, _, _, utilisation) in rows.items():
        month_to_date = sum(
            (Decimal(20) if (today - d).days <= 7 else Decimal(10))
            + (Decimal(0) if (today - d).days == 3 else Decimal(5))
            for d in (day - timedelta(days=n) for n in range((day - day.replace(day=1)).days + 1))
        )
        assert utilisation == (month_to_date / 10).quantize(Decimal("0.01")), day
    assert sf_conn.query("SELECT amount FROM finops_aggregated.budgets WHERE business_unit = 'eng'")[-1] == (
        Decimal("1000.0000"),
    )

    # same data again: same rows; a restated event moved to another unit moves its summary row
    assert jobs.refresh_daily_summary(conn, settings, days=14, today=today) == merged
    day = today - timedelta(days=2)
    load_events(
        sf_conn,
        COST,
        [cost_event(f"s3-{day}", datetime(day.year, day.month, day.day, 12), "5", service="s3", unit="ops")],
    )
    jobs.refresh_daily_summary(conn, settings, days=14, today=today)
    units = {
        u
        for (u,) in sf_conn.query(
            "SELECT business_unit FROM finops_aggregated.daily_cost_summary "
            "WHERE service = 's3' AND date = %(d)s",
            {"d": day.isoformat()},
        )
    }
    assert units == {"ops"}


def test_forecast_sql_and_python_agree_on_a_known_series(sf_conn: SnowflakeTestDatabase) -> None:
    sf_conn.migrate()
    today = datetime.now(UTC).date()
    rng = random.Random(9)
    first = today - timedelta(days=40)
    events = []
    for i in range(40):
        if i == 17:
            continue  # a missing day: x stays the calendar day number in both
        day = first + timedelta(days=i)
        amount = (Decimal("300") + Decimal("2.5") * i + Decimal(rng.randint(-800, 800)) / 100).quantize(Q4)
        events.append(cost_event(f"fc-{i}", datetime(day.year, day.month, day.day, 9), amount, unit="fc"))
    events.append(
        cost_event("fc-today", datetime(today.year, today.month, today.day, 0, 5), "99999", unit="fc")
    )
    load_events(sf_conn, COST, events)

    conn = sf_conn()
    daily = jobs.daily_costs(conn, "fc", 90, today=today)
    assert (
        len(daily) == 39 and daily[0][0] == first and daily[-1][0] == today - timedelta(days=1)
    )  # today is partial
    sql = jobs.forecast_sql(conn, "fc", 7, today=today)
    fitted = fit(daily, "linear")
    assert sql.n == 39 and sql.first_date == first
    assert sql.slope == pytest.approx(fitted.beta[1], rel=1e-9)
    assert sql.slope == pytest.approx(2.5, abs=0.15)
    assert sql.intercept == pytest.approx(fitted.beta[0], rel=1e-9)
    python = forecast(daily, 7, model="linear")
    assert len(sql.points) == len(python.points) == 7
    for (d1, p1, lo1, hi1), (d2, p2, lo2, hi2) in zip(sql.points, python.points, strict=True):
        assert d1 == d2
        assert abs(p1 - p2) <= Q4 and abs(lo1 - lo2) <= Q4 and abs(hi1 - hi2) <= Q4
    result = jobs.run_forecast(conn, "fc", 7, today=today)
    assert result.n == 39 and result.model in ("linear", "seasonal") and len(result.points) == 7


def test_snowflake_only_files_carry_the_job_sql_and_are_opt_in() -> None:
    """No server needed: TASK/PROCEDURE files exist for a real account and stay out of the default run."""
    default = [name for name, _ in migration_files(SQL_DIR)]
    everything = [name for name, _ in migration_files(SQL_DIR, include_snowflake_only=True)]
    assert not any(name.startswith("snowflake_only/") for name in default)
    assert everything == [
        *default,
        "snowflake_only/001_forecast_procedure.sql",
        "snowflake_only/002_tasks.sql",
    ]
    tasks = (SQL_DIR / "snowflake_only" / "002_tasks.sql").read_text()
    assert jobs.anomaly_task_sql().strip() in tasks  # the task runs exactly the tested statement
    assert jobs.daily_summary_task_sql() in tasks
    procedure = (SQL_DIR / "snowflake_only" / "001_forecast_procedure.sql").read_text()
    assert len(statements(procedure)) == 1 and len(statements(tasks)) == 4
    assert "* 0.9" not in procedure and "REGR_SLOPE" in procedure  # no fixed +-10 percent band
