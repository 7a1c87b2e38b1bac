.PHONY: bench

# The project benchmark: direct vs switchboard vs Envoy 1.40 (see examples/bench/run.sh).
bench:
	bash examples/bench/run.sh
