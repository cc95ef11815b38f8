"""Global top-N merge: the brief's reduce node, run in Python once per minute.

The JVM ranks ads inside each bucket (local top-N, parallel); this aggregate receives at most
buckets x N rows per minute and keeps the N best, so Python never sees individual clicks.
Ordering is clicks descending, then ad_id ascending, the same tie-break as the API.
"""

import heapq

from pyflink.common import Row
from pyflink.table import DataTypes
from pyflink.table.udf import AggregateFunction
from pyflink.table.udf import udaf

TOP_ENTRY = DataTypes.ROW([
    DataTypes.FIELD("ad_id", DataTypes.STRING()),
    DataTypes.FIELD("clicks", DataTypes.BIGINT()),
])


def rank_key(entry):
    """Sort key for (ad_id, clicks): most clicks first, ties by ad_id."""
    ad_id, clicks = entry
    return (-clicks, ad_id)


def merge_top(entries, n):
    """The n best (ad_id, clicks) pairs of entries, best first."""
    return heapq.nsmallest(n, entries, key=rank_key)


class MergeTopN(AggregateFunction):
    """Aggregate (ad_id, clicks) rows of one minute into its ranked top-N list."""

    def __init__(self, n):
        self.n = n

    def create_accumulator(self):
        return []

    def accumulate(self, accumulator, ad_id, clicks):
        accumulator.append((ad_id, clicks))
        # Trim now and then so the state of one minute stays O(n), whatever the bucket count.
        if len(accumulator) >= 4 * self.n:
            accumulator[:] = merge_top(accumulator, self.n)

    def merge(self, accumulator, accumulators):
        for other in accumulators:
            accumulator.extend(other)
        accumulator[:] = merge_top(accumulator, self.n)

    def get_value(self, accumulator):
        return [Row(ad_id, clicks) for ad_id, clicks in merge_top(accumulator, self.n)]

    def get_result_type(self):
        return DataTypes.ARRAY(TOP_ENTRY)

    def get_accumulator_type(self):
        return DataTypes.ARRAY(TOP_ENTRY)


def merge_top_n(n):
    """The UDAF registered as merge_top_n in the job, for lists of length n."""
    return udaf(MergeTopN(n), name="merge_top_n")
