# switchboard: the two set-up commands are `make demo` and `make test` (see README.md).
CARGO ?= cargo

.PHONY: demo test lint build interop-setup bench crd crds

# The standalone demo: two echo backends, switchboard, one call of each kind.
demo:
	bash examples/demo/run.sh

# Every test: unit, loopback integration, examples, and the Python grpcio interop test.
test: interop-setup
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

# The project benchmark: direct vs switchboard vs Envoy 1.40 (see examples/bench/run.sh).
bench:
	bash examples/bench/run.sh

# Print the GrpcRoute CRD.
crd:
	@$(CARGO) run --quiet --bin switchboard -- crd

# Regenerate crds/ from the Rust types (tests/crd.rs fails while they differ).
crds:
	$(CARGO) run --quiet --bin switchboard -- crd > crds/grpcroute.yaml
