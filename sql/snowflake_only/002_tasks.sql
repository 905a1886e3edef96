-- Snowflake only (not applied by default: `finops migrate --include-snowflake-only`).
-- The scheduled SQL jobs as serverless TASKs, with the same statements as
-- finops_app.sinks.jobs (rendered by jobs.anomaly_task_sql() / jobs.daily_summary_task_sql(); a
-- test keeps this file in step). Use either these tasks or the worker's timer
-- (FINOPS_SQL_JOBS_INTERVAL_SECONDS), not both. Needs EXECUTE TASK / EXECUTE MANAGED TASK.

-- Five past every hour, check the hour that just completed (the article's task, done right:
-- hourly sums against the same hour of the previous 7 days; deterministic ids, MERGE).
CREATE OR REPLACE TASK finops_analysis.detect_cost_anomalies
    SCHEDULE = 'USING CRON 5 * * * * UTC'
    USER_TASK_MANAGED_INITIAL_WAREHOUSE_SIZE = 'XSMALL'
    TIMEZONE = 'UTC'
AS
MERGE INTO finops_aggregated.cost_anomalies t USING (
    WITH bounds AS (
        SELECT DATEADD(hour, -1, DATE_TRUNC('HOUR', CONVERT_TIMEZONE('UTC', CURRENT_TIMESTAMP())::TIMESTAMP_NTZ)) AS hour_start
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
        WHERE s.history_days >= 3
        AND c.current_cost > s.mean_cost + 2 * COALESCE(s.std_cost, 0)
        AND c.current_cost > CAST('10' AS NUMBER(38, 10))
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
);

-- Refresh the last 35 days of the daily summary (budgets come from finops_aggregated.budgets).
CREATE OR REPLACE TASK finops_analysis.refresh_daily_cost_summary
    SCHEDULE = 'USING CRON 15 * * * * UTC'
    USER_TASK_MANAGED_INITIAL_WAREHOUSE_SIZE = 'XSMALL'
    TIMEZONE = 'UTC'
AS
EXECUTE IMMEDIATE
$$
BEGIN
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
        WHERE ce.timestamp >= (LEAST(DATE_TRUNC('MONTH', DATEADD(day, -34, CURRENT_DATE())), DATEADD(day, -7, DATEADD(day, -34, CURRENT_DATE()))))::TIMESTAMP_NTZ AND ce.timestamp < (DATEADD(day, 1, CURRENT_DATE()))::TIMESTAMP_NTZ
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
            WHEN cur.total_cost > prev.total_cost + ABS(prev.total_cost) * 0.01 THEN 'up'
            WHEN cur.total_cost < prev.total_cost - ABS(prev.total_cost) * 0.01 THEN 'down'
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
    WHERE cur.date >= (DATEADD(day, -34, CURRENT_DATE()))::DATE
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
);
DELETE FROM finops_aggregated.daily_cost_summary s
WHERE s.date >= (DATEADD(day, -34, CURRENT_DATE()))::DATE AND s.date < (DATEADD(day, 1, CURRENT_DATE()))::DATE
AND NOT EXISTS (
    SELECT 1 FROM finops_curated.cost_events ce
    WHERE ce.timestamp >= s.date AND ce.timestamp < DATEADD(day, 1, s.date)
    AND ce.business_unit = s.business_unit AND ce.service = s.service
    AND COALESCE(ce.environment, 'unknown') = s.environment AND ce.currency = s.currency
);
END;
$$;

ALTER TASK finops_analysis.detect_cost_anomalies RESUME;
ALTER TASK finops_analysis.refresh_daily_cost_summary RESUME;
