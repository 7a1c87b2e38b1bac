#!/usr/bin/env bash
# The release build of the switchboard binary: the one command the Dockerfile's build stage runs, and CI runs
# it too (.ci/run), so the image's build is exercised without a container engine.
#
#   .ci/build-release.sh [OUT_DIR]    builds target/release/switchboard, checks it, copies it to OUT_DIR
#   .ci/build-release.sh --check BIN  only the checks, on a binary built otherwise (CI: the dev build, which
#                                     links the same libraries; the optimised build takes too long for CI)
#
# The copy in OUT_DIR (the image's) loses the release profile's line tables (about 60 MB to 16 MB); it keeps
# its symbols, so backtraces still name functions. target/release keeps everything, for profiling.
#
# The binary links glibc dynamically (the runtime image is distroless/cc, see the Dockerfile): refuse any
# other shared library, which that image would not have.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ "${1:-}" == "--check" ]]; then
    bin="$2"
    shift 2
else
    cargo build --release --locked --bin switchboard
    bin="${CARGO_TARGET_DIR:-target}/release/switchboard"
fi

allowed='^(linux-vdso\.so\.1|libgcc_s\.so\.1|libm\.so\.6|libc\.so\.6|libpthread\.so\.0|libdl\.so\.2|librt\.so\.1|/lib64/ld-linux-x86-64\.so\.2|/lib/ld-linux-aarch64\.so\.1)$'
extra="$(ldd "$bin" | awk '{print $1}' | grep -Ev "$allowed" || true)"
if [[ -n "$extra" ]]; then
    echo "build-release: $bin needs shared libraries the runtime image lacks:" $extra >&2
    exit 1
fi
"$bin" --version
"$bin" crd >/dev/null

echo "build-release: $bin ($(du -h "$bin" | cut -f1)) links only glibc and libgcc_s"
if [[ $# -gt 0 ]]; then
    install -D -m 0755 "$bin" "$1/switchboard"
    strip --strip-debug "$1/switchboard"
    "$1/switchboard" --version >/dev/null
    echo "build-release: $1/switchboard ($(du -h "$1/switchboard" | cut -f1), without debug info)"
fi
