# syntax=docker/dockerfile:1
# shudi: one image for the worker (default), the traffic simulator and the one-shot helpers.
#
#   docker build -t shudi:0.1.0 .
#   docker run --read-only --tmpfs /tmp -e SHUDI_BROKER=kafka:9092 -v geoip:/usr/share/GeoIP:ro shudi:0.1.0
#
# Both stages use the same base image (tag AND multi-arch index digest), so the venv built in the first stage
# finds the same /usr/local/bin/python3.11 in the second. Bump tag and digest together.

# --- build: a venv with shudi (from its wheel) and the `demo` extra; the synthetic demo GeoIP database ------
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/shudi

WORKDIR /src
# Only what the wheel needs (.dockerignore keeps the rest of the work tree out of the context).
COPY pyproject.toml README.md ./
COPY streams ./streams

# Build the wheel, then install it with its extra; pip byte-compiles the venv here, so the read-only runtime
# never needs to write .pyc files.
RUN /opt/shudi/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/shudi/bin/pip install "$(echo /tmp/wheels/shudi-*.whl)[demo]" \
    && rm -rf /tmp/wheels

# SYNTHETIC DEMO DATA, NOT REAL GEOGRAPHY: lets the stack run without a MaxMind licence.
RUN mkdir -p /usr/share/shudi \
    && /opt/shudi/bin/python -m streams.devtools.mmdbbuild demo /usr/share/shudi/demo-city.mmdb

# --- runtime: the venv and the demo database, nothing else; non-root, read-only root filesystem ----------
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS runtime

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="shudi" \
      org.opencontainers.image.description="IP territory (IP属地) enrichment and regional burst detection for comment streams (Faust + Kafka)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

# Fixed numeric IDs, so volumes and securityContext (runAsUser: 10001) agree with the image.
# /var/lib/shudi: Faust state (SHUDI_DATA_DIR), a volume. /usr/share/GeoIP: where geoipupdate writes; owned
# by shudi so a fresh named volume mounted there is writable by the geoip-init one-shot.
RUN groupadd --system --gid 10001 shudi \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/shudi --no-create-home \
       --shell /usr/sbin/nologin shudi \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/shudi \
    && install -d -o 10001 -g 10001 -m 0755 /usr/share/GeoIP

COPY --from=build /opt/shudi /opt/shudi
COPY --from=build /usr/share/shudi/demo-city.mmdb /usr/share/shudi/demo-city.mmdb

# Nothing writes outside /var/lib/shudi (volume) and /tmp (tmpfs): no .pyc, HOME and caches in /tmp.
# SHUDI_GEOIP_DB keeps its default, /usr/share/GeoIP/GeoLite2-City.mmdb (geoipupdate's path); the demo
# database is at /usr/share/shudi/demo-city.mmdb for trials (`-e SHUDI_GEOIP_DB=...`).
ENV PATH=/opt/shudi/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    SHUDI_DATA_DIR=/var/lib/shudi

WORKDIR /var/lib/shudi
VOLUME ["/var/lib/shudi"]
USER 10001:10001

# /metrics, /healthz and /readyz (SHUDI_METRICS_PORT). Faust's own web server stays on 127.0.0.1:6066.
EXPOSE 9464

# /healthz fails when an agent died or the consumer stopped making progress, not only when the process is gone.
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 CMD ["shudi", "healthcheck"]

ENTRYPOINT ["shudi"]
CMD ["worker"]
