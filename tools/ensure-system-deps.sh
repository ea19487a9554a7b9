#!/usr/bin/env bash
# Installs the system packages the bridge's local services need, only where missing:
#   postgres  -> PostgreSQL 15 server binaries (Debian postgresql-15)
#   kafka     -> a JDK and Maven (Apache Kafka is assembled from Maven Central)
#   etcd      -> etcd (Debian etcd-server), the store of the test Kubernetes API server
# Usage: tools/ensure-system-deps.sh postgres [kafka]
set -euo pipefail
need=()
for what in "$@"; do
  case "$what" in
    postgres)
      if ! { command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; } \
         && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
        need+=(postgresql-15)
      fi ;;
    kafka)
      command -v java >/dev/null 2>&1 || need+=(openjdk-17-jdk-headless)
      command -v mvn >/dev/null 2>&1 || need+=(maven) ;;
    etcd)
      command -v etcd >/dev/null 2>&1 || need+=(etcd-server) ;;
    *) echo "unknown dependency group: $what" >&2; exit 2 ;;
  esac
done
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]} (install them, e.g. sudo apt-get install ${need[*]})" >&2
  exit 1
fi
echo "installing: ${need[*]}"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
