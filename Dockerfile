# syntax=docker/dockerfile:1
#
# Images for the docker-compose setup and for Kubernetes:
#
#   docker build -t invalog/agent:0.1.0 --target agent .   # the `invalog` binary (default target)
#   docker build -t invalog/shop:0.1.0  --target shop  .   # the example app, examples/shop
#
# Both final images are distroless (glibc, CA certificates, no shell), run as
# the unprivileged user 65532 ("nonroot"), and carry a static busybox `wget`
# for container healthchecks (`wget -q -O /dev/null http://127.0.0.1:9464/readyz`).

# The toolchain the project builds and tests with (Cargo.lock is resolved
# without regard to rust-version 1.89, so a newer dependency may need it).
ARG RUST_VERSION=1.95

# ---- build: compile in release mode, with cargo's caches kept between builds
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The workspace: the root package (the `invalog` command) and the crates
# under crates/ (.ci/check-dockerfile.sh builds exactly what is copied).
COPY Cargo.toml Cargo.lock README.md ./
COPY crates ./crates
COPY src ./src
COPY tests ./tests
COPY examples/shop ./examples/shop
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin invalog \
 && cp target/release/invalog /usr/local/bin/invalog
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_TARGET_DIR=/src/target cargo build --release --locked --manifest-path examples/shop/Cargo.toml \
 && cp target/release/shop /usr/local/bin/shop

# A statically linked busybox, used only as `wget` by healthchecks.
FROM busybox:1.36.1-musl AS busybox

# ---- the example app (examples/shop)
FROM gcr.io/distroless/cc-debian12:nonroot AS shop
COPY --from=busybox /bin/busybox /usr/local/bin/wget
COPY --from=build /usr/local/bin/shop /usr/local/bin/shop
USER 65532:65532
EXPOSE 8080
ENV SHOP_LISTEN=0.0.0.0:8080
ENTRYPOINT ["/usr/local/bin/shop"]

# ---- the agent and the CLI (default target: last stage)
FROM gcr.io/distroless/cc-debian12:nonroot AS agent
COPY --from=busybox /bin/busybox /usr/local/bin/wget
COPY --from=build /usr/local/bin/invalog /usr/local/bin/invalog
# The configuration is mounted here (docker-compose.yml, deploy/k8s/).
WORKDIR /var/lib/invalog
USER 65532:65532
# /healthz, /readyz, /metrics, /status, /applied ([http] listen = "0.0.0.0:9464").
EXPOSE 9464
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9464/readyz"]
ENTRYPOINT ["/usr/local/bin/invalog"]
CMD ["agent", "--config", "/etc/invalog/agent.toml"]
