-- Everything the job publishes. Each INSERT goes to a transactional (exactly-once) Kafka sink.

-- Per-minute counts: one row per window key (clicks and impressions by label), plus one
-- correction row per late click or impression, and two per revision (a late click changed the
-- label of a click decided before it: -1 under the old label, +1 under the new). ClickHouse
-- sums them, so a late event adds to its minute exactly once, under its final label.
-- The correction rows carry the same columns as the too-late rows below on purpose: with equal
-- projections the planner reuses ONE dedup and classifier for every sink. With different ones it
-- plans a second dedup whose own watermark could class an event on time there and late here,
-- and count it twice (tests/test_job_plan.py guards this).
INSERT INTO counts_sink
SELECT window_start, ad_id, country, device, traffic, clicks, impressions, FALSE,
       CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING),
       CAST(NULL AS BIGINT), CAST(NULL AS TIMESTAMP_LTZ(3))
FROM minute_counts
UNION ALL
SELECT minute_start, ad_id, country, device, traffic,
       CAST(CASE WHEN event = 'click' THEN 1 ELSE 0 END AS BIGINT),
       CAST(CASE WHEN event = 'impression' THEN 1 ELSE 0 END AS BIGINT), TRUE, event, event_id,
       user_id, ip, event_ts_ms, watermark_ts
FROM events_labeled
WHERE timeliness = 'late' OR replaces IS NOT NULL
UNION ALL
SELECT minute_start, ad_id, country, device, replaces, CAST(-1 AS BIGINT), CAST(0 AS BIGINT),
       TRUE, event, event_id, user_id, ip, event_ts_ms, watermark_ts
FROM events_labeled
WHERE replaces IS NOT NULL;

-- The brief's reduce node: merge the local top lists into the global top-N of each minute.
INSERT INTO top_sink
-- A group window (not a window TVF) so the Python aggregate fires once, when the watermark
-- closes the minute, and its output stays insert-only.
SELECT TUMBLE_START(minute_time, INTERVAL '1' MINUTE), merge_top_n(ad_id, clicks)
FROM local_top_ads
GROUP BY TUMBLE(minute_time, INTERVAL '1' MINUTE);

-- Too late to count: kept, with the watermark that excluded it. The condition on traffic
-- (true of every event: null, or a reason) makes this branch read the column the counted
-- events' branches read, so that the planner reuses their one dedup.
INSERT INTO late_sink
SELECT minute_start, event, event_id, ad_id, event_ts_ms, user_id, ip, country, device,
       watermark_ts
FROM events_timed
WHERE timeliness = 'too_late' AND (traffic IS NULL OR CHAR_LENGTH(traffic) > 0);

-- Malformed input: the event type, the reason and the original bytes.
INSERT INTO dlq_sink
SELECT event, reject_reason, TO_BASE64(payload), kafka_partition, kafka_offset, kafka_timestamp
FROM events_rejected;

-- Every unique conversion (the store tells the unattributed ones from these and the next).
INSERT INTO conversions_unique_sink
SELECT conversion_minute, conversion_id, click_id, type, value_micros, conversion_ts_ms
FROM conversions_unique;

-- Each conversion that met its counted click, with the outcome (only 'attributed' counts).
INSERT INTO attributions_sink
SELECT conversion_minute, ad_id, country, device, traffic, conversion_id, click_id, type,
       value_micros, conversion_ts_ms, click_ts_ms, outcome
FROM conversions_attributed;
