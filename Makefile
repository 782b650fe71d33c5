# Two entry points for a fresh machine: `make demo` (set up, then run the main job) and `make test`.
# torch is installed first as the pinned CPU build that lies on this machine's disk; the package's range admits it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kdgm-installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,text]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/kdgm run asr-count --preset quick --jobs 2 --out runs/demo
	@echo "open runs/demo/report.md"

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

bench: $(STAMP)
	$(BIN)/python bench/vae_throughput.py
	$(BIN)/python bench/air_step.py

clean:
	rm -rf $(VENV) runs
