/* py_layout_check.c - compile-time check that spprof_python.h's mirror of the interpreter frame matches the
   interpreter's own internal header (built with -fsyntax-only for every interpreter by py_layout_check.sh). */
#define Py_BUILD_CORE 1
#define SPPROF_IMPLEMENTATION
#define SPPROF_PYTHON_IMPLEMENTATION
#include "../spprof_python.h"
#include <internal/pycore_frame.h>

#define SAME(field) typedef char check_##field[offsetof(spprof__py_iframe, field) == offsetof(_PyInterpreterFrame, field) ? 1 : -1]
SAME(f_code);
SAME(previous);
SAME(prev_instr);
SAME(owner);
typedef char check_owner_enum[SPPROF__PY_OWNED_BY_GENERATOR == FRAME_OWNED_BY_GENERATOR ? 1 : -1];
typedef char check_owner_size[sizeof(((spprof__py_iframe *)0)->owner) == sizeof(((_PyInterpreterFrame *)0)->owner) ? 1 : -1];
