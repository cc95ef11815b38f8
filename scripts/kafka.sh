#!/usr/bin/env bash
# Apache Kafka in KRaft mode, run from the jars Maven puts in .stack/jars/kafka: no Docker and no
# Kafka tarball on this machine. By default a single node (broker and controller in one JVM);
# KAFKA_BROKERS=3 runs a cluster of three such nodes instead, so that a test can crash one broker
# and see the other two carry the stream on.
#
#   scripts/kafka.sh start|stop|status|kill|restart      (every node)
#   scripts/kafka.sh kill-node N|start-node N            (node N alone: SIGKILL it, start it again)
#
# One node: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093) and KAFKA_DATA_DIR (.stack/kafka,
# relative to the repository) let tests run their own broker beside the one on the default ports.
# Three nodes: KAFKA_PORTS (9092,9094,9096) and KAFKA_CONTROLLER_PORTS (9093,9095,9097) give each
# node's ports, in node order; node N keeps its data, log and pid file in KAFKA_DATA_DIR/node-N.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BROKERS="${KAFKA_BROKERS:-1}"
DATA="${KAFKA_DATA_DIR:-.stack/kafka}"
[[ "$DATA" = /* ]] || DATA="$ROOT/$DATA"
JARS="$ROOT/.stack/jars/kafka"
PYTHON="$ROOT/.venv/bin/python"

case "$BROKERS" in
  1)
    PORTS=("${KAFKA_PORT:-9092}")
    CONTROLLER_PORTS=("${KAFKA_CONTROLLER_PORT:-9093}")
    HEAP=-Xmx1g
    START_TIMEOUT=60 ;;
  3)
    IFS=, read -ra PORTS <<<"${KAFKA_PORTS:-9092,9094,9096}"
    IFS=, read -ra CONTROLLER_PORTS <<<"${KAFKA_CONTROLLER_PORTS:-9093,9095,9097}"
    if (( ${#PORTS[@]} != 3 || ${#CONTROLLER_PORTS[@]} != 3 )); then
      echo "kafka: KAFKA_PORTS and KAFKA_CONTROLLER_PORTS need 3 ports each" >&2; exit 2
    fi
    # Three JVMs share this machine with the job and the tests: half the single broker's heap
    # each (tests/test_broker_failover.py runs on that).
    HEAP=-Xmx512m
    # Three JVMs starting at once on two cores, and none serves before the quorum has formed.
    START_TIMEOUT=120 ;;
  *)
    # 2 nodes would be a quorum that survives no loss; more would only cost memory here.
    echo "kafka: KAFKA_BROKERS must be 1 or 3, not '$BROKERS'" >&2; exit 2 ;;
esac
NODES=()
for (( n = 1; n <= BROKERS; n++ )); do NODES+=("$n"); done
# SECONDS at which this command started each node, by node number (see launch and await_node).
LAUNCHED=()

# Make node $1 the current one: its ports and files, and the name its messages begin with.
select_node() {
  if [[ ! "$1" =~ ^[0-9]+$ ]] || (( $1 < 1 || $1 > BROKERS )); then
    echo "kafka: no node '$1' (the nodes are 1..$BROKERS)" >&2; exit 2
  fi
  NODE="$1"
  PORT="${PORTS[NODE - 1]}"
  CONTROLLER_PORT="${CONTROLLER_PORTS[NODE - 1]}"
  if (( BROKERS == 1 )); then
    DIR="$DATA" NAME="kafka"
  else
    DIR="$DATA/node-$NODE" NAME="kafka node $NODE"
  fi
  PROPS="$DIR/server.properties"
  PID_FILE="$DIR/kafka.pid"
  LOG="$DIR/kafka.log"
}

# The pid of the current node's broker if it is alive. The command line is checked too, so that a
# stale pid file whose number was reused by another process is not mistaken for the broker.
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
  local voters="" n
  for n in "${NODES[@]}"; do voters+="${voters:+,}$n@127.0.0.1:${CONTROLLER_PORTS[n - 1]}"; done
  mkdir -p "$DIR/logs"
  {
    cat <<EOF
# Written by scripts/kafka.sh on each start; edit the script, not this file.
process.roles=broker,controller
node.id=$NODE
controller.quorum.voters=$voters
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DIR/logs
num.partitions=4
auto.create.topics.enable=true
EOF
    if (( BROKERS == 1 )); then
      cat <<EOF
# One broker: internal topics cannot have more than one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
EOF
    else
      cat <<EOF
# Three brokers: every partition, the internal ones too, has a replica on each node. A write
# with acks=all is acknowledged once every in-sync replica has it, and refused while fewer
# than two are in sync: so an acknowledged write (a committed transaction, a consumer offset)
# is on two nodes at least and survives the loss of any one, and one node may be down without
# stopping writes.
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
# A broker's controlled shutdown (moving its leaders away first) waits until the controller
# quorum approves it, and `stop` ends every node at once: the last one standing has no quorum
# left, so it would wait out its 5-minute shutdown timeout. Without it SIGTERM still shuts a
# broker down in order; only its leaders move later, when its session times out.
controlled.shutdown.enable=false
EOF
    fi
    cat <<EOF
# Consumers of a fresh group get their partitions at once instead of after 3 s.
group.initial.rebalance.delay.ms=0
# The Flink job's exactly-once sinks open transactions of up to 15 minutes.
transaction.max.timeout.ms=900000
EOF
  } >"$PROPS"
}

# Start the current node's JVM unless it runs already; await_node waits until it serves. The
# nodes of a cluster are all launched before any is awaited: none serves before a majority of
# the controller quorum is up.
launch() {
  if pid="$(broker_pid)"; then
    echo "$NAME: already running (pid $pid, port $PORT)"; return 0
  fi
  if answers; then
    echo "$NAME: a broker already answers on 127.0.0.1:$PORT"; return 0
  fi
  if ! compgen -G "$JARS/kafka_*.jar" >/dev/null; then
    echo "kafka: jars missing, resolving them with Maven"
    mvn -q -B -f "$ROOT/deps/pom.xml" package
  fi
  write_properties
  [[ ! -f "$LOG" ]] || mv "$LOG" "$LOG.1"  # keep the previous run's log (e.g. of a crash)
  # KRaft refuses to start on an unformatted log dir. The cluster id is kept next to the data
  # (one for all nodes: they refuse to form a quorum across ids) so a restart reuses the
  # formatted storage (and its topics) instead of failing on a new id.
  if [[ ! -f "$DIR/logs/meta.properties" ]]; then
    [[ -s "$DATA/cluster.id" ]] ||
      java -cp "$JARS/*" kafka.tools.StorageTool random-uuid >"$DATA/cluster.id"
    # No --standalone: the quorum is given by controller.quorum.voters (static quorum).
    java -cp "$JARS/*" kafka.tools.StorageTool format -t "$(cat "$DATA/cluster.id")" \
      -c "$PROPS" >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; exit 1; }
  fi
  # setsid + nohup: the broker outlives the shell (or make, or pytest) that started it.
  setsid nohup java "$HEAP" -cp "$JARS/*" \
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka-log4j2.yaml" \
    kafka.Kafka "$PROPS" >>"$LOG" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  LAUNCHED[NODE]=$SECONDS
}

# Wait until the current node, if this command launched it, answers.
await_node() {
  [[ -n "${LAUNCHED[NODE]:-}" ]] || return 0
  local started="${LAUNCHED[NODE]}"
  until answers; do
    if ! broker_pid >/dev/null; then
      echo "$NAME: broker exited during startup; last lines of $LOG:" >&2
      tail -n 30 "$LOG" >&2; exit 1
    fi
    if (( SECONDS - started >= START_TIMEOUT )); then
      echo "$NAME: broker did not answer within $START_TIMEOUT s; last lines of $LOG:" >&2
      tail -n 30 "$LOG" >&2; exit 1
    fi
    sleep 0.5
  done
  echo "$NAME: started (pid $(cat "$PID_FILE"), 127.0.0.1:$PORT, data $DIR) in $((SECONDS - started)) s"
}

# Start the given nodes and wait until each answers.
start() {
  local n
  for n in "$@"; do select_node "$n"; launch; done
  for n in "$@"; do select_node "$n"; await_node; done
}

# signal_and_wait SIGNAL SECONDS NODE...: signal the brokers of the nodes, then wait up to SECONDS
# for all of them to exit; false if one is still alive then.
signal_and_wait() {
  local signal="$1" seconds="$2" n pid entry alive=() still
  shift 2
  for n in "$@"; do
    select_node "$n"
    if pid="$(broker_pid)"; then
      kill "-$signal" "$pid"; alive+=("$n:$pid")
    else
      echo "$NAME: not running"; rm -f "$PID_FILE"
    fi
  done
  for _ in $(seq $(( seconds * 10 ))); do
    still=()
    for entry in "${alive[@]}"; do
      n="${entry%%:*}" pid="${entry#*:}"
      select_node "$n"
      if kill -0 "$pid" 2>/dev/null; then
        still+=("$entry")
      else
        rm -f "$PID_FILE"; echo "$NAME: ended by SIG$signal (pid $pid)"
      fi
    done
    alive=("${still[@]}")
    (( ${#alive[@]} )) || return 0
    sleep 0.1
  done
  return 1
}

stop() {
  # SIGTERM lets the brokers shut down cleanly (no log recovery on the next start). A cluster's
  # nodes get it at once, so stopping takes one shutdown's time, not three (and see
  # controlled.shutdown.enable in write_properties for why the last one does not hang).
  signal_and_wait TERM 30 "$@" ||
    { echo "kafka: no exit after 30 s, killing" >&2; signal_and_wait KILL 10 "$@"; }
}

status() {
  local n code=0
  for n in "$@"; do
    select_node "$n"
    if pid="$(broker_pid)"; then
      echo "$NAME: running (pid $pid, port $PORT, data $DIR)"
    else
      echo "$NAME: not running (data $DIR)"; code=1
    fi
  done
  return "$code"
}

case "${1:-}" in
  start) start "${NODES[@]}" ;;
  stop) stop "${NODES[@]}" ;;
  status) status "${NODES[@]}" ;;
  kill) signal_and_wait KILL 10 "${NODES[@]}" ;;  # an abrupt crash, for failure tests
  restart) stop "${NODES[@]}"; start "${NODES[@]}" ;;
  kill-node) signal_and_wait KILL 10 "${2:-}" ;;  # one node's abrupt crash
  start-node) start "${2:-}" ;;
  *) echo "usage: $0 start|stop|status|kill|restart|kill-node N|start-node N" >&2; exit 2 ;;
esac
