"""`make bench`: measure adclick on this machine; write bench/out/report.json and chart.png.

    python -m bench.run [--records N] [--freshness-minutes M]
                        [--skip-freshness] [--skip-skew] [--skip-rocksdb]

Phases, one heavy thing at a time (the machine has 2 cores):
  0. a Kafka broker of our own (scripts/kafka.sh, free ports, temp data dir), or the one named
     by ADCLICK_BENCH_KAFKA (then left running, and only topics of a random prefix are used)
  1. fill the input topic with N valid clicks (fill rate), and kafka-python's producer rate
  2. physical limit: one kafka-python consumer reading the topic
  3. engine limit: a plain Flink SQL windowed count over the topic (bench/engine_job.py)
  4. the adclick job + `adclick serve` end to end over the same topic; then the loader alone
     catching up on the output topics that run left (its rows/s)
  5. the same with one ad taking half of all clicks (skew), and with the state in RocksDB (as
     the cluster's flink-conf/ has it) instead of the MiniCluster's heap
  6. freshness under 2,000 live clicks/s (a warm-up minute, then 3 whole minutes)
  7. peak RSS of every process (sampled all along); the job's checkpointed state after all of
     run 4's click_ids (10 million by default) and per click_id
The report is copied to docs/bench/report.json and docs/bench/chart.png.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path

from kafka import KafkaProducer

from adclick import config
from adclick.topics import create_topics
from bench import chart
from bench import engine_job
from bench import kafka_io
from bench import pipeline
from adclick.testing.processes import PYTHON
from adclick.testing.processes import REPO
from adclick.testing.processes import Broker
from bench.procs import MachineLoad
from bench.procs import RssSampler
from bench.procs import log

OUT = REPO / "bench" / "out"
DOCS = REPO / "docs" / "bench"
MINUTE_MS = config.WINDOW_MS


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # 3 M: runs long enough (1-2 minutes) for a steady rate between checkpoints. It was 10 M
    # until the attribution join: it keeps every click for a week, and on the MiniCluster's
    # heap the bounded stage without the dedup over 10 M clicks had not finished after 16
    # minutes (GC-bound at 7.3 GiB RSS). --records 10000000 still measures that size.
    p.add_argument("--records", type=int,
                   default=int(os.environ.get("BENCH_RECORDS", "3000000")),
                   help="distinct clicks pre-filled for each throughput run (default 3,000,000)")
    p.add_argument("--event-minutes", type=int, default=5,
                   help="event-time span of the pre-filled clicks, in minutes")
    p.add_argument("--kafka-python-sample", type=int, default=100_000)
    p.add_argument("--freshness-minutes", type=int, default=3,
                   help="whole minutes of live traffic observed after the first (warm-up) one; "
                        "the traffic lasts 3-4 minutes")
    p.add_argument("--freshness-s", type=float, default=None,
                   help="live traffic duration instead (default: from --freshness-minutes)")
    p.add_argument("--freshness-rate", type=int, default=2000)
    p.add_argument("--skip-freshness", action="store_true")
    p.add_argument("--load-rates", default="5000,10000,20000,35000,50000",
                   help="the load curve's steps, clicks/s (comma-separated, rising)")
    p.add_argument("--load-step-minutes", type=int, default=3)
    p.add_argument("--skip-load-curve", action="store_true")
    p.add_argument("--mix-rates", default="10000,20000,50000,100000",
                   help="the demo mix's load curve's steps, events/s of all types (20 "
                        "impressions per click, one click in 20 converting)")
    p.add_argument("--skip-mix-curve", action="store_true")
    p.add_argument("--skip-skew", action="store_true")
    p.add_argument("--skip-rocksdb", action="store_true")
    p.add_argument("--skip-recalculation", action="store_true",
                   help="do not time the recalculation of an hour (bench/recalculation.py)")
    p.add_argument("--repeats", type=int, default=3,
                   help="rounds of the bounded runs (plain SQL and the adclick stages, "
                        "alternating); each figure is the median round's, min and max beside")
    p.add_argument("--no-docs", action="store_true", help="do not copy to docs/bench/")
    return p.parse_args(argv)


def machine_info():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    java = subprocess.run(["java", "-version"], capture_output=True, text=True,
                          check=False).stderr
    return {
        "cpu_model": model, "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "java": java.splitlines()[0] if java else None,
        "note": "shared machine: other engineers' processes may run during the benchmark; "
                "each phase records the whole machine's CPU use and load average",
    }


def send_closers(bootstrap, topic, ts):
    """One click per partition, after everything else: moves every partition's watermark past
    the filled minutes so all their windows close. Its own minute stays open (not counted)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for partition in range(config.PARTITIONS):
        click = {"click_id": f"closer-{uuid.uuid4().hex[:8]}-{partition}", "ad_id": "ad-closer",
                 "click_ts": ts, "user_id": "u-closer", "ip": "10.0.0.1", "country": "US",
                 "device": "mobile"}
        producer.send(topic, json.dumps(click).encode(), partition=partition)
    producer.flush()
    producer.close()


def fill_topic(bootstrap, prefix, args, work, skew, seed):
    topics = create_topics(bootstrap, prefix)
    payloads = kafka_io.Payloads(run_id=f"{prefix.rstrip('-')}", seed=seed, skew=skew)
    now = int(time.time() * 1000)
    span = args.event_minutes * MINUTE_MS
    start = (now - 30 * MINUTE_MS) // MINUTE_MS * MINUTE_MS
    log(f"filling {topics['clicks']} with {args.records:,} clicks (skew {skew})")
    stats = kafka_io.bulk_fill(bootstrap, topics["clicks"], config.PARTITIONS, payloads,
                               args.records, start, span, work)
    send_closers(bootstrap, topics["clicks"], start + span + 2 * MINUTE_MS)
    hot = sum(1 for i in range(min(args.records, 100_000)) if payloads.ad_of(i) == "ad-000001")
    stats["hot_ad_share"] = round(hot / min(args.records, 100_000), 3)
    stats["event_minutes"] = args.event_minutes
    stats["clicks_per_event_minute"] = args.records // args.event_minutes
    return topics, payloads, stats


def engine_limit(bootstrap, topic, empty_topic, impressions_topic, mix, work, sampler, repeats):
    log_dir = work / "engine-flink-log"
    log_dir.mkdir(parents=True, exist_ok=True)
    argv = [PYTHON, "-m", "bench.engine_job", "--bootstrap-servers", bootstrap, "--topic", topic,
            "--empty-topic", empty_topic, "--with-dedup", "--adclick-stages",
            "--impressions-topic", impressions_topic, "--mix-clicks-topic", mix["clicks"],
            "--mix-conversions-topic", mix["conversions"], "--repeats", str(repeats),
            "--checkpoint-dir", (work / "engine-checkpoints").as_uri()]
    env = dict(os.environ, FLINK_LOG_DIR=str(log_dir))
    machine = MachineLoad()
    with open(work / "engine.log", "wb") as stderr:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr)
        sampler.watch("engine.flink_job", proc.pid)
        try:
            out, _ = proc.communicate(timeout=1200 * repeats)
        finally:
            sampler.unwatch("engine.flink_job")
    if proc.returncode != 0:
        raise RuntimeError(f"engine job failed; see {work / 'engine.log'}")
    lines = [line for line in out.decode(errors="replace").splitlines()
             if line.startswith(engine_job.RESULT_MARK)]
    if not lines:
        raise RuntimeError(f"no result line from the engine job: {out[-2000:]!r}")
    result = json.loads(lines[-1][len(engine_job.RESULT_MARK):])
    result["machine"] = machine.result()
    return result


def bounded_rates(run, records, empty_run):
    """Rates of a bounded job over the topic from its net runtime and JVM CPU, and the same
    without the fixed per-job cost (the plain job's run over an empty topic) when that cost is
    small enough for the difference to mean something; with repeats, the slowest and fastest
    run's rates beside the median's."""
    net, cpu = run["net_runtime_s"], run["jvm_cpu_s"]
    fixed, fixed_cpu = empty_run["net_runtime_s"], empty_run["jvm_cpu_s"]
    spread = {}
    if run.get("repeats"):
        nets = [each["net_runtime_s"] for each in run["repeats"]]
        cpus = [each["jvm_cpu_s"] for each in run["repeats"]]
        spread = {"records_per_s_min": round(records / max(nets)),
                  "records_per_s_max": round(records / min(nets)),
                  "jvm_cpu_us_per_record_min": round(1e6 * min(cpus) / records, 2),
                  "jvm_cpu_us_per_record_max": round(1e6 * max(cpus) / records, 2)}
    return {
        "records": records,
        "jvm_cpu_us_per_record": round(1e6 * cpu / records, 2),
        **spread,
        "records_per_s": round(records / net),
        "records_per_s_minus_empty_run": round(records / (net - fixed))
        if net - fixed > 0.5 * net else None,
        "records_per_jvm_cpu_s": round(records / cpu),
        "records_per_jvm_cpu_s_minus_empty_run": round(records / (cpu - fixed_cpu))
        if cpu > 2 * fixed_cpu else None,
    }


def median_ratio(run, records, base, base_records):
    """The median over the repeats of (run's rate / base's rate) within each repeat, and its
    min and max: each ratio compares two runs of the same round, never across rounds."""
    pairs = list(zip(run.get("repeats") or [run], base.get("repeats") or [base]))
    values = sorted((records / mine["net_runtime_s"]) / (base_records / theirs["net_runtime_s"])
                    for mine, theirs in pairs)
    return {"median": round(values[len(values) // 2], 3), "min": round(values[0], 3),
            "max": round(values[-1], 3), "runs": len(values)}


def state_estimate(runs):
    """Checkpointed state vs click_ids held, fitted over the checkpoints of the plain run."""
    points = []
    for ck in runs.get("checkpoints", []):
        size = ck.get("checkpointed_size") or ck.get("state_size")
        if ck.get("consumed_offsets_now") and size:
            points.append((ck["consumed_offsets_now"], size))
    if len(points) < 2:
        return None
    slope, intercept = pipeline.fit_slope(points)
    ids = runs["expected_clicks"]
    dedups = sum(v["name"].count("Deduplicate") for v in runs.get("plan", []))
    # The latest checkpoint, by id: offsets sampled near the end of a run can repeat, and the
    # first of equal offsets is an earlier, smaller checkpoint.
    last = max(runs["checkpoints"], key=lambda ck: ck["id"])
    return {
        "run": runs["name"],
        "deduplicate_operators_in_plan": dedups,
        "points_ids_bytes": points,
        "measured_ids": ids,
        "bytes_at_measured_ids": last.get("checkpointed_size") or last.get("state_size"),
        "checkpoint_ms_at_measured_ids": last.get("end_to_end_duration_ms"),
        "ids_at_that_checkpoint": last.get("consumed_offsets_now"),
        "that_checkpoint_holds_all_ids": bool(last.get("after_all_input")),
        "bytes_per_click_id": round(slope, 1),
        "bytes_per_million_click_ids": round(slope * 1e6),
        "fixed_bytes": round(intercept),
        "checkpoint_dir_bytes_at_measured_ids": runs.get("checkpoint_dir_bytes_end"),
        "by_operator": operator_state(runs["checkpoints"]),
        "method": "full checkpoints of the job (MiniCluster: heap state backend, every "
                  "checkpoint complete, not incremental); bytes_at_measured_ids is the latest "
                  "one: the first triggered after ClickHouse showed all the clicks when the run "
                  "found it (it then holds every id: that_checkpoint_holds_all_ids), else the "
                  "last one seen, with the source offsets committed when it was seen (a lower "
                  "bound: the offsets reach Kafka after the checkpoint); bytes_per_click_id is "
                  "the slope fitted over all of them. Besides the dedup keys the state holds "
                  "the open windows (fitted as the fixed part together with operator "
                  "overhead).",
    }


def incremental_state(run):
    """What each incremental checkpoint of a RocksDB run uploaded, against the clicks that
    came since the one before: the job holds 16 bytes per id in the dedup and 24 per click in
    the attribution, so 40 bytes per new click is what changed."""
    checkpoints = sorted((ck for ck in run.get("checkpoints", [])
                          if ck.get("consumed_offsets_now") is not None
                          and ck.get("checkpointed_size")), key=lambda ck: ck["id"])
    rows = []
    for before, ck in zip(checkpoints, checkpoints[1:]):
        if ck["id"] != before["id"] + 1:
            continue  # one between them was not seen: what it uploaded is not counted
        new = ck["consumed_offsets_now"] - before["consumed_offsets_now"]
        rows.append({"id": ck["id"], "new_clicks": new, "uploaded_bytes": ck["checkpointed_size"],
                     "full_state_bytes": ck.get("state_size"),
                     "uploaded_per_new_click": round(ck["checkpointed_size"] / new, 1)
                     if new > 0 else None})
    per_click = sorted(row["uploaded_per_new_click"] for row in rows
                       if row["uploaded_per_new_click"] is not None)
    return {
        "run": run.get("name"),
        "checkpoints": rows,
        "median_uploaded_per_new_click": per_click[len(per_click) // 2] if per_click else None,
        "bytes_of_ids_per_click": 16 + 24,
        "method": "REST checkpointed_size of each completed checkpoint (with incremental "
                  "checkpoints: what it uploaded) against the source offsets committed between "
                  "it and the one before (they lag: Kafka gets a checkpoint's offsets after it "
                  "completes); full_state_bytes is REST state_size",
    }


# The operators whose state grows with the clicks: (what, how its vertex's name begins).
STATEFUL = (("events_dedup", "CompactDeduplicate[", "the dedup of clicks and impressions (1 h)"),
            ("attribution_join", "CompactAttribution[",
             "the counted clicks the attribution keeps for the attribution window (7 days by "
             "default) plus the conversion wait"),
            ("click_labels", "ClickLabel[",
             "the counted clicks the invalid-traffic labelling keeps: the ip window (600 s), the "
             "allowed lateness and a minute of event time, then dropped"))


def operator_state(checkpoints):
    """Bytes per click of each operator of STATEFUL, fitted like the whole state's, over the
    checkpoints' per-vertex sizes."""
    out = {}
    for what, prefix, holds in STATEFUL:
        points = []
        for ck in checkpoints:
            sizes = [size for name, size in (ck.get("by_vertex") or {}).items()
                     if name.startswith(prefix) and size]
            if ck.get("consumed_offsets_now") and sizes:
                points.append((ck["consumed_offsets_now"], max(sizes)))
        if len(points) >= 2:
            slope, intercept = pipeline.fit_slope(points)
            out[what] = {"holds": holds, "bytes_per_click": round(slope, 1),
                         "fixed_bytes": round(intercept), "points_ids_bytes": points}
    return out


RATIOS = (("sustained_clicks_per_s", "sustained"), ("clicks_per_flink_cpu_s", "per_cpu_s"),
          ("end_to_end_clicks_per_s", "end_to_end"))


def ratios(run, base, against):
    """run's rates over base's, as ratio_<measure>_to_<against> (those both have)."""
    return {f"ratio_{short}_to_{against}": round(run[key] / base[key], 3)
            for key, short in RATIOS if run.get(key) and base.get(key)}


class Phases:
    """Runs phases in order; a failed phase is recorded in the report and the rest go on."""

    def __init__(self, report, sampler):
        self.report = report
        self.sampler = sampler
        self.failed = []

    def run(self, name, fn):
        started = time.monotonic()
        broker0 = self.sampler.cpu_seconds("kafka_broker")["total"]
        log(f"--- {name}")
        try:
            fn()
            return True
        except Exception as error:  # noqa: BLE001 - recorded, the benchmark goes on
            traceback.print_exc()
            self.failed.append(name)
            self.report.setdefault("errors", {})[name] = f"{type(error).__name__}: {error}"[:4000]
            return False
        finally:
            self.report.setdefault("phase_wall_s", {})[name] = round(
                time.monotonic() - started, 1)
            self.report.setdefault("kafka_broker_cpu_s", {})[name] = round(
                self.sampler.cpu_seconds("kafka_broker")["total"] - broker0, 1)


def main(argv=None):
    args = parse_args(argv)
    started = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="adclick-bench-"))
    report = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(),
              "parameters": vars(args)}
    broker = Broker(work / "kafka", existing=os.environ.get("ADCLICK_BENCH_KAFKA"))
    sampler = RssSampler(interval=0.5).start()
    phases = Phases(report, sampler)
    run_prefix = f"bench{uuid.uuid4().hex[:6]}-"
    prefix = run_prefix + "a-"
    created = []
    state = {}

    def start_kafka():
        log(f"work dir {work}; starting Kafka" if not broker.existing
            else f"using Kafka at {broker.existing}")
        broker.start()
        if broker.pid():
            sampler.watch("kafka_broker", broker.pid())
        report["kafka"] = {"bootstrap": broker.bootstrap, "own_broker": not broker.existing,
                           "startup_s": round(broker.startup_s or 0, 1)}

    def fill():
        created.extend(config.Topics.with_prefix(prefix).values())
        topics, payloads, stats = fill_topic(broker.bootstrap, prefix, args, work, 0.0, 1)
        state["topics"] = topics
        scratch = create_topics(broker.bootstrap, run_prefix + "scratch-")
        created.extend(scratch.values())
        state["scratch"] = scratch
        # As many impressions, for the impression path's cost (engine_limit's adclick stages),
        # in a topic of their own: the throughput runs read clicks only.
        log(f"filling {scratch['impressions']} with {args.records:,} impressions")
        now = int(time.time() * 1000)
        stats["impressions"] = kafka_io.bulk_fill(
            broker.bootstrap, scratch["impressions"], config.PARTITIONS,
            kafka_io.Payloads(run_id=f"{prefix.rstrip('-')}-i", seed=1, event="impression"),
            args.records, (now - 30 * MINUTE_MS) // MINUTE_MS * MINUTE_MS,
            args.event_minutes * MINUTE_MS, work)
        # The same clicks as traffic has them (duplicates, late and too-late ones) and the
        # conversions of some, for the bounded mix: every path of the job timed.
        mix = create_topics(broker.bootstrap, run_prefix + "mix-")
        created.extend(mix.values())
        state["mix"] = mix
        mixed = kafka_io.Payloads(run_id=f"{prefix.rstrip('-')}-m", seed=2)
        start = (now - 30 * MINUTE_MS) // MINUTE_MS * MINUTE_MS
        span = args.event_minutes * MINUTE_MS
        log(f"filling {mix['clicks']} and {mix['conversions']} with the mix of "
            f"{args.records:,} clicks")
        mix_clicks = kafka_io.bulk_fill(
            broker.bootstrap, mix["clicks"], config.PARTITIONS, mixed, None, None, None, work,
            chunks=mixed.mix_chunks(args.records, start, span))
        send_closers(broker.bootstrap, mix["clicks"], start + span + 2 * MINUTE_MS)
        mix_conversions = kafka_io.bulk_fill(
            broker.bootstrap, mix["conversions"], config.PARTITIONS, mixed, None, None, None,
            work, chunks=mixed.conversion_chunks(args.records, start, span))
        state["mix_records"] = (mix_clicks["records"] + config.PARTITIONS
                                + mix_conversions["records"])
        state["mix_composition"] = {
            "distinct_clicks": args.records, "click_messages": mix_clicks["records"],
            "duplicates": mix_clicks["records"] - args.records,
            "late_share": round(1 / kafka_io.MIX_LATE, 4),
            "too_late_share": round(1 / kafka_io.MIX_TOO_LATE, 4),
            "conversions": mix_conversions["records"],
            "late_by_ms": kafka_io.LATE_MS, "too_late_by_ms": kafka_io.TOO_LATE_MS,
            "conversion_after_click_ms": kafka_io.CONVERSION_AFTER_MS}
        stats["mix"] = state["mix_composition"]
        stats["kafka_python_producer"] = kafka_io.kafka_python_produce_rate(
            broker.bootstrap, scratch["clicks"], payloads, args.kafka_python_sample,
            int(time.time() * 1000))
        report["fill"] = stats
        log(f"fill: {stats['records_per_s']:,}/s (Java producer), kafka-python producer "
            f"{stats['kafka_python_producer']['records_per_s']:,}/s")

    def consumer():
        report["kafka_consumer"] = kafka_io.consume_rate(
            broker.bootstrap, state["topics"]["clicks"], args.records)
        report["kafka_consumer"]["librdkafka"] = kafka_io.librdkafka_consume_rate(
            broker.bootstrap, state["topics"]["clicks"], args.records)
        log(f"kafka-python consumer: {report['kafka_consumer']['records_per_s']:,}/s, "
            f"librdkafka: {report['kafka_consumer']['librdkafka']['records_per_s']:,}/s")

    def engine():
        result = engine_limit(broker.bootstrap, state["topics"]["clicks"],
                              state["scratch"]["top"], state["scratch"]["impressions"],
                              state["mix"], work, sampler, args.repeats)
        records = args.records + config.PARTITIONS  # and a closer per partition
        result.update(bounded_rates(result["run"], records, result["empty_run"]))
        result.update({
            "method": "records / JobExecutionResult.getNetRuntime() of the bounded job (job "
                      "start to end on the MiniCluster, JVM start and planning excluded); "
                      "second figure subtracts the net runtime of the same job over an empty "
                      "topic run right after it in the same JVM (deploy, Kafka connect, "
                      "finish); an empty run before it warmed the JVM up",
        })
        dedup = result.pop("dedup_run", None)
        if dedup:
            dedup.update(bounded_rates(dedup, records, result["empty_run"]))
            dedup["ratio_to_engine"] = median_ratio(dedup, records, result["run"], records)
            result["with_dedup"] = dedup
        stages = result.pop("adclick_stages", None)
        if stages:
            for name, stage in stages.items():
                count = state["mix_records"] if name == "whole_job_mix" else records
                stage.update(bounded_rates(stage, count, result["empty_run"]))
                stage["ratio_to_engine"] = median_ratio(stage, count, result["run"], records)
                if dedup:
                    stage["ratio_to_engine_with_dedup"] = median_ratio(stage, count, dedup,
                                                                       records)
            if "whole_job_mix" in stages:
                mix = stages["whole_job_mix"]
                mix["composition"] = state["mix_composition"]
                mix["jvm_cpu_us_per_distinct_click"] = round(
                    1e6 * mix["jvm_cpu_s"] / state["mix_composition"]["distinct_clicks"], 2)
            stages["method"] = (
                "the adclick job's own source (schema, 'adclick-event' format, watermark) and "
                "settings (exactly-once checkpoints every 5 s, heap state), bounded, into "
                "blackhole sinks, in the same JVM right after the plain job, timed the same way: "
                "parse_only = sql/flink/10_parse.sql alone; without_dedup = every sql/flink/ file "
                "with the events_unique view replaced by a pass-through; whole_job = every file "
                "(run in this order, so each finds the JVM warmer than the plain job did); "
                "whole_job_impressions = every file over as many impressions instead of clicks "
                "(impression_per_click_cost = whole_job's records_per_s / its: above 1, an "
                "impression costs more than a click). "
                "ratio_to_engine = records_per_s / the plain job's records_per_s; "
                "ratio_to_engine_with_dedup = the same / engine_limit.with_dedup's (the plain "
                "count over the first row of each click_id, no checkpoints)")
            if "whole_job_impressions" in stages:
                stages["impression_per_click_cost"] = round(
                    stages["whole_job"]["records_per_s"]
                    / stages["whole_job_impressions"]["records_per_s"], 3)
            report["adclick_bounded"] = stages
            log("adclick bounded, to blackhole: " + ", ".join(
                f"{name} {stages[name]['records_per_s']:,}/s, "
                f"{stages[name]['jvm_cpu_us_per_record']} us JVM CPU each "
                f"({stages[name]['ratio_to_engine']['median']} of plain SQL)"
                for name in stages if isinstance(stages[name], dict) and "records" in stages[name]))
        report["engine_limit"] = result
        net = result["records_per_s_minus_empty_run"]  # None: the fixed cost is too large
        log(f"plain Flink SQL: {result['records_per_s']:,}/s, "
            f"{result['jvm_cpu_us_per_record']} us JVM CPU each"
            + (f" ({net:,}/s without the fixed cost)" if net is not None else "")
            + (f"; with a dedup: {dedup['records_per_s']:,}/s" if dedup else ""))

    def adclick():
        plain = pipeline.throughput_run("adclick", work / "adclick", broker.bootstrap, prefix,
                                        args.records, sampler)
        report["adclick"] = plain
        engine_result = report.get("engine_limit")
        engine_rate = engine_result and (engine_result.get("records_per_s_minus_empty_run")
                                         or engine_result.get("records_per_s"))
        engine_cpu = engine_result and (
            engine_result.get("records_per_jvm_cpu_s_minus_empty_run")
            or engine_result.get("records_per_jvm_cpu_s"))
        if engine_cpu and plain.get("clicks_per_flink_cpu_s"):
            plain["ratio_per_cpu_s_to_engine"] = round(
                plain["clicks_per_flink_cpu_s"] / engine_cpu, 3)
        if engine_rate and plain.get("sustained_clicks_per_s"):
            plain["ratio_sustained_to_engine"] = round(
                plain["sustained_clicks_per_s"] / engine_rate, 3)
        if engine_result:
            plain["ratio_end_to_end_to_engine_raw"] = round(
                plain["end_to_end_clicks_per_s"] / engine_result["records_per_s"], 3)
        log(f"adclick: sustained {plain['sustained_clicks_per_s']}/s, end to end "
            f"{plain['end_to_end_clicks_per_s']}/s")

    def loader():
        plain = report["adclick"]
        counts = report["loader_catchup"] = pipeline.loader_run(
            work / "catchup", broker.bootstrap, prefix, plain["clickhouse_rows_inserted"], sampler)
        rate = counts["rows_per_s"]
        log(f"loader catch-up: {rate:,} rows/s" if rate is not None
            else "loader catch-up: every row loaded before the first poll, too few to time")
        # The same with the raw clicks: what the raw path adds, per click.
        raw = report["loader_raw"] = pipeline.loader_run(
            work / "raw", broker.bootstrap, prefix, plain["clickhouse_rows_inserted"], sampler,
            raw=True)
        raw["raw_path_cpu_us_per_click"] = round(
            (raw["server_cpu_s"] - counts["server_cpu_s"]) / raw["raw_clicks"] * 1e6, 2)
        raw["raw_path_method"] = (
            "(CPU of the server loading counts and raw clicks - CPU of the one loading counts "
            "only) / raw clicks stored: reading the input topic (librdkafka), handing the "
            "records to ClickHouse and its rules view, in one process")
        log(f"loader with raw clicks: {raw['raw_clicks_per_s']:,} raw clicks/s, raw path "
            f"{raw['raw_path_cpu_us_per_click']} us of CPU per click")

    def variant(name, letter, skew, seed, against, extra=()):
        """Run (3) again on a fill of its own (another skew, or other job arguments) and compare
        it with (3)."""
        variant_prefix = run_prefix + letter + "-"
        created.extend(config.Topics.with_prefix(variant_prefix).values())
        _topics, _, fill_stats = fill_topic(broker.bootstrap, variant_prefix, args, work, skew,
                                            seed)
        run = pipeline.throughput_run(name, work / name, broker.bootstrap, variant_prefix,
                                      args.records, sampler, extra=extra)
        run["fill"] = fill_stats
        run.update(ratios(run, report.get("adclick") or {}, against))
        report[name] = run
        log(f"{name}: sustained {run['sustained_clicks_per_s']}/s, end to end "
            f"{run['end_to_end_clicks_per_s']}/s")

    def skewed():
        variant("adclick_skew", "s", 0.5, 2, "unskewed")

    def rocksdb():
        # The cluster's configuration (flink-conf/) keeps state in RocksDB; the other runs use
        # the local MiniCluster's heap. Same kind of input, the job told to use RocksDB.
        variant("adclick_rocksdb", "r", 0.0, 4, "heap", extra=("--state-backend", "rocksdb"))

    def freshness():
        fresh_prefix = run_prefix + "f-"
        created.extend(config.Topics.with_prefix(fresh_prefix).values())
        report["freshness"] = pipeline.freshness_run(
            work / "freshness", broker.bootstrap, fresh_prefix, sampler,
            rate=args.freshness_rate, duration_s=args.freshness_s,
            minutes=args.freshness_minutes)
        f = report["freshness"]
        log(f"freshness: API 1 p50 {f['api1_p50_s']} s, p99 {f['api1_p99_s']} s over "
            f"{f['minutes_observed']} minutes")

    def recalculation():
        # An hour of the freshness run's traffic, counted again from a raw store of its own
        # (its own process: an embedded store's path is one per process).
        done = subprocess.run(
            [PYTHON, "-m", "bench.recalculation", "--rate", str(args.freshness_rate)],
            cwd=REPO, capture_output=True, text=True, timeout=3600, check=True)
        result = report["recalculation"] = json.loads(done.stdout.strip().splitlines()[-1])
        log(f"recalculation of an hour at {result['rate_clicks_per_s']:,} clicks/s: "
            f"{result['total_s']} s ({result['us_per_event']} us per event)")

    def load_curve():
        curve_prefix = run_prefix + "c-"
        created.extend(config.Topics.with_prefix(curve_prefix).values())
        curve = report["load_curve"] = pipeline.load_curve(
            work / "load-curve", broker.bootstrap, curve_prefix, sampler,
            [int(rate) for rate in args.load_rates.split(",")], args.load_step_minutes)
        log(f"load curve: highest rate held {curve['highest_rate_held']}")

    def load_curve_mix():
        curve_prefix = run_prefix + "m-"
        created.extend(config.Topics.with_prefix(curve_prefix).values())
        curve = report["load_curve_mix"] = pipeline.load_curve(
            work / "load-curve-mix", broker.bootstrap, curve_prefix, sampler,
            [int(rate) for rate in args.mix_rates.split(",")], args.load_step_minutes,
            mix=pipeline.DEMO_MIX)
        log(f"load curve, demo mix: highest rate held {curve['highest_rate_held']} events/s")

    try:
        if phases.run("kafka", start_kafka) and phases.run("fill", fill):
            phases.run("kafka_consumer", consumer)
            phases.run("engine_limit", engine)
            if phases.run("adclick", adclick):
                phases.run("loader_catchup", loader)
            if not args.skip_skew:
                phases.run("adclick_skew", skewed)
            if not args.skip_rocksdb:
                phases.run("adclick_rocksdb", rocksdb)
        if not args.skip_freshness and "kafka" not in phases.failed:
            phases.run("freshness", freshness)
        if not args.skip_load_curve and "kafka" not in phases.failed:
            phases.run("load_curve", load_curve)
        if not args.skip_mix_curve and "kafka" not in phases.failed:
            phases.run("load_curve_mix", load_curve_mix)
        if not args.skip_recalculation:
            phases.run("recalculation", recalculation)
        report["peak_rss_mib"] = sampler.peaks_mib()
        if report.get("adclick"):
            report["state"] = state_estimate(report["adclick"])
        if report.get("adclick_rocksdb"):
            report["state_rocksdb"] = incremental_state(report["adclick_rocksdb"])
    finally:
        sampler.stop()
        if broker.existing:
            kafka_io.delete_topics(broker.bootstrap, created)
        else:
            log("stopping Kafka")
            broker.stop()
        logs = OUT / "logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True, exist_ok=True)
        for path in work.rglob("*.log"):
            if "logs" in path.relative_to(work).parts[:2]:
                continue  # the broker's data (segment files are *.log too)
            if path.stat().st_size < 50 * 2**20:
                shutil.copy(path, logs / "-".join(path.relative_to(work).parts))
        shutil.rmtree(work, ignore_errors=True)
    report["bench_wall_s"] = round(time.monotonic() - started, 1)
    (OUT / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    chart.draw(report, OUT / "chart.png")
    log(f"wrote {OUT / 'report.json'} and {OUT / 'chart.png'} in {report['bench_wall_s']} s")
    if not args.no_docs and not phases.failed:
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copy(OUT / "report.json", DOCS / "report.json")
        shutil.copy(OUT / "chart.png", DOCS / "chart.png")
    if phases.failed:
        log(f"failed phases: {', '.join(phases.failed)} (see report.json 'errors')")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
