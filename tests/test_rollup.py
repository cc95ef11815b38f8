"""API 2's hourly rollup (adclick.rollup, queries.popular_ads) on the real embedded engine: the
answers stay those of the minutes, through replays, late corrections after a computation and
ranges with parts of hours, and the rollup is what is read once computed."""

import random
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest

from adclick import config
from adclick import queries
from adclick import rollup
from adclick.ingest import Loader
from tests.api_fixtures import chdb_url  # noqa: F401 - a fixture
from tests.api_fixtures import fresh_database
from tests.api_fixtures import insert_counts
from tests.api_fixtures import truth_top

H0 = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
HOURS = 4
ADS = [f"ad-{i:02d}" for i in range(30)]

# Whole hours, parts of hours at either end, one minute, less than an hour inside one.
RANGES = [
    (H0, H0 + HOURS * HOUR),
    (H0 + 17 * MINUTE, H0 + 3 * HOUR + 5 * MINUTE),
    (H0 + HOUR, H0 + 2 * HOUR),
    (H0 + HOUR + 30 * MINUTE, H0 + 2 * HOUR + 30 * MINUTE),
    (H0 + 59 * MINUTE, H0 + 60 * MINUTE),
    (H0 + 5 * MINUTE + timedelta(seconds=30), H0 + 2 * HOUR + timedelta(seconds=10)),
]


def make_rows(seed, first_offset=0):
    rng = random.Random(seed)
    rows = []
    for m in range(HOURS * 60):
        for _ in range(rng.randint(0, 6)):
            offset = first_offset + len(rows)
            rows.append({"minute": H0 + m * MINUTE, "ad_id": rng.choice(ADS[:rng.randint(1, 30)]),
                         "country": rng.choice(["KR", "JP"]), "device": "mobile",
                         "clicks": rng.randint(1, 9), "late": 0, "click_id": "",
                         "src_partition": offset % 2, "src_offset": offset})
    return rows


def hours_of(rows):
    return {rollup.hour_of(int(row["minute"].timestamp())) for row in rows}


def store_rows(client, db, rows):
    """What the loader does with count rows: mark their hours changed, then insert them."""
    rollup.mark_changed(client, db, hours_of(rows))
    insert_counts(client, db, rows)


def answers(client, db, rows, countries=()):
    for start, end in RANGES:
        assert queries.popular_ads(client, db, start, end, 100, countries=countries) == \
            truth_top(rows, start, end, 100, countries=countries), (start, end)


def rolled(client, db):
    hours = [int((H0 + h * HOUR).timestamp()) for h in range(HOURS)]
    return sorted(int(hour) for hour, _version in client.query(
        queries.ROLLED_HOURS, parameters={"db": db, "hours": hours}).result_rows)


@pytest.fixture
def db(chdb_url, request):  # noqa: F811
    name = "t_rollup_" + request.node.name.split("[")[0][-20:]
    client = fresh_database(chdb_url, name)
    client.command(f"SYSTEM STOP MERGES {name}.ad_click_counts")  # only FINAL collapses
    return client, name


def test_computed_hours_are_read_and_answer_as_the_minutes(db):
    client, name = db
    rows = make_rows(1)
    store_rows(client, name, rows)
    store_rows(client, name, rows[::3])  # a replayed batch: FINAL collapses it
    answers(client, name, rows)  # nothing computed yet: all from the minutes
    assert rolled(client, name) == []
    assert rollup.compact(client, name, quiet_s=3600) == []  # not quiet for an hour yet
    assert rollup.compact(client, name, quiet_s=0) == sorted(hours_of(rows))
    assert rolled(client, name) == sorted(hours_of(rows))
    assert rollup.compact(client, name, quiet_s=0) == []  # nothing changed since
    answers(client, name, rows)
    answers(client, name, rows, countries=("KR",))  # filters read the minutes
    # The rollup is what is read: a row added to the hour's computation shows in a range of
    # whole hours, and not in a range inside one hour.
    client.command(f"INSERT INTO {name}.ad_counts_hourly SELECT hour, 'ad-99', 'valid', 1000000,"
                   f" 0, max(computed_at) FROM {name}.ad_counts_hourly_state "
                   f"WHERE hour = '{H0 + HOUR:%Y-%m-%d %H:%M:%S}' GROUP BY hour")
    assert queries.popular_ads(client, name, H0, H0 + HOURS * HOUR, 1) == [("ad-99", 1000000)]
    assert queries.popular_ads(client, name, H0 + HOUR, H0 + HOUR + 59 * MINUTE, 1) == \
        truth_top(rows, H0 + HOUR, H0 + HOUR + 59 * MINUTE, 1)


def test_a_change_after_a_computation_reads_the_minutes_until_computed_again(db):
    client, name = db
    rows = make_rows(2)
    store_rows(client, name, rows)
    rollup.compact(client, name, quiet_s=0)
    # A late correction for the second hour, and a replay of rows of the third.
    late = [{"minute": H0 + HOUR + 7 * MINUTE, "ad_id": "ad-29", "country": "JP",
             "device": "mobile", "clicks": 500, "late": 1, "click_id": "c-late",
             "src_partition": 1, "src_offset": 10**6}]
    replay = [row for row in rows if H0 + 2 * HOUR <= row["minute"] < H0 + 3 * HOUR][:50]
    store_rows(client, name, late + replay)
    rows = rows + late
    changed = sorted(hours_of(late + replay))
    assert rolled(client, name) == sorted(hours_of(rows) - set(changed))
    answers(client, name, rows)
    assert rollup.compact(client, name, quiet_s=0) == changed
    assert rolled(client, name) == sorted(hours_of(rows))
    answers(client, name, rows)


class Message:
    """A Kafka record as confluent_kafka hands it to the loader (the fields it reads)."""

    def __init__(self, topic, value, partition, offset):
        self._topic, self._value, self._partition, self._offset = topic, value, partition, offset

    def topic(self):
        return self._topic

    def value(self):
        return self._value

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset


def test_the_loader_marks_the_hours_of_the_count_rows_it_stores(db):
    client, name = db
    loader = Loader(client, database=name, topic_prefix="r-", raw=False)
    topic = config.Topics.with_prefix("r-")["counts"]
    minutes = [H0 + 5 * MINUTE, H0 + 2 * HOUR + 59 * MINUTE]
    loader.load([Message(topic, (
        '{"minute":"%s","ad_id":"ad-01","country":"KR","device":"mobile","clicks":3,'
        '"impressions":9,"late":false}' % f"{minute:%Y-%m-%dT%H:%M:%SZ}").encode(), 0, i)
        for i, minute in enumerate(minutes)])
    assert rollup.compact(client, name, quiet_s=0) == [
        int((H0 + h * HOUR).timestamp()) for h in (0, 2)]
    assert queries.popular_ads(client, name, H0, H0 + 3 * HOUR, 5) == [("ad-01", 6)]
