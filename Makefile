# Two commands take a fresh clone to working (README): `make build` and `make test`.
# Both create .venv and install the pinned set-up (requirements/dev.txt) on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup build test test-slow lint generate bench docs clean

# The peer counting tools (benchmarks/peers.txt) go in with --no-deps, so that none of them can
# move the pinned torch; tests/analysis/test_peer_counts.py then runs them instead of skipping.
# So do the test oracles of requirements/no-deps.txt (timm: tests skip without it).
$(STAMP): requirements/dev.txt requirements/no-deps.txt pyproject.toml benchmarks/peers.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps -r benchmarks/peers.txt
	$(BIN)/pip install --quiet --no-deps -r requirements/no-deps.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# Exactly the README's main command: its default folder build/mobilenet_v1_1_224_torch/ is where the
# README's snippets load the model from (tests/e2e/test_readme.py runs them).
build: $(STAMP)
	$(BIN)/archc build specs/mobilenet.yaml --backend torch

# One pytest process per core (pytest-xdist); tests/conftest.py gives each one native thread.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -m "not slow" -n auto --dist loadfile

test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow -n auto --dist loadfile

# Each family spec at its default variant (efficientnet: b0, mnasnet: b1, mobilenet_v4: conv_small...).
generate: $(STAMP)
	for b in torch keras; do \
	  $(BIN)/archc generate specs/mobilenet.yaml --backend $$b -o generated/ && \
	  $(BIN)/archc generate specs/mobilenet.yaml --backend $$b --width 0.5 --resolution 160 -o generated/ && \
	  $(BIN)/archc generate specs/mobilenet_keras.yaml --backend $$b -o generated/ && \
	  $(BIN)/archc generate specs/mobilenet_v2.yaml --backend $$b -o generated/ && \
	  $(BIN)/archc generate specs/mobilenet_v3_large.yaml --backend $$b -o generated/ && \
	  $(BIN)/archc generate specs/mobilenet_v3_small.yaml --backend $$b -o generated/ || exit 1; \
	  for s in efficientnet efficientnet_lite efficientnet_v2 mnasnet mobilenet_v4; do \
	    $(BIN)/archc generate specs/$$s.yaml --backend $$b -o generated/ || exit 1; \
	  done; \
	done

# The docs site in site/ (not committed): the reference tables made from the code first
# (archcompiler/tools/reference.py; tests/tools/test_reference.py fails when they are stale),
# then mkdocs with --strict, so a broken link, anchor or page fails. CI runs it (.ci/run).
docs: $(STAMP)
	$(BIN)/python -m archcompiler.tools.reference docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Not run by the tests or CI (6-13 minutes on 2 shared cores); the peer counting tools come with `make setup`.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) build site
