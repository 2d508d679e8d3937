# `make run` sets everything up and starts the system; `make test` sets everything up and tests it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
VENDOR := static/vendor/socket.io.min.js
# make test runs the test files in this many processes (pytest-xdist; a file's tests stay in one process, so
# a module's stack starts once). Each process starts its own Redis, web and workers on free ports, and writes
# its logs under tests/artifacts/gw<N>/.
TEST_PROCESSES ?= 3

.PHONY: check-python setup run test test-unit test-integration test-e2e screenshots lint bench bench-quick bench-latency bench-flower clean

setup: check-python $(STAMP) $(VENDOR)

# Every target starts here: the Python needed (3.11+), said in one sentence before anything is made.
# Another interpreter: `make run PYTHON=python3.11` (or a path); VENV=dir puts the virtualenv elsewhere.
check-python:
	@scripts/check-python "$(PYTHON)" "$(VENV)"

$(BIN)/python: | check-python
	$(PYTHON) -m venv $(VENV)

# --no-compile: pip byte-compiles every file it installs (20 s of the 62 s a fresh install takes here);
# Python compiles what is imported, when it is first imported.
$(STAMP): requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q --no-compile --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(VENDOR): package.json package-lock.json | $(STAMP)
	scripts/npm ci --no-audit --no-fund
	scripts/npm run build --silent

run: setup
	scripts/run

test: setup
	scripts/ensure-redis
	scripts/ensure-chromium
	scripts/ensure-compose
	$(BIN)/ruff check celery_dashboard devstack tasks web tests bench scripts
	$(BIN)/pytest -n $(TEST_PROCESSES) --dist loadfile
	$(BIN)/python -m bench.run --quick

test-unit: setup
	scripts/ensure-compose
	$(BIN)/pytest tests/unit

test-integration: setup
	scripts/ensure-redis
	$(BIN)/pytest tests/integration

test-e2e: setup
	scripts/ensure-redis
	scripts/ensure-chromium
	$(BIN)/pytest tests/e2e

# The documentation's screenshots (docs/dashboard.png, detail.png, workers.png, phone.png, dark.png):
# scripts/screenshots.py starts the real stack, launches demo tasks and photographs the views in
# headless Chromium. About a minute. Tests never write into docs/.
screenshots: setup
	scripts/ensure-redis
	scripts/ensure-chromium
	$(BIN)/python -m scripts.screenshots

# The load benchmark (bench/run.py, one module per measurement): ours beside Flower, `.delay()` at equal
# concurrency, a naive relay and Flask-SocketIO's message-queue pattern: fan-out to 1-1,000 clients (all
# of them, and the last to join), ingest fully applied, memory with Redis counted, progress call cost.
# About 12 minutes. Writes bench/results/report.md, report.json and report.png; docs/benchmark.md is a
# copy of a reference run. The browser benchmark is bench-latency.
bench: setup
	scripts/ensure-redis
	$(BIN)/python -m bench.run

# About 150 s (a budget of 300 s), for CI: small sizes; exits 1 if a step produced no numbers. Checks that
# the harness runs and produces numbers, not timings. Writes under bench/results/quick/.
bench-quick: setup
	scripts/ensure-redis
	$(BIN)/python -m bench.run --quick

# This dashboard vs Flower on the same Redis, point by point, in headless Chromium; about 3 minutes.
# Writes bench/results/versus_flower.md and .json, and the committed copy docs/versus-flower.md.
bench-flower: setup
	scripts/ensure-redis
	scripts/ensure-chromium
	$(BIN)/python -m bench.versus_flower

# Click to first visible progress in headless Chromium, and progress call to a Socket.IO client.
bench-latency: setup
	scripts/ensure-redis
	scripts/ensure-chromium
	$(BIN)/python -m bench.latency

clean:
	rm -rf $(VENV) node_modules static/vendor .run
