-- 004: aggregated results. The stream's result topics land here (one row per natural key, later
-- revisions replace earlier ones), next to what the scheduled SQL jobs compute.
-- Result money is NUMBER(18, 4): results carry at most 4 decimal places.

-- Filled by the daily summary job (finops_app.sinks.jobs.refresh_daily_summary) from curated
-- events; the article's columns plus currency and event_count (amounts in different currencies
-- are never added together, so currency is part of the key).
-- cost_trend: 'up' / 'down' / 'flat' (within 1 percent) against the same service on the calendar
-- day 7 days earlier; NULL when that day has no cost.
-- budget_utilization: the business unit's month-to-date cost (all services) up to this date, in
-- percent of its monthly budget (finops_aggregated.budgets); NULL without a budget.
CREATE TABLE IF NOT EXISTS finops_aggregated.daily_cost_summary (
    date                  DATE          NOT NULL,
    business_unit         STRING        NOT NULL,
    service               STRING        NOT NULL,
    environment           STRING        NOT NULL,
    currency              STRING        NOT NULL,
    total_cost            NUMBER(18, 4) NOT NULL,
    event_count           NUMBER(18, 0),
    cost_trend            STRING,
    week_over_week_change NUMBER(38, 4),  -- percent (wide: a near-zero week-ago cost gives huge ratios)
    budget_utilization    NUMBER(38, 2),  -- percent (wide: a tiny budget must not fail the job)
    updated_at            TIMESTAMP_NTZ,
    PRIMARY KEY (date, business_unit, service, environment, currency)
);

-- Monthly budget per business unit (month = first day of the month); upserted from
-- FINOPS_BUDGETS by the daily summary job.
CREATE TABLE IF NOT EXISTS finops_aggregated.budgets (
    business_unit STRING        NOT NULL,
    month         DATE          NOT NULL,
    amount        NUMBER(18, 4) NOT NULL,
    currency      STRING,
    updated_at    TIMESTAMP_NTZ,
    PRIMARY KEY (business_unit, month)
);

-- finops.cost.anomalies (source 'stream') and the scheduled SQL check (source 'sql').
-- The article's columns: cost_amount = current_cost, expected_amount = historical_average,
-- business_impact = severity (CRITICAL / HIGH / MEDIUM); then the CostAnomaly fields.
CREATE TABLE IF NOT EXISTS finops_aggregated.cost_anomalies (
    anomaly_id           STRING        NOT NULL,
    detected_at          TIMESTAMP_NTZ,
    anomaly_type         STRING,
    service              STRING,
    cost_amount          NUMBER(18, 4),
    expected_amount      NUMBER(18, 4),
    deviation_percent    NUMBER(18, 4),
    business_impact      STRING,
    resolved             BOOLEAN DEFAULT FALSE,
    business_unit        STRING,
    region               STRING,
    series               STRING,
    score                FLOAT,
    drivers              VARIANT,
    window_start         TIMESTAMP_NTZ,
    window_end           TIMESTAMP_NTZ,
    timestamp            TIMESTAMP_NTZ,
    first_seen           TIMESTAMP_NTZ,
    detection_latency_ms NUMBER(18, 0),
    status               STRING,
    revision             NUMBER(10, 0) NOT NULL,
    source               STRING        NOT NULL,
    loaded_at            TIMESTAMP_NTZ,
    PRIMARY KEY (anomaly_id)
);

-- finops.cost.aggregations: one final total per business unit and tumbling window; a late event
-- produces a higher revision that replaces the row.
CREATE TABLE IF NOT EXISTS finops_aggregated.window_totals (
    business_unit STRING        NOT NULL,
    window_start  TIMESTAMP_NTZ NOT NULL,
    window_end    TIMESTAMP_NTZ NOT NULL,
    total_cost    NUMBER(18, 4) NOT NULL,
    event_count   NUMBER(18, 0) NOT NULL,
    revision      NUMBER(10, 0) NOT NULL,
    currency      STRING,
    closed_at     TIMESTAMP_NTZ,
    late          BOOLEAN,
    loaded_at     TIMESTAMP_NTZ,
    PRIMARY KEY (business_unit, window_start)
);

-- finops.roi.calculations: ROI = (revenue - cost) / cost per business unit and window (NULL when
-- cost is 0).
CREATE TABLE IF NOT EXISTS finops_aggregated.roi_results (
    business_unit  STRING        NOT NULL,
    window_start   TIMESTAMP_NTZ NOT NULL,
    window_end     TIMESTAMP_NTZ NOT NULL,
    cost           NUMBER(18, 4) NOT NULL,
    revenue        NUMBER(18, 4) NOT NULL,
    roi            FLOAT,
    cost_events    NUMBER(18, 0),
    revenue_events NUMBER(18, 0),
    unit_cost      NUMBER(18, 4),
    timestamp      TIMESTAMP_NTZ,
    revision       NUMBER(10, 0) NOT NULL,
    loaded_at      TIMESTAMP_NTZ,
    PRIMARY KEY (business_unit, window_start)
);

-- finops.optimization.recommendations (current / proposed are reserved words: *_config)
CREATE TABLE IF NOT EXISTS finops_aggregated.recommendations (
    recommendation_id STRING        NOT NULL,
    resource_id       STRING,
    kind              STRING,
    business_unit     STRING,
    service           STRING,
    region            STRING,
    current_config    STRING,
    proposed_config   STRING,
    monthly_saving    NUMBER(18, 4),
    evidence          VARIANT,
    timestamp         TIMESTAMP_NTZ,
    loaded_at         TIMESTAMP_NTZ,
    PRIMARY KEY (recommendation_id)
);

-- finops.budget.alerts (month as 'YYYY-MM')
CREATE TABLE IF NOT EXISTS finops_aggregated.budget_alerts (
    alert_id          STRING        NOT NULL,
    business_unit     STRING,
    month             STRING,
    budget            NUMBER(18, 4),
    spent             NUMBER(18, 4),
    forecast          NUMBER(18, 4),
    threshold_percent NUMBER(5, 0),
    kind              STRING,
    timestamp         TIMESTAMP_NTZ,
    loaded_at         TIMESTAMP_NTZ,
    PRIMARY KEY (alert_id)
);

-- finops.actions: the audit trail of stop / resize actions (dry runs included)
CREATE TABLE IF NOT EXISTS finops_aggregated.actions (
    action_id         STRING        NOT NULL,
    resource_id       STRING,
    kind              STRING,
    dry_run           BOOLEAN,
    status            STRING,
    reason            STRING,
    recommendation_id STRING,
    detail            VARIANT,
    timestamp         TIMESTAMP_NTZ,
    loaded_at         TIMESTAMP_NTZ,
    PRIMARY KEY (action_id)
);

-- finops.deadletter: what was rejected, where it came from, why, and the raw bytes (base64)
CREATE TABLE IF NOT EXISTS finops_aggregated.deadletters (
    source_topic     STRING        NOT NULL,
    source_partition NUMBER(10, 0) NOT NULL,
    source_offset    NUMBER(20, 0) NOT NULL,
    error            STRING,
    field            STRING,
    stage            STRING,
    raw              STRING,
    raw_size         NUMBER(18, 0),
    timestamp        TIMESTAMP_NTZ,
    loaded_at        TIMESTAMP_NTZ,
    PRIMARY KEY (source_topic, source_partition, source_offset)
);
