"""Python functions the Flink job runs on pre-reduced, per-window records."""
