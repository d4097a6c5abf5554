# The two commands that matter: `make demo` and `make test`. Only python3 is needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STATE_DIR ?= .prodline
PORT ?= 7233
UI_PORT ?= $(shell echo $$(($(PORT) + 1000)))
DEMO_VERSION ?= 1.0.$(shell date +%Y%m%d%H%M%S)
PYTEST_ARGS ?=
BREAK ?= none

.PHONY: install demo env stop test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Starts the embedded Temporal server and a worker in the background (state in
# $(STATE_DIR), gRPC on $(PORT), Web UI on $(UI_PORT)) and registers the example
# application (as the platform team would, `prodline app apply`), then releases the
# example service through staging and production: its folder is packed into a bundle in
# the local artifact store, and the worker runs exactly that. It leaves the server up so
# the release can be explored in the Temporal UI. Everything the demo writes stays in
# $(STATE_DIR).
DEMO_ENV = TEMPORAL_ADDRESS=127.0.0.1:$(PORT) TEMPORAL_NAMESPACE=default PRODLINE_UI_URL=http://localhost:$(UI_PORT) \
	PRODLINE_ARTIFACTS=$(abspath $(STATE_DIR))/artifacts PRODLINE_CACHE_DIR=$(abspath $(STATE_DIR))/cache

demo: install
	$(DEMO_ENV) $(BIN)/prodline dev --detach --state-dir $(STATE_DIR) --port $(PORT) --ui-port $(UI_PORT)
	$(DEMO_ENV) PRODLINE_USER=platform-team $(BIN)/prodline app apply examples/shop/prodline.yaml
	$(DEMO_ENV) $(BIN)/prodline release start examples/shop/checkout/prodline.service.yaml \
		--version $(DEMO_VERSION) --param demo_state=$(abspath $(STATE_DIR))/demo --param break_in=$(BREAK) --wait $(if $(filter none,$(BREAK)),,|| true)
	$(DEMO_ENV) $(BIN)/prodline release list --service checkout --limit 5
	@echo "Explore it at http://localhost:$(UI_PORT) ; stop the server with: make stop"

# What a shell needs to run `prodline` by hand against the demo: eval "$$(make -s env)".
env:
	@echo 'export PATH="$(abspath $(BIN)):$$PATH" $(DEMO_ENV)'

stop: install
	$(BIN)/prodline dev --stop --state-dir $(STATE_DIR)

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

# Style, types (pyright, config in pyproject.toml) and the import layers (.importlinter).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pyright
	$(BIN)/lint-imports --no-cache

bench: install
	$(BIN)/python bench/run.py
	$(BIN)/python bench/terraform_step.py
	$(BIN)/python bench/kube_step.py
	$(BIN)/python bench/lanes.py --services 20

# Stops a running demo first: its server must not keep writing into what is removed.
# The two examples/ paths are where older versions of the demo wrote.
clean:
	-@if [ -x $(BIN)/prodline ]; then $(BIN)/prodline dev --stop --state-dir $(STATE_DIR); fi
	rm -rf $(VENV) $(STATE_DIR) examples/shop/.prodline-demo examples/shop/checkout/infra/terraform.tfstate.d
