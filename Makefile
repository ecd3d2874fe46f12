# A thin wrapper over CMake, in the manner of neovim's: the real build is CMakeLists.txt.
#
#   make run         install missing packages, build (release), start one node on the
#                    embedded defaults with state and socket under build/release/run/
#   make test        install, build (debug, ASan+UBSan), run unit, simulator and
#                    integration tests, then a short run of every fuzz target (clang),
#                    then compile the release build
#   make bench       release build, then every benchmark in tests/bench/ (installs the
#                    bench-only packages of .ci/debian-packages-bench first)
#   make check-long  the long suites (soak, kill -9 loops) on the debug build
#   make install     release build installed under PREFIX (default /usr/local)
#   make format      clang-format every C file
#
# Build trees: build/debug, build/release, build/fuzz. Override: make test FUZZ_SECONDS=5
# (20 s per fuzz target by default: with 19 targets on 2 cores the fuzz run takes about 3.5
# minutes, which keeps make test near 10 minutes; the clean-clone run at 30 s took 12.)

PREFIX ?= /usr/local
FUZZ_SECONDS ?= 20
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE ?= cmake
CTEST ?= ctest
DEBUG_DIR := build/debug
RELEASE_DIR := build/release
FUZZ_DIR := build/fuzz
RUN_DIR := $(RELEASE_DIR)/run

.PHONY: all deps bench-deps debug release fuzz run test unit fuzz-smoke bench check-long \
        install format format-check clean

all: debug

deps:
	@sh .ci/install-deps

bench-deps:
	@sh .ci/install-deps .ci/debian-packages-bench

debug: deps
	$(CMAKE) -S . -B $(DEBUG_DIR) -DCMAKE_BUILD_TYPE=Debug -DVIVIM_SANITIZE=ON
	$(CMAKE) --build $(DEBUG_DIR) -j $(JOBS)

release: deps
	$(CMAKE) -S . -B $(RELEASE_DIR) -DCMAKE_BUILD_TYPE=Release \
	    -DCMAKE_INSTALL_PREFIX=$(PREFIX)
	$(CMAKE) --build $(RELEASE_DIR) -j $(JOBS)
	@ln -sf release/vivimd build/vivimd
	@ln -sf release/vivimctl build/vivimctl

fuzz: deps
	CC=clang $(CMAKE) -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=Debug -DVIVIM_FUZZ=ON \
	    -DVIVIM_FUZZ_SECONDS=$(FUZZ_SECONDS)
	$(CMAKE) --build $(FUZZ_DIR) -j $(JOBS)

# The default configuration with the state directory and RPC socket moved under the build
# tree, so that no root-owned path is needed.
run: release
	@mkdir -p $(RUN_DIR)
	@sed -e 's|^state_dir = .*|state_dir = $(CURDIR)/$(RUN_DIR)/state|' \
	     -e 's|^socket = .*|socket = $(CURDIR)/$(RUN_DIR)/vivimd.sock|' \
	     config/vivimd.conf > $(RUN_DIR)/vivimd.conf
	@echo "vivimd: config $(RUN_DIR)/vivimd.conf; in another terminal: ./build/vivimctl status"
	exec $(RELEASE_DIR)/vivimd --config $(RUN_DIR)/vivimd.conf

unit: debug
	$(CTEST) --test-dir $(DEBUG_DIR) -L 'unit|sim|integration' -j $(JOBS) --output-on-failure

fuzz-smoke: fuzz
	$(CTEST) --test-dir $(FUZZ_DIR) -L fuzz -j $(JOBS) --output-on-failure

# The release build is compiled too: -O3 warns about things -O0 does not, and `make run`
# must never be the first to find out.
test: unit fuzz-smoke release

bench: release bench-deps
	@sh tests/bench/run.sh $(RELEASE_DIR)

check-long: debug
	$(CTEST) --test-dir $(DEBUG_DIR) -L long --output-on-failure --no-tests=ignore

install: release
	$(CMAKE) --install $(RELEASE_DIR) --prefix $(PREFIX)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build
