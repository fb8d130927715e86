# Build: the Rust image with cmake (Pingora's zlib-ng needs it).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --bin anteroom

# Run: slim Debian with CA roots for TLS upstreams, as a non-root user.
FROM debian:12.8-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin anteroom \
 && mkdir -p /etc/anteroom /var/lib/anteroom \
 && chown anteroom /var/lib/anteroom
COPY --from=build /src/target/release/anteroom /usr/local/bin/anteroom
COPY conf/docker.toml /etc/anteroom/anteroom.toml
# The memory store's line and sessions (store.state_dir): mount a volume here.
VOLUME /var/lib/anteroom
USER anteroom
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/anteroom", "health", "--config", "/etc/anteroom/anteroom.toml"]
ENTRYPOINT ["/usr/local/bin/anteroom"]
CMD ["run", "--config", "/etc/anteroom/anteroom.toml"]
