-- The job's clock (job_clock, see clock_descriptor in the job) joins the events here: its rows
-- never pass the filter, but its watermark (wall clock minus the watermark delay) and its
-- never-idle status do, so the dedup subtasks and everything after them never see an idle input.
CREATE TEMPORARY VIEW events_and_clock AS
SELECT event, event_id, ad_id, event_ts_ms, user_id, ip, country, device, proc_time, event_time,
       key_hi, key_lo, traffic
FROM events_valid
UNION ALL
SELECT CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS BIGINT),
       CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING),
       CAST(NULL AS STRING), proc_time, event_time, CAST(NULL AS BIGINT),
       CAST(NULL AS BIGINT), CAST(NULL AS STRING)
FROM job_clock
WHERE beat < 0;

-- Exactly one row per event: the first seen of a click_id (of an impression_id) wins. Keeping
-- the first row on processing time is append-only and keeps event_time a rowtime attribute; an
-- id is remembered for the dedup horizon (table.exec.state.ttl), so memory stays bounded. The
-- key is the 128-bit fingerprint of the id (two BIGINTs, from the source format): cheaper to
-- hash, compare and keep than the string, and equal only for equal ids (EventKey.java says how
-- surely); and the event type, since a click and an impression may share an id.
-- This says what the dedup does; the job runs udfs/java's CompactDeduplicateOperator in place
-- of the planner's (attach_job in the job): same keyBy, input and output, 16 bytes per id.
CREATE TEMPORARY VIEW events_unique AS
SELECT event, event_id, ad_id, event_ts_ms, user_id, ip, country, device, event_time, traffic
FROM (
  SELECT *, ROW_NUMBER() OVER (
    PARTITION BY key_hi, key_lo, event ORDER BY proc_time ASC) AS row_num
  FROM events_and_clock
)
WHERE row_num = 1;

-- Route each unique event by how late it is against the watermark seen here.
-- The window operator downstream never has a higher watermark than this one, so an event
-- classed on_time is never dropped by the window: nothing is lost between the two. After a
-- restore too: the window restores its watermark, and the dedup passes its own restored one
-- on before any row (CompactDeduplicateOperator), so no row is classed against none.
--   on_time   its minute has not fired yet: counted by the tumbling window
--   late      its minute fired less than the allowed lateness ago: counted as a correction row
--   too_late  beyond the allowed lateness: not counted, kept in the late-events topic
CREATE TEMPORARY VIEW events_timed AS
SELECT *,
  CASE
    WHEN watermark_ts IS NULL OR watermark_ts < minute_start + INTERVAL '59.999' SECOND THEN 'on_time'
    WHEN watermark_ts < TIMESTAMPADD(SECOND, ${allowed_lateness_s},
                                     minute_start + INTERVAL '59.999' SECOND) THEN 'late'
    ELSE 'too_late'
  END AS timeliness
FROM (
  -- minute_start from the BIGINT, not FLOOR(event_time): a plain timestamp, not a rowtime.
  SELECT *, CURRENT_WATERMARK(event_time) AS watermark_ts,
         TO_TIMESTAMP_LTZ(event_ts_ms - MOD(event_ts_ms, 60000), 3) AS minute_start
  FROM events_unique
);
