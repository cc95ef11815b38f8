-- Impressions and conversions (CTR = clicks / impressions, CVR = conversions / clicks).
-- Applied after 002 by adclick.store.apply_schema; {db} is the database name.

-- A store created before impressions: its counts gain the column (0 in the older rows, which
-- is what they were).
ALTER TABLE {db}.ad_click_counts ADD COLUMN IF NOT EXISTS impressions UInt64 AFTER clicks;

-- Impressions that came later than the allowed lateness: not counted, kept and queryable.
CREATE TABLE IF NOT EXISTS {db}.late_impressions
(
    minute        DateTime('UTC'),
    impression_id String,
    ad_id         String,
    country       LowCardinality(String),
    device        LowCardinality(String),
    user_id       String,
    ip            String,
    impression_ts DateTime64(3, 'UTC'),
    watermark     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, ad_id, impression_id);

-- Every unique valid conversion, in the minute of its conversion_ts, attributed or not.
CREATE TABLE IF NOT EXISTS {db}.conversions
(
    minute        DateTime('UTC'),
    conversion_id String,
    click_id      String,
    type          LowCardinality(String),
    value_micros  Nullable(UInt64),
    conversion_ts DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, conversion_id);

-- Each conversion that met its counted click, with the click's ad and attributes and the
-- outcome: 'attributed' (counted: within the attribution window after the click),
-- 'before_click' or 'outside_window' (not counted). Sorted like the counts, so the metrics
-- read only the minutes (and ad) they ask for.
CREATE TABLE IF NOT EXISTS {db}.conversion_attributions
(
    minute        DateTime('UTC'),
    ad_id         String,
    country       LowCardinality(String),
    device        LowCardinality(String),
    conversion_id String,
    click_id      String,
    type          LowCardinality(String),
    value_micros  Nullable(UInt64),
    conversion_ts DateTime64(3, 'UTC'),
    click_ts      DateTime64(3, 'UTC'),
    outcome       LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, ad_id, country, device, conversion_id);

-- The conversions that do not count, with the reason: the view unattributed_conversions
-- (sql/clickhouse/010_*.sql, over the attributions as published).

-- Every valid raw impression and conversion as it arrived (duplicates included, one row per
-- Kafka record), like raw_clicks: for ad-hoc SQL and for reconciliation, which recounts
-- distinct impression_ids, and attributes the conversions to the raw clicks, independently of
-- Flink.
CREATE TABLE IF NOT EXISTS {db}.raw_impressions
(
    minute        DateTime('UTC'),
    impression_ts DateTime64(3, 'UTC'),
    impression_id String,
    ad_id         String,
    user_id       String,
    ip            String,
    country       LowCardinality(String),
    device        LowCardinality(String),
    src_partition UInt32,
    src_offset    UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, ad_id, impression_id, src_partition, src_offset);

CREATE TABLE IF NOT EXISTS {db}.raw_conversions
(
    minute        DateTime('UTC'),
    conversion_ts DateTime64(3, 'UTC'),
    conversion_id String,
    click_id      String,
    type          LowCardinality(String),
    value_micros  Nullable(UInt64),
    src_partition UInt32,
    src_offset    UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, conversion_id, src_partition, src_offset);
