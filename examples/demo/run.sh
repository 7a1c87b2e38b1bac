#!/usr/bin/env bash
# `make demo`: two echo backends, switchboard in standalone mode with examples/demo/routes.yaml, and one call
# of each kind through it, showing which backend answered.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --quiet --bin switchboard --example bench_backend --example demo_client
bin=target/debug

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$bin/examples/bench_backend" --listen 127.0.0.1:7501 --name alpha & pids+=($!)
"$bin/examples/bench_backend" --listen 127.0.0.1:7502 --name beta & pids+=($!)
"$bin/switchboard" run --routes examples/demo/routes.yaml --listen 127.0.0.1:7500 --admin 127.0.0.1:7509 & pids+=($!)

for _ in $(seq 100); do
  if curl -fsS http://127.0.0.1:7509/readyz >/dev/null 2>&1; then break; fi
  sleep 0.1
done
curl -fsS http://127.0.0.1:7509/readyz >/dev/null || { echo "switchboard did not become ready" >&2; exit 1; }

echo
echo "switchboard is routing 127.0.0.1:7500 by examples/demo/routes.yaml (alpha on :7501, beta on :7502)"
echo
"$bin/examples/demo_client" --target http://127.0.0.1:7500
echo
echo "why the canary call went to beta:"
"$bin/switchboard" explain --routes examples/demo/routes.yaml --method /switchboard.echo.v1.Echo/Unary --header x-canary=true
