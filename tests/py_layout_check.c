/* py_layout_check.c - compile-time check that spprof_python.h's mirrors of interpreter internals match the
   interpreter's own internal headers (built with -fsyntax-only for every interpreter by py_layout_check.sh).
   3.9/3.10 use the public PyFrameObject directly: nothing to mirror. */
#define Py_BUILD_CORE 1
#define SPPROF_IMPLEMENTATION
#define SPPROF_PYTHON_IMPLEMENTATION
#include "../spprof_python.h"

#if PY_VERSION_HEX >= 0x030B0000
#  if PY_VERSION_HEX >= 0x030E0000
#    include <internal/pycore_interpframe_structs.h>
#  else
#    include <internal/pycore_frame.h>
#  endif
#  define SAME(field) typedef char check_##field[offsetof(spprof__py_iframe, field) == offsetof(_PyInterpreterFrame, field) ? 1 : -1]
#  define SAME_SIZE(field) typedef char check_size_##field[sizeof(((spprof__py_iframe *)0)->field) == sizeof(((_PyInterpreterFrame *)0)->field) ? 1 : -1]
SAME(previous);
SAME(owner);
SAME_SIZE(owner);
typedef char check_owner_generator[SPPROF__PY_OWNED_BY_GENERATOR == FRAME_OWNED_BY_GENERATOR ? 1 : -1];
#  if PY_VERSION_HEX < 0x030D0000
SAME(f_code);
SAME(prev_instr);
#  else
SAME(f_executable);
SAME(instr_ptr);
SAME_SIZE(f_executable);
#  endif
#  if PY_VERSION_HEX >= 0x030C0000
typedef char check_owner_cstack[SPPROF__PY_OWNED_BY_CSTACK == FRAME_OWNED_BY_CSTACK ? 1 : -1];
#  endif
#  if PY_VERSION_HEX >= 0x030E0000 && defined(Py_GIL_DISABLED)
SAME(tlbc_index);
#  endif
#  if PY_VERSION_HEX >= 0x030D0000
/* the debug-offsets mirror: the prefix of _Py_DebugOffsets, field by field where spprof reads it */
#    if PY_VERSION_HEX >= 0x030E0000
#      include <internal/pycore_debug_offsets.h>
#    else
#      include <internal/pycore_runtime.h>
#    endif
#    define SAME_DBG(name, field) typedef char check_dbg_##name[offsetof(spprof__py_dbgoff, field) == offsetof(_Py_DebugOffsets, field) ? 1 : -1]
SAME_DBG(version, version);
SAME_DBG(free_threaded, free_threaded);
SAME_DBG(thread_state_current_frame, thread_state.current_frame);
SAME_DBG(interpreter_frame_previous, interpreter_frame.previous);
SAME_DBG(interpreter_frame_executable, interpreter_frame.executable);
SAME_DBG(interpreter_frame_instr_ptr, interpreter_frame.instr_ptr);
SAME_DBG(interpreter_frame_owner, interpreter_frame.owner);
SAME_DBG(code_object_qualname, code_object.qualname);
SAME_DBG(code_object_filename, code_object.filename);
SAME_DBG(code_object_firstlineno, code_object.firstlineno);
SAME_DBG(code_object_co_code_adaptive, code_object.co_code_adaptive);
SAME_DBG(pyobject_ob_type, pyobject.ob_type);
typedef char check_dbg_runtime_first[offsetof(_PyRuntimeState, debug_offsets) == 0 ? 1 : -1];
#  endif
#endif
typedef char check_nothing_to_mirror[1];
