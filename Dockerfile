# syntax=docker/dockerfile:1
# Production image of the pepeunit server. Built by `docker compose build` (see docker-compose.yml).

# ---- build -----------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep the crate registry and incremental artefacts between builds; the binary
# is copied out of the cached target directory inside the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release \
    && install -m 0755 target/release/pepeunit /usr/local/bin/pepeunit

# ---- runtime ---------------------------------------------------------------------------------
FROM debian:bookworm-slim
# git: the server clones and fetches firmware repositories; ca-certificates: HTTPS remotes.
# Unpinned on purpose: take the current bookworm security updates on every build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# Unprivileged user; /data is created owned by it so a fresh named volume inherits that owner.
RUN useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin pepeunit \
    && install -d -o pepeunit -g pepeunit -m 0750 /data
COPY --from=builder /usr/local/bin/pepeunit /usr/local/bin/pepeunit

ENV PU_DATA_DIR=/data \
    PU_HTTP_BIND=0.0.0.0:5291 \
    HOME=/data
VOLUME /data
WORKDIR /data
USER 10001:10001
# 5291: HTTP API; 1883: MQTT, used when the server runs its own broker.
EXPOSE 5291 1883
CMD ["pepeunit", "serve"]
