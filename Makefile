.PHONY: bench

# The project benchmark: direct vs switchboard vs Envoy 1.40 (see examples/bench/run.sh).
bench:
	bash examples/bench/run.sh

.PHONY: interop-setup

# Python grpcio and grpcio-tools in .cache/venv, for tests/interop.rs (pins in tests/interop/requirements.txt).
interop-setup:
	bash tests/interop/setup.sh
