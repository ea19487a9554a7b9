#!/usr/bin/env bash
# Install Apicurio Registry (the Quarkus "app" distribution: in-memory storage) into
# ~/.cache/pgbridge/apicurio-<version>/ if it is missing, from Maven Central with `mvn dependency:get`
# (io.apicurio:apicurio-registry-app:<version>:tar.gz:all). Idempotent: prints the directory that
# holds the runner jar. 2.6.x runs on Java 17 (what tools/ensure-system-deps.sh kafka installs).
# Measured: ~10 s cold (142 MB from Maven Central + unpack), instant when cached.
set -euo pipefail

APICURIO_VERSION="${APICURIO_VERSION:-2.6.13.Final}"
CACHE="${PGBRIDGE_CACHE:-${HOME}/.cache/pgbridge}"
DEST="${CACHE}/apicurio-${APICURIO_VERSION}"
JAR="${DEST}/apicurio-registry-app-${APICURIO_VERSION}-runner.jar"

if [[ -f "${JAR}" && -f "${DEST}/.complete" ]]; then
    echo "${DEST}"
    exit 0
fi
for tool in mvn java; do
    if ! command -v "${tool}" >/dev/null 2>&1; then
        echo "install-apicurio: ${tool} is required (bash tools/ensure-system-deps.sh kafka installs it)" >&2
        exit 1
    fi
done

start=$(date +%s)
artifact="io.apicurio:apicurio-registry-app:${APICURIO_VERSION}:tar.gz:all"
echo "install-apicurio: fetching ${artifact}" >&2
mvn -q -B dependency:get -Dartifact="${artifact}" -Dtransitive=false >&2
repo="${M2_REPO:-${HOME}/.m2/repository}"  # Maven's default local repository
tarball="${repo}/io/apicurio/apicurio-registry-app/${APICURIO_VERSION}/apicurio-registry-app-${APICURIO_VERSION}-all.tar.gz"
if [[ ! -f "${tarball}" ]]; then
    echo "install-apicurio: ${tarball} not found after mvn dependency:get" >&2
    exit 1
fi
rm -rf "${DEST}.part"
mkdir -p "${DEST}.part"
tar -xzf "${tarball}" -C "${DEST}.part"
if [[ ! -f "${DEST}.part/apicurio-registry-app-${APICURIO_VERSION}-runner.jar" ]]; then
    echo "install-apicurio: no runner jar in ${tarball}" >&2
    exit 1
fi
touch "${DEST}.part/.complete"
rm -rf "${DEST}"
mv "${DEST}.part" "${DEST}"
echo "install-apicurio: installed in $(( $(date +%s) - start ))s" >&2
echo "${DEST}"
