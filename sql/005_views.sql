-- 005: reporting views (no ORDER BY in a view: order where you query).

-- Daily cost per business unit (and currency) over the last 30 days, with the week-over-week
-- change against the CALENDAR day seven days earlier. The article used LAG(..., 7) over rows,
-- which silently compares with the wrong day whenever a day is missing; here a missing day gives
-- NULL. The CTE reaches back 37 days so the first days of the window have their comparison.
CREATE OR REPLACE VIEW finops_reporting.cost_by_business_unit AS
WITH daily AS (
    SELECT
        ce.business_unit,
        ce.currency,
        CAST(ce.timestamp AS DATE) AS cost_date,
        SUM(CAST(ce.cost_amount AS NUMBER(38, 10))) AS daily_cost,
        COUNT(*) AS event_count
    FROM finops_curated.cost_events AS ce
    WHERE ce.timestamp >= DATEADD(day, -37, CURRENT_DATE())
    GROUP BY ce.business_unit, ce.currency, CAST(ce.timestamp AS DATE)
)
SELECT
    cur.cost_date,
    cur.business_unit,
    cur.currency,
    CAST(cur.daily_cost AS NUMBER(38, 4)) AS daily_cost,
    cur.event_count,
    CAST(prev.daily_cost AS NUMBER(38, 4)) AS cost_7_days_ago,
    CASE
        WHEN prev.daily_cost IS NULL OR prev.daily_cost = 0 THEN NULL
        ELSE CAST((cur.daily_cost - prev.daily_cost) / prev.daily_cost * 100 AS NUMBER(38, 4))
    END AS week_over_week_change
FROM daily AS cur
LEFT JOIN daily AS prev
    ON prev.business_unit = cur.business_unit
    AND prev.currency = cur.currency
    AND cur.cost_date = DATEADD(day, 7, prev.cost_date)
WHERE cur.cost_date >= DATEADD(day, -30, CURRENT_DATE());

-- Cost against revenue per business unit and hour over the last 7 days. The article joined cost
-- events to business events row by row and then summed: every cost row was repeated once per
-- matching business event (and vice versa), inflating both sums. Here each side is summed on its
-- own, then the two are joined one row to one row (FULL OUTER JOIN: hours with only cost or only
-- revenue are kept). ROI = (revenue - cost) / cost, NULL when cost is 0. Revenue is the sum of
-- revenue_impact (refunds count negative); revenue_events counts business events with revenue.
CREATE OR REPLACE VIEW finops_reporting.roi_analysis AS
WITH cost AS (
    SELECT
        ce.business_unit,
        ce.currency,
        DATE_TRUNC('HOUR', ce.timestamp) AS analysis_hour,
        SUM(CAST(ce.cost_amount AS NUMBER(38, 10))) AS total_cost,
        COUNT(*) AS cost_events
    FROM finops_curated.cost_events AS ce
    WHERE ce.timestamp >= DATEADD(day, -7, CURRENT_DATE())
    GROUP BY ce.business_unit, ce.currency, DATE_TRUNC('HOUR', ce.timestamp)
),
revenue AS (
    SELECT
        be.business_unit,
        be.currency,
        DATE_TRUNC('HOUR', be.timestamp) AS analysis_hour,
        SUM(CAST(be.revenue_impact AS NUMBER(38, 10))) AS total_revenue,
        COUNT_IF(be.revenue_impact <> 0) AS revenue_events
    FROM finops_curated.business_events AS be
    WHERE be.timestamp >= DATEADD(day, -7, CURRENT_DATE())
    GROUP BY be.business_unit, be.currency, DATE_TRUNC('HOUR', be.timestamp)
)
SELECT
    COALESCE(c.business_unit, r.business_unit) AS business_unit,
    COALESCE(c.currency, r.currency) AS currency,
    COALESCE(c.analysis_hour, r.analysis_hour) AS analysis_hour,
    CAST(COALESCE(c.analysis_hour, r.analysis_hour) AS DATE) AS analysis_date,
    CAST(COALESCE(c.total_cost, 0) AS NUMBER(38, 4)) AS total_cost,
    CAST(COALESCE(r.total_revenue, 0) AS NUMBER(38, 4)) AS total_revenue,
    CASE
        WHEN COALESCE(c.total_cost, 0) = 0 THEN NULL
        ELSE CAST((COALESCE(r.total_revenue, 0) - c.total_cost) / c.total_cost AS NUMBER(38, 6))
    END AS roi,
    CASE
        WHEN COALESCE(c.total_cost, 0) = 0 THEN NULL
        ELSE CAST((COALESCE(r.total_revenue, 0) - c.total_cost) / c.total_cost * 100 AS NUMBER(38, 4))
    END AS roi_percentage,
    COALESCE(c.cost_events, 0) AS cost_events,
    COALESCE(r.revenue_events, 0) AS revenue_events
FROM cost AS c
FULL OUTER JOIN revenue AS r
    ON c.business_unit = r.business_unit
    AND c.currency = r.currency
    AND c.analysis_hour = r.analysis_hour;
