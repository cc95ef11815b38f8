"""`adclick serve` as a user runs it: a production WSGI server, and a prompt stop.

The process is started exactly as `make demo` starts it (adclick.testing.start_server), but
with Kafka unreachable: nothing listens on the bootstrap port, so the loader keeps failing to
connect while the API answers from the store.
"""

import signal
import time
import urllib.request

import pytest

from adclick.testing.processes import free_port
from adclick.testing.processes import start_server

pytestmark = pytest.mark.integration
STOP_WITHIN_S = 5


def test_serves_through_waitress_and_stops_promptly_without_kafka(tmp_path):
    process, api = start_server(tmp_path, f"127.0.0.1:{free_port()}", "serve-", tmp_path / "ch")
    try:
        with urllib.request.urlopen(f"{api.base}/healthz", timeout=10) as response:
            assert response.status == 200
            assert response.headers["Server"] == "waitress"
        time.sleep(3)  # the loader is now inside its connect/retry loop against no broker
        process.assert_running()
        started = time.monotonic()
        process.popen.send_signal(signal.SIGTERM)
        process.popen.wait(STOP_WITHIN_S)
        took = time.monotonic() - started
    finally:
        code = process.stop()
    assert code == 0, process.tail()
    assert took < STOP_WITHIN_S
    assert "shutting down" in process.tail()
