/* _spprof.c - the extension module `_spprof`: spprof.h + spprof_python.h in one translation unit.
   The public Python API is the package in python/spprof/, which imports this module. */
#define SPPROF_IMPLEMENTATION
#define SPPROF_PYTHON_IMPLEMENTATION
#define SPPROF_PYTHON_MODULE
#include "../spprof_python.h"
