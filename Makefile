# Benchmarks (see bench/run.py and docs/performance.md). Not tests: tests/bench/ only smoke-runs them.
PYTHON ?= python3

.PHONY: bench bench-smoke bench-docs

# Every benchmark in full mode (about half an hour on 2 cores), then docs/performance.md.
bench:
	$(PYTHON) bench/run.py
	$(PYTHON) bench/run.py --docs

# Every benchmark with small N, a few seconds each (results in bench/results/smoke/).
bench-smoke:
	$(PYTHON) bench/run.py --smoke

bench-docs:
	$(PYTHON) bench/run.py --docs
