-- Clicks of one ad by hour and country, over the last 24 hours of data.
--
-- Run: adclick sql -f sql/analyses/01_clicks_by_hour_and_country.sql
-- Tables are unqualified: POST /v1/sql runs in the API's database.
-- The ad is the most clicked one over that day unless you replace the scalar subquery in
-- target_ad with a literal such as 'ad-000042'. "Last 24 hours" ends at the newest minute in
-- the store rather than now(), so the analysis also works on a replayed or historical store.
-- published_click_counts: FINAL collapses rows the loader replayed, late = 1 rows are
-- corrections and are counted, and a recalculation counts while it is in force.
-- Billable clicks only (traffic = 'valid'); drop that condition to see invalid traffic too.
WITH
    (SELECT max(minute) FROM ad_click_counts) AS latest,
    (
        SELECT ad_id
        FROM published_click_counts
        WHERE minute > latest - INTERVAL 24 HOUR AND traffic = 'valid'
        GROUP BY ad_id
        ORDER BY sum(clicks) DESC, ad_id
        LIMIT 1
    ) AS target_ad
SELECT
    target_ad AS ad,  -- not "AS ad_id": ClickHouse would use the alias in WHERE
    toStartOfHour(minute) AS hour,
    country,
    sum(clicks) AS total_clicks,
    sumIf(clicks, late = 1) AS of_which_late_corrections
FROM published_click_counts
WHERE ad_id = target_ad
  AND minute > latest - INTERVAL 24 HOUR
  AND traffic = 'valid'
GROUP BY hour, country
ORDER BY hour, total_clicks DESC, country
