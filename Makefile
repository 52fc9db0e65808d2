# Two commands matter: `make demo` and `make test`. Both set everything up from a bare Python 3.11+.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CI machine's PostgreSQL 15; the database tests run there too when it answers.
PG15_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

export RUNTIME__DLTHUB_TELEMETRY := false
export DBT_SEND_ANONYMOUS_USAGE_STATS := false
export DO_NOT_TRACK := 1

.PHONY: install demo test lint dbt-build pytest pytest-embedded-1 pytest-embedded-2 pytest-pg15 \
	bench docs clean

# The loader's own modules byte-compiled (only what changed): an editable install does not, and
# where PYTHONDONTWRITEBYTECODE=1 (common in containers) Python never caches them, so each
# `python -m loader` compiled them again (13 ms of a `submit`'s start-up).
install: $(VENV)/.installed
	@$(PY) -m compileall -q loader bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

## demo: embedded PostgreSQL + sandbox, two tenants scanned, dbt build, summary
demo: install
	$(PY) -m loader demo

# Each pytest pass gets a base temp folder of its own (the embedded server's data lives there):
# two sessions sharing pytest's default /tmp/pytest-of-$USER would reset each other's folders.
TEST_TMP ?= /tmp/loader-pytest-$(shell printf '%s' "$(CURDIR)" | cksum | cut -d' ' -f1)
# Traversable by all: run as root, the embedded server runs PostgreSQL as another user, who must
# reach its data folder below here.
MAKE_TEST_TMP = mkdir -p $(TEST_TMP) && chmod 755 $(TEST_TMP)

# The embedded pass in two halves of about equal length, each a pytest process of its own
# (every folder of tests/ is in one; the worker's tests go with the second, the foundation's
# end-to-end tests with the first).
EMBEDDED_HALF_1 := tests/dbt tests/loader --ignore=tests/loader/test_worker.py \
	tests/e2e/test_foundation.py
EMBEDDED_HALF_2 := tests/e2e --ignore=tests/e2e/test_foundation.py tests/bench tests/sandbox \
	tests/loader/test_worker.py

## test: lint, pytest on the embedded PG 18 (in two halves) and on CI's PG 15, side by side;
## each one's output is printed whole when it ends. One embedded pass alone left a core idle
## for its last minutes; the two halves keep both busy to the end.
test: install
	@for d in tests/*/; do [ -f $$d/__init__.py ] || continue; \
	  case " $(EMBEDDED_HALF_1) $(EMBEDDED_HALF_2) " in *" $${d%/} "*) ;; \
	  *) echo "$${d%/} is in neither EMBEDDED_HALF (Makefile)"; exit 1;; esac; done
	@$(MAKE) --no-print-directory --jobs=4 --output-sync=target \
	  lint pytest-embedded-1 pytest-embedded-2 pytest-pg15

lint: install
	$(PY) -m ruff check loader tests bench
	$(PY) -m loader lint

dbt-build: install
	@home=$$(mktemp -d /tmp/loader-dbt-XXXXXX) && chmod 755 $$home && \
	  (LOADER_HOME=$$home DATABASE_URL= $(PY) -m loader transform; rc=$$?; \
	   LOADER_HOME=$$home DATABASE_URL= $(PY) -m loader db stop >/dev/null; rm -rf $$home; exit $$rc)

## pytest: the whole embedded pass in one process
pytest: install
	@$(MAKE_TEST_TMP)
	DATABASE_URL= $(PY) -m pytest --basetemp=$(TEST_TMP)/embedded

## pytest-embedded-1, -2: one half each (the halves of `make test`)
pytest-embedded-1 pytest-embedded-2: install
	@$(MAKE_TEST_TMP)
	DATABASE_URL= $(PY) -m pytest --basetemp=$(TEST_TMP)/$(@:pytest-%=%) \
	  $(EMBEDDED_HALF_$(@:pytest-embedded-%=%))

pytest-pg15: install
	@if $(PY) -c "import psycopg2; psycopg2.connect('$(PG15_URL)', connect_timeout=3).close()" 2>/dev/null; then \
	  echo "== pytest against PostgreSQL at $(PG15_URL) =="; \
	  $(MAKE_TEST_TMP) && \
	  DATABASE_URL=$(PG15_URL) $(PY) -m pytest -m "not embedded_only" --basetemp=$(TEST_TMP)/pg15; \
	else echo "== PostgreSQL at $(PG15_URL) not reachable: skipping the second database run =="; fi

bench: install
	$(PY) -m bench $(BENCH_ARGS)

docs: install
	$(PY) -m loader dbt docs generate

clean:
	rm -rf $(VENV) .loader .pytest_cache $(TEST_TMP)
