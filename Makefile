# Two commands do all set-up on a fresh clone (README.md; docs: Getting started):
#   make run    create the environment, run the default study, print where the report is
#   make test   create the environment, run the test suite
# Everything else here is a convenience around those two.

PYTHON  ?= python3
CORES   ?= all
CONFIG  ?= config/config.yaml
UV_VERSION := 0.13.8

TOOLS   := .tools
UV      := $(TOOLS)/bin/uv
VENV    := .venv
BIN     := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Every workflow job is a new Python process. Where PYTHONDONTWRITEBYTECODE is set (as on the
# project's VM) each would compile torch's and pandas's sources again (~3 s of CPU per job), so
# the recipes here let Python write the bytecode of .venv and src/ the first time a job imports
# a module (a perturbation job's imports: 1,158 files, about 3 s once) instead of byte-compiling
# all 14,657 of the environment when it is made (UV_COMPILE_BYTECODE: the set-up before the
# first job of a fresh clone was 42-45 s with it, 20 s without; docs: Benchmarks).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run test env docs lint dryrun unlock report screenshots clean help

help:
	@echo "make run    - create .venv and run the default study (config/config.yaml)"
	@echo "make test   - create .venv and run the tests"
	@echo "make docs   - build the documentation site into docs/_build/html (offline, warnings are errors)"
	@echo "make lint   - snakemake --lint"
	@echo "make dryrun - plan the default study"
	@echo "make unlock - remove the lock a hard-killed run left (then: make run)"
	@echo "make report - Snakemake's report into results/<run>/ and the index page that links it"
	@echo "make screenshots - headless-Chromium PNGs of results/<run>/index.html and each report"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet "uv==$(UV_VERSION)"

# The environment follows uv.lock exactly (--frozen: never re-resolve on a user's machine).
$(BIN)/snakemake: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@

env: $(BIN)/snakemake

run: env
	$(BIN)/python -m netperturb.cli check-config $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --rerun-incomplete
	@$(BIN)/python -m netperturb.cli where --configfile $(CONFIG)

# The tests run on TEST_WORKERS processes (pytest-xdist), one test file per process, so that a
# file's module fixtures (a tiny workflow run) are made once; TEST_WORKERS=0 runs them in this
# process. The 25 slowest tests are listed at the end.
TEST_WORKERS ?= 2
test: env
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=25

# The documentation site (docs/): Sphinx + PyData theme + MyST, offline; every warning and every
# unresolved cross-reference is an error (-W -n), --keep-going reports all of them at once.
DOCS_OUT ?= docs/_build/html
docs: env
	$(BIN)/sphinx-build -W --keep-going -n -b html -d docs/_build/doctrees docs $(DOCS_OUT)
	@echo "docs: $(DOCS_OUT)/index.html"

lint: env
	$(BIN)/snakemake --lint

dryrun: env
	$(BIN)/python -m netperturb.cli check-config $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) -n

# After a hard kill (kill -9, a crash) Snakemake's lock stays in .snakemake/locks and the next
# run refuses to start; only use this when no other snakemake runs in this folder.
unlock: env
	$(BIN)/snakemake --cores 1 --configfile $(CONFIG) --unlock
# the config's run name (results/<run>/)
RUN = $(shell for py in $(BIN)/python $(PYTHON); do $$py -c "import yaml; print((yaml.safe_load(open('$(CONFIG)')) or {}).get('run', 'digits'))" 2>/dev/null && break; done)

# Snakemake's report (rules, run times, figures) next to the run's index page, which then links it.
report: env
	$(BIN)/snakemake --configfile $(CONFIG) --report results/$(RUN)/snakemake-report.html
	$(BIN)/snakemake --cores 1 --configfile $(CONFIG) --forcerun index --until index

# The first screen of the index page and of each report, as Chromium shows them (Debian: apt-get install chromium).
screenshots: env
	$(BIN)/python -m netperturb.cli screenshots --configfile $(CONFIG)

clean:
	rm -rf results logs benchmarks .snakemake docs/_build docs/reference/_generated
