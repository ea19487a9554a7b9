#!/usr/bin/env bash
# Install helm into .cache/bin/helm (relative to the repository root) if it is missing.
# Built from source with the Go toolchain through the Go module proxy: no other downloads.
# Idempotent: when the binary already matches the wanted build, it only prints where helm is.
# First run measured at ~2 min on 2 cores with a cold module cache (cached modules: ~1 min).
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${ROOT}/.cache/bin"
HELM="${BIN_DIR}/helm"
STAMP="${BIN_DIR}/.helm.build"

if [[ -x "${HELM}" && -f "${STAMP}" ]] && grep -qx "helm ${HELM_VERSION}" "${STAMP}"; then
    echo "${HELM}"
    exit 0
fi

if ! command -v go >/dev/null 2>&1; then
    echo "install-helm: the Go toolchain is required (go not found on PATH)" >&2
    exit 1
fi

mkdir -p "${BIN_DIR}"
start=$(date +%s)
echo "install-helm: building helm ${HELM_VERSION} with $(go version) ..." >&2

# Like helm's own Makefile: the default Kubernetes version that `helm template`/`helm lint` assume
# (.Capabilities.KubeVersion) is derived from the client-go it is built with (v0.X.Y -> 1.X);
# without it a source build assumes v1.20 and rejects charts with a newer kubeVersion.
gomod="$(go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
k8s_minor="$(sed -n 's/^[[:space:]]*k8s\.io\/client-go v0\.\([0-9]*\)\..*/\1/p' "${gomod}" | head -n1)"
if [[ -z "${k8s_minor}" ]]; then
    echo "install-helm: cannot find the client-go version in ${gomod}" >&2
    exit 1
fi
pkg=helm.sh/helm/v3
ldflags="-s -w -X ${pkg}/internal/version.version=${HELM_VERSION}"
for var in pkg/lint/rules pkg/chartutil; do
    ldflags+=" -X ${pkg}/${var}.k8sVersionMajor=1 -X ${pkg}/${var}.k8sVersionMinor=${k8s_minor}"
done

# CGO off: a static binary, no C toolchain needed.
CGO_ENABLED=0 GOBIN="${BIN_DIR}" GOFLAGS="${GOFLAGS:-} -trimpath" \
    go install -ldflags "${ldflags}" "${pkg}/cmd/helm@${HELM_VERSION}"
echo "helm ${HELM_VERSION}" > "${STAMP}"
echo "install-helm: built in $(( $(date +%s) - start ))s (default Kubernetes 1.${k8s_minor})" >&2
"${HELM}" version --short >&2
echo "${HELM}"
