# switchboard: the two set-up commands are `make demo` and `make test` (see README.md).
CARGO ?= cargo

.PHONY: demo test lint build interop-setup peers-setup bench bench-controller crd crds

# The standalone demo: two echo backends, switchboard, one call of each kind.
demo:
	bash examples/demo/run.sh

# Every test: unit, loopback integration, examples, the grpcio interop test and the real-peer tests; first the
# chart checks.
test: interop-setup peers-setup chart-check
	$(CARGO) build --bins --examples
	$(CARGO) test --all-targets --no-fail-fast

# fmt + clippy, warnings as errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

build:
	$(CARGO) build --release --bin switchboard

# Python grpcio and grpcio-tools in .cache/venv, for tests/interop.rs (pins in tests/interop/requirements.txt).
interop-setup:
	bash tests/interop/setup.sh

# The grpc-go echo server (Debian's golang-go + golang-google-grpc-dev, apt-get as root when absent) built into
# .cache/peers, and @grpc/grpc-js into tests/peers/node/node_modules, for tests/peers.rs and tests/support/peers.rs.
peers-setup:
	bash tests/peers/setup.sh

# The project benchmark: direct vs switchboard vs Envoy 1.40, over h2c and TLS (see examples/bench/README.md).
bench:
	bash examples/bench/run.sh

# The controller at scale: 10,000 Services and EndpointSlices, 1,000 GrpcRoutes, through the test API server
# (RSS, time to ready, rebuild time; tests/controller_scale.rs).
bench-controller:
	$(CARGO) test --release --test controller_scale -- --ignored --nocapture

# Print the GrpcRoute CRD.
crd:
	@$(CARGO) run --quiet --bin switchboard -- crd

# Regenerate crds/ from the Rust types (tests/crd.rs fails while they differ).
crds:
	$(CARGO) run --quiet --bin switchboard -- crd > crds/grpcroute.yaml

.PHONY: k8s-tools chart-generate chart-check image image-name release

# The image the Helm chart deploys by default: switchboard:<crate version> (the chart's appVersion).
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -1)
IMAGE ?= switchboard:$(VERSION)

# Helm 4, kubectl 1.37, kubernetes-validate and the other chart-check tools, into .cache/k8s-tools.
k8s-tools:
	bash .ci/install-k8s-tools.sh

# Regenerate the chart's CRD template, its README values table, and manifests/ (commit the result).
chart-generate: k8s-tools
	$(CARGO) build --bin switchboard
	bash charts/ci/generate.sh

# helm lint/template, Kubernetes 1.37 validation of every rendered object, drift of the generated files.
chart-check: k8s-tools
	$(CARGO) build --bin switchboard
	bash charts/ci/check.sh

# The container image (needs a container engine); its build stage runs .ci/build-release.sh.
image:
	docker build -t $(IMAGE) .

image-name:
	@echo $(IMAGE)

# The release binary exactly as the image builds it (CI runs this).
release:
	bash .ci/build-release.sh
