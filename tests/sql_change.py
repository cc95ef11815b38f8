"""A real change to the job's SQL, as an upgrade makes one: one more stateful statement and
sink, appended after the existing statements (as docs/ARCHITECTURE.md asks of a change)."""

import shutil

from jobs.ad_click_aggregation import SQL_DIR

ADDED_FILE = "90_country_minutes.sql"  # after every existing statement
ADDED_STATEMENTS = """
CREATE TEMPORARY TABLE country_minute_sink (
  minute_start TIMESTAMP_LTZ(3), country STRING, clicks BIGINT
) WITH ('connector' = 'blackhole');

INSERT INTO country_minute_sink
SELECT window_start, country, SUM(clicks)
FROM minute_counts
GROUP BY window_start, window_end, country;
"""


def changed_sql_dir(tmp_path):
    """A copy of sql/flink/ with the added statements; returns its path (for --sql-dir)."""
    changed = tmp_path / "sql-changed"
    shutil.copytree(SQL_DIR, changed)
    (changed / ADDED_FILE).write_text(ADDED_STATEMENTS)
    return changed
