# Developer and CI entry points for background_tasks.
#
#   make test                                  # SQLite (file under .test-dbs/)
#   make test DATABASE_URL=postgres://postgres@127.0.0.1:5432/test
#   make test DATABASE_URL=mysql://root@127.0.0.1:3306/test
#   make test PYTHON=python3.13 VENV=.venv-313 DJANGO='django>=6.1,<6.2'
#   make test PYTEST_ARGS='-x -k cron'
#   make test DJANGO='django>=5.2,<5.3' EXTRAS=,django-tasks   # with the django.tasks backport
#   make lint | docs | smoke | demo | bench | screenshots | clean

PYTHON ?= python3
VENV ?= .venv
# A pip requirement for Django ("django>=6.1,<6.2"); empty = whatever pip resolves.
DJANGO ?=
PYTEST_ARGS ?=
# More optional dependencies for the test venv, each after a comma (",django-tasks").
EXTRAS ?=
BENCH_ARGS ?=
DATABASE_URL ?=

VENV_PYTHON := $(VENV)/bin/python

ifdef DATABASE_URL
export DATABASE_URL
endif

# The database driver the venv needs, from the scheme of DATABASE_URL.
DB_EXTRA :=
ifneq ($(filter postgres://% postgresql://% pgsql://%,$(DATABASE_URL)),)
DB_EXTRA := ,postgres
endif
ifneq ($(filter mysql://% mariadb://%,$(DATABASE_URL)),)
DB_EXTRA := ,mysql
endif

# The installed venv is keyed on the interpreter, the Django requirement and the
# driver: changing any of them gives a new stamp name, hence a (re)install. A change
# to pyproject.toml makes the stamp stale, hence a reinstall too.
PY_ID_CMD := import sys; print(sys.base_prefix, sys.version)
PY_ID := $(shell $(PYTHON) -c '$(PY_ID_CMD)' 2>/dev/null)
STAMP_KEY := $(PY_ID)|$(DJANGO)|test$(DB_EXTRA)$(EXTRAS)
STAMP_HASH := $(firstword $(shell printf '%s' '$(STAMP_KEY)' | cksum))
STAMP := $(VENV)/.bt-stamp-$(STAMP_HASH)
DEV_STAMP := $(VENV)/.bt-dev-stamp-$(STAMP_HASH)
DOCS_STAMP := $(VENV)/.bt-docs-stamp-$(STAMP_HASH)

PIP := $(VENV_PYTHON) -m pip --disable-pip-version-check
DJANGO_REQ := $(if $(strip $(DJANGO)),'$(DJANGO)',)

.PHONY: help venv test lint docs smoke demo bench screenshots clean

help:
	@echo "targets: venv test lint docs smoke demo bench screenshots clean"
	@echo "variables: PYTHON=$(PYTHON) VENV=$(VENV) DJANGO='$(DJANGO)' DATABASE_URL='$(DATABASE_URL)'"
	@echo "           PYTEST_ARGS='$(PYTEST_ARGS)' BENCH_ARGS='$(BENCH_ARGS)'"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@case "$(VENV)" in ''|/|.|..) echo "refusing to use VENV='$(VENV)'" >&2; exit 1;; esac
	@command -v $(PYTHON) >/dev/null 2>&1 && $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
		|| { echo "PYTHON=$(PYTHON) is not a working Python 3.10+ interpreter" >&2; exit 1; }
	@if [ -x "$(VENV_PYTHON)" ] && \
	    [ "$$($(VENV_PYTHON) -c '$(PY_ID_CMD)' 2>/dev/null)" = "$$($(PYTHON) -c '$(PY_ID_CMD)')" ]; then \
		echo "== reusing $(VENV) ($$($(VENV_PYTHON) --version))"; \
	else \
		echo "== creating $(VENV) with $(PYTHON)"; \
		rm -rf "$(VENV)"; \
		$(PYTHON) -m venv "$(VENV)"; \
		$(PIP) install --quiet --upgrade pip; \
	fi
	@echo "== installing -e .[test$(DB_EXTRA)$(EXTRAS)] $(DJANGO_REQ)"
	$(PIP) install --quiet --upgrade-strategy only-if-needed -e '.[test$(DB_EXTRA)$(EXTRAS)]' $(DJANGO_REQ)
	@$(VENV_PYTHON) -c 'import django; print("== Django", django.get_version())'
	@rm -f "$(VENV)"/.bt-stamp-* "$(VENV)"/.bt-dev-stamp-* "$(VENV)"/.bt-docs-stamp-*
	@touch "$@"

$(DEV_STAMP): $(STAMP)
	@echo "== installing -e .[test,dev$(DB_EXTRA)$(EXTRAS)] $(DJANGO_REQ)"
	$(PIP) install --quiet --upgrade-strategy only-if-needed -e '.[test,dev$(DB_EXTRA)$(EXTRAS)]' $(DJANGO_REQ)
	@touch "$@"

$(DOCS_STAMP): $(STAMP)
	@echo "== installing -e .[test,docs$(DB_EXTRA)] $(DJANGO_REQ)"
	$(PIP) install --quiet --upgrade-strategy only-if-needed -e '.[test,docs$(DB_EXTRA)]' $(DJANGO_REQ)
	@touch "$@"

test: $(STAMP)
	$(VENV_PYTHON) -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(VENV_PYTHON) -m ruff check .
	$(VENV_PYTHON) -m ruff format --check .
	$(VENV_PYTHON) -m mypy background_tasks

# The site goes to site/. --strict turns every warning into an error: a broken link or
# anchor (see validation: in mkdocs.yml), a reference to a name that does not exist, a page
# missing from the nav. The docs need no database driver whatever DATABASE_URL says.
docs:
	@$(MAKE) --no-print-directory $(DOCS_STAMP) DATABASE_URL=
	env -u DATABASE_URL NO_MKDOCS_2_WARNING=1 $(VENV_PYTHON) -m mkdocs build --strict --site-dir site

# Builds the wheel and the sdist, installs the wheel into a fresh venv (in a temporary
# directory) and uses it in a project made by django-admin startproject.
smoke:
	env -u DATABASE_URL -u DJANGO_SETTINGS_MODULE $(PYTHON) .ci/wheel_smoke.py

# The demo always runs on the example project's own SQLite database, so it needs no
# database driver whatever DATABASE_URL says.
demo:
	@$(MAKE) --no-print-directory venv DATABASE_URL=
	env -u DATABASE_URL $(VENV_PYTHON) example_project/manage.py migrate --noinput
	env -u DATABASE_URL $(VENV_PYTHON) example_project/manage.py demo

bench: $(STAMP)
	PYTHONPATH=.$${PYTHONPATH:+:$$PYTHONPATH} $(VENV_PYTHON) benchmarks/run.py $(BENCH_ARGS)

# The admin screenshots docs/admin.md shows, taken by the browser test (needs chromium and
# chromedriver).
screenshots: $(STAMP)
	env -u DATABASE_URL BACKGROUND_TASKS_SCREENSHOTS=docs/img $(VENV_PYTHON) -m pytest -q tests/test_browser.py

clean:
	@case "$(VENV)" in ''|/|.|..) echo "refusing to remove VENV='$(VENV)'" >&2; exit 1;; esac
	rm -rf "$(VENV)" .venv .venv-* .tox .test-dbs build dist site *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
