"""Support for tests and benchmarks: adclick's processes, an API client, live traffic."""
