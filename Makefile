# Two entry points on a fresh machine:  `make run`  (set up + the default workflow)
#                                       `make test` (set up + the test suite)
PYTHON ?= python3.11
VENV ?= .venv
CORES ?= 2
BIN := $(VENV)/bin

.PHONY: setup run test bench lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/.installed

run: setup
	$(BIN)/snakemake --profile profiles/local --cores $(CORES)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) --report results/report.html

test: setup
	$(BIN)/pytest -q --durations=25

lint: setup
	$(BIN)/snakemake --lint

bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/bench_bim.py
	$(BIN)/python bench/bench_engine.py
	$(BIN)/python bench/bench_score.py
	$(BIN)/python bench/bench_label_attacks.py
	$(BIN)/python bench/bench_plot.py
	$(BIN)/python bench/bench_ara.py

clean:
	rm -rf results logs benchmarks .snakemake
