# Two commands on a fresh machine: `make demo` and `make test`.
# Both bootstrap uv (from the Python package index) and the project environment.

SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
export UV_PYTHON_DOWNLOADS := never
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: demo test lint bootstrap system-deps env clean

bootstrap:
	@command -v $(UV) >/dev/null 2>&1 || { \
	  echo "installing uv"; \
	  python3 -m pip --version >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq python3-pip; }; \
	  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet --user --break-system-packages uv; }

env: bootstrap
	$(UV) sync --quiet

system-deps:
	@for f in scripts/system-deps.sh scripts/browser-deps.sh; do [ ! -f $$f ] || bash $$f; done

demo:
	@echo "make demo: preparing .venv; the live view will be at http://127.0.0.1:8080/ (Ctrl-C stops)"
	@$(MAKE) --no-print-directory env
	$(UV) run stream demo $(DEMO_ARGS)

test: env system-deps
	$(UV) run pytest -q $(PYTEST_ARGS)

lint: env
	$(UV) run ruff check stream tests
	$(UV) run mypy stream

clean:
	rm -rf .venv out .pytest_cache .mypy_cache .ruff_cache
