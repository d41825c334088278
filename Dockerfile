# syntax=docker/dockerfile:1
#
# outbox-relay container image.
#   docker build -t outbox-relay .
#   docker run --rm -e OUTBOX_DATABASE_URL=... -e OUTBOX_SINK=stdout -p 9898:9898 outbox-relay
# Needs BuildKit (the default builder) for the cache mounts.

# ---- build ----------------------------------------------------------------------------------
# Debian bookworm, like the runtime image below, so the glibc and the shared libraries the binary
# links against are the same versions at run time.
FROM rust:1-bookworm AS builder

# librdkafka is built from source by rdkafka-sys: it needs cmake and a C/C++ toolchain, zlib
# (rdkafka feature "libz") and OpenSSL headers (feature "ssl").
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config zlib1g-dev cmake libssl-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# Cache mounts keep the crates.io downloads and target/ between builds, so a change to the
# sources rebuilds only this crate, not the ~300 dependencies (librdkafka among them). target/ is a
# cache mount, hence the binary is copied out within the same step. --locked: Cargo.lock as
# committed, or fail.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin outbox-relay \
 && install -D -m 0755 target/release/outbox-relay /out/outbox-relay

# The runtime image has glibc, libgcc, OpenSSL and CA certificates; copy every other shared
# library the binary needs (zlib, for one) at the path the dynamic loader searches, so the image
# never depends on what distroless happens to ship.
RUN set -eu; \
    mkdir -p /out/rootfs; \
    ldd /out/outbox-relay | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | while read -r lib; do \
      case "$(basename "$lib")" in \
        libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|libgcc_s.so.*|ld-linux*) ;; \
        *) dir="/out/rootfs/usr/lib/$(gcc -print-multiarch)"; mkdir -p "$dir"; cp -L "$lib" "$dir/" ;; \
      esac; \
    done; \
    /out/outbox-relay --version

# ---- run ------------------------------------------------------------------------------------
# distroless: no shell, no package manager, little to patch; ":nonroot" runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=builder /out/rootfs/ /
COPY --from=builder /out/outbox-relay /usr/local/bin/outbox-relay

# Fails the build if the binary cannot start in this image (a missing shared library, say). The
# exec form needs no shell.
RUN ["/usr/local/bin/outbox-relay", "--version"]

# Same uid as the chart's securityContext (runAsUser 65532); numeric so runAsNonRoot can check it.
USER 65532:65532
# /metrics, /healthz, /readyz (OUTBOX_HTTP_ADDR defaults to 0.0.0.0:9898).
EXPOSE 9898
# `run` relays until SIGTERM, then drains and exits 0; the binary is PID 1 and handles the signal
# itself, so no init process is needed. Other subcommands: `docker run IMAGE migrate`, `status`...
ENTRYPOINT ["/usr/local/bin/outbox-relay"]
CMD ["run"]
