# Hermod's container image: one static binary in an otherwise empty (`scratch`) image, run as an
# unprivileged user. See docs/CONTAINERS.md.
#
# With Docker Hub (builds from source, in the `builder` stage):
#   docker build -t hermod .
# Offline, from a binary built beforehand by scripts/static-binary.sh (pulls nothing):
#   scripts/static-binary.sh && docker build --target prebuilt -t hermod .
#
# The two final stages, `prebuilt` and `image` (the default, last), differ only in where /hermod
# comes from and in the public CA roots, which only the builder has; keep the rest the same.

ARG RUST_VERSION=1.95

# ---- builder: the static musl binary, from the source ------------------------------------------
# Alpine's Rust targets musl natively, so the binary is static (static-pie) on any architecture.
FROM rust:${RUST_VERSION}-alpine AS builder
# musl-dev: C headers and crt files for ring and the bundled SQLite; npm: Swagger UI for /docs.
# Build tools only, at the versions of the rust image's Alpine release (nothing of them ships).
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev npm
# The /docs page embeds Swagger UI from node_modules/swagger-ui-dist (backend/build.rs), at the
# version package.json pins. Installed on its own (not `npm ci`, which would also fetch wrangler
# and its runtime), with install scripts off (Scarf's install-time analytics).
COPY package.json /src/package.json
WORKDIR /ui
RUN npm install --no-save --no-package-lock --ignore-scripts --no-audit --no-fund \
       "swagger-ui-dist@$(node -p 'require("/src/package.json").devDependencies["swagger-ui-dist"]')" \
    && mv /ui/node_modules /src/node_modules
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY shared shared
COPY device device
COPY backend backend
COPY edge edge
COPY migrations migrations
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p hermod \
    && cp target/release/hermod /hermod

# ---- prebuilt: the image from target/x86_64-unknown-linux-musl/release/hermod ------------------
FROM scratch AS prebuilt
COPY target/x86_64-unknown-linux-musl/release/hermod /hermod
COPY config/hermod-conf.yml /config/hermod-conf.yml
# The sample config listens on 127.0.0.1; in a container Hermod must listen on every interface.
# Extra CA certificates for callbacks (PEM .cer) come from the /cacerts volume.
# No DATABASE_URL here: it would override a database.url in a mounted config. The sample's
# `sqlite://hermod.db` is relative to the working directory, /data.
ENV HERMOD_SERVER__ADDRESS=0.0.0.0 \
    HERMOD_CACERTS=/cacerts
# No /etc/passwd in the image: a numeric user. WORKDIR after USER makes /data owned by it
# (BuildKit and buildah both create the directory as the current user), so a named volume
# mounted there starts writable by it.
USER 10001:10001
WORKDIR /data
VOLUME ["/config", "/cacerts", "/certificates", "/data"]
EXPOSE 8080
# Hermod handles SIGTERM itself (graceful shutdown within server.shutdown-grace), as PID 1 must.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/hermod"]
CMD ["serve", "--config", "/config/hermod-conf.yml"]

# ---- image (default): the same, with the binary and the CA roots from the builder --------------
FROM scratch AS image
COPY --from=builder /hermod /hermod
# Public CA roots (Alpine's Mozilla bundle) for HTTPS callbacks to public receivers; the prebuilt
# image has none, so mount a bundle there or put the receivers' CAs in /cacerts.
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY config/hermod-conf.yml /config/hermod-conf.yml
ENV HERMOD_SERVER__ADDRESS=0.0.0.0 \
    HERMOD_CACERTS=/cacerts
USER 10001:10001
WORKDIR /data
VOLUME ["/config", "/cacerts", "/certificates", "/data"]
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/hermod"]
CMD ["serve", "--config", "/config/hermod-conf.yml"]
