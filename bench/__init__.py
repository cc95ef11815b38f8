"""adclick's benchmark (`make bench`, `python -m bench.run`).

Measures, on this machine: the Kafka consumer read limit, a plain Flink SQL windowed count (the
engine limit), the adclick job end to end (plain and skewed traffic), freshness under live
traffic, peak memory of every process and the size of the dedup state. Writes bench/out/
report.json and chart.png, copied to docs/bench/. See bench/README.md and docs/SCALING.md.
"""
