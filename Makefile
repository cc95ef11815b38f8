# adclick: everything runs on this machine, no Docker. `make help` lists the targets.
# The Python side lives in .venv, the Java side (Kafka broker, Flink Kafka connector) in
# .stack/jars; Flink itself is the distribution inside the apache-flink wheel.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Flags passed through to scripts/submit-job.sh and python -m adclick.topics, e.g.
#   make submit JOB_ARGS="--parallelism 1"    make topics TOPICS_ARGS="--prefix dev-"
JOB_ARGS ?=
TOPICS_ARGS ?=
# e.g. make test PYTEST_ARGS="tests/test_flink_cluster.py -s"
PYTEST_ARGS ?=
# e.g. make demo DEMO_ARGS=--fresh (start the job empty instead of resuming its state)
DEMO_ARGS ?=

.PHONY: help venv jars setup kafka-start kafka-stop topics flink-cluster flink-cluster-stop \
        submit test java-test lint browser demo bench bench-api reconcile clean

help:
	@echo "make venv                 create .venv and pip install -e '.[test,bench]'"
	@echo "make jars                 fetch the Kafka broker and Flink connector jars, build the"
	@echo "                          job's click format (Maven)"
	@echo "make setup                venv + jars"
	@echo "make kafka-start          start the Kafka broker on 127.0.0.1:9092 (KRaft)"
	@echo "make kafka-stop           stop it"
	@echo "make topics               create the five topics (TOPICS_ARGS=...)"
	@echo "make flink-cluster        start the standalone Flink cluster (web UI on :8081)"
	@echo "make flink-cluster-stop   stop it"
	@echo "make submit               submit the job to that cluster (JOB_ARGS=...)"
	@echo "make test                 run ruff, then all tests (they start what they need themselves)"
	@echo "make lint                 ruff (pyproject.toml: pyflakes and pycodestyle, 100 columns)"
	@echo "make browser              install Chromium and chromedriver (the dashboard's test)"
	@echo "make demo                 run the whole pipeline in the foreground; a restart"
	@echo "                          resumes the job's state (DEMO_ARGS=--fresh starts empty)"
	@echo "make bench                run the pipeline benchmarks (docs/bench/report.json)"
	@echo "make bench-api            API latency on a day of counts for 100,000 ads"
	@echo "make reconcile            recount the raw events and compare with the stored counts"
	@echo "make clean                stop everything, delete .stack (except the jars)"

# Stamp files make the targets cheap once done; they are redone when their inputs change.
venv: $(VENV)/.installed
$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

FORMAT_JAR := .stack/jars/flink/adclick-flink.jar
FORMAT_SOURCES := udfs/java/pom.xml $(shell find udfs/java/src/main -type f)
# The bot_user_agent rule's crawler list, with its version: from the PyPI package pinned in
# setup.cfg, into a resource directory udfs/java/pom.xml adds to the jar (and to its tests).
TRAFFIC_LISTS := .stack/jars/build/traffic-lists/adclick/traffic
CRAWLER_LIST := $(TRAFFIC_LISTS)/crawler-user-agents.json

jars: .stack/jars/.installed $(FORMAT_JAR)
.stack/jars/.installed: deps/pom.xml
	mvn -q -B -f deps/pom.xml package
	touch $@

# adclick's own JVM code: the 'adclick-event' format that parses events in the Flink source, and
# the compact dedup operator. Its unit tests run in `make test` (java-test), not here.
$(FORMAT_JAR): $(FORMAT_SOURCES) $(CRAWLER_LIST)
	mvn -q -B -f udfs/java/pom.xml package -Dmaven.test.skip=true

$(CRAWLER_LIST): $(VENV)/.installed
	mkdir -p $(TRAFFIC_LISTS)
	$(PY) -c "import importlib.metadata as m; print(m.version('crawler-user-agents'))" \
	  > $(TRAFFIC_LISTS)/crawler-user-agents.version
	cp $(VENV)/lib/python*/site-packages/crawleruseragents/crawler-user-agents.json $@

setup: venv jars

kafka-start: setup
	scripts/kafka.sh start

kafka-stop:
	scripts/kafka.sh stop

topics: venv
	$(PY) -m adclick.topics $(TOPICS_ARGS)

flink-cluster: setup
	scripts/flink-cluster.sh start

flink-cluster-stop:
	scripts/flink-cluster.sh stop

submit: setup
	scripts/submit-job.sh $(JOB_ARGS)

test: setup lint browser java-test
	$(PY) -m pytest -x -q --durations=25 $(PYTEST_ARGS)

# The JVM code's unit tests (udfs/java/src/test): the compact dedup under Flink's operator test
# harness (checkpoints, restores, rescaling, expiry).
java-test: $(CRAWLER_LIST)
	mvn -q -B -f udfs/java/pom.xml test

# The dashboard's test drives Debian's Chromium through chromedriver: installed once if missing.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q chromium chromium-driver; \
	fi

lint: venv
	$(VENV)/bin/ruff check .

demo: setup
	$(PY) -m apps.demo $(DEMO_ARGS)

bench: setup
	$(PY) -m bench.run

bench-api: setup
	$(PY) -m bench.api_bench

reconcile: venv
	$(VENV)/bin/adclick reconcile

# The jars are kept: fetching them again is the slow part of a fresh setup.
clean:
	-scripts/flink-cluster.sh stop
	-scripts/kafka.sh stop
	test ! -d .stack || find .stack -mindepth 1 -maxdepth 1 ! -name jars -exec rm -rf {} +
