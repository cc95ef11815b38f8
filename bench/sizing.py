"""Estimates behind docs/SCALING.md: distinct (ad, country, device) keys per minute, by sampling.

The job writes one ad_click_counts row per (minute, ad, country, device) that had a click, so
rows per day depend on how many keys a minute touches. That is sampled here with the
generator's distributions (adclick.generator: Zipf s=1.1 ad popularity, weighted countries and
devices) for any number of ads and clicks per minute. Checked against the benchmark: at 10,000
ads and 100,000 clicks a minute the run measured count_rows_per_click (report.json).

    python -m bench.sizing [report.json]
"""

import json
import sys
from pathlib import Path

import numpy as np

from adclick.generator import COUNTRY_WEIGHTS
from adclick.generator import DEVICE_WEIGHTS


def distinct_keys(ads, clicks, zipf_s=1.1, seed=1, chunk=2_000_000):
    """Expected distinct (ad, country, device) among `clicks` clicks of one minute."""
    rng = np.random.default_rng(seed)
    ad_cum = np.cumsum(1.0 / np.arange(1, ads + 1) ** zipf_s)
    ad_cum /= ad_cum[-1]
    c_w = np.array(list(COUNTRY_WEIGHTS.values()), dtype=float)
    d_w = np.array(list(DEVICE_WEIGHTS.values()), dtype=float)
    keys = []
    left = clicks
    while left > 0:
        n = min(chunk, left)
        ad = np.minimum(np.searchsorted(ad_cum, rng.random(n)), ads - 1)
        country = rng.choice(len(c_w), n, p=c_w / c_w.sum())
        device = rng.choice(len(d_w), n, p=d_w / d_w.sum())
        keys.append(np.unique((ad.astype(np.int64) * len(c_w) + country) * len(d_w) + device))
        left -= n
    return int(np.unique(np.concatenate(keys)).size)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    report = json.loads(Path(argv[0]).read_text()) if argv else {}
    rows = []
    check = distinct_keys(10_000, 100_000)
    measured = (report.get("adclick") or {}).get("count_rows_per_click")
    rows.append(("check: 10k ads, 100k clicks/min", check, check / 100_000, measured))
    for label, ads, per_min in (
            ("2M ads, average minute of 1B/day (694k)", 2_000_000, 694_444),
            ("2M ads, peak minute at 50k/s (3M)", 2_000_000, 3_000_000),
            ("2M ads, 10x average (6.9M)", 2_000_000, 6_944_444),
            ("20M ads, 10x average (6.9M)", 20_000_000, 6_944_444)):
        keys = distinct_keys(ads, per_min)
        rows.append((label, keys, keys / per_min, None))
    print("| case | distinct keys per minute | rows per click | measured rows per click |")
    print("|---|---:|---:|---:|")
    for label, keys, ratio, meas in rows:
        print(f"| {label} | {keys:,} | {ratio:.3f} | {'' if meas is None else meas} |")


if __name__ == "__main__":
    main()
