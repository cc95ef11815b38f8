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
-- allowed lateness), from the one classifier and labelling every count comes from, each with
-- its label as it was decided (a revision is not a new click: a conversion of a click a late
-- click made invalid keeps the label the click had). A too-late click was not counted, so its
-- conversions are not either. A conversion of an invalid click is attributed under that label
-- and counted apart: CVR counts those of valid clicks.
-- The join keeps each of these rows for days, so they hold only what an attribution needs.
CREATE TEMPORARY VIEW clicks_counted AS
SELECT event_id AS click_id, ad_id, country, device, traffic, event_ts_ms AS click_ts_ms
FROM clicks_labeled
WHERE replaces IS NULL;

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
-- it takes exactly the six columns of clicks_counted.
CREATE TEMPORARY VIEW conversions_attributed AS
SELECT /*+ STATE_TTL('c' = '${conversion_wait_s}s', 'k' = '${click_retention_s}s') */
       c.conversion_minute, k.ad_id, k.country, k.device, k.traffic, c.conversion_id, c.click_id,
       c.type,
       c.value_micros, c.conversion_ts_ms, k.click_ts_ms,
       CASE
         WHEN c.conversion_ts_ms < k.click_ts_ms THEN 'before_click'
         WHEN c.conversion_ts_ms >= k.click_ts_ms + CAST(${attribution_window_s} AS BIGINT) * 1000
           THEN 'outside_window'
         ELSE 'attributed'
       END AS outcome
FROM conversions_unique AS c
JOIN clicks_counted AS k ON c.click_id = k.click_id;
