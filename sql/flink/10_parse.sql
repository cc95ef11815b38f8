-- The source's 'adclick-click' format (udfs/java/.../ClickParser.java) has already parsed and
-- validated each record, once, in the JVM: a valid click has its fields, a rejected record only
-- its reason and original bytes. Here the two are told apart.
CREATE TEMPORARY VIEW clicks_valid AS
SELECT click_id, ad_id, click_ts AS click_ts_ms, user_id, ip, country, device, proc_time,
       event_time, click_key_hi, click_key_lo
FROM clicks_raw
WHERE reject_reason IS NULL;

CREATE TEMPORARY VIEW clicks_rejected AS
SELECT reject_reason, payload, kafka_partition, kafka_offset, kafka_timestamp
FROM clicks_raw
WHERE reject_reason IS NOT NULL;
