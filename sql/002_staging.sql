-- 002: staging. Every sunk topic lands here as it was on Kafka: the message as VARIANT
-- (record_content) and its position (record_metadata: topic, partition, offset, key, CreateTime),
-- the shape the Snowflake Kafka connector writes. source_topic / source_partition / source_offset
-- repeat the position as plain columns: they are the natural key the sink MERGEs on, so a
-- redelivered message never makes a second row. Messages that are not valid JSON are not here:
-- they are on finops.deadletter (and in finops_aggregated.deadletters).
--
-- The named internal stage receives the sink's Parquet batches (PUT, then COPY INTO a landing
-- table, then MERGE); files are purged by the COPY.

CREATE STAGE IF NOT EXISTS finops_staging.sink_stage;

-- finops.cost.events (input, as produced: before validation)
CREATE TABLE IF NOT EXISTS finops_staging.cost_events_raw (
    record_content   VARIANT,
    record_metadata  VARIANT,
    source_topic     STRING        NOT NULL,
    source_partition NUMBER(10, 0) NOT NULL,
    source_offset    NUMBER(20, 0) NOT NULL,
    loaded_at        TIMESTAMP_NTZ DEFAULT CURRENT_TIMESTAMP(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

-- finops.business.events (pseudonymised business events)
CREATE TABLE IF NOT EXISTS finops_staging.business_events_raw (
    record_content   VARIANT,
    record_metadata  VARIANT,
    source_topic     STRING        NOT NULL,
    source_partition NUMBER(10, 0) NOT NULL,
    source_offset    NUMBER(20, 0) NOT NULL,
    loaded_at        TIMESTAMP_NTZ DEFAULT CURRENT_TIMESTAMP(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

-- finops.resource.events (utilisation samples)
CREATE TABLE IF NOT EXISTS finops_staging.resource_events_raw (
    record_content   VARIANT,
    record_metadata  VARIANT,
    source_topic     STRING        NOT NULL,
    source_partition NUMBER(10, 0) NOT NULL,
    source_offset    NUMBER(20, 0) NOT NULL,
    loaded_at        TIMESTAMP_NTZ DEFAULT CURRENT_TIMESTAMP(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

-- finops.cost.anomalies
CREATE TABLE IF NOT EXISTS finops_staging.cost_anomalies_raw (
    record_content   VARIANT,
    record_metadata  VARIANT,
    source_topic     STRING        NOT NULL,
    source_partition NUMBER(10, 0) NOT NULL,
    source_offset    NUMBER(20, 0) NOT NULL,
    loaded_at        TIMESTAMP_NTZ DEFAULT CURRENT_TIMESTAMP(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

-- finops.cost.aggregations
CREATE TABLE IF NOT EXISTS finops_staging.cost_aggregations_raw (
    record_content   VARIANT,
    record_metadata  VARIANT,
    source_topic     STRING        NOT NULL,
    source_partition NUMBER(10, 0) NOT NULL,
    source_offset    NUMBER(20, 0) NOT NULL,
    loaded_at        TIMESTAMP_NTZ DEFAULT CURRENT_TIMESTAMP(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

-- finops.roi.calculations
CREATE TABLE IF NOT EXISTS finops_staging.roi_calculations_raw (
    record_content   VARIANT,
    record_metadata  VARIANT,
    source_topic     STRING        NOT NULL,
    source_partition NUMBER(10, 0) NOT NULL,
    source_offset    NUMBER(20, 0) NOT NULL,
    loaded_at        TIMESTAMP_NTZ DEFAULT CURRENT_TIMESTAMP(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

-- finops.optimization.recommendations
CREATE TABLE IF NOT EXISTS finops_staging.recommendations_raw (
    record_content   VARIANT,
    record_metadata  VARIANT,
    source_topic     STRING        NOT NULL,
    source_partition NUMBER(10, 0) NOT NULL,
    source_offset    NUMBER(20, 0) NOT NULL,
    loaded_at        TIMESTAMP_NTZ DEFAULT CURRENT_TIMESTAMP(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

-- finops.budget.alerts
CREATE TABLE IF NOT EXISTS finops_staging.budget_alerts_raw (
    record_content   VARIANT,
    record_metadata  VARIANT,
    source_topic     STRING        NOT NULL,
    source_partition NUMBER(10, 0) NOT NULL,
    source_offset    NUMBER(20, 0) NOT NULL,
    loaded_at        TIMESTAMP_NTZ DEFAULT CURRENT_TIMESTAMP(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

-- finops.actions
CREATE TABLE IF NOT EXISTS finops_staging.actions_raw (
    record_content   VARIANT,
    record_metadata  VARIANT,
    source_topic     STRING        NOT NULL,
    source_partition NUMBER(10, 0) NOT NULL,
    source_offset    NUMBER(20, 0) NOT NULL,
    loaded_at        TIMESTAMP_NTZ DEFAULT CURRENT_TIMESTAMP(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

-- finops.deadletter
CREATE TABLE IF NOT EXISTS finops_staging.deadletter_raw (
    record_content   VARIANT,
    record_metadata  VARIANT,
    source_topic     STRING        NOT NULL,
    source_partition NUMBER(10, 0) NOT NULL,
    source_offset    NUMBER(20, 0) NOT NULL,
    loaded_at        TIMESTAMP_NTZ DEFAULT CURRENT_TIMESTAMP(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);
