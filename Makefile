# circadia — the two commands a fresh clone needs are `make run` and `make test`.
# Each does its own set-up: virtualenv, pinned dependencies, Kafka jars (on first use).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
WEB       := services/fanout_gateway/web
WEB_STAMP := $(WEB)/vendor/.built

.PHONY: run test up down status demo install web lock clean fuzz openapi schemas-archive bench fetch-pat pat-fixture lint audit secrets-baseline helm-template

# the packages, each with its own pyproject.toml and dependency set (what each image installs)
PACKAGES := libs/circadia services/ingest_gateway services/prediction_worker services/fanout_gateway libs/circadia_dev
EDITABLE := $(foreach package,$(PACKAGES),-e $(package))

$(STAMP): pyproject.toml constraints.txt $(foreach package,$(PACKAGES),$(package)/pyproject.toml)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt $(EDITABLE) -e '.[test]'
	@touch $@

install: $(STAMP) $(WEB_STAMP)

## make web: vendor the results page's chart library (npm, pinned by its lock file) and the stream client
$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json $(WEB)/build.sh clients/stream/src/index.js
	$(WEB)/build.sh

web: $(WEB_STAMP)

LINT_STAMP := $(VENV)/.lint-installed
$(LINT_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt $(EDITABLE) -e '.[test,lint]'
	@touch $@

## make run: start the local stack (Kafka + the three services) and run the demo
run: $(STAMP) $(WEB_STAMP)
	$(BIN)/circadia up
	$(BIN)/circadia demo

## make test: the whole suite against real servers, with the coverage gate (85 %)
test: $(STAMP) $(WEB_STAMP)
	rm -f .coverage .coverage.*
	tools/helm/helm version --short  # built once from the Go module proxy; the chart's tests lint and render with it
	$(BIN)/python -m pytest --cov --cov-report=term


up: $(STAMP) $(WEB_STAMP)
	$(BIN)/circadia up

down: $(STAMP)
	$(BIN)/circadia down

status: $(STAMP)
	$(BIN)/circadia status

demo: $(STAMP)
	$(BIN)/circadia demo

## make lint: ruff, mypy, bandit, detect-secrets (against .secrets.baseline) and gitleaks (git history
## and working tree); any finding fails
lint: $(LINT_STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/bandit -c pyproject.toml -r libs services -q
	$(BIN)/python tools/secrets/check_baseline.py
	$(BIN)/gitleaks git --redact --no-banner --config .gitleaks.toml .
	tools/secrets/gitleaks-worktree.sh $(BIN)/gitleaks

## make audit: known vulnerabilities of the locked dependencies (constraints.txt); fails, and says so,
## when the vulnerability database cannot be reached (AUDIT_SERVICE=pypi or osv)
AUDIT_SERVICE ?= pypi
audit: $(LINT_STAMP)
	$(BIN)/python tools/audit/audit_dependencies.py --requirements constraints.txt --service $(AUDIT_SERVICE)

## make secrets-baseline: re-scan the tracked files into .secrets.baseline (keeping earlier verdicts),
## then label each new entry in detect-secrets' audit; commit the baseline with the change
secrets-baseline: $(LINT_STAMP)
	$(BIN)/detect-secrets scan --baseline .secrets.baseline
	$(BIN)/detect-secrets audit .secrets.baseline

## make fuzz: coverage-guided fuzzing of the ingest body parser (FUZZ_SECONDS, default 60)
FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt $(EDITABLE) -e '.[fuzz]'
	mkdir -p .local/fuzz/corpus
	$(BIN)/python fuzz/upload_body.py -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=.local/fuzz/ \
		.local/fuzz/corpus fuzz/seeds

## make schemas-archive: keep every earlier version of each schema (from git history) in
## schemas/archive/, so records written with it stay readable; run after changing a schema
schemas-archive: $(STAMP)
	$(BIN)/python tools/schemas/archive.py

## make openapi: regenerate the ingest API document from the models
openapi: $(STAMP)
	$(BIN)/python -m ingest_gateway.openapi > services/ingest_gateway/openapi.json

## make bench: benchmarks; results go to docs/benchmarks.md (see bench/README.md)
bench: $(STAMP)
	$(BIN)/python bench/pat_forward.py --runs 60
	$(BIN)/python -m bench.fanout.run
	$(BIN)/python -m bench.ingest.run
	$(BIN)/python bench/compression.py
	$(BIN)/python -m bench.worker_apply
	$(BIN)/python -m bench.worker_pipeline
	$(BIN)/python -m bench.worker_restart
	$(BIN)/python -m bench.worker_restart --static-membership
	$(BIN)/python -m bench.userkeys
	$(BIN)/python -m bench.sealing

## make fetch-pat URL=<link from the PAT authors' README> OUT=.local/pat/PAT-L.h5 [SHA256=<hex>]
## downloads published PAT weights (CC BY 4.0) and verifies or prints their sha256
OUT ?= .local/pat/weights.h5
fetch-pat: $(STAMP)
	$(BIN)/python tools/pat/fetch_weights.py --url '$(URL)' --out '$(OUT)' $(if $(SHA256),--sha256 $(SHA256))

## make pat-fixture: regenerate tests/fixtures/pat with the original Keras architecture
## (maintainers only; TensorFlow lives in a throw-away venv, never in .venv)
pat-fixture:
	$(PYTHON) -m venv .local/pat-tfenv
	.local/pat-tfenv/bin/python -m pip install --quiet tensorflow-cpu tf-keras h5py numpy
	.local/pat-tfenv/bin/python tools/pat/make_fixture.py --out tests/fixtures/pat

## make helm-template: the chart rendered with the production values (VALUES=... for others)
VALUES ?= deploy/helm/circadia/values-production.yaml
helm-template:
	tools/helm/helm template circadia deploy/helm/circadia --namespace circadia -f $(VALUES)

## make lock: re-pin every dependency (runtime + test + fuzz + lint) into constraints.txt, then each
## image's own set, with hashes, into deploy/images/<service>/requirements.txt
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install --quiet $(EDITABLE) -e '.[test,fuzz,lint]'
	.lockenv/bin/python -m pip freeze --exclude-editable | grep -v '^circadia' > constraints.txt
	.lockenv/bin/python tools/lock/images.py
	rm -rf .lockenv

clean:
	-$(BIN)/circadia down
	rm -rf $(VENV) .local .pytest_cache
