# attnpat -- two commands set up a fresh machine by themselves:
#   make demo       virtualenv + install + the main job
#   make test       virtualenv + install + the whole test suite (kernels under Triton's interpreter, even on
#                   a GPU machine: tests/conftest.py)
# and on a CUDA machine:
#   make gpu-check  virtualenv + install + the checks that need a GPU (benchmarks/gpu_check.py): `attnpat
#                   verify --device cuda` for every library pattern, the examples, benchmarks/attention.py;
#                   without a CUDA device it says so in one line and exits 0. GPU_CHECK_ARGS=... passes options.
# torch: an already-installed torch (in the venv or, with VENV_SYSTEM=1, the system) is kept as it is;
# otherwise torch==2.13.0 is installed first, which on CPU-only machines resolves to the local CPU wheel
# instead of pulling several GB of CUDA packages.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.attnpat-installed

.PHONY: demo test gpu-check golden install clean

$(PY):
	$(PYTHON) -m venv $(if $(VENV_SYSTEM),--system-site-packages,) $(VENV)

$(STAMP): $(PY) pyproject.toml
	@$(PY) -c "import torch" 2>/dev/null && echo "keeping existing torch $$($(PY) -c 'import torch; print(torch.__version__)')" \
		|| $(PIP) install -q "torch==$(TORCH_VERSION)"
	$(PIP) install -q -e ".[test]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest tests

# Regenerate tests/golden/ (the pinned generated kernel sources) after an intended code-generator change;
# review the diff like code.
golden: $(STAMP)
	ATTNPAT_UPDATE_GOLDEN=1 $(PY) -m pytest -q tests/test_codegen_golden.py

gpu-check: $(STAMP)
	@$(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
