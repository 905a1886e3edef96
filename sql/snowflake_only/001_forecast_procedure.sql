-- Snowflake only (not applied by default: `finops migrate --include-snowflake-only`).
-- The article's forecast procedure, corrected: x is the calendar day number (a missing day is a gap,
-- not a shifted row), and the interval is a 95 percent prediction interval from the residuals,
-- t(0.975, n - 2) * s * SQRT(1 + 1/n + (x - mean(x))^2 / Sxx), not a fixed +-10 percent.
-- t comes from a table (exact for n - 2 <= 30, the next lower degrees of freedom beyond: wider,
-- never narrower). Same model as finops_app.sinks.jobs.forecast_sql and core.forecast (linear).
-- CALL finops_analysis.forecast_costs('engineering', 14);

CREATE OR REPLACE PROCEDURE finops_analysis.forecast_costs(business_unit STRING, forecast_days NUMBER)
RETURNS TABLE (
    forecast_date DATE,
    predicted_cost NUMBER(18, 4),
    confidence_interval_lower NUMBER(18, 4),
    confidence_interval_upper NUMBER(18, 4)
)
LANGUAGE SQL
AS
$$
DECLARE
    res RESULTSET DEFAULT (
        WITH daily AS (
            SELECT CAST(ce.timestamp AS DATE) AS cost_date, SUM(ce.cost_amount) AS daily_cost
            FROM finops_curated.cost_events ce
            WHERE ce.business_unit = :business_unit
              AND ce.timestamp >= DATEADD(day, -90, CURRENT_DATE())
              AND ce.timestamp < CURRENT_DATE()
            GROUP BY CAST(ce.timestamp AS DATE)
        ),
        numbered AS (
            SELECT cost_date, CAST(daily_cost AS FLOAT) AS y,
                CAST(DATEDIFF(day, MIN(cost_date) OVER (), cost_date) AS FLOAT) AS x
            FROM daily
        ),
        regression AS (
            SELECT REGR_SLOPE(y, x) AS slope, REGR_INTERCEPT(y, x) AS intercept, COUNT(*) AS n,
                AVG(x) AS mean_x, MAX(x) AS last_x, MAX(cost_date) AS last_date, MIN(y) AS min_y
            FROM numbered
        ),
        fit AS (
            SELECT r.slope, r.intercept, r.n, r.mean_x, r.last_x, r.last_date, r.min_y,
                SQRT(SUM(POWER(h.y - (r.intercept + r.slope * h.x), 2)) / NULLIF(r.n - 2, 0)) AS s,
                SUM(POWER(h.x - r.mean_x, 2)) AS sxx
            FROM regression r CROSS JOIN numbered h
            GROUP BY r.slope, r.intercept, r.n, r.mean_x, r.last_x, r.last_date, r.min_y
        ),
        quantile AS (
            SELECT f.*, CASE
                WHEN f.n - 2 = 1 THEN 12.7062
                WHEN f.n - 2 = 2 THEN 4.3027
                WHEN f.n - 2 = 3 THEN 3.1824
                WHEN f.n - 2 = 4 THEN 2.7764
                WHEN f.n - 2 = 5 THEN 2.5706
                WHEN f.n - 2 = 6 THEN 2.4469
                WHEN f.n - 2 = 7 THEN 2.3646
                WHEN f.n - 2 = 8 THEN 2.3060
                WHEN f.n - 2 = 9 THEN 2.2622
                WHEN f.n - 2 = 10 THEN 2.2281
                WHEN f.n - 2 = 11 THEN 2.2010
                WHEN f.n - 2 = 12 THEN 2.1788
                WHEN f.n - 2 = 13 THEN 2.1604
                WHEN f.n - 2 = 14 THEN 2.1448
                WHEN f.n - 2 = 15 THEN 2.1314
                WHEN f.n - 2 = 16 THEN 2.1199
                WHEN f.n - 2 = 17 THEN 2.1098
                WHEN f.n - 2 = 18 THEN 2.1009
                WHEN f.n - 2 = 19 THEN 2.0930
                WHEN f.n - 2 = 20 THEN 2.0860
                WHEN f.n - 2 = 21 THEN 2.0796
                WHEN f.n - 2 = 22 THEN 2.0739
                WHEN f.n - 2 = 23 THEN 2.0687
                WHEN f.n - 2 = 24 THEN 2.0639
                WHEN f.n - 2 = 25 THEN 2.0595
                WHEN f.n - 2 = 26 THEN 2.0555
                WHEN f.n - 2 = 27 THEN 2.0518
                WHEN f.n - 2 = 28 THEN 2.0484
                WHEN f.n - 2 = 29 THEN 2.0452
                WHEN f.n - 2 = 30 THEN 2.0423
                WHEN f.n - 2 <= 40 THEN 2.0395
                WHEN f.n - 2 <= 60 THEN 2.0195
                WHEN f.n - 2 <= 120 THEN 1.9996
                ELSE 1.9798
            END AS tq
            FROM fit f
            WHERE f.n >= 3
        ),
        horizon AS (
            SELECT ROW_NUMBER() OVER (ORDER BY SEQ4()) AS k FROM TABLE(GENERATOR(ROWCOUNT => 366))
        ),
        points AS (
            SELECT DATEADD(day, hz.k, q.last_date) AS forecast_date,
                q.intercept + q.slope * (q.last_x + hz.k) AS predicted,
                q.tq * q.s * SQRT(1 + 1 / q.n + POWER(q.last_x + hz.k - q.mean_x, 2) / q.sxx) AS half,
                q.min_y
            FROM quantile q CROSS JOIN horizon hz
            WHERE hz.k <= :forecast_days
        )
        SELECT forecast_date,
            CAST(predicted AS NUMBER(18, 4)) AS predicted_cost,
            CAST(IFF(min_y >= 0, GREATEST(predicted - half, 0), predicted - half) AS NUMBER(18, 4))
                AS confidence_interval_lower,
            CAST(predicted + half AS NUMBER(18, 4)) AS confidence_interval_upper
        FROM points
        ORDER BY forecast_date
    );
BEGIN
    RETURN TABLE(res);
END;
$$;
