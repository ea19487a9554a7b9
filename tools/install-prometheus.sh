#!/usr/bin/env bash
# Build prometheus and promtool from the Go module proxy into ~/.cache/pgbridge/prometheus-<version>/
# (outside the clone, so a fresh clone on the same machine reuses them) and print that directory.
# The Go module github.com/prometheus/prometheus v0.3MM.P is Prometheus 3.MM.P. Built without the
# `builtinassets` tag: the server has no web UI, its HTTP API (all the tests use) is complete.
# Idempotent: binaries whose stamp matches the wanted version are reused.
# Measured on 2 shared cores: see README "Tested with real ecosystem parts".
set -euo pipefail

PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.316.0}"
CACHE="${PGBRIDGE_TOOLS_CACHE:-${HOME}/.cache/pgbridge}"
OUT_DIR="${CACHE}/prometheus-${PROMETHEUS_MODULE_VERSION}"
STAMP="${OUT_DIR}/.build"

if [[ -x "${OUT_DIR}/prometheus" && -x "${OUT_DIR}/promtool" && -f "${STAMP}" ]] \
        && grep -qx "prometheus ${PROMETHEUS_MODULE_VERSION}" "${STAMP}"; then
    echo "${OUT_DIR}"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "install-prometheus: the Go toolchain is required (go not found on PATH)" >&2
    exit 1
fi

start=$(date +%s)
mkdir -p "${OUT_DIR}"
minor="${PROMETHEUS_MODULE_VERSION#v0.}"; patch="${minor#*.}"; minor="${minor%%.*}"
release="$(( minor / 100 )).$(( minor % 100 )).${patch}"      # v0.316.0 -> 3.16.0
echo "install-prometheus: building prometheus ${release} (module ${PROMETHEUS_MODULE_VERSION}) with $(go version) ..." >&2
v=github.com/prometheus/common/version
ldflags="-s -w -X ${v}.Version=${release} -X ${v}.Branch=HEAD -X ${v}.BuildUser=pgbridge -X ${v}.Revision=${PROMETHEUS_MODULE_VERSION}"
m=github.com/prometheus/prometheus
# One `go install` for both commands: they share most packages, which compile once.
# -p=2: two compile jobs at most, the machine is shared; CGO off: static binaries.
CGO_ENABLED=0 GOBIN="${OUT_DIR}" GOFLAGS="${GOFLAGS:--p=2} -trimpath" \
    go install -ldflags "${ldflags}" "${m}/cmd/promtool@${PROMETHEUS_MODULE_VERSION}" \
    "${m}/cmd/prometheus@${PROMETHEUS_MODULE_VERSION}"
echo "prometheus ${PROMETHEUS_MODULE_VERSION}" > "${STAMP}"
echo "install-prometheus: built in $(( $(date +%s) - start ))s" >&2
"${OUT_DIR}/prometheus" --version >&2
echo "${OUT_DIR}"
