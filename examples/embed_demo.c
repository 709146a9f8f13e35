/* embed_demo.c - a C program that embeds CPython and profiles both its own C code and the Python code it
   runs, in one profile. main() spends CPU in c_hot_function() (native frames), then runs Python source
   whose hot spot is py_hot() (Python frames, file "<embed_demo>", lines of PY_SOURCE below).
   Writes OUTDIR/embed.speedscope.json and OUTDIR/embed.collapsed.

   Build: sh examples/build_examples.sh build/examples python3     (-> build/examples/embed_demo), or by hand:
       cc -std=c99 -O2 -g -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer -I. \
          -I"$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
          examples/embed_demo.c -o embed_demo $(python3-config --embed --ldflags) -pthread
   Usage: embed_demo [OUTDIR] [SECONDS]   (SECONDS of C, then SECONDS of Python; default 0.5) */
#define _GNU_SOURCE 1                  /* same value as pyconfig.h */
#define SPPROF_IMPLEMENTATION
#define SPPROF_PYTHON_IMPLEMENTATION
#include "../spprof_python.h"          /* includes Python.h and spprof.h */

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static const char PY_SOURCE[] =
    "import time\n"                                   /* 1 */
    "\n"                                              /* 2 */
    "def py_hot(n):\n"                                /* 3 */
    "    total = 0\n"                                 /* 4 */
    "    for i in range(n):\n"                        /* 5 */
    "        total += i * i % 7\n"                    /* 6 */
    "    return total\n"                              /* 7 */
    "\n"                                              /* 8 */
    "def py_driver(seconds):\n"                       /* 9 */
    "    end = time.monotonic() + seconds\n"          /* 10 */
    "    calls = 0\n"                                 /* 11 */
    "    while time.monotonic() < end:\n"             /* 12 */
    "        py_hot(20000)\n"                         /* 13 */
    "        calls += 1\n"                            /* 14 */
    "    return calls\n"                              /* 15 */
    "\n"                                              /* 16 */
    "calls = py_driver(SECONDS)\n";                   /* 17 */

static volatile uint64_t sink;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The native hot spot: an integer hash chain until `seconds` have passed. */
static __attribute__((noinline)) void c_hot_function(double seconds) {
    double end = now_s() + seconds;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    long i;
    do {
        for (i = 0; i < 200000; i++) { x ^= x >> 31; x *= 0xbf58476d1ce4e5b9ull; x += (uint64_t)i; }
    } while (now_s() < end);
    sink += x;
}

/* Runs PY_SOURCE in __main__ with SECONDS set. Returns 0 on success. */
static __attribute__((noinline)) int run_python(double seconds) {
    PyObject *globals = PyModule_GetDict(PyImport_AddModule("__main__"));  /* borrowed */
    PyObject *secs = PyFloat_FromDouble(seconds), *code, *res;
    if (!secs || PyDict_SetItemString(globals, "SECONDS", secs) < 0) { Py_XDECREF(secs); PyErr_Print(); return -1; }
    Py_DECREF(secs);
    code = Py_CompileString(PY_SOURCE, "<embed_demo>", Py_file_input);
    if (!code) { PyErr_Print(); return -1; }
    res = PyEval_EvalCode(code, globals, globals);
    /* Pin before letting go of what we ran: the module-level code object dies with `code`; spprof's pinning
       thread catches code objects within ~20 ms of their first sample, but samples from the last moments
       before this point would otherwise resolve as "<freed code object ...>". */
    spprof_py_pin_code_objects();
    Py_DECREF(code);
    if (!res) { PyErr_Print(); return -1; }
    Py_DECREF(res);
    return 0;
}

static int write_outputs(const char *outdir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/embed.speedscope.json", outdir);
    if (spprof_write_speedscope(path) != SPPROF_OK) { fprintf(stderr, "%s\n", spprof_last_error()); return -1; }
    printf("wrote %s\n", path);
    snprintf(path, sizeof path, "%s/embed.collapsed", outdir);
    if (spprof_write_collapsed(path, 0) != SPPROF_OK) { fprintf(stderr, "%s\n", spprof_last_error()); return -1; }
    printf("wrote %s\n", path);
    return 0;
}

int main(int argc, char **argv) {
    const char *outdir = argc > 1 ? argv[1] : "out";
    double seconds = argc > 2 ? atof(argv[2]) : 0.5;
    int native = argc > 3 && strcmp(argv[3], "--native") == 0;  /* mixed stacks: main -> run_python -> ... -> py_hot */
    spprof_config cfg = spprof_config_default();
    spprof_stats st;
    spprof_result r;
    int rc = 0;

    Py_Initialize();                   /* this thread now holds the GIL */
    cfg.interval_ns = 1000000;         /* 1 kHz of CPU time */
    if (!native) spprof_py_configure(&cfg);  /* Python walker (native stack when no Python frame runs), resolver, guard */
    else if (!spprof_py_configure_mixed(&cfg)) { fprintf(stderr, "native mode unavailable\n"); Py_FinalizeEx(); return 1; }
    if ((r = spprof_py_start(&cfg)) != SPPROF_OK) {  /* spprof_start + the code-object pinning thread */
        fprintf(stderr, "spprof_py_start: %s\n", spprof_last_error());
        Py_FinalizeEx();
        return 1;
    }

    c_hot_function(seconds);           /* native: main -> c_hot_function */
    if (run_python(seconds) != 0) rc = 1;  /* Python: <module> -> py_driver -> py_hot */

    r = spprof_py_stop();              /* with the GIL: it releases it while waiting, and pins what was seen */
    if (r != SPPROF_OK) { fprintf(stderr, "spprof_py_stop: %s\n", spprof_last_error()); rc = 1; }

    spprof_get_stats(&st);
    printf("samples: %llu captured, %llu in profile, %llu dropped, %llu walk errors, %llu faults recovered\n",
           (unsigned long long)st.samples_captured, (unsigned long long)st.samples_in_profile,
           (unsigned long long)st.samples_dropped, (unsigned long long)st.walk_errors,
           (unsigned long long)st.faults_recovered);
    if (write_outputs(outdir) != 0) rc = 1;   /* with the GIL held: Python frames are resolved with the C API */

    spprof_py_release_code_objects();  /* [GIL] before the interpreter goes away */
    if (Py_FinalizeEx() < 0) rc = 1;
    return rc;
}
