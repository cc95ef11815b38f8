#!/usr/bin/env bash
# A standalone Flink session cluster (one JobManager, one TaskManager with 4 slots) run from the
# Flink distribution shipped inside the apache-flink wheel, so Flink and PyFlink versions match.
#
#   scripts/flink-cluster.sh start|stop|status|conf|savepoint-dir <job-id>
#   scripts/flink-cluster.sh taskmanager-kill|taskmanager-start|jobmanager-kill   (fault tests)
#
# `stop` first stops every running job with a savepoint (into the job's own savepoint folder),
# so the next `scripts/submit-job.sh` of the same pipeline resumes it. Without HA services the
# cluster forgets its jobs when the JobManager goes away (a crash or a stop): start it again and
# resubmit; the job resumes its newest savepoint or retained checkpoint (docs/ARCHITECTURE.md).
#
# FLINK_STACK_DIR (.stack/flink, relative to the repository), FLINK_REST_PORT (8081),
# FLINK_RPC_PORT (6123) and FLINK_PROMETHEUS_PORTS (9249-9250: the daemons' metrics for
# Prometheus) let a test run its own cluster beside the default one.
# `conf` writes the resolved configuration and prints its directory (used by submit-job.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="$ROOT/.venv/bin/python"
STATE="${FLINK_STACK_DIR:-.stack/flink}"
[[ "$STATE" = /* ]] || STATE="$ROOT/$STATE"
REST_PORT="${FLINK_REST_PORT:-8081}"
RPC_PORT="${FLINK_RPC_PORT:-6123}"
PROMETHEUS_PORTS="${FLINK_PROMETHEUS_PORTS:-9249-9250}"
REST="http://127.0.0.1:$REST_PORT"

FLINK_HOMES=("$ROOT"/.venv/lib/python3*/site-packages/pyflink)  # the wheel's Flink distribution
export FLINK_HOME="${FLINK_HOMES[0]}"
export FLINK_CONF_DIR="$STATE/conf"
export FLINK_LOG_DIR="$STATE/log"
# The wheel keeps flink-python in opt/, but the cluster needs it on its classpath to run PyFlink
# operators (else ClassNotFoundException: ...python.aggregate.PythonStreamGroupWindowAggregate...):
# the daemons get a lib dir of their own, the wheel's lib/ plus that jar, instead of editing the venv.
export FLINK_LIB_DIR="$STATE/lib"
export FLINK_PID_DIR="$STATE/run"  # not /tmp: pid files there are shared by every cluster
export USER="${USER:-$(id -un)}"    # names the pid files
# Python workers of PyFlink UDFs are started by the TaskManager: give it the venv first on PATH.
export PATH="$ROOT/.venv/bin:$PATH"

# flink-conf/config.yaml is the source of truth; Flink needs absolute paths, so the copy the
# cluster reads is generated with this checkout's paths and ports.
write_conf() {
  [[ -x "$FLINK_HOME/bin/jobmanager.sh" ]] || {
    echo "flink: no Flink distribution at $FLINK_HOME (run make venv)" >&2; exit 1; }
  mkdir -p "$FLINK_CONF_DIR" "$FLINK_LOG_DIR" "$FLINK_PID_DIR" "$FLINK_LIB_DIR"
  ln -sf "$FLINK_HOME"/lib/*.jar "$FLINK_HOME"/opt/flink-python-*.jar "$FLINK_LIB_DIR/"
  find "$FLINK_LIB_DIR" -xtype l -delete  # links left from another Flink version
  sed -e "s|@ROOT@|$ROOT|g" -e "s|@STATE@|$STATE|g" \
      -e "s|@REST_PORT@|$REST_PORT|g" -e "s|@RPC_PORT@|$RPC_PORT|g" \
      -e "s|@PROMETHEUS_PORTS@|$PROMETHEUS_PORTS|g" \
      "$ROOT/flink-conf/config.yaml" >"$FLINK_CONF_DIR/config.yaml.tmp"
  # Renamed into place: a daemon starting meanwhile never reads a half-written file.
  mv "$FLINK_CONF_DIR/config.yaml.tmp" "$FLINK_CONF_DIR/config.yaml"
  cp "$ROOT/flink-conf/log4j.properties" "$ROOT/flink-conf/log4j-cli.properties" "$FLINK_CONF_DIR/"
}

# Live pids recorded by Flink's daemon scripts for $1 (standalonesession or taskexecutor).
daemon_pids() {
  local file="$FLINK_PID_DIR/flink-$USER-$1.pid" pid
  [[ -f "$file" ]] || return 0
  while read -r pid; do
    if kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
  done <"$file"
}

# Run a daemon script in a session of its own, so that the JVMs it leaves behind are not killed
# with the caller's process group (make, pytest); --wait keeps its exit status.
daemon() { setsid --wait "$FLINK_HOME/bin/$1.sh" "${@:2}" >/dev/null; }

# Print "<taskmanager count> <free slots> <taskmanager ids...>" from the REST API, or fail.
overview() {
  "$PYTHON" - "$REST" <<'EOF' 2>/dev/null
import json, sys, urllib.request
get = lambda path: json.load(urllib.request.urlopen(sys.argv[1] + path, timeout=3))
overview, tms = get("/overview"), get("/taskmanagers")["taskmanagers"]
print(overview["taskmanagers"], overview["slots-available"], *[tm["id"] for tm in tms])
EOF
}

# Wait up to 90 s until a TaskManager not in the list $1 has registered and slots are free.
wait_for_new_taskmanager() {
  local before="$1" started=$SECONDS count free ids id
  while (( SECONDS - started < 90 )); do
    if read -r count free ids <<<"$(overview)" && (( ${count:-0} > 0 && ${free:-0} > 0 )); then
      for id in $ids; do
        [[ " $before " == *" $id "* ]] || {
          echo "flink: $count TaskManager(s), $free free slot(s) at $REST in $((SECONDS - started)) s"
          return 0; }
      done
    fi
    [[ -n "$(daemon_pids standalonesession)" ]] || { echo "flink: JobManager died" >&2; break; }
    sleep 1
  done
  echo "flink: no new TaskManager registered; last lines of the logs in $FLINK_LOG_DIR:" >&2
  tail -n 20 "$FLINK_LOG_DIR"/*.log "$FLINK_LOG_DIR"/*.out >&2 2>/dev/null || true
  exit 1
}

taskmanager_start() {
  local before
  before="$(overview | cut -d' ' -f3-)" || before=""
  daemon taskmanager start
  wait_for_new_taskmanager "$before"
}

start() {
  local pid
  if [[ -n "$(daemon_pids standalonesession)" ]]; then
    echo "flink: already running ($REST)"
    [[ -n "$(daemon_pids taskexecutor)" ]] || taskmanager_start
    return 0
  fi
  if overview >/dev/null; then
    echo "flink: a Flink cluster not started from $STATE already answers at $REST"; return 0
  fi
  write_conf
  # No JobManager of ours: a TaskManager left from it would only register with the new one.
  for pid in $(daemon_pids taskexecutor); do kill -9 "$pid"; done
  rm -f "$FLINK_PID_DIR"/*.pid
  daemon jobmanager start
  daemon taskmanager start
  wait_for_new_taskmanager ""
}

# Job ids of the cluster's running jobs (none if it does not answer).
running_jobs() {
  "$PYTHON" - "$REST" <<'EOF' 2>/dev/null || true
import json, sys, urllib.request
jobs = json.load(urllib.request.urlopen(sys.argv[1] + "/jobs/overview", timeout=5))["jobs"]
print(*[job["jid"] for job in jobs if job["state"] == "RUNNING"])
EOF
}

# The savepoint folder job $1 publishes in its configuration (adclick.savepoint-dir, set by
# jobs/ad_click_aggregation.py): a stop from outside must write there, where the job's next
# start looks, not into the cluster's default folder. Empty for other jobs.
job_savepoint_dir() {
  "$PYTHON" - "$REST" "$1" <<'EOF' 2>/dev/null || true
import json, sys, urllib.request
config = json.load(urllib.request.urlopen(f"{sys.argv[1]}/jobs/{sys.argv[2]}/config", timeout=5))
print(config["execution-config"]["user-config"].get("adclick.savepoint-dir", ""))
EOF
}

# Stop each running job with a savepoint, each within 90 s; a job that cannot be stopped so
# still resumes from its newest retained checkpoint.
stop_jobs_with_savepoints() {
  local jid dir
  for jid in $(running_jobs); do
    dir="$(job_savepoint_dir "$jid")"
    if timeout 90 "$FLINK_HOME/bin/flink" stop -m "127.0.0.1:$REST_PORT" \
         ${dir:+--savepointPath "$dir"} "$jid" >/dev/null 2>&1; then
      echo "flink: stopped job $jid with a savepoint"
    else
      echo "flink: job $jid did not stop with a savepoint; it resumes from its newest checkpoint" >&2
    fi
  done
}

stop() {
  write_conf  # the stop scripts read the pid dir from the configuration
  [[ -z "$(daemon_pids standalonesession)" ]] || stop_jobs_with_savepoints
  daemon taskmanager stop-all || true
  daemon jobmanager stop-all || true
  # The daemon scripts SIGKILL after 10 s; make sure nothing of ours is left.
  local pid
  for pid in $(daemon_pids taskexecutor) $(daemon_pids standalonesession); do
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -f "$FLINK_PID_DIR"/*.pid
  echo "flink: stopped"
}

status() {
  local jm tm
  jm="$(daemon_pids standalonesession | xargs)"; tm="$(daemon_pids taskexecutor | xargs)"
  echo "flink: JobManager pid(s): ${jm:-none}; TaskManager pid(s): ${tm:-none}; state $STATE"
  [[ -n "$jm" ]] || return 1
  local out
  out="$(overview)" || { echo "flink: $REST does not answer"; return 1; }
  read -r count free _ <<<"$out"
  echo "flink: $REST: $count TaskManager(s), $free free slot(s)"
}

# Simulate the crash of a daemon's machine: SIGKILL of daemon $1 (taskexecutor or
# standalonesession, named $2 in messages), no clean shutdown. A killed JobManager's tasks go on
# in the TaskManager until it notices; `start` ends them before starting a new JobManager.
daemon_kill() {
  local pids
  pids="$(daemon_pids "$1" | xargs)"
  [[ -n "$pids" ]] || { echo "flink: no $2 running"; return 0; }
  kill -9 $pids
  rm -f "$FLINK_PID_DIR/flink-$USER-$1.pid"
  echo "flink: killed $2 pid(s) $pids"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  taskmanager-kill) daemon_kill taskexecutor TaskManager ;;
  taskmanager-start) write_conf; taskmanager_start ;;
  jobmanager-kill) daemon_kill standalonesession JobManager ;;
  conf) write_conf; echo "$FLINK_CONF_DIR" ;;
  savepoint-dir) job_savepoint_dir "${2:?usage: $0 savepoint-dir <job-id>}" ;;
  *) echo "usage: $0 start|stop|status|conf|savepoint-dir <job-id>|taskmanager-kill|" \
          "taskmanager-start|jobmanager-kill" >&2
     exit 2 ;;
esac
