"""The adclick job and `adclick serve` under load: throughput, state size and freshness.

The job runs exactly as users run it, `python -m jobs.ad_click_aggregation` (unmodified, on a
local MiniCluster), with FLINK_LOG_DIR pointing to a folder of ours so that its REST port, and
through it the job's start time, per-operator busy/back-pressure metrics and checkpoint
statistics, can be read. The store is `adclick serve` on a fresh embedded chdb path; the
benchmark reads ClickHouse only through the API (/v1/sql and API 1), as users do.
"""

import json
import math
import os
import statistics
import time
import urllib.error
from pathlib import Path

from kafka import KafkaAdminClient

from adclick import config
from adclick.testing import processes
from adclick.testing.api import iso
from adclick.testing.processes import PYTHON
from adclick.testing.processes import Process
from adclick.testing.processes import start_server
from adclick.topics import create_topics
from bench import kafka_io
from bench.flink_rest import FlinkRest
from bench.procs import MachineLoad
from bench.procs import dir_size
from bench.procs import log

MINUTE_MS = config.WINDOW_MS
BUSY_METRICS = ("busyTimeMsPerSecond", "backPressuredTimeMsPerSecond", "idleTimeMsPerSecond")


def start_job(work, bootstrap, prefix, *extra):
    """The job with its defaults, its Flink log in work/flink-log: returns (process, FlinkRest)."""
    log_dir = work / "flink-log"
    log_dir.mkdir(parents=True, exist_ok=True)
    job = processes.start_job(work, bootstrap, prefix, work / "checkpoints", *extra,
                              env={"FLINK_LOG_DIR": str(log_dir)}, fast=False)
    return job, FlinkRest(log_dir)


def committed(admin, group, topic):
    offsets = admin.list_group_offsets({group: None}).get(group) or {}
    return sum(max(0, meta.offset) for tp, meta in offsets.items() if tp.topic == topic)


def latest_checkpoint(rest):
    stats = rest.checkpoints()
    latest = (stats.get("latest") or {}).get("completed")
    if not latest:
        return None
    try:  # which operator holds what: the dedup's keys, the attribution join's clicks
        by_vertex = rest.checkpoint_by_vertex(latest["id"])
    except (urllib.error.URLError, OSError, KeyError):
        by_vertex = None
    return {
        "id": latest["id"],
        "trigger_ms": latest["trigger_timestamp"],
        "state_size": latest.get("state_size"),
        "checkpointed_size": latest.get("checkpointed_size"),
        "end_to_end_duration_ms": latest.get("end_to_end_duration"),
        "completed": stats["counts"]["completed"],
        "by_vertex": by_vertex,
    }


def checkpoint_after(rest, t_wall, timeout_s):
    """The first completed checkpoint triggered at or after t_wall (epoch seconds), or None."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            latest = latest_checkpoint(rest)
        except (urllib.error.URLError, OSError):
            latest = None
        if latest and latest["trigger_ms"] >= t_wall * 1000:
            return latest
        time.sleep(1)
    return None


def summarize_busy(samples):
    """Per vertex: busy / back-pressured / idle ms per second, averaged over subtasks, samples."""
    if not samples:
        return None
    sums, counts = {}, {}
    for sample in samples:
        for name, values in sample.items():
            for metric, v in values.items():
                # A source whose thread does not report busy time (the job's clock) gives NaN.
                if "avg" in v and not math.isnan(float(v["avg"])):
                    key = (name, metric.replace("TimeMsPerSecond", ""))
                    sums[key] = sums.get(key, 0.0) + float(v["avg"])
                    counts[key] = counts.get(key, 0) + 1
    out = {}
    for (name, metric), total in sums.items():
        out.setdefault(name, {})[metric] = round(total / counts[(name, metric)])
    return out


def changes(series, t0):
    """(t - t0, value) where value changes (and the last point), for the chart."""
    out = []
    for t, value in series:
        if not out or value != out[-1][1]:
            out.append([round(t - t0, 1), value])
    if series and out[-1][0] != round(series[-1][0] - t0, 1):
        out.append([round(series[-1][0] - t0, 1), series[-1][1]])
    return out


def fit_slope(points):
    """Least squares slope and intercept of (x, y) points."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    slope = sxy / sxx if sxx else 0.0
    return slope, my - slope * mx


def throughput_run(name, work, bootstrap, prefix, expected, sampler, timeout_s=1500, extra=()):
    """Run job + server over a pre-filled topic until ClickHouse holds every expected click.

    expected: unique valid clicks in minutes the closers close (the whole fill).
    extra: more arguments for the job.
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    topic = config.Topics.with_prefix(prefix)["clicks"]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    server = job = None
    result = {"name": name, "expected_clicks": expected}
    machine = MachineLoad()
    try:
        server, api = start_server(work, bootstrap, prefix, work / "store", raw=False)
        sampler.watch(f"{name}.server", server.pid)
        launched = time.time()
        job, rest = start_job(work, bootstrap, prefix, *extra)
        sampler.watch(f"{name}.flink_job", job.pid)
        info = rest.wait_job(check=job.assert_running)
        t_start = info["start-time"] / 1000.0
        result["job_launch_to_start_s"] = round(t_start - launched, 2)
        log(f"{name}: job running (REST port {rest.port}); waiting for {expected} clicks "
            "in ClickHouse")
        progress = []  # (t, committed source offsets)
        cpu_points = []  # (committed offsets when first seen, job CPU seconds then)
        ch_progress = []  # (t, clicks in ClickHouse)
        checkpoints = []  # (consumed at trigger, checkpoint stats)
        busy_samples = []
        ch_total = 0
        cpu_at_first = None
        t_first = None
        t_done = None
        next_busy = time.time()
        result["plan"] = [{"name": v["name"], "parallelism": v["parallelism"]}
                          for v in info["vertices"]]
        deadline = time.time() + timeout_s
        seen_checkpoint = None
        heap_max = {}
        next_heap = time.time()
        while time.time() < deadline:
            job.assert_running()
            server.assert_running()
            now = time.time()
            consumed = committed(admin, prefix + "job", topic)
            progress.append((now, consumed))
            if not cpu_points or consumed != cpu_points[-1][0]:
                cpu_points.append((consumed, sampler.cpu_seconds(f"{name}.flink_job")["total"]))
            if consumed and t_first is None:
                t_first = now
                cpu_at_first = sampler.cpu_seconds(f"{name}.flink_job")
            try:
                latest = latest_checkpoint(rest)
            except (urllib.error.URLError, OSError):
                latest = None
            if latest and latest["id"] != seen_checkpoint:
                seen_checkpoint = latest["id"]
                latest["dir_bytes"] = dir_size(work / "checkpoints")
                latest["consumed_offsets_now"] = consumed
                checkpoints.append(latest)
            if now >= next_busy and 0.15 * expected <= consumed <= 0.9 * expected:
                # REST metrics are refreshed every 10 s (metrics.fetcher.update-interval).
                try:
                    sample = rest.vertex_metrics(BUSY_METRICS)
                    if any(sample.values()):
                        busy_samples.append(sample)
                except (urllib.error.URLError, OSError):
                    pass
                next_busy = now + 10
            if now >= next_heap:
                try:
                    for key, value in rest.heap().items():
                        heap_max[key] = max(heap_max.get(key, 0), value)
                except (urllib.error.URLError, OSError, KeyError, ValueError):
                    pass
                next_heap = now + 5
            ch_total = api.sql("SELECT sum(clicks) FROM ad_click_counts FINAL")[0][0] or 0
            ch_progress.append((time.time(), int(ch_total)))
            if int(ch_total) >= expected:
                t_done = time.time()
                break
            time.sleep(max(0.0, 1.0 - (time.time() - now)))
        cpu_at_done = sampler.cpu_seconds(f"{name}.flink_job")
        result["machine"] = machine.result()
        if t_done is None:
            raise RuntimeError(f"{name}: ClickHouse has {ch_total} of {expected} clicks after "
                               f"{timeout_s} s")
        final = checkpoint_after(rest, t_done, timeout_s=30)
        if final:
            # Triggered after every click was counted, so after every click was consumed: its
            # barrier follows all of them and it holds every click_id. (The offsets sampled
            # with the checkpoints before it can lag: Kafka gets them after the checkpoint.)
            final.update(dir_bytes=dir_size(work / "checkpoints"), consumed_offsets_now=expected,
                         after_all_input=True)
            checkpoints.append(final)
        # Sustained rate: slope of committed source offsets between 10% and 90% of the input
        # (offsets are committed at each checkpoint, every 5 s).
        middle = [(t, c) for t, c in progress if 0.1 * expected <= c <= 0.9 * expected]
        middle = sorted(set(middle))
        distinct = {c for _, c in middle}
        slope = fit_slope(middle)[0] if len(distinct) >= 3 else None
        t_all_consumed = next((t for t, c in progress if c >= expected), None)
        rows_inserted = api.sql("SELECT count() FROM ad_click_counts")[0][0]
        try:
            parts = api.storage()["ad_click_counts"]
            result["clickhouse_bytes_per_row"] = {
                "compressed": round(int(parts[1]) / max(1, int(parts[0])), 1),
                "uncompressed": round(int(parts[2]) / max(1, int(parts[0])), 1),
                "note": "system.parts of this small store; larger, merged parts compress better"}
        except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError):
            pass
        minutes = api.sql("SELECT toUnixTimestamp(minute) * 1000, sum(clicks), count() "
                          "FROM ad_click_counts FINAL GROUP BY minute ORDER BY minute")
        result.update({
            "sustained_clicks_per_s": round(slope) if slope else None,
            "sustained_method": "least-squares slope of the job's committed source offsets "
                                "(committed at each 5 s checkpoint) between 10% and 90% of "
                                "the input, sampled every 1 s",
            "end_to_end_s": round(t_done - t_start, 2),
            "end_to_end_clicks_per_s": round(expected / (t_done - t_start)),
            "end_to_end_method": "job start (JobManager start-time) to the first moment "
                                 "sum(clicks) FROM ad_click_counts FINAL, read through "
                                 "/v1/sql every ~1 s, equals the number of clicks sent",
            "job_start_to_first_commit_s": round(t_first - t_start, 2) if t_first else None,
            "job_start_to_all_consumed_s": round(t_all_consumed - t_start, 2)
            if t_all_consumed else None,
            "all_consumed_to_in_clickhouse_s": round(t_done - t_all_consumed, 2)
            if t_all_consumed else None,
            "clickhouse_clicks": int(ch_total),
            "clickhouse_minutes": len(minutes),
            "clickhouse_count_rows": sum(int(r[2]) for r in minutes),
            "clickhouse_rows_inserted": int(rows_inserted),
            "count_rows_per_click": round(sum(int(r[2]) for r in minutes) / expected, 4),
            "flink_jvm_max_mib": {k: round(v / 2**20) for k, v in heap_max.items()},
            "flink_cpu_s_processing": {
                k: round(cpu_at_done.get(k, 0) - (cpu_at_first or {}).get(k, 0), 1)
                for k in cpu_at_done},
            "operators": summarize_busy(busy_samples),
            "operators_method": "REST /jobs/<id>/vertices/<v>/subtasks/metrics, "
                                "busy/backPressured/idleTimeMsPerSecond averaged over subtasks "
                                f"and over {len(busy_samples)} samples taken while 15-90% of "
                                "the input had been committed",
            "checkpoints": checkpoints,
            "checkpoint_dir_bytes_end": dir_size(work / "checkpoints"),
            "progress": changes(progress, t_start),
            "clickhouse_progress": changes(ch_progress, t_start),
        })
        if checkpoints:
            biggest = max(checkpoints, key=lambda c: c.get("checkpointed_size") or 0)
            result["largest_checkpoint"] = {
                "bytes": biggest.get("checkpointed_size"),
                "end_to_end_ms": biggest.get("end_to_end_duration_ms"),
                "mb_per_s": round(biggest["checkpointed_size"] / 1e6 /
                                  max(0.001, biggest["end_to_end_duration_ms"] / 1000), 1)
                if biggest.get("checkpointed_size") and biggest.get("end_to_end_duration_ms")
                else None,
                "count": biggest.get("completed"),
            }
        band = [p for p in cpu_points if 0.1 * expected <= p[0] <= 0.9 * expected]
        if len(band) >= 2 and band[-1][1] > band[0][1]:
            result["clicks_per_flink_cpu_s"] = round(
                (band[-1][0] - band[0][0]) / (band[-1][1] - band[0][1]))
            result["clicks_per_flink_cpu_s_method"] = (
                "source offsets committed between two checkpoints (10%-90% of the input) divided "
                "by the CPU seconds the job's processes (MiniCluster JVM, Python) used between "
                "the moments those commits were first seen; robust against other load on the "
                "machine, unlike the wall-clock rate")
        return result
    finally:
        for child in (job, server):
            if child is not None:
                child.stop()
        sampler.unwatch(f"{name}.server")
        sampler.unwatch(f"{name}.flink_job")
        admin.close()


def loader_run(work, bootstrap, prefix, expected_rows, sampler, raw=False, timeout_s=300):
    """A fresh `adclick serve` (new store, new loader group) loading what a finished run left
    in the topics: the job's counts and top-N, and with raw=True the input clicks too. Its
    rate, and the server's CPU (the loader, and the embedded ClickHouse inserting and, for the
    raw clicks, checking the contract)."""
    name = "loader_raw" if raw else "loader_catchup"
    clicks_topic = config.Topics.with_prefix(prefix)["clicks"]
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    server = None
    try:
        server, api = start_server(work, bootstrap, prefix, work / f"{name}-store", raw=raw,
                                   group_suffix=name, name=f"server-{name}")
        sampler.watch(f"{name}.server", server.pid)
        cpu0 = sampler.cpu_seconds(f"{name}.server")
        first = None
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            server.assert_running()
            rows = int(api.sql("SELECT count() FROM ad_click_counts")[0][0])
            raw_rows = int(api.sql("SELECT count() FROM raw_clicks")[0][0]) if raw else 0
            raw_lag = api.get("/v1/status")[1]["loader"]["lag"].get(clicks_topic)
            now = time.time()
            if (rows or raw_rows) and first is None:
                first = now
            if rows >= expected_rows and (not raw or raw_lag == 0):
                cpu = sampler.cpu_seconds(f"{name}.server")
                elapsed = now - first
                result = {
                    "rows": rows, "seconds": round(elapsed, 2),
                    "rows_per_s": round(rows / elapsed) if elapsed > 0 else None,
                    "server_cpu_s": round(cpu["total"] - cpu0["total"], 1),
                    "method": "new store and loader group on the finished run's topics; rows "
                              "counted through /v1/sql every 0.2 s until all count rows are in "
                              "(and the clicks topic's lag, in /v1/status, is 0); "
                              "rate from the first stored row to the end; CPU of the whole "
                              "`adclick serve` process (loader and embedded ClickHouse) from its "
                              "start" + ("; raw clicks loaded too" if raw
                                         else " (raw clicks not loaded)"),
                }
                if raw:
                    result.update({"raw_clicks": raw_rows,
                                   "raw_clicks_per_s": round(raw_rows / elapsed)
                                   if elapsed > 0 else None})
                return result
            time.sleep(0.2)
        raise RuntimeError(f"{name}: {rows} of {expected_rows} rows after {timeout_s} s")
    finally:
        if server is not None:
            server.stop()
        sampler.unwatch(f"{name}.server")


def percentile(values, q):
    values = sorted(values)
    if not values:
        return None
    k = (len(values) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def freshness_run(work, bootstrap, prefix, sampler, rate=2000, duration_s=None, minutes=3,
                  watermark_delay_s=5, hot_ad="ad-000001"):
    """Live traffic with real-time click_ts; when does each minute become answerable?

    Without duration_s the traffic lasts until `minutes` whole minutes after the first
    (partial, warm-up) one have closed: up to the end of the last + watermark delay + 3 s.
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    topics = create_topics(bootstrap, prefix)
    truth_path = work / "truth.jsonl"
    server = job = generator = None
    machine = MachineLoad()
    try:
        server, api = start_server(work, bootstrap, prefix, work / "store")
        sampler.watch("freshness.server", server.pid)
        job, rest = start_job(work, bootstrap, prefix)
        sampler.watch("freshness.flink_job", job.pid)
        rest.wait_job(check=job.assert_running)
        if duration_s is None:
            now = time.time()
            duration_s = round((60 - now % 60) + 60 * minutes + watermark_delay_s + 3, 1)
        generator = Process("generator", [
            PYTHON, "-m", "apps.generate", "--bootstrap-servers", bootstrap,
            "--topic", topics["clicks"], "--rate", str(rate), "--duration", str(duration_s),
            "--truth", str(truth_path), "--seed", "11", "--progress-s", "30"], work)
        sampler.watch("freshness.generator", generator.pid)
        gen_started_ms = time.time() * 1000
        log(f"freshness: {rate}/s live clicks for {duration_s} s")
        first_minute = int(gen_started_ms // MINUTE_MS * MINUTE_MS)
        polls = []  # (t, minute, api1 count, total)
        gen_ended = None
        last_closed = None
        while True:
            now = time.time()
            if gen_ended is None and not generator.alive():
                gen_ended = now
                # Minutes whose window can close: end + watermark delay before the last click.
                last_closed = int(((gen_ended - watermark_delay_s) * 1000) // MINUTE_MS
                                  * MINUTE_MS) - MINUTE_MS
            job.assert_running()
            server.assert_running()
            now_ms = now * 1000
            totals = {int(m): int(c) for m, c in api.sql(
                "SELECT toUnixTimestamp(minute) * 1000, sum(clicks) FROM ad_click_counts FINAL "
                f"WHERE minute >= fromUnixTimestamp({first_minute // 1000}) GROUP BY minute")}
            minute = first_minute
            while minute + MINUTE_MS <= now_ms - 1000:
                count = api.ad_count(hot_ad, minute, minute + MINUTE_MS)
                polls.append((time.time(), minute, count, totals.get(minute, 0)))
                minute += MINUTE_MS
            if gen_ended is not None:
                done = last_closed is not None and any(
                    m == last_closed and total > 0 for _, m, _, total in polls[-8:])
                if (done and time.time() - gen_ended > 8) or time.time() - gen_ended > 45:
                    break
            time.sleep(max(0.0, 0.5 - (time.time() - now)))
        result = {"machine": machine.result()}
        try:
            result["clickhouse_parts"] = {
                table: {"rows": int(rows), "compressed_bytes_per_row":
                        round(int(comp) / max(1, int(rows)), 1),
                        "uncompressed_bytes_per_row": round(int(unc) / max(1, int(rows)), 1)}
                for table, (rows, comp, unc) in api.storage().items()}
        except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError):
            pass
    finally:
        for child in (generator, job, server):
            if child is not None:
                child.stop()
        for part in ("server", "flink_job", "generator"):
            sampler.unwatch(f"freshness.{part}")
    truth_total, truth_hot = {}, {}
    with open(truth_path) as f:
        for line in f:
            click = json.loads(line)
            m = click["click_ts"] // MINUTE_MS * MINUTE_MS
            truth_total[m] = truth_total.get(m, 0) + 1
            if click["ad_id"] == hot_ad:
                truth_hot[m] = truth_hot.get(m, 0) + 1
    summary = json.loads((work / "truth.jsonl.summary.json").read_text())
    per_minute = []
    first = min(truth_total) if truth_total else None
    for m in sorted(truth_total):
        if last_closed is None or m > last_closed:
            continue
        end_s = (m + MINUTE_MS) / 1000.0
        api_ok = [t for t, mm, c, _ in polls if mm == m and c == truth_hot.get(m, 0)]
        total_ok = [t for t, mm, _, tot in polls if mm == m and tot == truth_total[m]]
        per_minute.append({
            "minute": iso(m), "clicks": truth_total[m], "hot_ad_clicks": truth_hot.get(m, 0),
            "warmup": m == first,
            "api1_fresh_s": round(api_ok[0] - end_s, 2) if api_ok else None,
            "all_ads_fresh_s": round(total_ok[0] - end_s, 2) if total_ok else None,
        })
    steady = [p for p in per_minute if not p["warmup"]]
    fresh = [p["api1_fresh_s"] for p in steady if p["api1_fresh_s"] is not None]
    fresh_all = [p["all_ads_fresh_s"] for p in steady if p["all_ads_fresh_s"] is not None]
    warm = [p["api1_fresh_s"] for p in per_minute if p["warmup"]]
    result.update({
        "rate_target": rate, "duration_s": duration_s,
        "rate_achieved": summary.get("rate_achieved"), "sent": summary.get("sent"),
        "minutes_observed": len(fresh),
        "warmup_minute_api1_fresh_s": warm[0] if warm else None,
        "minutes": per_minute,
        "api1_p50_s": _round(percentile(fresh, 50)), "api1_p99_s": _round(percentile(fresh, 99)),
        "api1_max_s": _round(max(fresh) if fresh else None),
        "all_ads_p50_s": _round(percentile(fresh_all, 50)),
        "all_ads_p99_s": _round(percentile(fresh_all, 99)),
        "watermark_delay_s": watermark_delay_s,
        "after_watermark_p50_s": _round(percentile(fresh, 50) - watermark_delay_s
                                        if fresh else None),
        "after_watermark_p99_s": _round(percentile(fresh, 99) - watermark_delay_s
                                        if fresh else None),
        "method": f"API 1 (GET /v1/ads/{hot_ad}/aggregated_count for the one minute) polled "
                  "every 0.5 s; a minute is fresh at the first poll whose count equals the "
                  "generator's ground truth; seconds after the minute's end (event time = wall "
                  "time here). 'after watermark' subtracts the watermark delay, the moment the "
                  "watermark passes the window end. all_ads: the same for sum(clicks) of all ads "
                  "of the minute via /v1/sql. The first (partial) minute is the job's first window "
                  "(cold code paths, first Kafka transaction): reported as the warm-up minute, "
                  "left out of p50/p99. With few minutes, p99 is close to the maximum.",
        "stdev_s": _round(statistics.pstdev(fresh) if len(fresh) > 1 else None),
    })
    return result


def hottest_ad(payloads):
    counts = {}
    for _, _, ad in payloads.pool:
        counts[ad] = counts.get(ad, 0) + 1
    return max(counts, key=counts.get)


# What each load curve sends per click: clicks only, or the demo's mix (apps/demo.py: 20
# impressions per click, one click in 20 converting).
CLICKS_ONLY = {"clicks": 1.0}
DEMO_MIX = {"clicks": 1.0, "impressions": 20.0, "conversions": 0.05}
# A live conversion names the click sent this many clicks before it (kafka_io).
CONVERSION_CLICK_LEAD = 20_000


def paced_source(event, run_id, clicks, hot_ad, mix):
    """(chunks, hot) of a live producer of one event type (kafka_io.PacedProducer)."""
    if event == "clicks":
        return clicks.chunks, [ad == hot_ad for _, _, ad in clicks.pool]
    if event == "impressions":
        return kafka_io.Payloads(run_id=run_id, seed=6, event="impression").chunks, None
    if event == "conversions":
        return kafka_io.conversion_chunks_paced(
            run_id, mix["clicks"] / mix["conversions"], CONVERSION_CLICK_LEAD), None
    raise ValueError(f"no live producer for {event}")


def load_curve(work, bootstrap, prefix, sampler, rates, step_minutes=3, fresh_limit_s=15.0,
               watermark_delay_s=5, mix=None):
    """The whole stack as the README runs it (`adclick serve` with the raw store on, embedded
    ClickHouse; the job on RocksDB, as `make demo` runs it), under live events at rising rates
    (events/s of all types; mix, CLICKS_ONLY by default, is each type's share per click),
    step_minutes whole minutes each, from Java producers paced in real time. Per step: API 1
    freshness of each minute, the raw store's lag, the CPU of each process per event. Stops
    after the first step that does not hold (a minute not fresh within fresh_limit_s, or a
    raw-store lag still growing)."""
    mix = mix or CLICKS_ONLY
    per_click = sum(mix.values())
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    topics = create_topics(bootstrap, prefix)
    run_id = prefix.rstrip("-")
    payloads = kafka_io.Payloads(run_id=run_id, seed=5)
    hot_ad = hottest_ad(payloads)
    server = job = None
    producers = {}  # event type -> PacedProducer
    steps = []
    try:
        server, api = start_server(work, bootstrap, prefix, work / "store")
        sampler.watch("curve.server", server.pid)
        # As `make demo` runs it: RocksDB, whose checkpoints carry only what is new (the heap
        # backend copies the attribution join's week of clicks at every checkpoint, which
        # here took longer than the 5 s interval within a few minutes).
        job, rest = start_job(work, bootstrap, prefix, "--state-backend", "rocksdb")
        sampler.watch("curve.flink_job", job.pid)
        rest.wait_job(check=job.assert_running)
        # Steps start on whole minutes, after one warm-up minute at the first rate.
        start = (int(time.time() * 1000) // MINUTE_MS + 2) * MINUTE_MS
        plan = [(start + i * step_minutes * MINUTE_MS, rate) for i, rate in enumerate(rates)]

        curve_end = plan[-1][0] + step_minutes * MINUTE_MS

        def rate_at(minute):
            # The first rate in the warm-up, then each step's; none after the last step.
            if minute >= curve_end:
                return 0
            return next((rate for begins, rate in reversed(plan) if minute >= begins), rates[0])

        for event, share in mix.items():
            chunks, hot = paced_source(event, run_id, payloads, hot_ad, mix)
            producers[event] = kafka_io.PacedProducer(
                bootstrap, topics[event], config.PARTITIONS, chunks,
                lambda minute, share=share: rate_at(minute) * share / per_click, work, hot)
        for event, producer in producers.items():
            producer.start()
            sampler.watch(f"curve.producers.{event}", producer.pid)
        clicks_producer = producers["clicks"]
        log(f"load curve: steps {rates} events/s (per click: {mix}), {step_minutes} min each, "
            f"from {iso(start)}")
        fresh = {}  # minute -> seconds after its end when API 1 first gave the truth
        lags = []  # (t, raw-store lag summed over the input topics)
        marks = {}  # step boundary -> (CPU seconds of each part, sent_now()) then
        broker_watched = "kafka_broker" in sampler.cpu

        def cpu_now():
            cpu = {part: sampler.cpu_seconds(f"curve.{part}")["total"]
                   for part in ("server", "flink_job")}
            # The producers: their JVMs and the Python threads encoding their payloads.
            cpu["producers"] = sum(
                sampler.cpu_seconds(f"curve.producers.{event}")["total"] + producer.encode_cpu_s
                for event, producer in producers.items())
            if broker_watched:
                cpu["kafka_broker"] = sampler.cpu_seconds("kafka_broker")["total"]
            return cpu

        def sent_now():
            # Events sent, and ticks written late per producer (a producer falling behind).
            return (sum(producer.sent for producer in producers.values()),
                    {event: producer.behind_ticks for event, producer in producers.items()})

        boundaries = [begins for begins, _ in plan] + [curve_end]

        def mark_boundaries():
            # CPU and events sent at each step boundary passed, for per-step CPU per event.
            for boundary in boundaries:
                if boundary not in marks and time.time() * 1000 >= boundary:
                    marks[boundary] = (cpu_now(), sent_now())

        for begins, rate in plan:
            ends = begins + step_minutes * MINUTE_MS
            while time.time() * 1000 < begins:
                time.sleep(0.2)
            mark_boundaries()
            log(f"load curve: {rate:,} events/s")
            # Poll until the step's minutes are fresh or clearly not (limit + a margin).
            while time.time() * 1000 < ends + (fresh_limit_s + 10) * 1000:
                now = time.time()
                mark_boundaries()
                job.assert_running()
                server.assert_running()
                lag = api.get("/v1/status")[1]["loader"]["lag"]
                known = [lag.get(topics[event]) for event in producers]
                lags.append((now, None if None in known else sum(known)))
                for minute in range(begins - MINUTE_MS, ends, MINUTE_MS):
                    if minute in fresh or minute + MINUTE_MS > now * 1000 - 1000:
                        continue
                    truth = clicks_producer.truth.get(minute, [0, 0])[1]
                    if api.ad_count(hot_ad, minute, minute + MINUTE_MS) == truth:
                        fresh[minute] = round(time.time() - (minute + MINUTE_MS) / 1000, 2)
                if ends in marks and all(m in fresh for m in range(begins, ends, MINUTE_MS)):
                    break
                time.sleep(max(0.0, 0.5 - (time.time() - now)))
            if ends not in marks:  # a step that did not hold: its end came while polling
                marks[ends] = (cpu_now(), sent_now())
            (cpu_begin, (sent_begin, behind_begin)) = marks[begins]
            (cpu_end, (sent_end, behind_end)) = marks[ends]
            minutes = list(range(begins, ends, MINUTE_MS))
            fresh_s = [fresh.get(m) for m in minutes]
            step_lags = [lag for t, lag in lags
                         if begins / 1000 <= t <= ends / 1000 + fresh_limit_s and lag is not None]
            sent = sent_end - sent_begin
            events = {event: sum(producer.truth.get(m, [0])[0] for m in minutes)
                      for event, producer in producers.items()}
            held_fresh = all(f is not None and f <= fresh_limit_s for f in fresh_s)
            # Bounded: at the step's end, no more than 5 s of its events waiting.
            end_lags = [lag for t, lag in lags if ends / 1000 - 5 <= t <= ends / 1000 + 5
                        and lag is not None]
            end_lag = end_lags[-1] if end_lags else None
            held_lag = end_lag is not None and end_lag <= rate * 5
            step_s = step_minutes * 60
            step = {
                "rate_target": rate, "events": events,
                "rate_achieved": round(sum(events.values()) / step_s),
                "api1_fresh_s": fresh_s,
                "api1_p50_s": _round(percentile([f for f in fresh_s if f is not None], 50)),
                "api1_p99_s": _round(percentile([f for f in fresh_s if f is not None], 99)),
                "raw_lag_max": max(step_lags) if step_lags else None,
                "raw_lag_end": end_lag,
                "cpu_s": {name: round(cpu_end[name] - cpu_begin[name], 1) for name in cpu_end},
                "cpu_us_per_event": {
                    name: round((cpu_end[name] - cpu_begin[name]) / sent * 1e6, 1)
                    for name in cpu_end} if sent else None,
                "machine_busy": round(sum(cpu_end[n] - cpu_begin[n] for n in cpu_end)
                                      / step_s / (os.cpu_count() or 1), 3),
                "producer_behind_ticks": {event: behind_end[event] - behind_begin[event]
                                          for event in producers},
                "held": held_fresh and held_lag,
            }
            steps.append(step)
            log(f"load curve: {rate:,}/s achieved {step['rate_achieved']:,}/s, API 1 fresh "
                f"{fresh_s} s, raw lag max {step['raw_lag_max']}, end {end_lag}, "
                f"held {step['held']}")
            if not step["held"]:
                break
    finally:
        for producer in producers.values():
            producer.stop()
        for child in (job, server):
            if child is not None:
                child.stop()
        for name in ("server", "flink_job", *(f"producers.{e}" for e in producers)):
            sampler.unwatch(f"curve.{name}")
    held = [step["rate_target"] for step in steps if step["held"]]
    return {
        "steps": steps, "hot_ad": hot_ad, "step_minutes": step_minutes, "mix": mix,
        "fresh_limit_s": fresh_limit_s, "watermark_delay_s": watermark_delay_s,
        "highest_rate_held": max(held) if held else None,
        "method": "one stack as `make demo` runs it (`adclick serve` with the raw store on, "
                  "embedded ClickHouse; the job with its defaults and RocksDB state) fed by "
                  "one Java producer per input topic, paced every 0.1 s with real-time event "
                  "times (Python encodes the payloads); rates are events/s of all types, "
                  "`mix` each type's share per click (a conversion names a click sent "
                  f"{CONVERSION_CLICK_LEAD:,} clicks before it); steps of whole minutes at "
                  "rising rates after a warm-up minute. A minute is fresh at the first API 1 "
                  "poll (every 0.5 s) equal to the producer's truth for the hottest ad's clicks; "
                  "seconds after the minute's end. Raw lag: the loader's lag summed over the "
                  "input topics (/v1/status), sampled each poll. CPU per event: CPU seconds of "
                  "each process tree over the step / events sent in it; `producers` counts the "
                  "Java producers and the Python threads encoding for them. A step holds if "
                  "every minute is fresh within fresh_limit_s and the lag at its end is at most "
                  "5 s of events; the curve stops after the first step that does not.",
    }


def _round(value, digits=2):
    return None if value is None else round(value, digits)
