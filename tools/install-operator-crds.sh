#!/usr/bin/env bash
# Copy the Prometheus Operator's ServiceMonitor and PrometheusRule CRDs (their published structural
# schemas) into ~/.cache/pgbridge/prometheus-operator-<version>/ and print that directory. They come
# from the operator's Go module through the Go module proxy (example/prometheus-operator-crd/):
# tests/ecosystem/test_k8s.py installs them in the test API server to check the chart's
# ServiceMonitor/PrometheusRule with strict field validation. Idempotent; seconds.
set -euo pipefail

OPERATOR_VERSION="${OPERATOR_VERSION:-v0.85.0}"
CACHE="${PGBRIDGE_TOOLS_CACHE:-${HOME}/.cache/pgbridge}"
OUT_DIR="${CACHE}/prometheus-operator-${OPERATOR_VERSION}"
FILES=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml)

have=1
for f in "${FILES[@]}"; do [[ -s "${OUT_DIR}/${f}" ]] || have=0; done
if [[ ${have} -eq 1 ]]; then
    echo "${OUT_DIR}"
    exit 0
fi
dir="$(cd /tmp && go mod download -json "github.com/prometheus-operator/prometheus-operator@${OPERATOR_VERSION}" \
       | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
mkdir -p "${OUT_DIR}"
for f in "${FILES[@]}"; do
    cp "${dir}/example/prometheus-operator-crd/${f}" "${OUT_DIR}/${f}.tmp"
    chmod u+w "${OUT_DIR}/${f}.tmp"
    mv "${OUT_DIR}/${f}.tmp" "${OUT_DIR}/${f}"
done
echo "${OUT_DIR}"
