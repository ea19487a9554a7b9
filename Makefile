# bridge — the two commands a fresh machine needs: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA_CP := .cache/kafka.classpath

.PHONY: test unit lint typecheck kafka-jars helm venv demo chaos bench clean apicurio image native-check

# The editable install also compiles the Rust crate (native/) into bridge/_native*.so with maturin;
# a change to the crate rebuilds it.
NATIVE_SRC := native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs native/src/*/*.rs)
$(STAMP): pyproject.toml $(NATIVE_SRC)
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
test: $(STAMP) $(KAFKA_CP) helm lint typecheck apicurio
	bash tools/ensure-system-deps.sh postgres kafka
	BRIDGE_KAFKA_CLASSPATH_FILE=$(abspath $(KAFKA_CP)) $(BIN)/pytest -q tests

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

# Everything local: a throwaway PostgreSQL, a Tansu broker, producer and sink, a live workload.
DEMO_SECONDS ?= 30
# REGISTRY=1 make demo: with a local schema registry (Apicurio; needs java) and Confluent framing.
demo: $(STAMP)
	bash tools/ensure-system-deps.sh postgres $(if $(REGISTRY),kafka)
	$(BIN)/python -m bridge demo --seconds $(DEMO_SECONDS) $(if $(REGISTRY),--registry)

# The full chaos suite (300,000+ changes, >= 10 kills of each process, broker and PostgreSQL restarts).
chaos: $(STAMP) $(KAFKA_CP)
	BRIDGE_CHAOS_FULL=1 BRIDGE_KAFKA_CLASSPATH_FILE=$(abspath $(KAFKA_CP)) $(BIN)/pytest -q -s tests/chaos

# Benchmarks against limits measured in the same run; writes bench/results/<date>.json and .md.
bench: $(STAMP) $(KAFKA_CP)
	BRIDGE_KAFKA_CLASSPATH_FILE=$(abspath $(KAFKA_CP)) $(BIN)/python bench/run.py

clean:
	rm -rf .cache $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Real ecosystem parts for tests/ecosystem/test_k8s.py and test_prometheus.py: etcd (Debian),
# kube-apiserver v1.34.0 and prometheus/promtool 3.16.0 built from the Go module proxy, the
# Prometheus Operator's CRDs. Built once per machine into ~/.cache/pgbridge (cold ~7 + ~9 min,
# warm < 1 s); one Go build after the other. BRIDGE_SKIP_ECOSYSTEM=k8s,prometheus (or all) skips
# both the build and the tests of that part.
.PHONY: ecosystem-k8s ecosystem-prometheus
ecosystem-k8s:
	@case ",$${BRIDGE_SKIP_ECOSYSTEM:-}," in *,all,*|*,k8s,*) echo "ecosystem-k8s: skipped (BRIDGE_SKIP_ECOSYSTEM)";; \
	  *) bash tools/ensure-system-deps.sh etcd && bash tools/install-kube-apiserver.sh \
	     && bash tools/install-operator-crds.sh;; esac

ecosystem-prometheus: ecosystem-k8s
	@case ",$${BRIDGE_SKIP_ECOSYSTEM:-}," in *,all,*|*,prometheus,*) echo "ecosystem-prometheus: skipped (BRIDGE_SKIP_ECOSYSTEM)";; \
	  *) bash tools/install-prometheus.sh;; esac

test: ecosystem-k8s ecosystem-prometheus

# Apicurio Registry for tests/ecosystem (Maven Central, cached in ~/.cache/pgbridge; ~12 s once).
apicurio:
	bash tools/ensure-system-deps.sh kafka
	bash tools/install-apicurio.sh

# The Dockerfile built with buildah (chroot isolation, vfs storage) from an mmdebstrap Debian base,
# both cached under ~/.cache/pgbridge: ~3 min on a fresh machine, ~0.1 s when the build context is unchanged.
image: $(STAMP)
	bash tools/build-image.sh

# The native crate's checks (issues #15, #16): cargo fmt --check, clippy -D warnings, cargo test,
# then the three fuzz targets (the producer's line parser, the sink's Avro reader, the snapshot's COPY reader) for
# NATIVE_FUZZ_SECONDS in all (60; 0 skips it), built with the stable toolchain and libFuzzer's
# coverage instrumentation; cached under ~/.cache/pgbridge (cold ~2.5 min, warm ~1.7 min).
NATIVE_FUZZ_SECONDS ?= 60
native-check:
	NATIVE_FUZZ_SECONDS=$(NATIVE_FUZZ_SECONDS) bash tools/native-check.sh

test: native-check
