/* myext.c - a C extension module that carries the whole profiler inside itself: one .c file, no
   separate spprof install. `import myext` gives
       myext.crunch(n)      a CPU-heavy C function (releases the GIL while it runs)
       myext.profiler       spprof's module API (start, stop, stats, samples, write_speedscope,
                            write_collapsed, ...), the same functions as the ready-made `_spprof` module;
                            also importable as `import myext.profiler` once myext is imported.
   Usage: see demo.py next to this file.

   Build: sh examples/build_examples.sh build/examples python3   (-> build/examples/myext<EXT_SUFFIX>), or by hand:
       cc -std=c99 -O2 -g -fPIC -shared -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer \
          -I. -I"$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" examples/extension/myext.c \
          -o myext"$(python3 -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')" -pthread

   Samples of a thread that is running Python show its Python frames only: time spent inside crunch() is
   attributed to the Python line that called it (here: uses_crunch in demo.py). */
#define _GNU_SOURCE 1                  /* same value as pyconfig.h, so no redefinition warning */
#define SPPROF_STATIC                  /* spprof's C API stays private to this .so (no exported spprof_*) */
#define SPPROF_IMPLEMENTATION
#define SPPROF_PYTHON_IMPLEMENTATION
#define SPPROF_PYTHON_MODULE           /* the module API ... */
#define SPPROF_PYTHON_MODULE_NAME "myext.profiler"   /* ... named myext.profiler (errors: myext.profiler.Error) */
#define SPPROF_PYTHON_INIT_NAME myext_profiler       /* ... created by PyInit_myext_profiler(), called below */
#include "spprof_python.h"             /* includes Python.h and spprof.h */

#include <stdint.h>

/* The CPU-heavy part: an integer hash chain, n rounds. */
static __attribute__((noinline)) uint64_t crunch_impl(long long n) {
    uint64_t x = 0x9e3779b97f4a7c15ull;
    long long i;
    for (i = 0; i < n; i++) {
        x ^= x >> 31;
        x *= 0xbf58476d1ce4e5b9ull;
        x += (uint64_t)i;
    }
    return x;
}

static PyObject *myext_crunch(PyObject *self, PyObject *arg) {
    long long n = PyLong_AsLongLong(arg);
    uint64_t r;
    (void)self;
    if (n == -1 && PyErr_Occurred()) return NULL;
    Py_BEGIN_ALLOW_THREADS             /* the profiler still sees this thread's Python frames */
    r = crunch_impl(n);
    Py_END_ALLOW_THREADS
    return PyLong_FromUnsignedLongLong(r);
}

static PyMethodDef myext_methods[] = {
    {"crunch", myext_crunch, METH_O, "crunch(n) -> int: n rounds of an integer hash (CPU-bound, in C)"},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef myext_module = {
    PyModuleDef_HEAD_INIT, "myext", "Example extension with spprof built in (see myext.profiler).", -1,
    myext_methods, NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit_myext(void) {
    PyObject *m = PyModule_Create(&myext_module), *prof;
    if (!m) return NULL;
    prof = PyInit_myext_profiler();    /* defined by spprof_python.h (SPPROF_PYTHON_MODULE) */
    if (!prof) { Py_DECREF(m); return NULL; }
    /* myext.profiler as an attribute, and in sys.modules so that `import myext.profiler` works too. */
    if (PyDict_SetItemString(PyImport_GetModuleDict(), SPPROF_PYTHON_MODULE_NAME, prof) < 0 ||
        PyModule_AddObject(m, "profiler", prof) < 0) {  /* steals prof on success (works on 3.9, unlike AddObjectRef) */
        Py_DECREF(prof); Py_DECREF(m);
        return NULL;
    }
    return m;
}
