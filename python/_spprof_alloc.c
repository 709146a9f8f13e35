/* _spprof_alloc.c - libspprof_alloc.so, the LD_PRELOAD memory-sampling library of `spprof record --memory`
   (spprof.h built with SPPROF_ALLOC_SHIM; see its @memprof section). setup.py builds it from this file with
   -fvisibility=hidden; the Makefile builds the same from spprof.h directly. */
#define SPPROF_IMPLEMENTATION
#define SPPROF_ALLOC_SHIM
#include "../spprof.h"
