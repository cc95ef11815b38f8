"""The benchmark's chart: one PNG with six panels, drawn from report.json alone."""

import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

MIB = 2**20
KINDS = (("jvm", "JVM", "#4C72B0"), ("python", "Python", "#DD8452"),
         ("python_udf_worker", "Python UDF workers", "#55A868"))


# The adclick job's parts, bounded into blackhole sinks beside the plain job (2).
BOUNDED_STAGES = (("parse_only", "adclick parse+validate only"),
                  ("without_dedup", "adclick job without dedup"),
                  ("whole_job", "adclick job"),
                  ("whole_job_mix", "adclick job, mix (dups, late, conversions)"),
                  ("whole_job_impressions", "adclick job, impressions"))


def bounded(r, key):
    return (r.get("adclick_bounded") or {}).get(key) or {}


def ratio(value):
    """A ratio as the report has it: a number, or the median of rounds with min and max."""
    if isinstance(value, dict):
        return f"{value['median']} (min {value['min']}, max {value['max']}, {value['runs']} runs)"
    return value


def _bar_labels(ax, bars, fmt):
    for bar in bars:
        width = bar.get_width()
        ax.text(width * 1.03, bar.get_y() + bar.get_height() / 2, fmt(width), va="center",
                fontsize=8)


def throughput(ax, r):
    rows = []
    fill = r.get("fill") or {}
    if fill:
        rows.append(("Kafka fill (Java producer)", fill.get("records_per_s"), "#999999"))
        kp = fill.get("kafka_python_producer") or {}
        rows.append(("kafka-python producer", kp.get("records_per_s"), "#999999"))
    rows.append(("kafka-python consumer (1)", (r.get("kafka_consumer") or {}).get("records_per_s"),
                 "#8172B2"))
    engine = r.get("engine_limit") or {}
    rows.append(("Flink plain SQL, net runtime (2)", engine.get("records_per_s"), "#4C72B0"))
    rows.append(("Flink plain SQL, minus fixed cost (2)",
                 engine.get("records_per_s_minus_empty_run"), "#4C72B0"))
    rows.append(("Flink plain SQL with a dedup (2d)",
                 (engine.get("with_dedup") or {}).get("records_per_s"), "#4C72B0"))
    for key, label in BOUNDED_STAGES:
        rows.append((f"{label}, bounded", bounded(r, key).get("records_per_s"), "#8172B2"))
    for key, label in (("adclick", "adclick"), ("adclick_skew", "adclick, skew 50%"),
                       ("adclick_rocksdb", "adclick, RocksDB")):
        run = r.get(key) or {}
        rows.append((f"{label}: sustained (3/5)", run.get("sustained_clicks_per_s"), "#C44E52"))
        rows.append((f"{label}: to ClickHouse (3/5)", run.get("end_to_end_clicks_per_s"),
                     "#DD8452"))
    rows = [row for row in rows if row[1]]
    labels = [row[0] for row in rows][::-1]
    values = [row[1] for row in rows][::-1]
    colors = [row[2] for row in rows][::-1]
    bars = ax.barh(labels, values, color=colors)
    ax.set_xscale("log")
    ax.set_xlim(min(values) / 2 if values else 1, max(values) * 4 if values else 10)
    _bar_labels(ax, bars, lambda v: f"{v:,.0f}/s")
    ax.set_title("Throughput, records (clicks) per second")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)


def per_cpu(ax, r):
    engine = r.get("engine_limit") or {}
    with_dedup = engine.get("with_dedup") or {}
    rows = [
        ("Flink plain SQL ('json' format)", engine.get("records_per_jvm_cpu_s_minus_empty_run")
         or engine.get("records_per_jvm_cpu_s"), "#4C72B0"),
        ("Flink plain SQL with a dedup", with_dedup.get("records_per_jvm_cpu_s_minus_empty_run")
         or with_dedup.get("records_per_jvm_cpu_s"), "#4C72B0"),
    ]
    for key, label in BOUNDED_STAGES:
        stage = bounded(r, key)
        rows.append((f"{label}, bounded", stage.get("records_per_jvm_cpu_s_minus_empty_run")
                     or stage.get("records_per_jvm_cpu_s"), "#8172B2"))
    rows += [
        ("adclick job", (r.get("adclick") or {}).get("clicks_per_flink_cpu_s"), "#C44E52"),
        ("adclick job, skew 50%", (r.get("adclick_skew") or {}).get("clicks_per_flink_cpu_s"),
         "#C44E52"),
        ("adclick job, RocksDB state",
         (r.get("adclick_rocksdb") or {}).get("clicks_per_flink_cpu_s"), "#C44E52"),
    ]
    loader = r.get("loader_catchup") or {}
    if loader.get("server_cpu_s"):
        rows.append(("loader: count rows to CH", round(
            loader["rows"] / loader["server_cpu_s"]), "#DD8452"))
    raw = r.get("loader_raw") or {}
    if raw.get("raw_path_cpu_us_per_click"):
        rows.append(("loader: raw clicks to CH", round(
            1e6 / raw["raw_path_cpu_us_per_click"]), "#DD8452"))
    rows = [row for row in rows if row[1]]
    bars = ax.barh([row[0] for row in rows][::-1], [row[1] for row in rows][::-1],
                   color=[row[2] for row in rows][::-1])
    values = [row[1] for row in rows] or [1]
    ax.set_xlim(0, max(values) * 1.35)  # linear: the values span less than a decade now
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v / 1000:,.0f}k"))
    _bar_labels(ax, bars, lambda v: f"{v:,.0f}")
    ax.set_title("Per CPU-second (one core), contention-proof")
    ax.set_xlabel("records per CPU-second of the process(es) doing the work")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)


def summary(ax, r):
    ax.axis("off")
    lines = []

    def add(label, value, unit=""):
        if value is not None:
            lines.append(f"{label}: {value:,}{unit}" if isinstance(value, (int, float))
                         else f"{label}: {value}{unit}")

    plain = r.get("adclick") or {}
    skew = r.get("adclick_skew") or {}
    f = r.get("freshness") or {}
    s = r.get("state") or {}
    add("adclick sustained", plain.get("sustained_clicks_per_s"), " clicks/s (2 cores)")
    add("  / plain Flink SQL", plain.get("ratio_sustained_to_engine"), " (wall)")
    add("  / plain Flink SQL", plain.get("ratio_per_cpu_s_to_engine"), " (per CPU-s)")
    add("bounded job / plain SQL", ratio(bounded(r, "whole_job").get("ratio_to_engine")))
    add("  / plain SQL with a dedup",
        ratio(bounded(r, "whole_job").get("ratio_to_engine_with_dedup")))
    add("bounded job, JVM CPU per click", bounded(r, "whole_job").get("jvm_cpu_us_per_record"),
        " us")
    add("  per impression", bounded(r, "whole_job_impressions").get("jvm_cpu_us_per_record"),
        " us")
    add("  per click of the mix",
        bounded(r, "whole_job_mix").get("jvm_cpu_us_per_distinct_click"), " us")
    rocks = r.get("adclick_rocksdb") or {}
    add("RocksDB state / heap", rocks.get("ratio_sustained_to_heap"), " (wall)")
    add("skew 50% / unskewed", skew.get("ratio_sustained_to_unskewed"), " (wall)")
    add("skew 50% / unskewed", skew.get("ratio_per_cpu_s_to_unskewed"), " (per CPU-s)")
    add("clicks per Flink CPU-s", plain.get("clicks_per_flink_cpu_s"), "")
    add("freshness API 1 p50", f.get("api1_p50_s"), " s after minute end")
    add("freshness API 1 p99", f.get("api1_p99_s"), f" s ({f.get('minutes_observed')} minutes)")
    add("  first window (warm-up)", f.get("warmup_minute_api1_fresh_s"), " s")
    add("  after watermark p50/p99",
        f"{f.get('after_watermark_p50_s')} / {f.get('after_watermark_p99_s')}", " s")
    if s:
        add("job state per M click_ids", round(s["bytes_per_million_click_ids"] / MIB, 1), " MiB")
        if s.get("bytes_at_measured_ids"):
            at = "" if s.get("that_checkpoint_holds_all_ids") else ">= "
            add(f"state at {at}{s['ids_at_that_checkpoint'] / 1e6:.1f} M click_ids",
                round(s["bytes_at_measured_ids"] / MIB), " MiB (last checkpoint)")
    ck = plain.get("largest_checkpoint") or {}
    if ck.get("bytes"):
        add("largest checkpoint", f"{ck['bytes'] / MIB:.0f} MiB in {ck['end_to_end_ms']} ms", "")
    curve = r.get("load_curve") or {}
    if curve:
        add("live load curve: held", curve.get("highest_rate_held"), " clicks/s")
    mix = r.get("load_curve_mix") or {}
    if mix:
        add("  demo mix (20 impr./click): held", mix.get("highest_rate_held"), " events/s")
    rocks = r.get("state_rocksdb") or {}
    if rocks.get("median_uploaded_per_new_click"):
        add("RocksDB upload per new click", rocks["median_uploaded_per_new_click"],
            f" B (ids: {rocks['bytes_of_ids_per_click']} B)")
    add("bench wall time", r.get("bench_wall_s"), " s")
    errors = r.get("errors") or {}
    for name in errors:
        lines.append(f"FAILED: {name}")
    ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=10,
            transform=ax.transAxes)
    ax.set_title("Key numbers (details in report.json)")


def progress(ax, r):
    drew = False
    for key, label, color in (("adclick", "adclick", "#C44E52"),
                              ("adclick_skew", "skew 50%", "#8172B2")):
        run = r.get(key) or {}
        series = run.get("progress")
        if not series:
            continue
        ax.plot([p[0] for p in series], [p[1] / 1000 for p in series], color=color,
                label=f"{label}: source offsets committed")
        ch = run.get("clickhouse_progress") or []
        if ch:
            ax.plot([p[0] for p in ch], [p[1] / 1000 for p in ch], color=color, linestyle="--",
                    label=f"{label}: clicks in ClickHouse")
        drew = True
    if drew:
        ax.legend(fontsize=8, loc="upper left")
    ax.set_xlabel("seconds since the job started")
    ax.set_ylabel("thousand clicks")
    ax.set_title("adclick job over the pre-filled topic")
    ax.grid(alpha=0.3)


def freshness(ax, r):
    f = r.get("freshness") or {}
    minutes = [m for m in f.get("minutes", []) if m.get("api1_fresh_s") is not None]
    if not minutes:
        ax.text(0.5, 0.5, "no freshness data", ha="center", transform=ax.transAxes)
        ax.set_title("Freshness")
        return
    labels = [m["minute"][11:16] for m in minutes]
    values = [m["api1_fresh_s"] for m in minutes]
    warm = [i for i, m in enumerate(minutes) if m.get("warmup")]
    steady = [i for i, m in enumerate(minutes) if not m.get("warmup")]
    if warm:
        ax.bar([labels[i] for i in warm], [values[i] for i in warm], color="#BBBBBB",
               label="first window (warm-up, not in p50/p99)")
    ax.bar([labels[i] for i in steady], [values[i] for i in steady], color="#55A868",
           label="API 1 answers the final count")
    for i, value in enumerate(values):
        ax.text(i, value + 0.2, f"{value:.1f}", ha="center", fontsize=8)
    delay = f.get("watermark_delay_s", 0)
    ax.axhline(delay, color="#555555", linestyle=":", label=f"watermark delay ({delay} s)")
    if f.get("api1_p50_s") is not None:
        ax.axhline(f["api1_p50_s"], color="#4C72B0", linestyle="--",
                   label=f"p50 {f['api1_p50_s']} s")
        ax.axhline(f["api1_p99_s"], color="#C44E52", linestyle="--",
                   label=f"p99 {f['api1_p99_s']} s")
    ax.set_ylim(0, max(values + [delay]) * 1.35)
    ax.set_xlabel("minute (UTC)")
    ax.set_ylabel("seconds after the minute ended")
    ax.set_title(f"Freshness at {f.get('rate_target')} live clicks/s "
                 f"({f.get('minutes_observed')} steady minutes)")
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)


def memory(ax, r):
    peaks = r.get("peak_rss_mib") or {}
    names = sorted(peaks, key=lambda n: -peaks[n].get("total", 0))[::-1]
    left = [0.0] * len(names)
    for kind, label, color in KINDS:
        values = [peaks[n].get(kind, 0) for n in names]
        ax.barh(names, values, left=left, color=color, label=label)
        left = [a + b for a, b in zip(left, values)]
    for i, name in enumerate(names):
        note = f"{peaks[name]['total']:,.0f}"
        run = r.get(name.split(".")[0]) or {}
        heap = (run.get("flink_jvm_max_mib") or {}).get("Heap.Used") \
            if name.endswith("flink_job") else None
        if heap:
            note += f" (JVM heap used ≤ {heap:,})"
        ax.text(left[i] + 20, i, note, va="center", fontsize=8)
    ax.set_xlim(0, max(left or [1]) * 1.45)
    ax.set_xlabel("MiB (peak RSS of each part, sampled every 0.5 s)")
    ax.set_title("Peak memory per process")
    ax.tick_params(axis="y", labelsize=8)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="x", alpha=0.3)


def state(ax, r):
    s = r.get("state")
    if not s:
        ax.text(0.5, 0.5, "no checkpoint data", ha="center", transform=ax.transAxes)
        ax.set_title("Checkpointed state")
        return
    points = s["points_ids_bytes"]
    ax.scatter([p[0] / 1e6 for p in points], [p[1] / MIB for p in points], color="#4C72B0",
               label="completed checkpoints (measured)", zorder=3)
    top = max(p[0] for p in points) / 1e6
    ax.plot([0, top], [s["fixed_bytes"] / MIB,
                       (s["fixed_bytes"] + s["bytes_per_click_id"] * top * 1e6) / MIB],
            color="#C44E52", linestyle="--",
            label=f"linear fit: {s['bytes_per_million_click_ids'] / MIB:,.0f} MiB per M ids")
    if s.get("checkpoint_dir_bytes_at_measured_ids"):
        ax.scatter([s["measured_ids"] / 1e6], [s["checkpoint_dir_bytes_at_measured_ids"] / MIB],
                   color="#55A868", marker="s", label="checkpoint dir on disk at the end",
                   zorder=3)
    ax.set_xlabel("million distinct click_ids in the job")
    ax.set_ylabel("MiB")
    ax.set_title("Checkpointed job state vs click_ids")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)


def _short(name):
    name = re.sub(r"\[\d+\]", "", name)
    name = name.replace("Source: clicks_raw", "Source+parse")
    return name if len(name) <= 42 else name[:40] + "…"


def operators(ax, r):
    ops = (r.get("adclick") or {}).get("operators")
    if not ops:
        ax.text(0.5, 0.5, "no operator metrics", ha="center", transform=ax.transAxes)
        ax.set_title("Where the time goes")
        return
    names = list(ops)[::-1]
    left = [0.0] * len(names)
    for metric, label, color in (("busy", "busy", "#C44E52"),
                                 ("backPressured", "back-pressured", "#8172B2"),
                                 ("idle", "idle", "#CCCCCC")):
        values = [ops[n].get(metric, 0) for n in names]
        ax.barh([_short(n) for n in names], values, left=left, color=color, label=label)
        left = [a + b for a, b in zip(left, values)]
    ax.set_xlim(0, 1000)
    ax.set_xlabel("ms per second, averaged over subtasks and mid-run samples")
    ax.set_title("adclick job: time per operator chain")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=8, loc="lower right")


def draw(report, path):
    fig, axes = plt.subplots(2, 4, figsize=(26, 11.5))
    throughput(axes[0][0], report)
    per_cpu(axes[0][1], report)
    progress(axes[0][2], report)
    freshness(axes[0][3], report)
    operators(axes[1][0], report)
    memory(axes[1][1], report)
    state(axes[1][2], report)
    summary(axes[1][3], report)
    m = report.get("machine", {})
    fig.suptitle(f"adclick benchmark — {m.get('cores')} cores ({m.get('cpu_model')}), "
                 f"{m.get('memory_gib')} GiB, {report.get('started_at', '')[:16]}, "
                 f"{report.get('parameters', {}).get('records', 0):,} pre-filled clicks; "
                 f"total {report.get('bench_wall_s', 0):.0f} s", fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    draw(json.loads(Path(sys.argv[1]).read_text()), sys.argv[2])
