-- Recalculations (adclick/recalculation.py): closed minutes counted again from the raw store.
-- A published one adds, per (minute, ad, country, device, label), the difference between its
-- numbers and the stored ones as a row of ad_click_counts, counted once its record is in
-- force (010_*.sql; those recorded before it used src_partition 4294967295 and counted at
-- once). So impressions are signed too.
ALTER TABLE {db}.ad_click_counts MODIFY COLUMN impressions Int64;

-- One row per publish (and one when it began) and per rollback: when, who, why, what range
-- and ads, the settings, the code and rule versions it ran with, and the old and new totals
-- (JSON, per metric).
CREATE TABLE IF NOT EXISTS {db}.recalculations
(
    id            UInt32,
    kind          LowCardinality(String),  -- publish, rollback
    rolls_back    UInt32,                  -- the publish a rollback undid, else 0
    published_at  DateTime64(3, 'UTC'),
    requested_by  String,
    reason        String,
    range_from    DateTime('UTC'),
    range_to      DateTime('UTC'),
    ads           Array(String),
    settings      String,
    code_version  String,
    traffic_rules String,
    totals        String,
    changed_cells UInt64,
    count_rows    UInt64
)
ENGINE = MergeTree
ORDER BY id;

-- The attribution rows a publish replaced (before) and wrote (after), for its rollback: rows of
-- conversion_attributions, with the recalculation and the side.
CREATE TABLE IF NOT EXISTS {db}.recalculated_attributions
ENGINE = MergeTree
ORDER BY (recalculation, side, conversion_id)
EMPTY AS
SELECT toUInt32(0) AS recalculation, toLowCardinality('') AS side, *
FROM {db}.conversion_attributions;
