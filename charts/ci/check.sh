#!/usr/bin/env bash
# The chart checks (`make chart-check`, part of `make test`), with the real tools (.ci/install-k8s-tools.sh):
#   1. the generated files are current: the CRD template against `switchboard crd`, manifests/ against the
#      chart and examples/routes/, the README's values table against values.yaml (charts/ci/generate.sh into a
#      copy, then diff); every value documented and declared in values.schema.json
#   2. helm lint --strict, with the default values and with each charts/switchboard/ci/*-values.yaml
#   3. helm template with the same values; every rendered object validated for Kubernetes 1.37
#      (charts/ci/validate.py); the default install's image is the one `make image` builds; every
#      SWITCHBOARD_* variable of cluster mode (src/config.rs) is set by the Deployment
#   4. manifests/: every object validated and read by kubectl 1.37; the example GrpcRoutes against the CRD schema
#   5. values.schema.json and the templates refuse wrong values
#   6. the Dockerfile: hadolint, and its build stage runs .ci/build-release.sh, which .ci/run runs too
# The switchboard binary is $SWITCHBOARD (default target/debug/switchboard, built by `make chart-check`).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
tools="$repo/.cache/k8s-tools"
export HOME="$tools/home" KUBECONFIG=/dev/null
helm="$tools/bin/helm"
kubectl="$tools/bin/kubectl"
python="$tools/venv/bin/python"
chart=charts/switchboard
switchboard="${SWITCHBOARD:-$repo/target/debug/switchboard}"
export SWITCHBOARD="$switchboard"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

passed=0 failed=0
step() { printf '\n== %s\n' "$*"; }
pass() { echo "ok   $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
validate() { "$python" charts/ci/validate.py --servicemonitor-validator charts/ci/servicemonitor.mjs "$@"; }

step "versions"
"$helm" version --short
"$kubectl" version --client 2>/dev/null | sed -n 1p
echo "kubernetes-validate $("$tools/venv/bin/kubernetes-validate" --version)"
cargo_version="$(grep -m1 '^version = ' Cargo.toml | sed 's/^version = "\(.*\)"$/\1/')"
app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' $chart/Chart.yaml)"
if [[ "$cargo_version" == "$app_version" ]]; then
    pass "Chart.yaml appVersion $app_version is Cargo.toml's version"
else
    fail "Chart.yaml appVersion $app_version is not Cargo.toml's version $cargo_version"
fi

step "generated files are current (charts/ci/generate.sh into a copy, then diff)"
mkdir -p "$work/tree/examples"
cp -r charts manifests README.md "$work/tree/"
cp -r examples/routes "$work/tree/examples/"
if bash charts/ci/generate.sh "$work/tree"; then
    for path in $chart/templates/crd-grpcroute.yaml $chart/README.md README.md manifests; do
        if diff -ru "$path" "$work/tree/$path" >"$work/drift.diff"; then
            pass "$path"
        else
            head -40 "$work/drift.diff"
            fail "$path is stale: run \`make chart-generate\` and commit the result"
        fi
    done
else
    fail "charts/ci/generate.sh"
fi
if "$python" charts/ci/values_table.py $chart --check; then
    pass "every value has a \`# --\` comment and a property in values.schema.json"
else
    fail "values.yaml, values.schema.json and README.md disagree"
fi

lint_and_render() { # NAME, then helm's value flags
    local name="$1"
    shift
    step "helm lint --strict, helm template, validation: $name values"
    if "$helm" lint --strict "$chart" "$@"; then
        pass "helm lint --strict ($name)"
    else
        fail "helm lint --strict ($name)"
    fi
    if ! "$helm" template switchboard "$chart" --namespace switchboard "$@" >"$work/$name.yaml"; then
        fail "helm template ($name)"
    elif validate "$work/$name.yaml"; then
        pass "helm template ($name): every object valid"
    else
        fail "helm template ($name): invalid objects"
    fi
}
lint_and_render default
for values in $chart/ci/*-values.yaml; do
    lint_and_render "$(basename "$values" -values.yaml)" --values "$values"
done

step "the default image is the one \`make image\` builds"
rendered_image="$(sed -n 's/^ *image: "\(.*\)"$/\1/p' "$work/default.yaml")"
make_image="$(make -s --no-print-directory image-name)"
if [[ "$rendered_image" == "$make_image" ]]; then
    pass "chart default image $rendered_image = make image's"
else
    fail "the chart's default image $rendered_image differs from make image's $make_image"
fi

step "every flag of cluster mode is set by the Deployment"
# Standalone-only flags (the routes file) are not; a new flag fails here until the chart sets it.
missing=""
for env in $(grep -o 'env = "SWITCHBOARD_[A-Z_]*"' src/config.rs | cut -d'"' -f2 | sort -u); do
    case "$env" in SWITCHBOARD_ROUTES | SWITCHBOARD_RELOAD_INTERVAL) continue ;; esac
    grep -q "name: $env\$" "$work"/*.yaml || missing="$missing $env"
done
if [[ -z "$missing" ]]; then
    pass "every SWITCHBOARD_* variable of src/config.rs is set by some ci/*-values.yaml"
else
    fail "the chart does not set:$missing"
fi

step "manifests/ (for kubectl apply -f)"
if validate manifests/switchboard.yaml; then pass "manifests/switchboard.yaml valid"; else fail "manifests/switchboard.yaml"; fi
if "$kubectl" label --local -f manifests/ --recursive checked=true -o name; then
    pass "kubectl reads every object in manifests/"
else
    fail "kubectl cannot read manifests/"
fi
"$switchboard" crd >"$work/crd.yaml"
if validate --crd "$work/crd.yaml" manifests/examples/*.yaml; then
    pass "example GrpcRoutes match the CRD schema (their CEL rules: tests/crd.rs on examples/routes/)"
else
    fail "example GrpcRoutes against the CRD schema"
fi

step "wrong values are refused"
refused() { # WHY, then helm's value flags
    local why="$1"
    shift
    if "$helm" template switchboard "$chart" "$@" >/dev/null 2>"$work/err"; then
        fail "accepted $why ($*)"
    else
        pass "refused $why: $(grep -m1 -E '^- at|execution error' "$work/err" | cut -c1-120)"
    fi
}
refused "replicas as a string" --set-string replicaCount=two
refused "a boolean as a string" --set-string crds.enabled=yes
refused "a misspelt key" --set replicaCont=3
refused "an unknown nested key" --set proxy.drainTimout=10s
refused "a duration without a unit" --set proxy.drainTimeout=30
refused "a duration the binary cannot parse" --set proxy.idleTimeout=5min
refused "a stream window below HTTP/2's minimum" --set proxy.streamWindow=1000
refused "an unknown log format" --set log.format=xml
refused "an unknown Service type" --set service.type=Ingress
refused "a port out of range" --set service.grpcPort=70000
refused "a digest that is not sha256" --set image.digest=latest
refused "an invalid namespace name" --set 'controller.watchNamespaces[0]=Not_A_Namespace'
refused "an existing ServiceAccount without a name" --set serviceAccount.create=false
refused "autoscaling without a target" --set autoscaling.enabled=true --set autoscaling.targetCPUUtilizationPercentage=null

step "Dockerfile"
if "$tools/venv/bin/hadolint" Dockerfile; then pass "hadolint Dockerfile"; else fail "hadolint Dockerfile"; fi
if grep -q '^ *\.ci/build-release\.sh /out$' Dockerfile && grep -q '^bash \.ci/build-release\.sh' .ci/run; then
    pass "the Dockerfile's build command, .ci/build-release.sh, is the one .ci/run runs"
else
    fail "the Dockerfile's build stage and .ci/run must both run .ci/build-release.sh"
fi

echo
echo "chart-check: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
