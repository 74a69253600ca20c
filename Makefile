# Quick start: `make demo` then `make test`. Both install first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install azurite demo test bench bench-scale bench-iot bench-sentinel bench-forensics bench-triage bench-serve chaos fuzz clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[demo,test]'
	touch $(STAMP)

# Azurite, the Azure Storage emulator the fan-out tests run against (npm; pinned by its lock).
AZURITE := tools/azurite/node_modules/.bin/azurite
azurite: $(AZURITE)

$(AZURITE): tools/azurite/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tools/azurite --no-audit --no-fund --loglevel=error && touch $(AZURITE); \
	else \
		echo "npm is not installed: the tests against Azurite will skip, saying so"; \
	fi

demo: install
	$(BIN)/epf demo --no-serve

test: install azurite
	$(BIN)/python -m pytest

# `make bench DEVICES=20000` for a smaller fleet.
DEVICES ?= 100000
bench: install
	$(BIN)/python bench/run_bench.py --devices $(DEVICES)

# An MSSP's tenants fanned out over a Storage queue (Azurite) to 1, 2, 4 and 8 worker processes.
TENANTS ?= 200
TENANT_DEVICES ?= 500
WORKERS ?= 1,2,4,8
bench-scale: install azurite
	$(BIN)/python bench/scale.py --tenants $(TENANTS) --devices $(TENANT_DEVICES) --workers $(WORKERS)

# A day of IoT event polling at 1,000 events an hour, on a compressed clock.
bench-iot: install
	$(BIN)/python bench/iot_events.py

# Delivery into the (emulated) Logs Ingestion API, beside the SDK's sequential upload.
bench-sentinel: install
	$(BIN)/python bench/sentinel.py --devices $(or $(SENTINEL_DEVICES),20000)

# Triage of a large fleet (100,000 devices, 3M open vulnerability rows), beside a Python loop.
bench-triage: install
	$(BIN)/python bench/triage.py --devices $(or $(TRIAGE_DEVICES),100000)

# History in both modes over simulated days, and the answers from it (posture at T, lifecycle).
bench-forensics: install
	$(BIN)/python bench/forensics.py --devices $(or $(FORENSICS_DEVICES),20000) --days $(or $(DAYS),90)

# The dashboard on a workspace: each view's time to drawn, the server's peak memory.
bench-serve: install
	$(BIN)/python bench/serve.py --db $(or $(DB),epf-demo.duckdb)

# Full syncs under each injected fault kind, every table compared with the truth (bench/chaos.py).
chaos: install
	$(BIN)/python bench/chaos.py --devices $(or $(CHAOS_DEVICES),1000)

# Every parser of remote data given 10,000 hostile inputs (tests/fuzz; FUZZ_EXAMPLES to change).
fuzz: install
	EPF_FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),10000) $(BIN)/python -m pytest tests/fuzz -q -p no:cacheprovider

clean:
	rm -rf $(VENV) epf-demo.duckdb .epf-state tools/azurite/node_modules
