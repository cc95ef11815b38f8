-- The brief's aggregate nodes: 1-minute event-time tumbling windows, keyed by ad and attributes,
-- counting clicks and impressions side by side (one row per key and minute carries both, so a
-- CTR is one row's two numbers). The planner splits this into a local (pre-shuffle) and a
-- global aggregate, so a hot ad is pre-counted on every subtask before the keyBy.
CREATE TEMPORARY VIEW minute_counts AS
SELECT window_start, window_end, window_time, ad_id, country, device,
       COUNT(*) FILTER (WHERE event = 'click') AS clicks,
       COUNT(*) FILTER (WHERE event = 'impression') AS impressions
FROM TABLE(TUMBLE(TABLE events_timed, DESCRIPTOR(event_time), INTERVAL '1' MINUTE))
WHERE timeliness = 'on_time'
GROUP BY window_start, window_end, window_time, ad_id, country, device;

-- Per-ad click totals of each minute, cascaded from the window above (no second pass over
-- clicks); the top-N ranks clicks, so keys with impressions only stay out of it. The condition
-- on impressions, true of every row, makes this branch read the same columns of the window as
-- the counts sink: with only clicks, the planner gave it a window aggregation of its own, a
-- second pass over every event (tests/test_job_plan.py).
CREATE TEMPORARY VIEW minute_counts_slim AS
SELECT ad_id, clicks, window_time AS minute_time FROM minute_counts
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
)
WHERE rank_in_bucket <= ${top_n};
