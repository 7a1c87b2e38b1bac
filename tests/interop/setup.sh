#!/usr/bin/env bash
# Creates .cache/venv (repo-relative) with the pinned grpcio and grpcio-tools the interop test uses.
# Idempotent: when the venv already holds exactly tests/interop/requirements.txt it returns at once.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/.cache/venv"
reqs="$repo/tests/interop/requirements.txt"
stamp="$venv/.interop-requirements"

if [[ -x "$venv/bin/python" ]] && cmp -s "$reqs" "$stamp"; then
    exit 0
fi

python="${PYTHON:-python3}"
echo "interop-setup: creating $venv with $($python --version 2>&1)" >&2
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs"
"$venv/bin/python" -c 'import grpc, grpc_tools.protoc, sys
print("interop-setup: grpcio", grpc.__version__, file=sys.stderr)'
# Written last, so an interrupted install is retried on the next run.
cp "$reqs" "$stamp"
