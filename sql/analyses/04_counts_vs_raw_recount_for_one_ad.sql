-- One ad's per-minute counts next to an independent recount from the raw clicks.
--
-- Run: adclick sql -f sql/analyses/04_counts_vs_raw_recount_for_one_ad.sql
-- The ad is the most clicked one in the store unless you replace target_ad's subquery with a
-- literal such as 'ad-000042'.
-- raw_clicks holds every valid record as it arrived, duplicates included, so the recount is
-- the number of distinct click_ids. Each of them must be either counted by the job (in
-- ad_click_counts, late corrections included) or set aside as too late (late_clicks):
-- missing = raw_unique - counted - too_late is 0 in a healthy minute. The youngest minutes can
-- differ while late corrections may still arrive (up to the allowed lateness).
WITH (
    SELECT ad_id FROM published_click_counts
    GROUP BY ad_id ORDER BY sum(clicks) DESC, ad_id LIMIT 1
) AS target_ad
SELECT
    minute,
    sum(c) AS counted,
    sum(r) AS raw_unique,
    sum(t) AS too_late,
    toInt64(raw_unique) - toInt64(counted) - toInt64(too_late) AS missing
FROM
(
    SELECT minute, sum(clicks) AS c, 0 AS r, 0 AS t
    FROM published_click_counts
    WHERE ad_id = target_ad
    GROUP BY minute
    UNION ALL
    SELECT minute, 0, uniqExact(click_id), 0
    FROM raw_clicks
    WHERE ad_id = target_ad
    GROUP BY minute
    UNION ALL
    SELECT minute, 0, 0, uniqExact(click_id)
    FROM late_clicks FINAL
    WHERE ad_id = target_ad
    GROUP BY minute
)
GROUP BY minute
ORDER BY minute
