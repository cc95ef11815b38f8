"""What readers count: the live job's rows and those of the recalculations in force.

A recalculation (adclick.recalculation) publishes by adding rows, then recording itself: its
count differences go to ad_click_counts under a partition of its own, the attribution rows it
takes back and those it puts in their place to recalculated_attributions, and its record to
recalculations, last. Readers count those rows only while the record is in force
(recalculations_in_force, sql/clickhouse/010_*.sql: published, not rolled back). Every
statement reads that set once, so it sees all of a publish or none of it, in every table at
once; a publish that failed before its record never counts, and a rollback is one row.
"""

# A recalculation's count rows: src_partition FIRST_PARTITION + its id (a Kafka partition is
# below 2^31), src_offset the row's number. Rows under IN_PLACE_PARTITION were written by
# recalculations recorded before sql/clickhouse/010_*.sql, in place: they always count.
FIRST_PARTITION = 2**31
IN_PLACE_PARTITION = 2**32 - 1


def partition_of(recalculation_id):
    return FIRST_PARTITION + recalculation_id


# The ids in force. ClickHouse evaluates a scalar subquery once per statement, even where its
# text recurs (in each branch of a UNION ALL), so every table a statement reads is read against
# one set, taken before any of them.
IN_FORCE = "(SELECT groupArray(id) FROM {db:Identifier}.recalculations_in_force)"

# On a read of ad_click_counts FINAL: the live rows, and the rows of recalculations in force.
# The view published_click_counts (sql/clickhouse/010_*.sql) applies the same, for ad-hoc SQL.
# (The id is in src_partition, which costs little to read: taken from src_offset, over a day of
# 7.2 M rows, the condition made API 1 take 1.6x as long.)
COUNTS = f"""
  AND (src_partition < {FIRST_PARTITION} OR src_partition = {IN_PLACE_PARTITION}
       OR has({IN_FORCE}, src_partition - {FIRST_PARTITION}))
"""

# The attribution rows of the recalculations in force, signed: one it took back is -1, one it
# put in its place +1 (a row of conversion_attributions being +1). To be followed by filters
# on its columns (those of conversion_attributions).
ATTRIBUTION_CHANGES = f"""
    FROM {{db:Identifier}}.recalculated_attributions
    WHERE has({IN_FORCE}, recalculation)
"""
ATTRIBUTION_SIGN = "if(side = 'after', toInt64(1), toInt64(-1))"
