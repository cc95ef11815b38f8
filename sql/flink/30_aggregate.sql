-- The brief's aggregate nodes: 1-minute event-time tumbling windows, keyed by ad, attributes
-- and traffic label, counting clicks and impressions side by side (one row per key and minute
-- carries both, so a CTR is one row's two numbers). The planner splits this into a local
-- (pre-shuffle) and a global aggregate, so a hot ad is pre-counted on every subtask before the
-- keyBy. A click's label comes with it when its minute closes at the labelling (25_*.sql),
-- before the watermark that fires this window: it is still on time here.
-- The conditions on event_id, user_id and ip, true of every counted event, make the window
-- read the columns the late rows read: with fewer, the planner plans the impressions' branch
-- a second dedup, whose own watermark could class an impression otherwise than the
-- corrections did (tests/test_job_plan.py).
CREATE TEMPORARY VIEW minute_counts AS
SELECT window_start, window_end, window_time, ad_id, country, device, traffic,
       COUNT(*) FILTER (WHERE event = 'click') AS clicks,
       COUNT(*) FILTER (WHERE event = 'impression') AS impressions
FROM TABLE(TUMBLE(TABLE events_labeled, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
WHERE timeliness = 'on_time' AND replaces IS NULL
  AND CHAR_LENGTH(event_id) > 0 AND CHAR_LENGTH(user_id) > 0 AND CHAR_LENGTH(ip) > 0
GROUP BY window_start, window_end, window_time, ad_id, country, device, traffic;

-- Per-ad valid click totals of each minute, cascaded from the window above (no second pass
-- over clicks); the top-N ranks valid clicks, so keys without them stay out of it. The
-- label is read as a value, not filtered on: a condition on it, a key of the window, would
-- be pushed below the window and plan a second one. The condition
-- on impressions, true of every row, makes this branch read the same columns of the window as
-- the counts sink: with only clicks, the planner gave it a window aggregation of its own, a
-- second pass over every event (tests/test_job_plan.py).
CREATE TEMPORARY VIEW minute_counts_slim AS
SELECT ad_id, CASE WHEN traffic = 'valid' THEN clicks ELSE 0 END AS clicks,
       window_time AS minute_time
FROM minute_counts
WHERE clicks > 0 AND impressions >= 0;

CREATE TEMPORARY VIEW ad_minute_totals AS
SELECT window_start, window_end, window_time, ad_id, SUM(clicks) AS clicks,
       MOD(ABS(HASH_CODE(ad_id)), ${top_n_buckets}) AS bucket
FROM TABLE(TUMBLE(TABLE minute_counts_slim, DESCRIPTOR(minute_time), INTERVAL '1' MINUTE))
GROUP BY window_start, window_end, window_time, ad_id;

-- Local top-N: each bucket of ads ranks its own ads in parallel (no single hot subtask).
CREATE TEMPORARY VIEW local_top_ads AS
SELECT ad_id, clicks, window_time AS minute_time
FROM (
  SELECT *, ROW_NUMBER() OVER (
    PARTITION BY window_start, window_end, bucket ORDER BY clicks DESC, ad_id ASC) AS rank_in_bucket
  FROM ad_minute_totals
  WHERE clicks > 0
)
WHERE rank_in_bucket <= ${top_n};
