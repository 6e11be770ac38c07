# syntax=docker/dockerfile:1
# Multi-stage build: dependencies are cooked in their own layer (cargo-chef), so a code change
# rebuilds only the crate. The build command is the README's: cargo build --release --locked.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-slim-bookworm AS chef
RUN cargo install cargo-chef --locked
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin infergate
COPY . .
RUN cargo build --release --locked --bin infergate

FROM debian:bookworm-slim AS runtime
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="infergate" \
      org.opencontainers.image.revision="${GIT_SHA}"
# curl only serves the HEALTHCHECK; ca-certificates lets the gateway reach AWS over TLS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin infergate
COPY --from=builder /src/target/release/infergate /usr/local/bin/infergate
# The default model is compiled into the binary; the files are here for --model and reference.
COPY models /opt/infergate/models
WORKDIR /opt/infergate
USER 10001
# Inside a container the gateway must listen on every interface to be reachable.
ENV INFERGATE_BIND=0.0.0.0:8080 \
    INFERGATE_LOG__FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s --start-period=5s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/health/live || exit 1
ENTRYPOINT ["/usr/local/bin/infergate"]
CMD ["serve"]
