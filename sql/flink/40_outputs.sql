-- Everything the job publishes. Each INSERT goes to a transactional (exactly-once) Kafka sink.

-- Per-minute counts: one row per window key, plus one correction row per late click.
-- ClickHouse sums them, so a late click adds to its minute exactly once.
-- The correction rows carry the same columns as the too-late rows below on purpose: with equal
-- projections the planner reuses ONE dedup and classifier for every sink. With different ones it
-- plans a second dedup whose own watermark could class a click on time there and late here, and
-- count it twice (tests/test_job_plan.py guards this).
INSERT INTO counts_sink
SELECT window_start, ad_id, country, device, clicks, FALSE, CAST(NULL AS STRING),
       CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS BIGINT),
       CAST(NULL AS TIMESTAMP_LTZ(3))
FROM minute_counts
UNION ALL
SELECT minute_start, ad_id, country, device, CAST(1 AS BIGINT), TRUE, click_id,
       user_id, ip, click_ts_ms, watermark_ts
FROM clicks_timed
WHERE timeliness = 'late';

-- The brief's reduce node: merge the local top lists into the global top-N of each minute.
INSERT INTO top_sink
-- A group window (not a window TVF) so the Python aggregate fires once, when the watermark
-- closes the minute, and its output stays insert-only.
SELECT TUMBLE_START(minute_time, INTERVAL '1' MINUTE), merge_top_n(ad_id, clicks)
FROM local_top_ads
GROUP BY TUMBLE(minute_time, INTERVAL '1' MINUTE);

-- Too late to count: kept, with the watermark that excluded it.
INSERT INTO late_sink
SELECT minute_start, click_id, ad_id, click_ts_ms, user_id, ip, country, device, watermark_ts
FROM clicks_timed
WHERE timeliness = 'too_late';

-- Malformed input: the reason and the original bytes.
INSERT INTO dlq_sink
SELECT reject_reason, TO_BASE64(payload), kafka_partition, kafka_offset, kafka_timestamp
FROM clicks_rejected;
