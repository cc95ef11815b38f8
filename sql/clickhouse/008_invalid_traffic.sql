-- Invalid traffic (sql/flink/25_traffic_labels.sql): each count row carries its label, `valid`
-- or the reason the clicks and impressions it counts are not billable. Rows from before the
-- labels counted every unique event: they read as valid, which is what was billed.
-- A revision (a late click changed an earlier click's label) is a row of -1 under the old
-- label, hence the signed clicks.
ALTER TABLE {db}.ad_click_counts
    ADD COLUMN IF NOT EXISTS traffic LowCardinality(String) DEFAULT 'valid' AFTER device;
ALTER TABLE {db}.ad_click_counts MODIFY COLUMN clicks Int64;

-- The producer's User-Agent header, when it sent one (adclick/contract.py).
ALTER TABLE {db}.raw_clicks ADD COLUMN IF NOT EXISTS user_agent Nullable(String) AFTER device;
ALTER TABLE {db}.raw_impressions
    ADD COLUMN IF NOT EXISTS user_agent Nullable(String) AFTER device;

-- An attributed conversion carries its click's label: those of invalid clicks are counted apart
-- (CVR counts the valid ones). Rows from before the labels were all billed: valid.
ALTER TABLE {db}.conversion_attributions
    ADD COLUMN IF NOT EXISTS traffic LowCardinality(String) DEFAULT 'valid' AFTER device;

-- Each closed minute records the invalid-traffic rules its counts were labelled under: the
-- lists' versions and the thresholds ('' for minutes closed before the labels).
ALTER TABLE {db}.minutes_closed
    ADD COLUMN IF NOT EXISTS traffic_rules LowCardinality(String) DEFAULT '' AFTER minute;
