-- adclick's ClickHouse schema. Applied at every start (CREATE ... IF NOT EXISTS), by
-- adclick.store.apply_schema, in file order. {db} is the database name (an identifier that
-- adclick.store checks), the only text substituted.
--
-- Exactly once: the Flink job writes its topics transactionally, and the loader (adclick.ingest)
-- may replay a batch after a crash. Every table is a ReplacingMergeTree whose sorting key ends in
-- the row's Kafka coordinates (or a natural id), so a replayed row collapses into its twin;
-- queries read with FINAL. Partitions are days: the unit of retention (TTL) and of backfill.

CREATE DATABASE IF NOT EXISTS {db};

-- Per-minute click and impression counts by ad and attributes. A minute's count is the sum of
-- its rows: one row per tumbling-window result plus one correction row per late click or
-- impression (late = 1; click_id then holds the late event's id, a click's or an impression's).
-- The key starts with minute so that both API queries read only the minutes they ask for;
-- ad_id second lets API 1 skip granules of other ads inside those minutes.
CREATE TABLE IF NOT EXISTS {db}.ad_click_counts
(
    minute      DateTime('UTC'),
    ad_id       String,
    country     LowCardinality(String),
    device      LowCardinality(String),
    clicks      UInt64,
    impressions UInt64,
    late        UInt8,
    click_id    String,
    src_partition UInt32,
    src_offset  UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, ad_id, country, device, src_partition, src_offset);

-- The job's per-minute top-N (pushed once per minute when the window closes). A minute present
-- here is complete: its window fired. API 2 does not read it (it ranks from ad_click_counts).
CREATE TABLE IF NOT EXISTS {db}.top_ads_minute
(
    minute      DateTime('UTC'),
    rank        UInt16,
    ad_id       String,
    clicks      UInt64,
    src_offset  UInt64
)
ENGINE = ReplacingMergeTree(src_offset)
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, rank);

-- Clicks that came later than the allowed lateness: not counted, kept and queryable.
CREATE TABLE IF NOT EXISTS {db}.late_clicks
(
    minute      DateTime('UTC'),
    click_id    String,
    ad_id       String,
    country     LowCardinality(String),
    device      LowCardinality(String),
    user_id     String,
    ip          String,
    click_ts    DateTime64(3, 'UTC'),
    watermark   DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, ad_id, click_id);

-- Events the job rejected, with the event type (click, impression, conversion: the input topic
-- it came from), the reason and the original bytes (base64).
CREATE TABLE IF NOT EXISTS {db}.dead_letters
(
    event           LowCardinality(String),
    received_at     DateTime64(3, 'UTC'),
    reason          LowCardinality(String),
    payload_base64  String,
    source_partition UInt32,
    source_offset   UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(received_at)
ORDER BY (event, source_partition, source_offset);

-- Every valid raw click as it arrived (duplicates included, one row per Kafka record), for
-- ad-hoc SQL and for reconciliation, which recounts distinct click_ids independently of Flink.
CREATE TABLE IF NOT EXISTS {db}.raw_clicks
(
    minute      DateTime('UTC'),
    click_ts    DateTime64(3, 'UTC'),
    click_id    String,
    ad_id       String,
    user_id     String,
    ip          String,
    country     LowCardinality(String),
    device      LowCardinality(String),
    src_partition UInt32,
    src_offset  UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (minute, ad_id, click_id, src_partition, src_offset);
