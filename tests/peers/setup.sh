#!/usr/bin/env bash
# Installs and builds the real gRPC peers that tests/support/peers.rs starts:
#   .cache/peers/go-echo-server   grpc-go 1.33 (Debian's golang-google-grpc-dev) with Go 1.19 (golang-go), built
#                                 offline in GOPATH mode from tests/peers/go
#   tests/peers/node/node_modules @grpc/grpc-js and @grpc/proto-loader as pinned in package-lock.json
# Missing Debian packages are installed with apt-get (as root). Idempotent: each part is stamped with a copy of
# what it was made from, so a second run does nothing and needs no network. Prints one line of what it did.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$repo/.cache/peers"
node_dir="$repo/tests/peers/node"
did=()

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for pkg in golang-go golang-google-grpc-dev; do
    installed "$pkg" || missing+=("$pkg")
done
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [[ ${#missing[@]} -gt 0 ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "peers-setup: missing Debian packages ${missing[*]}; run as root or: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    apt_log="$(mktemp)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1; then
        cat "$apt_log" >&2
        echo "peers-setup: apt-get install ${missing[*]} failed" >&2
        exit 1
    fi
    rm -f "$apt_log"
    did+=("apt-get install ${missing[*]}")
fi

# Debian's go, whatever else is on PATH: GOPATH mode against /usr/share/gocode is what the packages support.
go=/usr/lib/go/bin/go
mkdir -p "$out"
# The stamp: the package versions, then the sources it was built from (tests/support/peers.rs compares those).
go_stamp="$out/go-echo-server.sources"
wanted="$(mktemp)"
trap 'rm -f "$wanted"' EXIT
{
    dpkg-query -W -f='${Package}=${Version} ' golang-go golang-google-grpc-dev
    echo
    cat "$repo"/tests/peers/go/*.go
} >"$wanted"
if [[ ! -x "$out/go-echo-server" ]] || ! cmp -s "$wanted" "$go_stamp"; then
    (cd "$repo/tests/peers/go" &&
        GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$out/go-build" GOFLAGS= \
            "$go" build -o "$out/go-echo-server" .)
    cp "$wanted" "$go_stamp"
    did+=("built .cache/peers/go-echo-server ($("$go" version | cut -d' ' -f3), grpc-go $(dpkg-query -W -f='${Version}' golang-google-grpc-dev))")
fi

# The stamp is a copy of the lock file it installed, which tests/support/peers.rs compares too.
node_stamp="$node_dir/node_modules/.switchboard-package-lock.json"
if ! cmp -s "$node_dir/package-lock.json" "$node_stamp"; then
    # No install scripts: the pinned packages need none (protobufjs's postinstall only warns about version ranges).
    (cd "$node_dir" && npm ci --silent --no-audit --no-fund --ignore-scripts --prefer-offline)
    cp "$node_dir/package-lock.json" "$node_stamp"
    did+=("npm ci in tests/peers/node (@grpc/grpc-js $(node -p 'require("'"$node_dir"'/node_modules/@grpc/grpc-js/package.json").version'), node $(node --version))")
fi

if [[ ${#did[@]} -eq 0 ]]; then
    echo "peers-setup: up to date (.cache/peers/go-echo-server, tests/peers/node/node_modules)" >&2
else
    (IFS=';'; echo "peers-setup: ${did[*]}" | sed 's/;/; /g') >&2
fi
