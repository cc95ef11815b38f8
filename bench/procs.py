"""What the benchmark measures of processes and the machine: RSS and CPU of process trees, the
machine's load, folder sizes. adclick.testing starts (and stops) the processes themselves.
"""

import json
import os
import sys
import threading
import time
import urllib.request

PAGE = os.sysconf("SC_PAGE_SIZE")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def proc_stats():
    """(pid, fields of /proc/<pid>/stat after the command name) of every live process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        yield int(entry), stat[stat.rindex(")") + 2:].split()


def _children_map():
    children = {}
    for pid, fields in proc_stats():
        children.setdefault(int(fields[1]), []).append(pid)
    return children


def cpu_ticks(pid):
    """utime + stime of pid, in clock ticks (0 when gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def tree(pid, children=None):
    children = _children_map() if children is None else children
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, ()))
    return out


def classify(command):
    if "java" in command.split(" ", 1)[0]:
        return "jvm"
    if "beam_boot" in command or "pyflink-udf-runner" in command or "fn_execution" in command:
        return "python_udf_worker"
    return "python"


class RssSampler:
    """Samples the RSS of named process trees every interval; keeps the peak of each part.

    watch(name, pid) adds a tree; parts of a tree are split by kind (JVM, Python UDF workers,
    other Python), so a Flink job reports its MiniCluster JVM apart from its Python processes.
    """

    def __init__(self, interval=0.5):
        self.interval = interval
        self.watched = {}
        self.peaks = {}
        self.series = {}
        self.cpu = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._sample_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def start(self):
        self._thread.start()
        return self

    def watch(self, name, pid):
        with self._lock:
            self.watched[name] = pid

    def unwatch(self, name):
        with self._lock:
            self.watched.pop(name, None)

    def sample_once(self):
        with self._sample_lock:
            self._sample_once()

    def _sample_once(self):
        children = _children_map()
        with self._lock:
            watched = dict(self.watched)
        now = time.time()
        for name, root in watched.items():
            if root is None:
                continue
            parts = {}
            cpu = self.cpu.setdefault(name, {})
            for pid in tree(root, children):
                kind = classify(cmdline(pid))
                parts[kind] = parts.get(kind, 0) + rss_bytes(pid)
                ticks = cpu_ticks(pid)
                if ticks:
                    cpu[(pid, kind)] = ticks
            total = sum(parts.values())
            peak = self.peaks.setdefault(name, {"total": 0})
            peak["total"] = max(peak["total"], total)
            for kind, value in parts.items():
                peak[kind] = max(peak.get(kind, 0), value)
            self.series.setdefault(name, []).append((now, total))

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.sample_once()
            except Exception as error:  # noqa: BLE001 - sampling must never stop a run
                log(f"rss sampler: {error}")

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def cpu_seconds(self, name, sample=True):
        """CPU seconds used so far by the tree called name ({kind: s}, and 'total')."""
        if sample:
            self.sample_once()
        out = {"total": 0.0}
        for (_pid, kind), ticks in self.cpu.get(name, {}).items():
            out[kind] = out.get(kind, 0.0) + ticks / CLK_TCK
            out["total"] += ticks / CLK_TCK
        return out

    def peaks_mib(self):
        return {name: {k: round(v / 2**20, 1) for k, v in parts.items()}
                for name, parts in self.peaks.items()}


def http_json(url, timeout=5, data=None, headers=None):
    request = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def dir_size(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


class MachineLoad:
    """Whole-machine CPU use between start and stop (others share this machine)."""

    def __init__(self):
        self.start = self._read()
        self.load_start = os.getloadavg()[0]

    @staticmethod
    def _read():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]
        return sum(values) - idle, sum(values)

    def result(self):
        busy1, total1 = self._read()
        busy0, total0 = self.start
        ncpu = os.cpu_count() or 1
        return {
            "cpu_busy_pct": round(100.0 * (busy1 - busy0) / max(1, total1 - total0), 1),
            "busy_core_seconds": round((busy1 - busy0) / CLK_TCK, 1),
            "cores": ncpu,
            "loadavg_1m_start": round(self.load_start, 2),
            "loadavg_1m_end": round(os.getloadavg()[0], 2),
        }
