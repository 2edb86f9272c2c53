# Probing: the front door. `make demo` and `make test` work on a fresh Debian 12 machine as root.
# Everything else (cmake, ctest, pytest) is reached through these targets.

BUILD_DIR   ?= build
ASAN_DIR    ?= build-asan
PREFIX      ?= /usr/local
JOBS        ?= $(shell nproc)
PYTHON      ?= /usr/bin/python3
BUILD_TYPE  ?= RelWithDebInfo
# CI builds with -Werror; a developer's build only warns.
WERROR      ?= $(if $(CI),ON,OFF)

.PHONY: all deps configure build test test-assets test-unit test-sanitize test-python bench demo install clean format-code

all: build

deps:
	@scripts/install-deps

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DPROBING_WERROR=$(WERROR) \
	  -DCMAKE_INSTALL_PREFIX=$(PREFIX)

configure: deps $(BUILD_DIR)/CMakeCache.txt

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

# Unit tests (GoogleTest, fuzz corpora, benchmark smoke runs), the same under address and
# undefined-behaviour sanitizers, then the end-to-end tests (pytest, real processes).
test: build test-sanitize test-assets
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600
	@scripts/run-pytest $(PYTHON) tests

# From the npm registry, pinned by version and integrity: the published schema our speedscope
# exports are checked against, and the browser driver of the dashboard's tests and benchmark.
test-assets:
	@scripts/fetch-test-assets $(BUILD_DIR)

test-unit: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600

test-sanitize: deps
	cmake -S . -B $(ASAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DPROBING_SANITIZE=address,undefined \
	  -DPROBING_BUILD_BENCHMARKS=OFF -DPROBING_BUILD_RECORDER=OFF \
	  -DPROBING_WERROR=$(WERROR) > /dev/null
	cmake --build $(ASAN_DIR) -j $(JOBS)
	cd $(ASAN_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 900 -L sanitize

test-python: build test-assets
	@scripts/run-pytest $(PYTHON) tests

bench: build test-assets
	@PYTHON=$(PYTHON) scripts/run-benchmarks $(BUILD_DIR)

demo: build
	@PYTHON=$(PYTHON) scripts/demo $(BUILD_DIR)

install: build
	cmake --install $(BUILD_DIR) --prefix $(PREFIX)

format-code:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf $(BUILD_DIR) $(ASAN_DIR)
