-- API 2's hourly rollup: each ad's clicks and impressions per hour and traffic label (valid, or
-- the reason it is not; sql/clickhouse/008_*.sql), so that ranking the ads over
-- a day reads 24 rows per ad instead of every minute's rows of every country and device.
-- adclick.rollup keeps it: the loader marks an hour changed (changed_at) before it stores count
-- rows of that hour, and computes an hour's rollup from ad_click_counts FINAL once the hour has
-- been quiet for a while (computed_at). An hour's rollup is used only while computed_at is
-- after changed_at, so a late correction or a replayed batch sends API 2 back to the minutes
-- until the hour is computed again: never a stale sum.
CREATE TABLE IF NOT EXISTS {db}.ad_counts_hourly
(
    hour        DateTime('UTC'),
    ad_id       String,
    traffic     LowCardinality(String),
    clicks      Int64,
    impressions UInt64,
    computed_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMMDD(hour)
ORDER BY (hour, ad_id, traffic);

-- Per hour: when its count rows last changed and when its rollup was last computed.
CREATE TABLE IF NOT EXISTS {db}.ad_counts_hourly_state
(
    hour        DateTime('UTC'),
    changed_at  SimpleAggregateFunction(max, DateTime64(6, 'UTC')),
    computed_at SimpleAggregateFunction(max, DateTime64(6, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY hour;
