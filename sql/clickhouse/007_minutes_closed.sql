-- The minutes the job's watermark has passed (topic ad-minutes-closed, sql/flink/50_*.sql),
-- one row each, with or without clicks: what "complete" and freshness follow. A minute had a
-- top_ads_minute row only if it had clicks, so an empty minute never completed before; the
-- API takes the newest of both tables (a store from before has only the top-N's). A replayed
-- or re-emitted minute collapses with its twin (the key is the minute).
CREATE TABLE IF NOT EXISTS {db}.minutes_closed
(
    minute        DateTime('UTC'),
    src_partition UInt32,
    src_offset    UInt64
)
ENGINE = ReplacingMergeTree(src_offset)
PARTITION BY toYYYYMMDD(minute)
ORDER BY minute;
