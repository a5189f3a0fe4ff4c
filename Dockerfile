# Pomona container image: build with the Rust toolchain, run on a small Debian base as a
# non-root user. Nothing else is in the runtime image: certificates, keys and the database URL
# come from mounted Secrets (deploy/).
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin pomona

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/pomona /usr/local/bin/pomona
COPY crds/ /usr/share/pomona/crds/
USER 65532:65532
WORKDIR /var/lib/pomona
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/pomona"]
CMD ["serve", "--kube"]
