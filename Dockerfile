# syntax=docker/dockerfile:1
# The switchboard image (`make image`); the Helm chart's default image is this one, tagged with the crate's
# version.
#
# Build stage: .ci/build-release.sh, whose checks CI runs on every change (on the dev build) even where no
# container engine runs. It builds with glibc, not as a static musl binary: the project's toolchain
# has no musl target, and ring's C code would need a musl C toolchain too. The runtime stage is therefore
# distroless/cc (glibc, libgcc_s, CA certificates, tzdata; no shell, no package manager) from the same Debian
# release as the build stage, so the glibc versions match; the script refuses a binary that needs anything
# else. The image is about 40 MB (distroless/cc and a 16 MB binary), run as its non-root user.
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target/ between builds; the binary is copied out of the cache to /out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    .ci/build-release.sh /out

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/switchboard /usr/local/bin/switchboard
# 65532 is distroless' `nonroot`; numeric, so runAsNonRoot can verify it.
USER 65532:65532
# gRPC (h2c), and admin: /healthz, /readyz, /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/switchboard"]
CMD ["run"]
