-- 003: curated events, one row per event_id (the sink MERGEs on it: a redelivered or replayed
-- event updates its row, never adds one; a restated cost with the same event_id replaces the old
-- figure, so restatements are not double counted).
--
-- Money is NUMBER(38, 10) here, not the article's NUMBER(15, 4): FOCUS billing data carries 10-11
-- decimal places per line (unit prices times tiny usage quantities), and millions of lines rounded
-- to 4 places each no longer add up to the invoice. Kept at 10 places, sums reconcile to the cent;
-- results and reports round once, at the end (NUMBER(18, 4)).
-- Times are TIMESTAMP_NTZ holding UTC (sessions run with TIMEZONE = 'UTC').
-- source_partition / source_offset: the event's position on its input topic (NULL when it did not
-- come from Kafka), for lineage.

CREATE TABLE IF NOT EXISTS finops_curated.cost_events (
    event_id            STRING         NOT NULL,
    timestamp           TIMESTAMP_NTZ  NOT NULL,
    event_type          STRING,
    service             STRING         NOT NULL,
    region              STRING,
    cost_amount         NUMBER(38, 10) NOT NULL,
    currency            STRING         NOT NULL,
    resource_id         STRING,
    business_unit       STRING         NOT NULL,
    project_id          STRING,
    environment         STRING,
    provider            STRING,
    account_id          STRING,
    charge_category     STRING,
    charge_period_start TIMESTAMP_NTZ,
    charge_period_end   TIMESTAMP_NTZ,
    source              STRING,
    schema_version      NUMBER(5, 0),
    metadata            VARIANT,
    source_partition    NUMBER(10, 0),
    source_offset       NUMBER(20, 0),
    loaded_at           TIMESTAMP_NTZ,
    PRIMARY KEY (event_id)
);

CREATE TABLE IF NOT EXISTS finops_curated.business_events (
    event_id         STRING         NOT NULL,
    timestamp        TIMESTAMP_NTZ  NOT NULL,
    event_type       STRING,
    user_id          STRING,        -- pseudonymised (keyed hash), never the raw id
    feature          STRING,
    action           STRING,
    revenue_impact   NUMBER(38, 10) NOT NULL,
    currency         STRING         NOT NULL,
    business_unit    STRING         NOT NULL,
    source           STRING,
    schema_version   NUMBER(5, 0),
    metadata         VARIANT,
    source_partition NUMBER(10, 0),
    source_offset    NUMBER(20, 0),
    loaded_at        TIMESTAMP_NTZ,
    PRIMARY KEY (event_id)
);

-- utilisation samples (CloudWatch and others): what right-sizing and idle detection rest on
CREATE TABLE IF NOT EXISTS finops_curated.resource_events (
    event_id         STRING         NOT NULL,
    timestamp        TIMESTAMP_NTZ  NOT NULL,
    resource_id      STRING         NOT NULL,
    resource_type    STRING,
    instance_type    STRING,
    metric           STRING,
    utilisation      FLOAT          NOT NULL,  -- fraction 0..1
    hourly_cost      NUMBER(38, 10),
    service          STRING,
    region           STRING,
    business_unit    STRING         NOT NULL,
    project_id       STRING,
    environment      STRING,
    provider         STRING,
    stateless        BOOLEAN,
    source           STRING,
    schema_version   NUMBER(5, 0),
    metadata         VARIANT,
    source_partition NUMBER(10, 0),
    source_offset    NUMBER(20, 0),
    loaded_at        TIMESTAMP_NTZ,
    PRIMARY KEY (event_id)
);
