# make demo: the whole story on the embedded lab fleet.  make test: lint, types, tests.
# Each target sets up what it needs on a fresh machine (virtual environment, Debian packages, PostgreSQL).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck docs pytest bench fuzz clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/exwatch demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

pytest: $(STAMP)
	bash scripts/system-deps.sh test
	bash scripts/system-deps.sh browser
	CI_REQUIRE_POSTGRES=1 bash scripts/with-postgres.sh $(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck docs pytest

# make fuzz: the hypothesis tests of tests/fuzz with the "fuzz" profile (10,000 examples each); not in make test.
fuzz: $(STAMP)
	$(BIN)/python -m pytest tests/fuzz -p no:cacheprovider --hypothesis-profile=fuzz --hypothesis-show-statistics -q $(PYTEST_ARGS)

bench: $(STAMP)
	bash scripts/system-deps.sh bench
	bash scripts/with-postgres.sh $(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
