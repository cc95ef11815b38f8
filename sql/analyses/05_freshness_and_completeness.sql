-- How fresh and complete the store is, minute by minute, over the last 2 hours of data.
--
-- Run: adclick sql -f sql/analyses/05_freshness_and_completeness.sql
-- complete = the job's watermark passed the minute (it is in minutes_closed, or, in a store
-- from before that table, in top_ads_minute); the API ends minutes=M ranges at the newest
-- complete minute. A minute with counts but not complete is still open; a complete minute
-- without counts had no clicks.
-- lag_s is how far that minute's end is behind the store's newest minute.
WITH (SELECT max(minute) FROM ad_click_counts) AS latest
SELECT
    minute,
    c.ads AS ads_with_clicks,
    c.clicks AS clicks,
    c.late_rows AS late_correction_rows,
    t.marks > 0 AS complete,
    dateDiff('second', minute + INTERVAL 1 MINUTE, latest) AS lag_s
FROM
(
    SELECT minute, uniqExact(ad_id) AS ads, sum(clicks) AS clicks, countIf(late = 1) AS late_rows
    FROM ad_click_counts FINAL
    WHERE minute > latest - INTERVAL 2 HOUR
    GROUP BY minute
) AS c
FULL OUTER JOIN
(
    SELECT minute, count() AS marks
    FROM (SELECT minute FROM minutes_closed UNION ALL SELECT minute FROM top_ads_minute)
    WHERE minute > latest - INTERVAL 2 HOUR
    GROUP BY minute
) AS t USING (minute)
ORDER BY minute
