# The two set-up commands of README.md. Both create .venv and install the pinned requirements
# when needed (requirements.txt newer than the last install), from nothing on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: app test test-all bench clean-runs

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

app: $(STAMP)  ## start the app on the built-in demo dataset (http://localhost:8501)
	$(PY) -m streamlit run app.py --server.address localhost

test: $(STAMP)  ## the whole CI suite (slow tests excluded)
	$(PY) -m pytest

test-all: $(STAMP)  ## also the slow tests (real DIDA training when ../shared is present)
	$(PY) -m pytest -m ""
