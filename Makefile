# The two commands that matter: `make demo` and `make test`. Only python3 is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STATE_DIR ?= .prodline
DEMO_VERSION ?= 1.0.$(shell date +%Y%m%d%H%M%S)
PYTEST_ARGS ?=

.PHONY: install demo stop test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Starts the embedded Temporal server and a worker in the background (state in
# $(STATE_DIR)), releases the example service through staging and production,
# and leaves the server up so the release can be explored in the Temporal UI.
demo: install
	$(BIN)/prodline dev --detach --state-dir $(STATE_DIR)
	$(BIN)/prodline release start examples/shop/checkout/prodline.service.yaml --version $(DEMO_VERSION) --wait
	$(BIN)/prodline release list --service checkout --limit 5
	@echo "Explore it at http://localhost:8233 ; stop the server with: make stop"

stop: install
	$(BIN)/prodline dev --stop --state-dir $(STATE_DIR)

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/terraform_step.py

clean:
	rm -rf $(VENV) $(STATE_DIR) examples/shop/.prodline-demo
