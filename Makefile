# One command each; set-up (python3 setup_microservices.py --install-deps) makes .venv first.
# The check's commands are defined once, in setup_microservices.py (check_commands), which the
# test step of set-up and CI run too: ruff check, ruff format --check, mypy (pyproject.toml).
#
#   make check                       lint, format and types
#   make test                        the whole pytest suite
#   make test ARGS="tests/unit -q"   pytest with arguments

PY ?= .venv/bin/python
ARGS ?=

.PHONY: check test

check:
	$(PY) setup_microservices.py --check

test:
	$(PY) -m pytest $(ARGS)
