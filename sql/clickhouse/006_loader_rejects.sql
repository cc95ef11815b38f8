-- The loader's dead letters (adclick.ingest). Applied after 005 by adclick.store.apply_schema;
-- {db} is the database name.
--
-- A record of the job's output topics that the loader cannot convert into its table's row(s)
-- (not JSON, a field missing or of the wrong kind) is kept here rather than skipped, with where
-- it came from, the table it was meant for, why, and its bytes as text (invalid UTF-8 replaced,
-- the first 64 KiB). It goes in with the batch's other rows, before the offsets are committed;
-- received_at is the record's own Kafka timestamp, so a replayed batch's row lands in the same
-- partition and collapses into its twin by (topic, partition, offset).
CREATE TABLE IF NOT EXISTS {db}.loader_rejects
(
    topic       String,
    partition   UInt32,
    offset      Int64,
    table       String,
    reason      String,
    payload     String,
    received_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(received_at)
ORDER BY (topic, partition, offset);
