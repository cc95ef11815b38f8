"""Keeping API 2's hourly rollup (sql/clickhouse/004_hourly_rollup.sql) exact.

Count rows keep arriving for an hour after it ends (late corrections, within the job's allowed
lateness) and a batch may be stored twice (a replay, which FINAL collapses). So the rollup is
not summed as rows arrive: the loader marks an hour changed before storing rows of it
(mark_changed), and compact() computes an hour's sums from ad_click_counts FINAL once it has
been quiet for QUIET_S. The API uses an hour's sums only if they were computed after its last
change (adclick.queries.ROLLED_HOURS). Both times come from ClickHouse's clock.

One writer at a time is assumed, as the loader is: a mark, its rows and the computations are
made in order by one thread. (A second loader process that marked an hour and then took more
than QUIET_S to store its rows could slip rows past a computation.) A recalculation's rows
count from its record on (adclick.published), and a computation counts only those in force:
a publish or rollback marks its hours before and again after its record.
"""

from adclick import published
from adclick import store

QUIET_S = 120  # an hour is computed once no row of it has come for this long
HOUR_S = 3600

MARK_CHANGED = """
INSERT INTO {db:Identifier}.ad_counts_hourly_state (hour, changed_at)
SELECT arrayJoin(arrayMap(t -> toDateTime(t, 'UTC'), {hours:Array(UInt32)})), now64(6, 'UTC')
"""

# Hours changed since their last computation, and quiet for quiet_s.
DUE_HOURS = """
SELECT toUnixTimestamp(hour)
FROM {db:Identifier}.ad_counts_hourly_state
GROUP BY hour
HAVING max(changed_at) >= max(computed_at)
   AND max(changed_at) < now64(6, 'UTC') - toIntervalSecond({quiet_s:UInt32})
ORDER BY hour
"""

NOW_MICROS = "SELECT toUnixTimestamp64Micro(now64(6, 'UTC'))"

COMPUTE = """
INSERT INTO {db:Identifier}.ad_counts_hourly
SELECT toDateTime({hour:UInt32}, 'UTC') AS hour, ad_id, traffic, sum(clicks), sum(impressions),
       fromUnixTimestamp64Micro({computed_at:Int64}, 'UTC')
FROM {db:Identifier}.ad_click_counts FINAL
WHERE minute >= toDateTime({hour:UInt32}, 'UTC')
  AND minute < toDateTime({hour:UInt32} + 3600, 'UTC')
""" + published.COUNTS + """
GROUP BY ad_id, traffic
"""

MARK_COMPUTED = """
INSERT INTO {db:Identifier}.ad_counts_hourly_state (hour, computed_at)
SELECT toDateTime({hour:UInt32}, 'UTC'), fromUnixTimestamp64Micro({computed_at:Int64}, 'UTC')
"""


def hour_of(seconds):
    """The start of the hour of a Unix time, in Unix seconds."""
    return seconds // HOUR_S * HOUR_S


def whole_hours(start, end):
    """The hours (Unix seconds) wholly inside [start, end) (Unix seconds)."""
    return list(range(-(-start // HOUR_S) * HOUR_S, end - HOUR_S + 1, HOUR_S))


def mark_changed(client, db, hours):
    """Record that count rows of these hours (Unix seconds) are about to be stored."""
    if hours:
        client.command(MARK_CHANGED, parameters={"db": store.check_identifier(db),
                                                 "hours": sorted(hours)})


def compact(client, db, quiet_s=QUIET_S):
    """Compute the rollup of every hour changed since its last computation and quiet for
    quiet_s seconds; returns those hours (Unix seconds)."""
    db = store.check_identifier(db)
    due = [int(hour) for (hour,) in client.query(
        DUE_HOURS, parameters={"db": db, "quiet_s": int(quiet_s)}).result_rows]
    for hour in due:
        # The time is taken before the sums are read: a change marked after it (a row read or
        # not) leaves the hour due again.
        computed_at = int(client.query(NOW_MICROS).result_rows[0][0])
        parameters = {"db": db, "hour": hour, "computed_at": computed_at}
        client.command(COMPUTE, parameters=parameters)
        client.command(MARK_COMPUTED, parameters=parameters)
    return due
