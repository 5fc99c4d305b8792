# One command for everything: `make demo` (set up + run the demo), `make test` (set up + run the tests).
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= runs/demo
PAIR ?= default

.PHONY: setup demo demo-natural test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)
	touch $@

demo: setup
	$(VENV)/bin/plada demo --pair $(PAIR) --out $(OUT)

demo-natural: setup
	$(VENV)/bin/plada demo --pair natural --out runs/demo-natural

test: setup
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
