-- The sources' 'adclick-event' format (udfs/java/.../EventParser.java) has already parsed and
-- validated each record, once, in the JVM: a valid event has its fields, a rejected record only
-- its reason and original bytes. Here the two are told apart.
--
-- Clicks and impressions have the same shape (an id, the ad, the event time, who saw or clicked
-- it and the two attributes), so from here on they travel as one stream of events, told apart
-- by `event`: one dedup, one classifier and one window count both, and every guarantee the
-- click path has (exactly once, late corrections, too-late kept) holds for impressions too.
-- `traffic` is the format's general invalid-traffic label (a known crawler's user agent, a
-- data-center ip), or null: the rules that need no other event are decided there, once.
CREATE TEMPORARY VIEW events_valid AS
SELECT 'click' AS event, click_id AS event_id, ad_id, click_ts AS event_ts_ms, user_id, ip,
       country, device, proc_time, event_time, key_hi, key_lo, traffic
FROM clicks_raw
WHERE reject_reason IS NULL
UNION ALL
SELECT 'impression', impression_id, ad_id, impression_ts, user_id, ip, country, device,
       proc_time, event_time, key_hi, key_lo, traffic
FROM impressions_raw
WHERE reject_reason IS NULL;

-- Conversions are not counted in windows: each one is attributed to its click (30_*.sql).
CREATE TEMPORARY VIEW conversions_valid AS
SELECT conversion_id, click_id, conversion_ts AS conversion_ts_ms, type, value_micros,
       proc_time, key_hi, key_lo
FROM conversions_raw
WHERE reject_reason IS NULL;

CREATE TEMPORARY VIEW events_rejected AS
SELECT 'click' AS event, reject_reason, payload, kafka_partition, kafka_offset, kafka_timestamp
FROM clicks_raw
WHERE reject_reason IS NOT NULL
UNION ALL
SELECT 'impression', reject_reason, payload, kafka_partition, kafka_offset, kafka_timestamp
FROM impressions_raw
WHERE reject_reason IS NOT NULL
UNION ALL
SELECT 'conversion', reject_reason, payload, kafka_partition, kafka_offset, kafka_timestamp
FROM conversions_raw
WHERE reject_reason IS NOT NULL;
