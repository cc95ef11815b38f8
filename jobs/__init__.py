"""Flink jobs, one per file, each named for what it produces."""
