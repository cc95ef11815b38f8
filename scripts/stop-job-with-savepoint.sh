#!/usr/bin/env bash
# Stop a job of the standalone cluster gracefully with a savepoint and print the savepoint's path
# (last line), e.g. for an upgrade. The sources stop first, then the final savepoint commits the
# sinks' transactions, so nothing is lost or written twice across the stop.
#
#   scripts/stop-job-with-savepoint.sh <job-id> [savepoint-dir]
#
# By default the savepoint goes to the job's own savepoint folder (beside its checkpoints), so
# the next `scripts/submit-job.sh` of the same pipeline resumes it by itself; with savepoint-dir
# it goes there, to be given to `scripts/submit-job.sh --from-savepoint <path>`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FLINK_HOMES=("$ROOT"/.venv/lib/python3*/site-packages/pyflink)
FLINK="${FLINK_HOMES[0]}/bin/flink"
[[ $# -ge 1 ]] || { echo "usage: $0 <job-id> [savepoint-dir]" >&2; exit 2; }
export FLINK_CONF_DIR="$("$ROOT/scripts/flink-cluster.sh" conf)"
dir="${2:-$("$ROOT/scripts/flink-cluster.sh" savepoint-dir "$1")}"
target=()
if [[ -n "$dir" ]]; then
  [[ "$dir" == *://* ]] || dir="file://$(realpath -m "$dir")"
  target=(--savepointPath "$dir")
fi

out="$("$FLINK" stop -m "127.0.0.1:${FLINK_REST_PORT:-8081}" "${target[@]}" "$1" 2>&1)" ||
  { echo "$out" >&2; exit 1; }
path="$(sed -n 's/^Savepoint completed\. Path: //p' <<<"$out" | tail -n 1)"
[[ -n "$path" ]] || { echo "stop: no savepoint path in the output:" >&2; echo "$out" >&2; exit 1; }
echo "$path"
