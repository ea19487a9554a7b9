# bridge — the two commands a fresh machine needs: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA_CP := .cache/kafka.classpath

.PHONY: test unit lint typecheck kafka-jars helm venv demo chaos bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Apache Kafka (KRaft) jars from Maven Central, cached under ~/.m2; the classpath file is all the rig needs.
$(KAFKA_CP): tools/kafka/pom.xml
	mkdir -p .cache
	mvn -q -B -f tools/kafka/pom.xml dependency:build-classpath -Dmdep.outputFile=$(abspath $(KAFKA_CP))

kafka-jars: $(KAFKA_CP)

# helm v3.22.0 built with `go install` into .cache/bin (about 2 minutes the first time).
helm:
	bash tools/install-helm.sh

lint: $(STAMP)
	$(BIN)/ruff check bridge tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict bridge

# The whole suite: lint, types, unit, integration (both brokers), the short chaos run.
test: $(STAMP) $(KAFKA_CP) helm lint typecheck
	BRIDGE_KAFKA_CLASSPATH_FILE=$(abspath $(KAFKA_CP)) $(BIN)/pytest -q tests

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

clean:
	rm -rf .cache $(VENV) .pytest_cache .mypy_cache .ruff_cache
