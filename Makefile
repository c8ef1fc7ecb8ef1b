# Two entry points (README): `make demo` and `make test`. Both create .venv themselves.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BUILD  ?= build
DEMO_OUT ?= demo_out

.PHONY: demo test venv kernels gpu-check clean

venv: $(STAMP)

# The pinned CPU wheel of torch comes first: a bare `torch` requirement would pull a CUDA build.
$(STAMP): setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# nvcc compiles every kernel for sm_80/sm_90 (a build check) and builds the host driver that
# runs the kernels' __host__ __device__ arithmetic on the CPU for the tests.
kernels:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build $(BUILD) -j 2

test: venv kernels
	MCL_FAST_HOST_LIB=$(CURDIR)/$(BUILD) $(PY) -m pytest -q tests

demo: venv
	$(VENV)/bin/mcl-fast demo --out $(DEMO_OUT)

# The staged GPU check (header of benchmarks/gpu_check.sh): all three stages, or STAGE=1|2|3;
# DRY=1 runs the CPU dry run (what CI runs: GPU steps skipped after their commands are checked).
gpu-check:
	bash benchmarks/gpu_check.sh $(if $(STAGE),--stage $(STAGE)) $(if $(DRY),--dry-run)

clean:
	rm -rf $(BUILD) $(DEMO_OUT) .pytest_cache
