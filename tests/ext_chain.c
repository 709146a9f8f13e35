/* ext_chain.c - a C extension with a known call chain for the mixed-stack tests (tests/test_python_native.py):
   Python -> ext_chain.outer(cb) -> ext_outer -> ext_inner -> ext_spin (C work) -> cb() (back into Python).
   Built by the test with frame pointers; the functions are static and noinline (found in .symtab). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static volatile unsigned long ext_sink;

__attribute__((noinline)) static void ext_spin(long n) {
    unsigned long x = 0;
    long i;
    for (i = 0; i < n; i++) x = x * 2654435761u + (unsigned long)i;
    ext_sink = x;
}

__attribute__((noinline)) static PyObject *ext_inner(PyObject *cb, long n) {
    PyObject *r;
    ext_spin(n);
    r = PyObject_CallObject(cb, NULL);
    ext_sink += 1;  /* keep the call from being a tail call */
    return r;
}

__attribute__((noinline)) static PyObject *ext_outer(PyObject *cb, long n) {
    PyObject *r = ext_inner(cb, n);
    ext_sink += 1;
    return r;
}

static PyObject *chain_outer(PyObject *self, PyObject *args) {
    PyObject *cb;
    long n = 200000;
    (void)self;
    if (!PyArg_ParseTuple(args, "O|l", &cb, &n)) return NULL;
    return ext_outer(cb, n);
}

static PyMethodDef chain_methods[] = {
    {"outer", chain_outer, METH_VARARGS, "outer(cb, n=200000): C work (ext_spin), then cb(), via ext_outer -> ext_inner"},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef chain_module = {PyModuleDef_HEAD_INIT, "ext_chain", NULL, -1, chain_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_ext_chain(void) {
    PyObject *m = PyModule_Create(&chain_module);
#ifdef Py_GIL_DISABLED
    if (m) PyUnstable_Module_SetGIL(m, Py_MOD_GIL_NOT_USED);
#endif
    return m;
}
