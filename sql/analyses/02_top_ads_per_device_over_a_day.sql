-- The 10 most clicked ads on each device over one UTC day (the newest day in the store).
--
-- Run: adclick sql -f sql/analyses/02_top_ads_per_device_over_a_day.sql
-- To pick a day, replace the definition of day with a literal: toDate('2026-11-24').
-- Ranked from the per-minute counts (FINAL: replayed rows collapse), like API 2 does, not from
-- top_ads_minute, whose per-minute top-N cannot be added up into a daily top-N.
-- Ties are broken by ad_id so the answer is stable. pct_of_device is the ad's share of all
-- valid clicks on that device that day (all ads, not only the 10 shown). Billable clicks only
-- (traffic = 'valid'), as API 2 ranks by default.
WITH (SELECT toDate(max(minute)) FROM ad_click_counts) AS day
SELECT
    device,
    ad_id,
    sum(clicks) AS ad_clicks,
    round(100 * ad_clicks / sum(ad_clicks) OVER (PARTITION BY device), 2) AS pct_of_device
FROM published_click_counts
WHERE minute >= toDateTime(day, 'UTC')
  AND minute < toDateTime(day + 1, 'UTC')
  AND traffic = 'valid'
GROUP BY device, ad_id
ORDER BY device, ad_clicks DESC, ad_id
LIMIT 10 BY device
