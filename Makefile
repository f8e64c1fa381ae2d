# Portcullis: `make run` serves the dashboard and the gateway on 127.0.0.1:8000 with the demo loaded;
# `make test` installs everything the tests need and runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# The suite runs in two pytest-xdist workers, a test module each at a time (module-scoped gateways and browsers
# stay shared within a module): most end-to-end time is spent waiting on other processes. PYTEST_WORKERS=0 runs it
# in one process.
PYTEST_WORKERS ?= 2
# The HTTP server: daphne (default) or uvicorn (`make run SERVER=uvicorn`; PORTCULLIS_SERVER, config/serve_uvicorn.py).
SERVER ?=
# The address the demo prints and the server accepts (config/settings.py derives hosts and origins from it).
export PORTCULLIS_SERVED_URL := http://$(HOST):$(PORT)

N ?= 3

.PHONY: run test install install-test migrate demo serve cluster system-deps npm-deps lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test npm-deps system-deps

migrate: install
	$(PY) manage.py migrate --noinput

demo: migrate
	$(PY) manage.py demo

serve: install
	$(if $(SERVER),PORTCULLIS_SERVER=$(SERVER) )$(PY) -m config.serve -b $(HOST) -p $(PORT) config.asgi:application

run: demo serve

# N gateway processes behind HAProxy on PORT, sharing DATABASE_URL/REDIS_URL when set (deploy/cluster.py).
cluster: demo system-deps
	$(PY) -m deploy.cluster -n $(N) -p $(PORT)

# Real peers the tests talk to (server-everything, the Inspector CLI, the conformance suite, Node 22).
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

npm-deps: node_modules/.installed

# Debian packages the browser, Redis and cluster tests need, installed only where missing.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v haproxy >/dev/null || missing="$$missing haproxy"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
	    || { echo "could not install$$missing: install them with apt-get and run make test again"; exit 1; }; \
	fi

# pytest exits 5 when it collected no tests: that is a failure here, never a green run.
test: install-test
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing the run"; exit 1; fi; exit $$rc

lint: install-test
	$(VENV)/bin/ruff check .

bench: install-test
	$(PY) -m bench

clean:
	rm -rf $(VENV) node_modules .pytest_cache
