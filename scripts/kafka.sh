#!/usr/bin/env bash
# A single-node Apache Kafka broker in KRaft mode (broker and controller in one JVM), run from
# the jars Maven puts in .stack/jars/kafka: no Docker and no Kafka tarball on this machine.
#
#   scripts/kafka.sh start|stop|status|kill|restart
#
# KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093) and KAFKA_DATA_DIR (.stack/kafka, relative to
# the repository) let tests run their own broker beside the one on the default ports.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
DATA="${KAFKA_DATA_DIR:-.stack/kafka}"
[[ "$DATA" = /* ]] || DATA="$ROOT/$DATA"
JARS="$ROOT/.stack/jars/kafka"
PROPS="$DATA/server.properties"
PID_FILE="$DATA/kafka.pid"
LOG="$DATA/kafka.log"
PYTHON="$ROOT/.venv/bin/python"

# The pid of our broker if it is alive. The command line is checked too, so that a stale pid
# file whose number was reused by another process is not mistaken for the broker.
broker_pid() {
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' && echo "$pid"
}

# True when a Kafka broker (ours or not) answers metadata requests on the port: an open TCP
# port alone is not enough, the broker listens a while before it serves requests.
answers() {
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || return 1
  if [[ ! -x "$PYTHON" ]]; then  # no venv yet: trust our broker's log line
    grep -q "Kafka Server started" "$LOG" 2>/dev/null; return
  fi
  "$PYTHON" - "127.0.0.1:$PORT" <<'EOF' >/dev/null 2>&1
import sys
from kafka import KafkaAdminClient
admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=3000)
admin.describe_cluster()
admin.close()
EOF
}

write_properties() {
  mkdir -p "$DATA/logs"
  cat >"$PROPS" <<EOF
# Written by scripts/kafka.sh on each start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA/logs
num.partitions=4
auto.create.topics.enable=true
# One broker: internal topics cannot have more than one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
# Consumers of a fresh group get their partitions at once instead of after 3 s.
group.initial.rebalance.delay.ms=0
# The Flink job's exactly-once sinks open transactions of up to 15 minutes.
transaction.max.timeout.ms=900000
EOF
}

start() {
  if pid="$(broker_pid)"; then
    echo "kafka: already running (pid $pid, port $PORT)"; return 0
  fi
  if answers; then
    echo "kafka: a broker already answers on 127.0.0.1:$PORT"; return 0
  fi
  if ! compgen -G "$JARS/kafka_*.jar" >/dev/null; then
    echo "kafka: jars missing, resolving them with Maven"
    mvn -q -B -f "$ROOT/deps/pom.xml" package
  fi
  write_properties
  [[ ! -f "$LOG" ]] || mv "$LOG" "$LOG.1"  # keep the previous run's log (e.g. of a crash)
  # KRaft refuses to start on an unformatted log dir. The cluster id is kept next to the data
  # so a restart reuses the formatted storage (and its topics) instead of failing on a new id.
  if [[ ! -f "$DATA/logs/meta.properties" ]]; then
    [[ -s "$DATA/cluster.id" ]] ||
      java -cp "$JARS/*" kafka.tools.StorageTool random-uuid >"$DATA/cluster.id"
    # No --standalone: the quorum is given by controller.quorum.voters (static quorum).
    java -cp "$JARS/*" kafka.tools.StorageTool format -t "$(cat "$DATA/cluster.id")" \
      -c "$PROPS" >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; exit 1; }
  fi
  # setsid + nohup: the broker outlives the shell (or make, or pytest) that started it.
  setsid nohup java -Xmx1g -cp "$JARS/*" \
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka-log4j2.yaml" \
    kafka.Kafka "$PROPS" >>"$LOG" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  local started=$SECONDS
  until answers; do
    if ! broker_pid >/dev/null; then
      echo "kafka: broker exited during startup; last lines of $LOG:" >&2
      tail -n 30 "$LOG" >&2; exit 1
    fi
    if (( SECONDS - started >= 60 )); then
      echo "kafka: broker did not answer within 60 s; last lines of $LOG:" >&2
      tail -n 30 "$LOG" >&2; exit 1
    fi
    sleep 0.5
  done
  echo "kafka: started (pid $(cat "$PID_FILE"), 127.0.0.1:$PORT, data $DATA) in $((SECONDS - started)) s"
}

# Signal the broker and wait up to $2 seconds for it to exit.
signal_and_wait() {
  local pid
  pid="$(broker_pid)" || { echo "kafka: not running"; rm -f "$PID_FILE"; return 0; }
  kill "-$1" "$pid"
  for _ in $(seq $(( $2 * 10 ))); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PID_FILE"; echo "kafka: ended by SIG$1 (pid $pid)"; return 0; }
    sleep 0.1
  done
  return 1
}

stop() {
  # SIGTERM lets the broker shut down cleanly (no log recovery on the next start).
  signal_and_wait TERM 30 || { echo "kafka: no exit after 30 s, killing" >&2; signal_and_wait KILL 10; }
}

status() {
  if pid="$(broker_pid)"; then
    echo "kafka: running (pid $pid, port $PORT, data $DATA)"
  else
    echo "kafka: not running (data $DATA)"; return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  kill) signal_and_wait KILL 10 ;;  # an abrupt crash, for failure tests
  restart) stop; start ;;
  *) echo "usage: $0 start|stop|status|kill|restart" >&2; exit 2 ;;
esac
