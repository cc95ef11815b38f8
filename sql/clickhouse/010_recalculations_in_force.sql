-- A recalculation publishes by adding rows, then recording itself (adclick/published.py): its
-- count differences go to ad_click_counts (src_partition 2^31 + its id, which no Kafka
-- partition reaches; src_offset the row's number), the attribution rows it takes back and those it puts in their place to
-- recalculated_attributions, and its record to recalculations, last. Readers count those rows
-- only while the record is in force, so a publish shows in every table at once or not at all,
-- the rows of a publish that failed before its record never count, and a rollback is one row.

-- Recalculations recorded before this file wrote in place (1): their attribution rows into
-- conversion_attributions, their count rows under src_partition 4294967295, counted at once,
-- as they still are. Those recorded since write in_place = 0.
ALTER TABLE {db}.recalculations ADD COLUMN IF NOT EXISTS in_place UInt8 DEFAULT 1;

-- The recalculations whose rows readers count: every publish not rolled back.
CREATE OR REPLACE VIEW {db}.recalculations_in_force AS
SELECT id FROM {db}.recalculations
WHERE kind = 'publish' AND in_place = 0
  AND id NOT IN (SELECT rolls_back FROM {db}.recalculations WHERE kind = 'rollback');

-- The counts as published: the live job's rows and those of the recalculations in force.
-- The API's statements (adclick/queries.py) apply the same condition; ad-hoc SQL reads this.
CREATE OR REPLACE VIEW {db}.published_click_counts AS
SELECT *
FROM {db}.ad_click_counts FINAL
WHERE src_partition < 2147483648 OR src_partition = 4294967295
   OR has((SELECT groupArray(id) FROM {db}.recalculations_in_force),
          src_partition - 2147483648);

-- The attribution rows as published: the live job's, less those the recalculations in force
-- took back, plus those they put in their place (a row of conversion_attributions is +1, a
-- recalculation's 'before' row -1, its 'after' row +1; a row is there while its sum is > 0).
CREATE OR REPLACE VIEW {db}.published_attributions AS
SELECT minute, ad_id, country, device, traffic, conversion_id, click_id, type, value_micros,
       conversion_ts, click_ts, outcome
FROM (
    SELECT minute, ad_id, country, device, traffic, conversion_id, click_id, type,
           value_micros, conversion_ts, click_ts, outcome, toInt64(1) AS sign
    FROM {db}.conversion_attributions FINAL
    UNION ALL
    SELECT minute, ad_id, country, device, traffic, conversion_id, click_id, type,
           value_micros, conversion_ts, click_ts, outcome,
           if(side = 'after', toInt64(1), toInt64(-1))
    FROM {db}.recalculated_attributions
    WHERE has((SELECT groupArray(id) FROM {db}.recalculations_in_force), recalculation)
)
GROUP BY minute, ad_id, country, device, traffic, conversion_id, click_id, type,
         value_micros, conversion_ts, click_ts, outcome
HAVING sum(sign) > 0;

-- The conversions that do not count, with the reason: the outcome of the click they met
-- (before_click, outside_window), or no_counted_click when no counted click met them within
-- the job's conversion wait (an unknown click_id, a click that was too late or invalid, or one
-- that has not come yet). From the attributions as published.
CREATE OR REPLACE VIEW {db}.unattributed_conversions AS
SELECT c.minute AS minute, c.conversion_id AS conversion_id, c.click_id AS click_id,
       c.type AS type, c.value_micros AS value_micros, c.conversion_ts AS conversion_ts,
       if(a.outcome = '', 'no_counted_click', a.outcome) AS reason
FROM {db}.conversions AS c FINAL
LEFT JOIN
(
    SELECT conversion_id, argMax(outcome, outcome = 'attributed') AS outcome
    FROM {db}.published_attributions
    GROUP BY conversion_id
) AS a ON a.conversion_id = c.conversion_id
WHERE a.outcome != 'attributed';

-- The top list of each minute a recalculation changed, all of it (rank 0: the minute has no
-- list any more).
CREATE TABLE IF NOT EXISTS {db}.recalculated_top_ads
(
    recalculation UInt32,
    minute        DateTime('UTC'),
    rank          UInt16,
    ad_id         String,
    clicks        UInt64
)
ENGINE = MergeTree
ORDER BY (minute, recalculation, rank);

-- The per-minute top lists as published: a minute's list from the newest recalculation in force
-- that wrote one, else the live job's.
CREATE OR REPLACE VIEW {db}.published_top_ads_minute AS
SELECT minute, rank, ad_id, clicks
FROM {db}.top_ads_minute FINAL
WHERE minute NOT IN (
    SELECT minute FROM {db}.recalculated_top_ads
    WHERE has((SELECT groupArray(id) FROM {db}.recalculations_in_force), recalculation))
UNION ALL
SELECT minute, rank, ad_id, clicks
FROM {db}.recalculated_top_ads
WHERE rank > 0
  AND (minute, recalculation) IN (
      SELECT minute, max(recalculation) FROM {db}.recalculated_top_ads
      WHERE has((SELECT groupArray(id) FROM {db}.recalculations_in_force), recalculation)
      GROUP BY minute);
