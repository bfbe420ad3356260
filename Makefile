# a4co — the two commands are `make run` and `make test`; everything else is for developers.
# Every target creates the virtual environment itself and is a no-op when nothing changed.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

PROTOS := $(shell find proto -name '*.proto' | LC_ALL=C sort)
GEN    := gen/python
# buf breaking compares the contracts (as in the working tree) with every earlier committed state
# of proto/: the previous main among them, however many commits a change lands in.
BREAKING_AGAINST ?= $(shell git rev-list HEAD -- proto 2>/dev/null)

.PHONY: run help venv gen catalog lint fmt test node-client check-gen check-catalog breaking lock clean bench bench-quick bench-events bench-rpc dashboards check-dashboards check-compose

help:
	@echo "make run      the whole marketplace on this machine, with demo data of Jaén (Ctrl-C stops)"
	@echo "make test     set up everything, then run the whole test suite against real servers"
	@echo "make lint     ruff, mypy, buf lint/format/breaking, generated code and catalog fresh"
	@echo "make fmt      format Python and proto files in place"
	@echo "make gen      regenerate gen/python from proto/ (and the descriptors reflection serves, with comments)"
	@echo "make catalog  regenerate docs/events.md and docs/asyncapi.yaml from the contracts"
	@echo "make lock     re-resolve requirements.lock from pyproject.toml"
	@echo "make bench    the whole performance report (about 5-7 min here); make bench-quick (about 70 s)"
	@echo "make bench-events  event platform figures beside raw nats-py (BENCH_ARGS=--quick)"
	@echo "make bench-rpc     the five sync RPCs beside a bare grpc.aio echo server (BENCH_ARGS=--quick)"

run: $(STAMP) gen
	$(BIN)/python -m services.launcher

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.lock
	@# The project and its generated code are importable through a .pth file rather than an
	@# editable install, so that a package added by `make gen` is found without reinstalling.
	@$(BIN)/python -c 'import sysconfig,pathlib; pathlib.Path(sysconfig.get_paths()["purelib"], "a4co-project.pth").write_text("$(CURDIR)\n$(CURDIR)/$(GEN)\n")'
	@printf '#!/bin/sh\nexec "%s/$(BIN)/python" -m services.cli "$$@"\n' "$(CURDIR)" > $(BIN)/a4co && chmod +x $(BIN)/a4co
	@touch $@

requirements.lock:
	$(MAKE) lock

lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install -q --disable-pip-version-check '.[dev]'
	.lockenv/bin/python -m pip freeze --all --exclude a4co --exclude pip | LC_ALL=C sort > requirements.lock
	rm -rf .lockenv

gen: $(VENV)/.gen

$(VENV)/.gen: $(PROTOS) $(STAMP) tools/gen.py
	$(BIN)/python -m tools.gen --proto proto --out $(GEN)
	@touch $@

catalog: gen
	$(BIN)/python -m tools.catalog --proto proto --out docs

check-gen: $(STAMP)
	$(BIN)/python -m tools.gen --proto proto --out $(GEN)
	@git diff --exit-code --stat -- $(GEN) && test -z "$$(git status --porcelain -- $(GEN))" \
	  || { echo "gen/python is stale: run 'make gen' and commit it"; exit 1; }

check-catalog: gen
	$(BIN)/python -m tools.catalog --proto proto --out docs
	@git diff --exit-code --stat -- docs/events.md docs/asyncapi.yaml \
	  && test -z "$$(git status --porcelain -- docs/events.md docs/asyncapi.yaml)" \
	  || { echo "the event catalog is stale: run 'make catalog' and commit it"; exit 1; }

dashboards: $(STAMP)
	$(BIN)/python -m tools.dashboards --out deploy/grafana/dashboards

check-dashboards: dashboards
	@git diff --exit-code --stat -- deploy/grafana/dashboards \
	  && test -z "$$(git status --porcelain -- deploy/grafana/dashboards)" \
	  || { echo "the dashboards are stale: run 'make dashboards' and commit them"; exit 1; }

check-compose: $(STAMP)
	docker-compose -f compose.yaml config -q && echo "compose.yaml is valid"

breaking: $(STAMP)
	@set -e; n=0; for ref in $(BREAKING_AGAINST); do \
	  buf breaking proto --against ".git#ref=$$ref,subdir=proto" || { echo "buf breaking: breaking change against $$ref"; exit 1; }; \
	  n=$$((n + 1)); done; \
	echo "buf breaking: no breaking change against any of the $$n committed states of proto/"

lint: $(STAMP) gen
	ruff check .
	lint-imports
	ruff format --check .
	mypy
	buf lint
	buf format --diff --exit-code
	@if command -v node >/dev/null 2>&1; then for f in clients/node/*.mjs; do node --check $$f || exit 1; done; fi
	$(MAKE) --no-print-directory breaking check-gen check-catalog check-dashboards check-compose

fmt: $(STAMP)
	ruff format .
	ruff check --fix .
	buf format -w

test: $(STAMP) gen node-client
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# clients/node: calling the APIs from Node.js (@grpc/grpc-js), which the tests run too. Its packages
# are pinned by package-lock.json; without npm its tests are skipped (in CI they fail).
NODE_CLIENT := clients/node/node_modules/.installed

node-client: $(NODE_CLIENT)

$(NODE_CLIENT): clients/node/package.json clients/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix clients/node --no-audit --no-fund --ignore-scripts --loglevel=error && touch $@; \
	else echo "npm not found: the tests of clients/node (Node.js) will be skipped"; fi

bench: $(STAMP) gen
	$(BIN)/python -m bench.run --profile full

bench-quick: $(STAMP) gen
	$(BIN)/python -m bench.run --profile quick

bench-events: $(STAMP) gen
	$(BIN)/python -m bench.events_bench $(BENCH_ARGS)

bench-rpc: $(STAMP) gen
	$(BIN)/python -m bench.rpc_bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache clients/node/node_modules
