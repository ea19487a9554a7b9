# pgbridge — the bridge's producer and sink in one small, non-root image.
#   docker build -t pgbridge .
#   docker run --rm -v $PWD/bridge.yaml:/etc/pgbridge/bridge.yaml:ro pgbridge produce --config /etc/pgbridge/bridge.yaml
# Without a container engine: `make image` (tools/build-image.sh) builds it with buildah from a Debian
# bookworm base made by mmdebstrap, passed as BASE_IMAGE (any base with python3.11+ and venv works).
# Both stages use the same pinned base so the venv's interpreter symlinks stay valid.
# The project's wheel holds the compiled native core (bridge._native, the Rust crate in native/);
# it is built on the host with maturin (`pip wheel --no-deps --wheel-dir dist .`, which `make image`
# runs) and installed here, so the image needs no Rust toolchain. Host and base are the same
# Debian and Python (bookworm, 3.11), so the wheel (abi3, glibc 2.36) fits.

ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS builder

# A CA bundle inside the build for pip (e.g. one mounted from the host behind a TLS-inspecting proxy).
ARG PIP_CERT

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/venv

# Only the prebuilt wheel (see .dockerignore); install it with its (binary-wheel) dependencies
# into the venv, and check that the native core loads.
COPY dist ./dist
RUN /opt/venv/bin/pip install --no-cache-dir ./dist/pg_kafka_bridge-*.whl \
    && /opt/venv/bin/pgbridge --version \
    && /opt/venv/bin/python -c "import bridge._native"


FROM ${BASE_IMAGE} AS runtime

LABEL org.opencontainers.image.title="pgbridge" \
      org.opencontainers.image.description="Kafka-compatible change-stream bridge for PostgreSQL" \
      org.opencontainers.image.licenses="Apache-2.0"

# Fixed UID/GID so Kubernetes runAsUser/fsGroup and volume ownership are predictable.
RUN groupadd --system --gid 10001 pgbridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin pgbridge

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /tmp

# metrics.port: /metrics, /healthz, /readyz
EXPOSE 9187

# No curl in slim images: probe /healthz with the interpreter. urlopen raises on any non-2xx answer.
# The port is metrics.port; set BRIDGE_METRICS__PORT when it is not the default 9187.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('BRIDGE_METRICS__PORT', '9187'), timeout=4).close()"]

ENTRYPOINT ["pgbridge"]
CMD ["--help"]
