# syntax=docker/dockerfile:1
#
# orders-gateway container image.
#
#   docker build -t orders-gateway:local .        (or: docker compose build)
#
# Needs BuildKit (the default builder since Docker 23): the build uses cache mounts so that
# a rebuild after a source change recompiles only this crate, not its ~170 dependencies.

###############################################################################
# Build stage
###############################################################################
# Same Debian release (bookworm) as the runtime stage, so the binary never needs a newer
# glibc than the runtime has.
FROM rust:1.95-slim-bookworm AS builder

# rdkafka builds librdkafka from source (rdkafka-sys runs librdkafka's own `configure` and
# `make`): its configure script fails without a C++ compiler, even though librdkafka itself is
# C, and zlib1g-dev + pkg-config provide the compression codec (`libz` feature). gcc and
# libc6-dev are already in the rust slim image; bash (for configure) is in every Debian image.
# Versions are pinned to the bookworm upstream release; the trailing glob lets Debian
# revisions (security fixes) through, so the pin cannot break when the archive moves on.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        'g++=4:12.2.*' \
        'make=4.3-*' \
        'pkg-config=1.8.1-*' \
        'zlib1g-dev=1:1.2.13.*' \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# The whole (filtered, see .dockerignore) context: Cargo.toml, Cargo.lock, src/ (including any
# files src/ pulls in with include_str!), openapi/ and whatever Cargo.toml may reference later.
# Copying everything costs nothing extra here: compiled dependencies live in the cache mounts
# below, so a changed context only recompiles this crate.
COPY . .

# Cache mounts: the crates.io registry/git checkouts and the target directory survive between
# builds. The target dir is a cache mount, so it is not part of the image layer: the binary is
# copied out of it within the same RUN. --locked: build exactly what Cargo.lock says.
RUN --mount=type=cache,id=orders-gateway-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=orders-gateway-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=orders-gateway-target,target=/build/target,sharing=locked \
    cargo build --release --locked --bin orders-gateway \
    && install -D -m 0755 target/release/orders-gateway /out/orders-gateway

###############################################################################
# Runtime stage
###############################################################################
# debian:bookworm-slim rather than gcr.io/distroless/cc-debian12: the binary links libz.so.1
# dynamically (besides libc, libm and libgcc_s), and distroless/cc has no zlib, while zlib1g is
# part of every Debian image. bookworm matches the builder's glibc. The image stays small
# (about 75 MB uncompressed base plus the binary) and keeps a shell for
# `docker compose exec gateway sh` when debugging.
FROM debian:bookworm-slim AS runtime

LABEL org.opencontainers.image.title="orders-gateway" \
      org.opencontainers.image.description="An HTTP front for an Apache Kafka orders topic: POST /orders produces, GET /orders/stream tracks." \
      org.opencontainers.image.licenses="Apache-2.0"

# ca-certificates: the trust store for TLS connections to brokers (security.protocol=ssl via
# KAFKA_SECURITY_PROTOCOL etc.). Not pinned on purpose: the trust store must follow Debian's
# security updates, and bookworm-security has already replaced the upstream version once
# (20230311 -> 20250419), so any version pin would break the build or freeze stale roots.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin gateway

COPY --from=builder /out/orders-gateway /usr/local/bin/orders-gateway

# Numeric uid:gid so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

ENV LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080

# `orders-gateway healthcheck` GETs http://127.0.0.1:<port of LISTEN_ADDR>/readyz and exits 0 on
# 200, 1 otherwise: no curl/wget needed in the image. /readyz is 503 until the broker answers,
# the orders topic exists and the tracker holds partitions, hence the start period.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/orders-gateway", "healthcheck"]

# Exec form: the gateway is PID 1 and gets SIGTERM from `docker stop` directly; it drains
# within 10 s (compose gives it 15 s before SIGKILL).
ENTRYPOINT ["/usr/local/bin/orders-gateway"]
