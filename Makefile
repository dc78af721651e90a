# Two commands for a fresh machine with Python 3.11 and pip: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
# glibc keeps freed tensor memory instead of returning it to the OS on every step: fewer page faults,
# 1.3-1.7x faster small-tensor training on CPU (measured with benchmarks/bench_elastic.py)
FAST_MALLOC := MALLOC_MMAP_THRESHOLD_=268435456 MALLOC_TRIM_THRESHOLD_=268435456

.PHONY: setup run test bench lint lock clean

# constraints.txt pins every package to the versions the recorded results were measured with
$(BIN)/ofa: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt $(TORCH_PIN)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]' $(TORCH_PIN)
	touch $(BIN)/ofa

setup: $(BIN)/ofa

run: setup
	$(FAST_MALLOC) $(BIN)/ofa run

test: setup
	$(BIN)/python -m pytest

# DEV_DATA=path/to/cifar10-dev adds the real-data sampling benchmark (about 90 minutes on 2 cores)
bench: setup
	$(FAST_MALLOC) $(BIN)/python -m benchmarks $(if $(DEV_DATA),--dev-data $(DEV_DATA))

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# after a deliberate upgrade of the venv: write its exact versions back to constraints.txt
lock: setup
	{ sed -n '/^#/p' constraints.txt; $(BIN)/pip freeze --exclude-editable; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) runs .pytest_cache
