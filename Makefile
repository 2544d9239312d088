# Developer entry points. Everything runs from the project's own virtualenv in .venv/.
#   make run   install, initialise (SQLite db + signing keys under instance/) and serve
#              http://localhost:5000 (`make run PORT=8080` for another port; the issuer follows)
#   make test  the whole check that CI runs (scripts/test.sh)
#   make lint  ruff and mypy only
#
#   make docs-images  the guides' screenshots, refreshed from the browser tests

VENV := .venv
PY   := $(VENV)/bin/python
PIP  := $(PY) -m pip --disable-pip-version-check --quiet
PORT ?= 5000

.PHONY: run test lint

$(PY):
	python3 -m venv $(VENV)

# Stamp files: reinstall only when pyproject.toml changes (the install is editable, so code
# changes are picked up without reinstalling).
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PIP) install -e '.[test]'
	@touch $@

# `idp serve` creates or upgrades the SQLite database and the signing keys before serving. The
# issuer is http://localhost:$(PORT), always the port served (passkeys need the issuer's origin;
# IDP_ISSUER in the environment still wins, and `idp serve` then warns if the ports differ).
run: $(VENV)/.installed
	IDP_ISSUER="$${IDP_ISSUER:-http://localhost:$(PORT)}" $(VENV)/bin/idp serve --host 127.0.0.1 --port $(PORT)

test:
	scripts/test.sh

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The guides' screenshots (docs/admins/images/, docs/users/images/) are taken by the browser tests
# that walk the guides; UPDATE_DOCS_IMAGES=1 has them write the images over the committed ones.
.PHONY: docs-images
docs-images: $(VENV)/.installed-test
	UPDATE_DOCS_IMAGES=1 $(VENV)/bin/pytest -q -p no:cacheprovider tests/browser/test_admin.py \
	  tests/browser/test_portal.py tests/browser/test_first_hour.py
