#!/usr/bin/env bash
# Build kube-apiserver from the Go module proxy into ~/.cache/pgbridge/kube-apiserver-<version>/
# (outside the clone, so a fresh clone on the same machine reuses it) and print its path.
#
# `go install k8s.io/kubernetes/cmd/kube-apiserver@v1.34.0` is refused: k8s.io/kubernetes' go.mod
# replaces its staging modules (k8s.io/api, k8s.io/apiserver, ...) with ./staging/src/... paths.
# So this script writes a small wrapper module that requires k8s.io/kubernetes and replaces each
# of those staging modules with its published release k8s.io/<name> v0.<minor>.<patch>, then builds
# the command inside it. The version variables are set like Kubernetes' own build does: without
# them the server reports v0.0.0 and helm refuses a chart whose kubeVersion asks for >= 1.x.
# Idempotent: a binary whose stamp matches the wanted version is reused.
# Measured on 2 shared cores: see README "Tested with real ecosystem parts".
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-v1.34.0}"
CACHE="${PGBRIDGE_TOOLS_CACHE:-${HOME}/.cache/pgbridge}"
OUT_DIR="${CACHE}/kube-apiserver-${KUBE_VERSION}"
BIN="${OUT_DIR}/kube-apiserver"
STAMP="${OUT_DIR}/.build"

if [[ -x "${BIN}" && -f "${STAMP}" ]] && grep -qx "kube-apiserver ${KUBE_VERSION}" "${STAMP}"; then
    echo "${BIN}"
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "install-kube-apiserver: the Go toolchain is required (go not found on PATH)" >&2
    exit 1
fi

start=$(date +%s)
echo "install-kube-apiserver: building kube-apiserver ${KUBE_VERSION} with $(go version) ..." >&2
staging_version="v0.${KUBE_VERSION#v1.}"          # v1.34.0 -> v0.34.0
work="${CACHE}/build/kube-apiserver-${KUBE_VERSION}"
rm -rf "${work}"
mkdir -p "${work}" "${OUT_DIR}"

gomod="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
# The staging modules are the ones k8s.io/kubernetes replaces with a ./staging path.
mapfile -t staging < <(sed -n 's/^[[:space:]]*\(k8s\.io\/[a-z0-9-]*\) => \.\/staging\/.*/\1/p' "${gomod}")
if [[ ${#staging[@]} -eq 0 ]]; then
    echo "install-kube-apiserver: no staging replace directives found in ${gomod}" >&2
    exit 1
fi
go_line="$(sed -n 's/^go \([0-9.]*\)$/\1/p' "${gomod}" | head -n1)"
{
    echo "module pgbridge.local/kube-apiserver-build"
    echo
    echo "go ${go_line}"
    echo
    echo "require k8s.io/kubernetes ${KUBE_VERSION}"
    echo
    echo "replace ("
    for m in "${staging[@]}"; do echo "	${m} => ${m} ${staging_version}"; done
    echo ")"
} > "${work}/go.mod"

cd "${work}"
# Resolve the full module graph of the command (writes go.sum and the indirect requirements).
go get "k8s.io/kubernetes/cmd/kube-apiserver@${KUBE_VERSION}" >&2

major="${KUBE_VERSION#v}"; major="${major%%.*}"
minor="${KUBE_VERSION#v*.}"; minor="${minor%%.*}"
ldflags="-s -w"
ldflags+=" -X k8s.io/component-base/version.gitVersion=${KUBE_VERSION}"
ldflags+=" -X k8s.io/component-base/version.gitMajor=${major}"
ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor}"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
# -p=2: two compile jobs at most, the machine is shared; CGO off: a static binary.
CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--p=2} -trimpath" \
    go build -o "${BIN}.tmp" -ldflags "${ldflags}" k8s.io/kubernetes/cmd/kube-apiserver
mv "${BIN}.tmp" "${BIN}"
echo "kube-apiserver ${KUBE_VERSION}" > "${STAMP}"
rm -rf "${work}"
echo "install-kube-apiserver: built in $(( $(date +%s) - start ))s" >&2
"${BIN}" --version >&2
echo "${BIN}"
