# kubeedge-py — the verbs people type. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash
DATA_DIR ?= run
PYTEST_ARGS ?=
N ?= 200
SEED ?= 1

help:  ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup:  ## install Debian packages and the project's .venv (idempotent)
	@scripts/setup.sh

run: setup  ## set up, then keadm up: cloudcore + edgecore edge-1 (own containerd) here
	@scripts/run.sh $(DATA_DIR)

test: setup  ## set up, check generated code/contract/lint/types, then run every test
	@scripts/verify.sh
	.venv/bin/python -m pytest $(PYTEST_ARGS)

chaos: setup  ## N (200) seeded chaos trials on a real stack; report in chaos-report.json
	.venv/bin/python -m tests.chaos.driver --trials $(N) --seed $(SEED) --report chaos-report.json

gen: setup  ## regenerate gen/ from proto/
	@scripts/gen.sh

contract-image: setup  ## refresh proto/contract.binpb, the baseline `buf breaking` compares with
	.venv/bin/buf build -o proto/contract.binpb

lint: setup  ## ruff, mypy, buf lint, buf breaking, generated-code check
	@scripts/verify.sh

format: setup  ## format the Python code with ruff
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

bench: setup  ## run the benchmarks under bench/ (figures go to docs/benchmarks.md by hand)
	.venv/bin/python bench/hub_throughput.py
	.venv/bin/python bench/twin_latency.py
	.venv/bin/python bench/pod_startup.py
	.venv/bin/python bench/control_plane.py

.PHONY: help setup run test chaos gen contract-image lint format bench
