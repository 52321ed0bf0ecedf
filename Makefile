# The two set-up commands of the README. Everything else is ordinary pip/pytest.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test

$(PY):
	$(PYTHON) -m venv $(VENV)

demo: $(PY)
	$(PIP) install -e ".[torch,report]"
	$(VENV)/bin/crowdmed demo --out demo-output

test: $(PY)
	$(PIP) install -e ".[test]"
	$(PY) -m pytest
