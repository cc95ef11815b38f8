-- Conversions, attributed to the clicks they name (CVR = attributed conversions / clicks).
--
-- Exactly one row per conversion_id: the first seen wins, as for clicks (keyed by the
-- fingerprint of the id, remembered for the dedup horizon; the compact dedup runs it too).
CREATE TEMPORARY VIEW conversions_unique AS
SELECT conversion_id, click_id, conversion_ts_ms, type, value_micros,
       TO_TIMESTAMP_LTZ(conversion_ts_ms - MOD(conversion_ts_ms, 60000), 3) AS conversion_minute
FROM (
  SELECT *, ROW_NUMBER() OVER (
    PARTITION BY key_hi, key_lo ORDER BY proc_time ASC) AS row_num
  FROM conversions_valid
)
WHERE row_num = 1;

-- The clicks a conversion may be attributed to: the counted ones (on time, or late within the
-- allowed lateness), from the one classifier every count comes from. A too-late click was not
-- counted, so its conversions are not either.
-- The join keeps each of these rows for days, so they hold only what an attribution needs. But
-- the branch must read every column the late sinks read, or the planner plans it a second
-- dedup whose own watermark could class a click otherwise than the counts did
-- (tests/test_job_plan.py): the conditions on user_id and ip, true of every valid click, make
-- it read them without keeping them.
CREATE TEMPORARY VIEW clicks_counted AS
SELECT event_id AS click_id, ad_id, country, device, event_ts_ms AS click_ts_ms
FROM events_timed
WHERE event = 'click' AND timeliness <> 'too_late'
  AND CHAR_LENGTH(user_id) > 0 AND CHAR_LENGTH(ip) > 0;

-- Each unique conversion meets its click, in either order: a regular join on click_id whose
-- state keeps each counted click for the attribution window (plus the conversion wait), and
-- each conversion for the conversion wait (a conversion may reach Kafka before its click; one
-- whose click is not there by then stays unattributed). Both sides are append-only, so the
-- join's output is too. The outcome decides whether it counts:
--   attributed      the conversion came within the attribution window after its click
--   before_click    its conversion_ts is earlier than the click's click_ts
--   outside_window  it came after the window
-- A conversion no counted click ever met is unattributed too (the store's view
-- unattributed_conversions, from the conversions sink).
-- This says what the attribution does; the job runs udfs/java's CompactAttributionOperator in
-- place of the planner's join (attach_job in the job): same keyBy, inputs and output, 24 bytes
-- per click instead of the row, and the two times of the hint in event time (the clicks'
-- watermark) instead of on the wall clock. It rebuilds the click's side from those 24 bytes, so
-- it takes exactly the five columns of clicks_counted.
CREATE TEMPORARY VIEW conversions_attributed AS
SELECT /*+ STATE_TTL('c' = '${conversion_wait_s}s', 'k' = '${click_retention_s}s') */
       c.conversion_minute, k.ad_id, k.country, k.device, c.conversion_id, c.click_id, c.type,
       c.value_micros, c.conversion_ts_ms, k.click_ts_ms,
       CASE
         WHEN c.conversion_ts_ms < k.click_ts_ms THEN 'before_click'
         WHEN c.conversion_ts_ms >= k.click_ts_ms + CAST(${attribution_window_s} AS BIGINT) * 1000
           THEN 'outside_window'
         ELSE 'attributed'
       END AS outcome
FROM conversions_unique AS c
JOIN clicks_counted AS k ON c.click_id = k.click_id;
