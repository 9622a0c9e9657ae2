# The two entry points of the README: `make quickstart` and `make test` (`make test-fast` skips
# the tests marked slow, for day-to-day work).
# Both create (or reuse) the virtual environment in .venv and are idempotent.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch 2.14.1 + torchvision 0.29.1 is the pair known to work together with TerraTorch 1.2.x.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
DATA ?= ../shared/data
# The test suite reads the real scenes from HSI_SHARED_DATA (an environment value wins over DATA).
export HSI_SHARED_DATA ?= $(abspath $(DATA))
# The shipped configs read $(HSI_DATA)/<scene>.
export HSI_DATA ?= $(abspath $(DATA))

.PHONY: setup quickstart test test-fast lint docs compat wheel-check gpu-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e '.[test,docs]' $(TORCH_PIN)
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/python quickstart.py --data-root $(DATA)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

# Everything that needs a CUDA device, with one summary (.ci/gpu_check.py says what is checked):
# the cuda-marked tests, a short bf16 `terratorch fit` of KronA+ on Indian Pines, the efficiency
# benchmark on the GPU. A few minutes; without CUDA it says so and fails.
gpu-check: $(STAMP)
	$(BIN)/python .ci/gpu_check.py --data $(HSI_SHARED_DATA)

clean:
	rm -rf $(VENV) $(WHEEL_VENV) dist build site .pytest_cache .ruff_cache

# The wheel as users get it: built, checked for content, installed with its real dependencies in
# a fresh venv and used from outside the repository (.ci/check_wheel.py says what is checked).
# The editable install of `make setup` must carry the start-up hook as well.
WHEEL_VENV ?= .venv-wheel
wheel-check: $(STAMP)
	test -f $(wildcard $(VENV)/lib/python3*/site-packages)/terratorch_hsi_peft_autoload.pth
	rm -rf dist build $(WHEEL_VENV)
	$(BIN)/python -m pip wheel --quiet --no-deps -w dist .
	$(BIN)/python .ci/check_wheel.py contents dist/terratorch_hsi_peft-*.whl
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(WHEEL_VENV)/bin/python -m pip install --quiet dist/terratorch_hsi_peft-*.whl $(TORCH_PIN)
	cd "$$(mktemp -d)" && $(abspath $(WHEEL_VENV))/bin/python $(abspath .ci/check_wheel.py) installed

# Compatibility smoke test against the newest TerraTorch release line (1.2.13 needs Python >= 3.12).
# The first interpreter that really is 3.12 (a pyenv shim may exist without a 3.12 selected).
PY312 ?= $(firstword $(foreach p,python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12),\
  $(shell $(p) -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 && echo $(p))))
COMPAT_VENV ?= .venv-compat
COMPAT_STAMP := $(COMPAT_VENV)/.installed
$(COMPAT_STAMP): pyproject.toml
	@test -n "$(PY312)" || { echo "make compat needs Python 3.12 (python3.12 on PATH, or pyenv install 3.12); set PY312=/path/to/python3.12" >&2; exit 1; }
	test -x $(COMPAT_VENV)/bin/python || $(PY312) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(COMPAT_VENV)/bin/python -m pip install --quiet -e '.[test]' 'terratorch==1.2.13' $(TORCH_PIN)
	touch $(COMPAT_STAMP)

compat: $(COMPAT_STAMP)
	$(COMPAT_VENV)/bin/python -m pytest -q -m compat
