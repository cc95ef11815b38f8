"""apps: the commands people run, on top of the library (adclick) and the API (api).

`adclick` (cli), `adclick serve`/`adclick ingest` (server), `make demo` (demo), `adclick sql`
(sql), `adclick generate` (generate) and `adclick reconcile` (reconcile). Nothing in adclick,
api, jobs or udfs imports from here; tests and bench may.
"""
