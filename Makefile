# TrialOps developer commands. GNU make; needs only Python 3.11+ on a Debian/Ubuntu machine.
#   make demo   virtualenv, migrate, demo data, ping workflow on a real worker, UI at http://127.0.0.1:$(PORT)
#   make test   virtualenv, Debian's chromium for the browser tests, the whole pytest suite

SHELL := /bin/bash
.DEFAULT_GOAL := help

PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
# The first python3 on PATH that is 3.11 or newer (override with `make PYTHON=/path/to/python3.12 ...`).
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in python3 python3.14 python3.13 python3.12 python3.11; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	&& { command -v $$p; break; }; done)
endif
REQUIREMENTS := $(sort $(wildcard requirements/*.txt))
STAMP := $(VENV)/.requirements-$(shell cat $(REQUIREMENTS) | sha256sum | cut -c1-16)
IS_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo yes)
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get

# The demo runs on the embedded settings; its logs are for a person, not a log shipper.
DEMO_ENV := DJANGO_SETTINGS_MODULE=config.settings.local LOG_FORMAT=$${LOG_FORMAT:-console}

CLIENT := build/client/trialops_client

.PHONY: help venv ocr-deps demo test worker beat lint migrate schema client clean distclean

help:
	@echo "make demo     set up, seed the demo study and serve it at http://127.0.0.1:$(PORT)"
	@echo "make test     set up and run the whole test suite (pytest)"
	@echo "make worker   Celery worker on queues default,ocr,llm (needs REDIS_URL)"
	@echo "make beat     Celery beat (needs REDIS_URL)"
	@echo "make lint     ruff check ."
	@echo "make schema   regenerate docs/openapi.yaml from the code (commit it: CI compares the two)"
	@echo "make client   generate the typed Python client from docs/openapi.yaml into $(CLIENT)"
	@echo "make migrate  apply database migrations"
	@echo "make clean    remove caches, collected static files and the demo database (distclean: also .venv)"

venv: $(STAMP)

# Reinstalled only when requirements/*.txt change: the stamp's name carries a hash of their contents.
$(STAMP):
	@if [ -z "$(PYTHON)" ]; then echo "error: Python 3.11 or newer not found (set PYTHON=...)" >&2; exit 1; fi
	@if ! { $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 11))' && $(BIN)/python -m pip --version; } \
			>/dev/null 2>&1; then \
		rm -rf $(VENV); \
		echo "Creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version))"; \
		if ! $(PYTHON) -m venv $(VENV); then \
			rm -rf $(VENV); \
			if [ "$(IS_ROOT)" = yes ] && command -v apt-get >/dev/null; then \
				minor=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
				echo "venv/ensurepip missing: installing python$$minor-venv with apt-get"; \
				$(APT_GET) update -q && { $(APT_GET) install -y -q python$$minor-venv || $(APT_GET) install -y -q python3-venv; } \
					&& $(PYTHON) -m venv $(VENV) || exit 1; \
			else \
				echo "error: '$(PYTHON) -m venv' failed. Install the venv module first, e.g." >&2; \
				echo "       sudo apt-get install python3-venv   (Debian/Ubuntu), then run make again." >&2; \
				exit 1; \
			fi; \
		fi; \
	fi
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements/dev.txt
	@rm -f $(VENV)/.requirements-*
	@touch $@

# Debian packages of the DataVerification agent: tesseract (OCR of source documents) and the
# DejaVu fonts the generated lab report pages are drawn in (bench_sdv, the demo, the tests).
OCR_DEPS_MISSING = $(strip $(if $(shell command -v tesseract),,tesseract-ocr) \
	$(if $(wildcard /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf),,fonts-dejavu-core))

ocr-deps:
	@if [ -n "$(OCR_DEPS_MISSING)" ]; then \
		if [ "$(IS_ROOT)" = yes ] && command -v apt-get >/dev/null; then \
			echo "Installing Debian's $(OCR_DEPS_MISSING) for source document OCR"; \
			$(APT_GET) update -q && $(APT_GET) install -y -q $(OCR_DEPS_MISSING) \
				|| echo "warning: could not install $(OCR_DEPS_MISSING): OCR tests will skip (or fail where required)"; \
		else \
			echo "note: $(OCR_DEPS_MISSING) missing and not root: OCR of source documents is unavailable"; \
		fi; \
	fi

demo: venv ocr-deps
	$(DEMO_ENV) $(BIN)/python manage.py migrate --noinput
	$(DEMO_ENV) $(BIN)/python manage.py import_clindata data/demo/clindata
	$(DEMO_ENV) $(BIN)/python manage.py seed_demo
	$(DEMO_ENV) $(BIN)/python manage.py run_workflow ping
	@echo
	@echo "TrialOps demo: http://127.0.0.1:$(PORT)/   (admin: /admin/, API: /api/v1/, API docs: /api/docs/)"
	@echo "Users (password: $${DEMO_PASSWORD:-demo}, for the demo only):"
	@echo "  sponsor  sponsor / study manager, both demo studies, Django admin"
	@echo "  dm       data manager, both demo studies"
	@echo "  cra      CRA, sites 101 and 102"
	@echo "  site1    site coordinator, site 101     pi1  investigator, site 101"
	@echo "  site2    site coordinator, site 102"
	@echo "  medmon   medical monitor                auditor  auditor (read-only)"
	@echo
	$(DEMO_ENV) exec $(BIN)/python manage.py runserver 127.0.0.1:$(PORT) --noreload

test: venv ocr-deps client
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$(IS_ROOT)" = yes ] && command -v apt-get >/dev/null; then \
			echo "Installing Debian's chromium for the browser tests"; \
			$(APT_GET) update -q && $(APT_GET) install -y -q chromium \
				|| echo "warning: could not install chromium: browser tests will skip (or fail where required)"; \
		else \
			echo "note: /usr/bin/chromium not found and not root: browser tests will skip"; \
		fi; \
	fi
	@DJANGO_SETTINGS_MODULE=config.settings.test $(BIN)/pytest $(PYTEST_ARGS); status=$$?; \
		if [ $$status -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; \
		exit $$status

worker: venv
	@[ -n "$$REDIS_URL" ] || echo "note: REDIS_URL is not set: this worker only sees its own in-memory broker"
	$(BIN)/celery -A config.celery_app worker -Q default,ocr,llm -l info

beat: venv
	@[ -n "$$REDIS_URL" ] || echo "note: REDIS_URL is not set: beat would schedule into an in-memory broker"
	$(BIN)/celery -A config.celery_app beat -l info

lint: venv
	$(BIN)/ruff check .

# The API contract: the schema the code generates, committed so that every change shows in review.
schema: venv
	DJANGO_SETTINGS_MODULE=config.settings.local $(BIN)/python manage.py spectacular --file docs/openapi.yaml \
		--validate --fail-on-warn

# A typed client generated from the committed schema (used by tests/test_api_client.py).
client: $(CLIENT)/.generated

$(CLIENT)/.generated: docs/openapi.yaml docs/openapi-client.yaml $(STAMP)
	@rm -rf $(CLIENT)
	@mkdir -p $(dir $(CLIENT))
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/openapi-python-client generate --path docs/openapi.yaml \
		--config docs/openapi-client.yaml --output-path $(CLIENT) --meta none
	@touch $@

migrate: venv
	$(BIN)/python manage.py migrate --noinput

clean:
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	rm -rf .pytest_cache .ruff_cache staticfiles db.sqlite3 .demo build

distclean: clean
	rm -rf $(VENV)
