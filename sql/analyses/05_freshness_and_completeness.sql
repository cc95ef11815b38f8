-- How fresh and complete the store is, minute by minute, over the last 2 hours of data.
--
-- Run: adclick sql -f sql/analyses/05_freshness_and_completeness.sql
-- complete = the job's window for the minute fired (the minute is in top_ads_minute); the API
-- ends minutes=M ranges at the newest complete minute. A minute with counts but not complete
-- is still open (or its top-N was lost); a complete minute without counts had no clicks.
-- lag_s is how far that minute's end is behind the store's newest minute.
WITH (SELECT max(minute) FROM ad_click_counts) AS latest
SELECT
    minute,
    c.ads AS ads_with_clicks,
    c.clicks AS clicks,
    c.late_rows AS late_correction_rows,
    t.top_rows > 0 AS complete,
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
    SELECT minute, count() AS top_rows
    FROM top_ads_minute FINAL
    WHERE minute > latest - INTERVAL 2 HOUR
    GROUP BY minute
) AS t USING (minute)
ORDER BY minute
