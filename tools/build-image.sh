#!/usr/bin/env bash
# Build the Dockerfile into a local image without a container engine or a registry:
#   1. a Debian bookworm root filesystem made with mmdebstrap from Debian's packages (python3,
#      venv, CA certificates), cached as ~/.cache/pgbridge/base-rootfs-<recipe hash>.tar;
#   2. imported into buildah's storage as localhost/pgbridge-base:<recipe hash>;
#   3. `buildah build --isolation chroot` with vfs storage, FROM that base (build arg BASE_IMAGE),
#      tagged localhost/pgbridge:<version>.
# Storage lives under ~/.cache/pgbridge/containers (outside the clone), so later runs reuse the base
# and, when nothing changed, the image. Needs root (chroot isolation), buildah and mmdebstrap
# (installed from Debian here when missing).
# Prints the image name on stdout; everything else goes to stderr.
# Usage: tools/build-image.sh   (an image of the same build context and base is reused as it is)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${PGBRIDGE_CACHE:-${HOME}/.cache/pgbridge}"
STORE="${CACHE}/containers"
# The build's CA bundle: the host's, which also trusts a TLS-intercepting egress proxy if there is one.
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

# -- the base: its recipe is everything that decides its content -------------------------------
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,tzdata
RECIPE="mmdebstrap --variant=minbase ${SUITE} ${MIRROR} +security +updates include=${PACKAGES} nodocs v1"
KEY="$(printf '%s' "${RECIPE}" | sha256sum | cut -c1-12)"
ROOTFS="${CACHE}/base-rootfs-${KEY}.tar"
BASE_IMAGE="localhost/pgbridge-base:${KEY}"

log() { echo "build-image: $*" >&2; }

if [[ "$(id -u)" -ne 0 ]]; then
    echo "build-image: needs root (mmdebstrap and buildah's chroot isolation)" >&2
    exit 1
fi
missing=()
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
if [[ ${#missing[@]} -gt 0 ]]; then
    log "installing ${missing[*]}"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
fi

bah() { buildah --root "${STORE}/storage" --runroot "${STORE}/run" --storage-driver vfs "$@"; }

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "${ROOT}/pyproject.toml" | head -n1)"
IMAGE="localhost/pgbridge:${VERSION}"
# The build context's content (what .dockerignore lets in) and the base: an image built from the
# same is reused as it is. (buildah's own layer cache costs ~3 min here even when every step hits,
# because vfs copies the whole root filesystem for each step, and it keeps every layer on disk.)
# The context is the wheel built from these sources (the Python package and the native crate).
CTX="$(cd "${ROOT}" && { echo "base ${KEY}"; find Dockerfile .dockerignore pyproject.toml README.md bridge \
        native/Cargo.toml native/Cargo.lock native/src -type f \
        ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; } \
        | sha256sum | cut -c1-12)"
CTX_IMAGE="localhost/pgbridge:ctx-${CTX}"
if bah inspect --type image "${CTX_IMAGE}" >/dev/null 2>&1; then
    bah tag "${CTX_IMAGE}" "${IMAGE}"
    log "${IMAGE}: unchanged build context, image reused"
    echo "${IMAGE}"
    exit 0
fi

mkdir -p "${CACHE}" "${STORE}"
t0=$(date +%s)
if [[ ! -f "${ROOTFS}" ]]; then
    rm -rf "${ROOTFS}.part"
    log "making the base root filesystem (${RECIPE})"
    # No documentation, man pages or locales in the image; no apt lists kept.
    mmdebstrap --variant=minbase --format=tar --include="${PACKAGES}" \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        "${SUITE}" "${ROOTFS}.part" \
        "deb ${MIRROR} ${SUITE} main" "deb ${MIRROR} ${SUITE}-updates main" \
        "deb ${MIRROR}-security ${SUITE}-security main" >&2
    mv "${ROOTFS}.part" "${ROOTFS}"
fi
t1=$(date +%s)

if ! bah inspect --type image "${BASE_IMAGE}" >/dev/null 2>&1; then
    log "importing the base as ${BASE_IMAGE}"
    ctr="$(bah from --isolation chroot scratch)"
    mnt="$(bah mount "${ctr}")"
    tar -xf "${ROOTFS}" -C "${mnt}"
    bah umount "${ctr}" >/dev/null
    bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd /bin/bash "${ctr}"
    bah commit --quiet --rm --format docker "${ctr}" "${BASE_IMAGE}" >&2
fi
t2=$(date +%s)

# The project's wheel, with the native core compiled by maturin on this host (same Debian and
# Python as the base), into the build context's dist/. The crate's build output stays in the
# cache, so a rebuild after a Python-only change does not compile the crate again.
log "building the wheel (maturin, release) into dist/"
rm -rf "${ROOT}/dist"
PIP="${ROOT}/.venv/bin/pip"
[[ -x "${PIP}" ]] || PIP="python3 -m pip"
CARGO_TARGET_DIR="${CACHE}/native-wheel-target" ${PIP} wheel -q --no-deps --wheel-dir "${ROOT}/dist" "${ROOT}" >&2
ls "${ROOT}"/dist/pg_kafka_bridge-*.whl >&2
tw=$(date +%s)
log "wheel $((tw - t2))s"

log "building ${IMAGE} from ${BASE_IMAGE}"
# The CA bundle is mounted (read-only) into every RUN step so pip trusts what the host trusts; it
# is not part of any layer. --format docker: the OCI format has no HEALTHCHECK and buildah would
# drop the Dockerfile's. No --layers: intermediate layers would only fill the disk (see CTX).
bah build --isolation chroot --quiet --format docker \
    --build-arg "BASE_IMAGE=${BASE_IMAGE}" --build-arg "PIP_CERT=/etc/ssl/certs/ca-certificates.crt" \
    --volume "${CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro" \
    -f "${ROOT}/Dockerfile" -t "${IMAGE}" -t "${CTX_IMAGE}" "${ROOT}" >&2
# Keep one build: drop the tags of older contexts and every image no tag holds any more.
for old in $(bah images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/pgbridge:ctx-' || true); do
    [[ "${old}" == "${CTX_IMAGE}" ]] || bah rmi "${old}" >/dev/null 2>&1 || true
done
bah rmi --prune >/dev/null 2>&1 || true
t3=$(date +%s)
size="$(bah images --format '{{.Size}}' "${IMAGE}" | sed -n 1p)"  # sed reads to the end: no SIGPIPE under pipefail
log "rootfs $((t1 - t0))s, import $((t2 - t1))s, build $((t3 - t2))s; ${IMAGE} ${size}"
echo "${IMAGE}"
