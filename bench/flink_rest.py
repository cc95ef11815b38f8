"""The REST API of a local (MiniCluster) Flink job, found through the job's log.

A job started with `python -m jobs.ad_click_aggregation` runs on a MiniCluster inside PyFlink's
gateway JVM, whose REST endpoint listens on a random port. With FLINK_LOG_DIR set to a folder
of our own, the log line "Rest endpoint listening at localhost:<port>" tells which.
"""

import re
import time
import urllib.error
from pathlib import Path

from bench.procs import http_json

PORT_LINE = re.compile(rb"Rest endpoint listening at [^:\s]+:(\d+)")


class FlinkRest:
    def __init__(self, log_dir):
        self.log_dir = Path(log_dir)
        self.port = None
        self.job_id = None

    def find_port(self):
        if self.port is None:
            for path in self.log_dir.glob("flink-*.log"):
                match = PORT_LINE.search(path.read_bytes())
                if match:
                    self.port = int(match.group(1))
        return self.port

    def get(self, path, timeout=5):
        return http_json(f"http://127.0.0.1:{self.port}{path}", timeout=timeout)

    def wait_job(self, timeout=180, check=None):
        """Wait for the REST port and a job in state RUNNING; returns the job's details."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check:
                check()
            if self.find_port():
                try:
                    jobs = self.get("/jobs")["jobs"]
                    if jobs:
                        self.job_id = jobs[0]["id"]
                        job = self.job()
                        if job["state"] == "RUNNING":
                            return job
                except (urllib.error.URLError, ConnectionError, OSError, KeyError):
                    pass
            time.sleep(0.5)
        raise TimeoutError("Flink job did not reach RUNNING")

    def job(self):
        return self.get(f"/jobs/{self.job_id}")

    def vertex_metrics(self, names):
        """{vertex name: {metric: {'sum','avg','max'}}} aggregated over each vertex's subtasks."""
        out = {}
        for vertex in self.job()["vertices"]:
            rows = self.get(f"/jobs/{self.job_id}/vertices/{vertex['id']}/subtasks/metrics"
                            f"?get={','.join(names)}&agg=sum,avg,max")
            out[vertex["name"]] = {row["id"]: {k: row[k] for k in ("sum", "avg", "max")
                                               if k in row} for row in rows}
        return out

    def heap(self):
        """{metric: bytes} of the (MiniCluster's single) TaskManager JVM."""
        managers = self.get("/taskmanagers")["taskmanagers"]
        if not managers:
            return {}
        names = ("Status.JVM.Memory.Heap.Used", "Status.JVM.Memory.Heap.Committed",
                 "Status.JVM.Memory.Heap.Max", "Status.JVM.Memory.NonHeap.Used",
                 "Status.JVM.Memory.Direct.MemoryUsed")
        rows = self.get(f"/taskmanagers/{managers[0]['id']}/metrics?get={','.join(names)}")
        return {row["id"].split("Memory.", 1)[1]: int(float(row["value"])) for row in rows}

    def checkpoints(self):
        return self.get(f"/jobs/{self.job_id}/checkpoints")

    def checkpoint_by_vertex(self, checkpoint_id):
        """{vertex name: checkpointed bytes} of one completed checkpoint."""
        names = {vertex["id"]: vertex["name"] for vertex in self.job()["vertices"]}
        tasks = self.get(f"/jobs/{self.job_id}/checkpoints/details/{checkpoint_id}")["tasks"]
        return {names.get(vertex, vertex): task.get("checkpointed_size") or task.get("state_size")
                for vertex, task in tasks.items()}
