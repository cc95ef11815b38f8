"""What a Flink cluster's REST API says about its jobs: the live ones and their checkpoints.

The job asks it before it starts on a cluster (a second copy of a pipeline would publish every
count twice); the API asks it for the dashboard's "last checkpoint".
"""

import json
import urllib.request

TERMINAL_JOB_STATES = frozenset({"FINISHED", "CANCELED", "FAILED", "SUSPENDED"})


def _get(url, timeout_s):
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def live_jobs(base_url, timeout_s):
    """The jobs of the cluster at base_url that have not ended ({"jid", "name", "state", ...}).

    Raises OSError (unreachable, timeout) or ValueError (not Flink's JSON)."""
    jobs = _get(f"{base_url.rstrip('/')}/jobs/overview", timeout_s)["jobs"]
    return [job for job in jobs if job["state"] not in TERMINAL_JOB_STATES]


def newest_checkpoint(base_url, job_id, timeout_s):
    """The job's newest completed checkpoint ({"id", "latest_ack_timestamp" (ms), ...}) or None."""
    history = _get(f"{base_url.rstrip('/')}/jobs/{job_id}/checkpoints", timeout_s)
    return (history.get("latest") or {}).get("completed")
