# The two commands a new user needs: `make demo` and `make test`. Both create .venv and install the project.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench clean procgen-env

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/genie demo --out demo_out

# Tests run with the huge pages `genie` commands give themselves (genie_jax/huge_pages.py): faster training steps.
test: $(STAMP) procgen-env
	GLIBC_TUNABLES=$${GLIBC_TUNABLES:+$$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1 $(BIN)/python -m pytest -n 2 --dist loadfile -q

# procgen2 needs NumPy < 2, so Procgen games run in a Python of their own (~/.cache/genie_jax/procgen-venv).
procgen-env: $(STAMP)
	$(BIN)/python -m data_ingest.procgen_games --setup

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/generation.py

clean:
	rm -rf $(VENV) demo_out
