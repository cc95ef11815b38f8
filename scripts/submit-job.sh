#!/usr/bin/env bash
# Submit jobs/ad_click_aggregation.py, detached, to the standalone cluster of
# scripts/flink-cluster.sh (same FLINK_STACK_DIR / FLINK_REST_PORT), and print its job id.
#
#   scripts/submit-job.sh [--from-savepoint PATH] [job flags, e.g. --bootstrap-servers H:P ...]
#
# Every flag but --from-savepoint goes to the job (python -m jobs.ad_click_aggregation --help).
# The job resumes its pipeline's newest savepoint or retained checkpoint by itself (--fresh to
# start empty) and refuses to start while a copy of the same pipeline runs on the cluster; what
# it resumes is printed on stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="$ROOT/.venv/bin/python"
FLINK_HOMES=("$ROOT"/.venv/lib/python3*/site-packages/pyflink)
FLINK="${FLINK_HOMES[0]}/bin/flink"
export FLINK_CONF_DIR="$("$ROOT/scripts/flink-cluster.sh" conf)"  # same conf as the cluster
export PATH="$ROOT/.venv/bin:$PATH"

restore=()
job_args=()
while (( $# )); do
  case "$1" in
    --from-savepoint) restore=(-s "$2"); shift 2 ;;
    --from-savepoint=*) restore=(-s "${1#*=}"); shift ;;
    *) job_args+=("$1"); shift ;;
  esac
done

# The job puts the Kafka connector and its click format (adclick-flink.jar) into pipeline.jars
# when it finds them in this checkout's .stack/jars; -D pipeline.jars is the fallback for a job
# file run from elsewhere. udfs/ is shipped with
# -pyfs so the TaskManager's Python workers can unpickle the top-N UDAF even when the project
# is not pip-installed into the venv.
CONNECTOR="$(ls "$ROOT"/.stack/jars/flink/flink-sql-connector-kafka-*.jar 2>/dev/null | head -n 1)"
FORMAT="$ROOT/.stack/jars/flink/adclick-flink.jar"
[[ -n "$CONNECTOR" && -f "$FORMAT" ]] ||
  { echo "submit: Kafka connector or adclick-flink.jar missing (run make jars)" >&2; exit 1; }

OUT="$(mktemp)"
trap 'rm -f "$OUT"' EXIT
# The client runs in a session of its own (its pid is its process group) so that it can be ended
# together with the Python process it spawns: once "Job has been submitted with JobID" is out,
# the job lives on the cluster. Under -d the job's program returns by itself (it only waits for
# the job when attached); a client that still lingers has nothing left to do.
setsid "$FLINK" run -m "127.0.0.1:${FLINK_REST_PORT:-8081}" -d "${restore[@]}" \
  -D "pipeline.jars=file://$CONNECTOR;file://$FORMAT" \
  -py "$ROOT/jobs/ad_click_aggregation.py" -pyfs "$ROOT/udfs" \
  -pyexec "$PYTHON" -pyclientexec "$PYTHON" \
  "${job_args[@]}" >"$OUT" 2>&1 </dev/null &
client=$!
job_id=""
started=$SECONDS
while kill -0 "$client" 2>/dev/null; do
  job_id="$(grep -oE 'JobID [0-9a-f]{32}' "$OUT" | tail -n 1 | cut -d' ' -f2)" || true
  if [[ -n "$job_id" ]]; then
    sleep 1  # let a client that does return exit by itself
    kill -TERM -- "-$client" 2>/dev/null || true
    break
  fi
  if (( SECONDS - started > 300 )); then
    kill -KILL -- "-$client" 2>/dev/null || true
    echo "submit: no job id after 300 s:" >&2; cat "$OUT" >&2; exit 1
  fi
  sleep 0.5
done
rc=0
wait "$client" || rc=$?
job_id="$(grep -oE 'JobID [0-9a-f]{32}' "$OUT" | tail -n 1 | cut -d' ' -f2)" || true
if [[ -z "$job_id" ]]; then
  echo "submit: flink run failed (exit $rc):" >&2; cat "$OUT" >&2; exit 1
fi
grep '^adclick: ' "$OUT" >&2 || true
echo "$job_id"
