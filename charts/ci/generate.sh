#!/usr/bin/env bash
# Writes the generated parts of the chart and of manifests/ (`make chart-generate`):
#   charts/switchboard/templates/crd-grpcroute.yaml  `switchboard crd`, gated by crds.enabled, kept on uninstall
#   charts/switchboard/README.md, README.md          the values table, from the `# --` comments of values.yaml
#   manifests/switchboard.yaml                       the chart's default install as plain YAML, namespace included
#   manifests/examples/*.yaml                        the example GrpcRoutes, copied from examples/routes/
#
#   charts/ci/generate.sh [ROOT]
# ROOT (default: the repository) is the tree written to; charts/ci/check.sh passes a copy and diffs it. The
# switchboard binary is $SWITCHBOARD (default target/debug/switchboard); the tools come from
# .cache/k8s-tools (.ci/install-k8s-tools.sh).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
root="$(cd "${1:-$repo}" && pwd)"
tools="$repo/.cache/k8s-tools"
switchboard="${SWITCHBOARD:-$repo/target/debug/switchboard}"
chart="$root/charts/switchboard"
export HOME="$tools/home"

# --- The CRD template -------------------------------------------------------------------------------------
crd="$("$switchboard" crd)"
if grep -q '{{' <<<"$crd"; then
    echo "generate: the CRD contains '{{', which Helm would read as a template action" >&2
    exit 1
fi
if [[ "$(sed -n 3,5p <<<"$crd")" != $'metadata:\n  name: grpcroutes.switchboard.dev\nspec:' ]]; then
    echo "generate: unexpected metadata in \`switchboard crd\` output; update charts/ci/generate.sh" >&2
    exit 1
fi
{
    echo '{{- /* Generated from `switchboard crd` by `make chart-generate`; do not edit. */}}'
    echo '{{- if .Values.crds.enabled }}'
    sed -n 1,4p <<<"$crd"
    echo '  annotations:'
    echo '    # Helm would delete the CRD, and every GrpcRoute with it, on uninstall; keep it.'
    echo '    helm.sh/resource-policy: keep'
    echo '  labels:'
    echo '    {{- include "switchboard.labels" . | nindent 4 }}'
    sed -n '5,$p' <<<"$crd"
    echo '{{- end }}'
} > "$chart/templates/crd-grpcroute.yaml"

# --- The values table -------------------------------------------------------------------------------------
"$tools/venv/bin/python" "$repo/charts/ci/values_table.py" "$chart"

# --- manifests/ -------------------------------------------------------------------------------------------
mkdir -p "$root/manifests/examples"
version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$chart/Chart.yaml")"
{
    cat <<HEADER
# switchboard $version: the Helm chart's default install (release "switchboard" in namespace "switchboard"),
# rendered to plain YAML by \`make chart-generate\` from charts/switchboard. Do not edit: change the chart.
#
#   kubectl apply -f manifests/switchboard.yaml
#
# The image is switchboard:$version, built by \`make image\`; to use your registry, edit the Deployment's image
# or install the chart with --set image.repository=...
---
apiVersion: v1
kind: Namespace
metadata:
  name: switchboard
  labels:
    app.kubernetes.io/name: switchboard
    app.kubernetes.io/instance: switchboard
HEADER
    "$tools/bin/helm" template switchboard "$chart" --namespace switchboard
} > "$root/manifests/switchboard.yaml"

rm -f "$root"/manifests/examples/*.yaml
for f in "$root"/examples/routes/*.yaml; do
    {
        echo "# Copied from examples/routes/$(basename "$f") by \`make chart-generate\`; do not edit."
        cat "$f"
    } > "$root/manifests/examples/$(basename "$f")"
done
