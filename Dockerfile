# Pomona container image: build with a pinned Rust toolchain, run on a small Debian base as a
# non-root user. Nothing else is in the runtime image: certificates, keys and the database URL
# come from mounted Secrets (deploy/, charts/pomona/).
#   docker build -t <your registry>/pomona:<tag> . && docker push <your registry>/pomona:<tag>
FROM rust:1.95.0-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, against stub sources: this layer is rebuilt only when Cargo.toml or
# Cargo.lock change, not on every source edit (the [[bench]] targets the manifest declares get
# stubs too).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/identity.rs && cp benches/identity.rs benches/plist_decode.rs \
    && cargo build --release --locked --bin pomona \
    && rm -rf src benches target/release/pomona target/release/deps/pomona-* \
       target/release/deps/libpomona-* target/release/.fingerprint/pomona-*
# Then the sources (.dockerignore keeps target/, pomona-data/, .git/ and fuzz output out).
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
