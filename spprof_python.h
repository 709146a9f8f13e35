/* spprof_python.h - CPython glue for spprof.h: Python stacks from the signal handler, code-object
   resolution off the hot path, and a ready-made extension module. Version 0.1.0, MIT license (see spprof.h).

   In exactly one C file (an extension module, or a program that embeds Python):
       #define _GNU_SOURCE
       #define SPPROF_IMPLEMENTATION
       #define SPPROF_PYTHON_IMPLEMENTATION
       #define SPPROF_PYTHON_MODULE          // optional: also define PyInit__spprof (the module `_spprof`)
       #include "spprof_python.h"            // includes Python.h and spprof.h

   C use (embedding, GIL held for the calls marked [GIL]):
       spprof_config cfg = spprof_config_default();
       spprof_py_configure(&cfg);            // Python walker, resolver, fault guard, code-object pinning
       spprof_py_start(&cfg);  ...  spprof_py_stop();   // [GIL] (stop before Py_Finalize)
       spprof_write_speedscope("out.json");  // [GIL] Python frames are resolved with the C API
   fork(): as in spprof.h, a session stays with its process: a forked child is not sampled and has no
   profile (stop and the writers return SPPROF_ERR_NOT_STARTED naming the fork) until it starts its own.

   Contents: @layout (per-version frame access)  @check (3.13+ debug offsets)  @walk  @pin  @resolve  @module

   How the signal handler finds Python frames: the interrupted thread's own PyThreadState comes from
   CPython's thread-specific-storage key (PyGILState_GetThisThreadState, a pthread_getspecific read), not from
   the GIL holder; from it the chain of frames (3.9/3.10: tstate->frame, 3.11/3.12: tstate->cframe->
   current_frame, 3.13+: tstate->current_frame; see @layout) is followed,
   incomplete frames skipped, and (code object, instruction offset) pairs recorded. No GIL, no Python API that
   allocates or locks, no allocation. The chain belongs to the interrupted thread (which is paused), but a frame
   being pushed or a code object freed by another thread could still hand us a stale pointer: every read
   happens under spprof's fault guard (a fault drops the sample and is counted), each code object's type is
   checked against &PyCode_Type, and the depth is bounded.

   Code objects are resolved to (qualname, file, line) later, with the GIL. A code object seen in a sample can
   die before that (module and class bodies, generated and exec'd functions, lambdas: milliseconds after they
   ran). The handler marks each sampled code object in a bitmap (one atomic OR); when a marked code object
   dies while its profile is held, it is kept alive and pinned instead (3.13+: a code watcher, 3.9-3.12: a
   wrapper of PyCode_Type's tp_dealloc; see @pin), so it is resolved with its real name, file and lines. Only
   without that hook (3.13+ with all code watchers taken) a small pinning thread (it blocks the profiling
   signal, so it is never sampled) takes the GIL when the collector has seen new code objects (at most every
   20 ms) and holds a reference to each; with the hook it is never woken during a session (taking the GIL 50
   times a second cost the program more than the samples did), and stop pins what is left. A code object not
   pinned is checked through a pipe write (EFAULT instead of a crash; Windows: ReadProcessMemory) and by its
   header before it is touched; if it is gone (no hook; or out of memory), the frame reads "<freed code object 0x...>". (Py_AddPendingCall would be simpler than the thread, but on 3.11 a call added from a non-main
   thread waits until the main thread switches the GIL, which a single-threaded CPU-bound program never does.)

   Windows (CPython 3.13, the extension built with mingw-w64; run only under wine 8 with the official
   embeddable 3.13.2, never on real Windows, never built with MSVC): there is no signal handler. spprof.h's
   sampler thread suspends each thread and calls the walker; the walker finds that thread's PyThreadState in a
   table keyed by native thread id (filled under the GIL at start and by register_thread, and by the sampler
   between suspensions through _PyRuntime.debug_offsets), checks its native_thread_id, and copies every
   thread state, frame and code object with spprof__os_read_mem (ReadProcessMemory: a bad address fails, it
   does not fault) before it looks at it; no allocation, lock, stdio or Python API while a thread is
   suspended (see @walk's external sampler). native=True merges the PE-unwound native stack the same way.

   Supported: CPython 3.9 to 3.13 (run and tested: release builds, 3.11 debug build, 3.13 free-threaded),
   3.14 and 3.14t (written from the 3.14 headers, not run: no 3.14 interpreter was available). On 3.13+ the
   compiled-in layout is checked against the running interpreter at start (@check). Before 3.11, code
   objects have no qualified name: functions show as co_name ("run", not "Thread.run"). */
#ifndef SPPROF_PYTHON_H_INCLUDED
#define SPPROF_PYTHON_H_INCLUDED

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "spprof.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Sets walker, resolver, guard_faults and the drain hook of cfg for Python profiling. */
SPPROF_API void spprof_py_configure(spprof_config *cfg);
/* [GIL] spprof_start/spprof_stop plus the code-object pinning thread. Use these rather than the plain ones
   for Python profiling; call spprof_py_stop() before Py_Finalize. spprof_py_stop releases the GIL while it
   waits and pins every code object seen before it returns. */
SPPROF_API spprof_result spprof_py_start(const spprof_config *cfg);
SPPROF_API spprof_result spprof_py_stop(void);
/* [signal-safe] The Python stack walker (leaf first). A thread that is not running Python code (no thread
   state, or no frame) gets its native stack instead (frame-pointer walk). */
SPPROF_API int spprof_py_walk(const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames);
/* [signal-safe] Mixed native + Python stack (native=True): the native walk with each interpreter-loop frame
   replaced by the Python frames it runs; see @mixed. Needs spprof_py_configure_mixed() first. */
SPPROF_API int spprof_py_walk_mixed(const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames);
/* As spprof_py_configure, with the mixed walker. Returns 0 (cfg unchanged) if the interpreter loop's code
   cannot be located (no _PyEval_EvalFrameDefault symbol with a size). */
SPPROF_API int spprof_py_configure_mixed(spprof_config *cfg);
/* [GIL] Resolves Python frames; returns 0 for other kinds (the native symbolizer takes over). */
SPPROF_API int spprof_py_resolve(const spprof_frame *frame, spprof_symbol *out, void *user);
/* [GIL] Takes a reference to every code object seen in the profile so far (validated first). Returns how
   many were newly pinned. */
SPPROF_API int spprof_py_pin_code_objects(void);
/* [GIL] Drops those references (done by the module at the next start). */
SPPROF_API void spprof_py_release_code_objects(void);
/* Compares the frame layout compiled into this file with the running interpreter's own description of it
   (_PyRuntime.debug_offsets, CPython 3.13+; always SPPROF_OK before 3.13). spprof_py_start calls it and
   refuses to start on a difference (SPPROF_ERR_UNSUPPORTED, the difference in spprof_last_error()). */
SPPROF_API spprof_result spprof_py_check_layout(void);
/* [GIL] Memory profiler for Python (see @memprof): PyMem hooks + the Python walker, on spprof.h's
   spprof_mem_* (or on the preloaded libspprof_alloc.so's heap map when present). An allocation made with
   the GIL released gets its native frames up to the interpreter loop, then the calling Python frames. */
SPPROF_API spprof_result spprof_py_mem_start(const spprof_mem_config *cfg);
SPPROF_API spprof_result spprof_py_mem_stop(void);
SPPROF_API spprof_result spprof_py_mem_shutdown(void);

#ifdef __cplusplus
}
#endif
#endif /* SPPROF_PYTHON_H_INCLUDED */

#if defined(SPPROF_PYTHON_IMPLEMENTATION) && !defined(SPPROF_PYTHON_IMPLEMENTATION_INCLUDED)
#define SPPROF_PYTHON_IMPLEMENTATION_INCLUDED
#if !defined(SPPROF_IMPLEMENTATION_INCLUDED)
#  error "spprof_python.h: define SPPROF_IMPLEMENTATION too (the Python glue uses spprof.h's internals)"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==== @layout =========================================================================================
   Everything version-specific is here, chosen at compile time from PY_VERSION_HEX (and Py_GIL_DISABLED):
     SPPROF__PY_FRAME              the frame type
     SPPROF__PY_TOP_FRAME(ts)      the innermost frame of a thread state (NULL: none)
     SPPROF__PY_PREV(f)            the caller's frame
     SPPROF__PY_SKIP(f)            frames that are not Python code (3.12+: C-stack entry/shim frames)
     SPPROF__PY_EXEC(f)            the code object, as read (type still to be checked)
     SPPROF__PY_INCOMPLETE(f, co)  a frame being set up, not yet running its code (3.11+)
     SPPROF__PY_OFFSET(f, co)      instruction offset in code units (line = PyCode_Addr2Line(co, 2 * off))
     SPPROF__PY_NUNITS(co)         length of the bytecode in code units
     SPPROF__PY_FP_SIZE(co)        a size-like word for the code-object fingerprint
     SPPROF__PY_NAME(co)           qualified name (3.11+) or name
   Mirrors of internal structs are checked against the real headers by tests/py_layout_check.c, and on 3.13+
   also at run time against _PyRuntime.debug_offsets (spprof_py_check_layout). */
#if PY_VERSION_HEX < 0x03090000 || PY_VERSION_HEX >= 0x030F0000
#  error "spprof_python.h: CPython 3.9 to 3.14 are supported"
#endif
typedef uint16_t spprof__py_codeunit;  /* _Py_CODEUNIT: one opcode + oparg, two bytes (internal since 3.13) */

#if PY_VERSION_HEX < 0x030B0000
/* 3.9, 3.10: frames are PyFrameObjects (public struct in cpython/frameobject.h), tstate->frame is the top.
   f_lasti is the last instruction started: a byte offset on 3.9, a code-unit index on 3.10; -1 before the
   first instruction. */
#  include <frameobject.h>
#  define SPPROF__PY_FRAME PyFrameObject
#  define SPPROF__PY_TOP_FRAME(ts) ((const PyFrameObject *)(ts)->frame)
#  define SPPROF__PY_PREV(f) ((const PyFrameObject *)(f)->f_back)
#  define SPPROF__PY_SKIP(f) (Py_TYPE(f) != &PyFrame_Type ? -1 : 0)
#  define SPPROF__PY_EXEC(f) ((const PyObject *)(f)->f_code)
#  define SPPROF__PY_INCOMPLETE(f, co) 0
#  if PY_VERSION_HEX < 0x030A0000
#    define SPPROF__PY_OFFSET(f, co) ((ptrdiff_t)((f)->f_lasti < 0 ? 0 : (f)->f_lasti / 2))
#  else
#    define SPPROF__PY_OFFSET(f, co) ((ptrdiff_t)((f)->f_lasti < 0 ? 0 : (f)->f_lasti))
#  endif
/* co_code is a bytes object: Py_SIZE, not PyBytes_GET_SIZE (whose debug-build assert could fire on a torn read) */
#  define SPPROF__PY_NUNITS(co) (Py_SIZE((co)->co_code) / 2)
#  define SPPROF__PY_FP_SIZE(co) ((uint64_t)(uintptr_t)(co)->co_code >> 4)
#  define SPPROF__PY_NAME(co) ((co)->co_name)

#elif PY_VERSION_HEX < 0x030D0000
/* 3.11, 3.12: mirrors of _PyInterpreterFrame (Include/internal/pycore_frame.h); the top frame is
   tstate->cframe->current_frame. prev_instr points at the last code unit started (on a new frame: before
   the first instruction, which is what _PyFrame_IsIncomplete tests). 3.12 puts C-stack "shim" frames in the
   chain (owner FRAME_OWNED_BY_CSTACK): not Python code, skipped. bool is one byte on every supported ABI. */
#  if PY_VERSION_HEX < 0x030C0000
typedef struct spprof__py_iframe {
    PyObject *f_func;
    PyObject *f_globals;
    PyObject *f_builtins;
    PyObject *f_locals;
    PyCodeObject *f_code;
    PyObject *frame_obj;
    struct spprof__py_iframe *previous;
    spprof__py_codeunit *prev_instr;
    int stacktop;
    char is_entry;
    char owner;
} spprof__py_iframe;
#    define SPPROF__PY_SKIP(f) 0
#  else
typedef struct spprof__py_iframe {
    PyCodeObject *f_code;
    struct spprof__py_iframe *previous;
    PyObject *f_funcobj;
    PyObject *f_globals;
    PyObject *f_builtins;
    PyObject *f_locals;
    PyObject *frame_obj;
    spprof__py_codeunit *prev_instr;
    int stacktop;
    uint16_t return_offset;
    char owner;
} spprof__py_iframe;
#    define SPPROF__PY_OWNED_BY_CSTACK 3
#    define SPPROF__PY_SKIP(f) ((f)->owner == SPPROF__PY_OWNED_BY_CSTACK)
#  endif
#  define SPPROF__PY_OWNED_BY_GENERATOR 1
#  define SPPROF__PY_FRAME spprof__py_iframe
#  define SPPROF__PY_TOP_FRAME(ts) ((ts)->cframe ? (const spprof__py_iframe *)(const void *)(ts)->cframe->current_frame : NULL)
#  define SPPROF__PY_PREV(f) ((f)->previous)
#  define SPPROF__PY_EXEC(f) ((const PyObject *)(f)->f_code)
#  define SPPROF__PY_FIRST_INSTR(co) ((const spprof__py_codeunit *)(const void *)(co)->co_code_adaptive)
#  define SPPROF__PY_INCOMPLETE(f, co) \
       ((f)->owner != SPPROF__PY_OWNED_BY_GENERATOR && (f)->prev_instr < SPPROF__PY_FIRST_INSTR(co) + (co)->_co_firsttraceable)
#  define SPPROF__PY_OFFSET(f, co) ((f)->prev_instr - SPPROF__PY_FIRST_INSTR(co))
#  define SPPROF__PY_NUNITS(co) Py_SIZE(co)
#  define SPPROF__PY_FP_SIZE(co) ((uint64_t)Py_SIZE(co))
#  define SPPROF__PY_NAME(co) ((co)->co_qualname)

#elif PY_VERSION_HEX < 0x030E0000
/* 3.13 (and 3.13t): tstate->current_frame is the top; f_executable is a PyObject (a code object, or
   something else on frames that are not Python code); instr_ptr points at the instruction executing now.
   Entry frames are owned by the C stack and skipped (_PyFrame_IsIncomplete treats them so). The free-
   threaded build has the same frame; its object header differs, which Py_TYPE/Py_SIZE take care of. */
typedef struct spprof__py_iframe {
    PyObject *f_executable;
    struct spprof__py_iframe *previous;
    PyObject *f_funcobj;
    PyObject *f_globals;
    PyObject *f_builtins;
    PyObject *f_locals;
    PyObject *frame_obj;
    spprof__py_codeunit *instr_ptr;
    int stacktop;
    uint16_t return_offset;
    char owner;
} spprof__py_iframe;
#  define SPPROF__PY_OWNED_BY_GENERATOR 1
#  define SPPROF__PY_OWNED_BY_CSTACK 3
#  define SPPROF__PY_FRAME spprof__py_iframe
#  define SPPROF__PY_TOP_FRAME(ts) ((const spprof__py_iframe *)(const void *)(ts)->current_frame)
#  define SPPROF__PY_PREV(f) ((f)->previous)
#  define SPPROF__PY_SKIP(f) ((f)->owner == SPPROF__PY_OWNED_BY_CSTACK)
#  define SPPROF__PY_EXEC(f) ((const PyObject *)(f)->f_executable)
#  define SPPROF__PY_FIRST_INSTR(co) ((const spprof__py_codeunit *)(const void *)(co)->co_code_adaptive)
#  define SPPROF__PY_INCOMPLETE(f, co) \
       ((f)->owner != SPPROF__PY_OWNED_BY_GENERATOR && (f)->instr_ptr < SPPROF__PY_FIRST_INSTR(co) + (co)->_co_firsttraceable)
#  define SPPROF__PY_OFFSET(f, co) ((f)->instr_ptr - SPPROF__PY_FIRST_INSTR(co))
#  define SPPROF__PY_NUNITS(co) Py_SIZE(co)
#  define SPPROF__PY_FP_SIZE(co) ((uint64_t)Py_SIZE(co))
#  define SPPROF__PY_NAME(co) ((co)->co_qualname)
#  define SPPROF__PY_DEBUG_OFFSETS 1

#else
/* 3.14 (and 3.14t), written from the 3.14 branch's headers (Include/internal/pycore_interpframe_structs.h,
   pycore_stackref.h, pycore_interpframe.h); no 3.14 interpreter was available to run it. f_executable is a
   _PyStackRef: a tagged pointer (low bits: deferred/refcount tags; bits == 1 is NULL). Frames owned by the
   interpreter (entry frames, owner 3) or the C stack (4) are not Python code. Free-threaded builds run
   per-thread copies of the bytecode: instr_ptr points into co->co_tlbc->entries[tlbc_index], not into
   co_code_adaptive (entries[0] is co_code_adaptive). */
typedef struct spprof__py_iframe {
    uintptr_t f_executable;        /* _PyStackRef */
    struct spprof__py_iframe *previous;
    uintptr_t f_funcobj;           /* _PyStackRef */
    PyObject *f_globals;
    PyObject *f_builtins;
    PyObject *f_locals;
    PyObject *frame_obj;
    spprof__py_codeunit *instr_ptr;
    void *stackpointer;
#  ifdef Py_GIL_DISABLED
    int32_t tlbc_index;
#  endif
    uint16_t return_offset;
    char owner;
    uint8_t visited;
} spprof__py_iframe;
#  ifdef Py_GIL_DISABLED
typedef struct spprof__py_codearray { Py_ssize_t size; char *entries[1]; } spprof__py_codearray;
/* the bytecode copy this frame runs; NULL if the index is out of range (torn read) */
static const spprof__py_codeunit *spprof__py_bytecode(const spprof__py_iframe *f, const PyCodeObject *co) {
    const spprof__py_codearray *a = (const spprof__py_codearray *)(const void *)co->co_tlbc;
    if (!a || f->tlbc_index < 0 || f->tlbc_index >= a->size) return NULL;
    return (const spprof__py_codeunit *)(const void *)a->entries[f->tlbc_index];
}
#  else
#    define spprof__py_bytecode(f, co) ((const spprof__py_codeunit *)(const void *)(co)->co_code_adaptive)
#  endif
#  define SPPROF__PY_OWNED_BY_GENERATOR 1
#  define SPPROF__PY_OWNED_BY_INTERPRETER 3
#  define SPPROF__PY_FRAME spprof__py_iframe
#  define SPPROF__PY_TOP_FRAME(ts) ((const spprof__py_iframe *)(const void *)(ts)->current_frame)
#  define SPPROF__PY_PREV(f) ((f)->previous)
#  define SPPROF__PY_SKIP(f) ((f)->owner >= SPPROF__PY_OWNED_BY_INTERPRETER)
#  define SPPROF__PY_EXEC(f) ((const PyObject *)((f)->f_executable & ~(uintptr_t)3))
#  define SPPROF__PY_INCOMPLETE(f, co) \
       ((f)->owner != SPPROF__PY_OWNED_BY_GENERATOR && spprof__py_bytecode(f, co) && \
        (f)->instr_ptr < spprof__py_bytecode(f, co) + (co)->_co_firsttraceable)
#  define SPPROF__PY_OFFSET(f, co) (spprof__py_bytecode(f, co) ? (f)->instr_ptr - spprof__py_bytecode(f, co) : (ptrdiff_t)0)
#  define SPPROF__PY_NUNITS(co) Py_SIZE(co)
#  define SPPROF__PY_FP_SIZE(co) ((uint64_t)Py_SIZE(co))
#  define SPPROF__PY_NAME(co) ((co)->co_qualname)
#  define SPPROF__PY_DEBUG_OFFSETS 1
#endif

/* ==== @check ==========================================================================================
   3.13+: the interpreter publishes the offsets of its own structs in _PyRuntime.debug_offsets (the first
   member of _PyRuntime, made for out-of-process tools). spprof_py_start compares them with the offsets
   compiled into this file and refuses to start if any differs (an interpreter whose internals changed in a
   patch release, or a build of this file against other headers), instead of walking garbage. */
#ifdef SPPROF__PY_DEBUG_OFFSETS
typedef struct spprof__py_dbgoff {  /* the prefix of _Py_DebugOffsets that spprof relies on */
    char cookie[8];
    uint64_t version;
    uint64_t free_threaded;
    struct { uint64_t size, finalizing, interpreters_head; } runtime_state;
#  if PY_VERSION_HEX < 0x030E0000  /* 3.13: Include/internal/pycore_runtime.h */
    struct { uint64_t size, id, next, threads_head, gc, imports_modules, sysdict, builtins, ceval_gil,
             gil_runtime_state, gil_runtime_state_enabled, gil_runtime_state_locked, gil_runtime_state_holder; } interpreter_state;
    struct { uint64_t size, prev, next, interp, current_frame, thread_id, native_thread_id, datastack_chunk, status; } thread_state;
    struct { uint64_t size, previous, executable, instr_ptr, localsplus, owner; } interpreter_frame;
    struct { uint64_t size, filename, name, qualname, linetable, firstlineno, argcount, localsplusnames,
             localspluskinds, co_code_adaptive; } code_object;
#  else  /* 3.14: Include/internal/pycore_debug_offsets.h */
    struct { uint64_t size, id, next, threads_head, threads_main, gc, imports_modules, sysdict, builtins, ceval_gil,
             gil_runtime_state, gil_runtime_state_enabled, gil_runtime_state_locked, gil_runtime_state_holder,
             code_object_generation, tlbc_generation; } interpreter_state;
    struct { uint64_t size, prev, next, interp, current_frame, thread_id, native_thread_id, datastack_chunk, status; } thread_state;
    struct { uint64_t size, previous, executable, instr_ptr, localsplus, owner, stackpointer, tlbc_index; } interpreter_frame;
    struct { uint64_t size, filename, name, qualname, linetable, firstlineno, argcount, localsplusnames,
             localspluskinds, co_code_adaptive, co_tlbc; } code_object;
#  endif
    struct { uint64_t size, ob_type; } pyobject;
} spprof__py_dbgoff;

/* 0 when d matches the compiled-in layout; else -1 and a message in err. */
static int spprof__py_check_offsets(const spprof__py_dbgoff *d, char *err, size_t n) {
#  ifdef Py_GIL_DISABLED
    const uint64_t ft = 1;
#  else
    const uint64_t ft = 0;
#  endif
    struct { const char *what; uint64_t runtime, compiled; } c[18];
    int i, k = 0;
    if (memcmp(d->cookie, "xdebugpy", 8) != 0) { snprintf(err, n, "_PyRuntime.debug_offsets has no 'xdebugpy' cookie"); return -1; }
    if ((d->version >> 16) != ((uint64_t)PY_VERSION_HEX >> 16)) {
        snprintf(err, n, "built for CPython %d.%d but running in %d.%d (version 0x%llx)", PY_MAJOR_VERSION, PY_MINOR_VERSION,
                 (int)(d->version >> 24), (int)((d->version >> 16) & 0xff), (unsigned long long)d->version);
        return -1;
    }
#  define SPPROF__PY_CMP(w, rt, ct) do { c[k].what = (w); c[k].runtime = (rt); c[k].compiled = (uint64_t)(ct); k++; } while (0)
    SPPROF__PY_CMP("free_threaded", d->free_threaded, ft);
    SPPROF__PY_CMP("PyObject.ob_type", d->pyobject.ob_type, offsetof(PyObject, ob_type));
    SPPROF__PY_CMP("PyThreadState.current_frame", d->thread_state.current_frame, offsetof(PyThreadState, current_frame));
    SPPROF__PY_CMP("PyThreadState.native_thread_id", d->thread_state.native_thread_id, offsetof(PyThreadState, native_thread_id));
    /* (the external walk, spprof__py_walk_ext, also reads datastack_top: the field after datastack_chunk) */
    SPPROF__PY_CMP("PyThreadState.datastack_chunk", d->thread_state.datastack_chunk, offsetof(PyThreadState, datastack_chunk));
    SPPROF__PY_CMP("_PyInterpreterFrame.previous", d->interpreter_frame.previous, offsetof(spprof__py_iframe, previous));
    SPPROF__PY_CMP("_PyInterpreterFrame.f_executable", d->interpreter_frame.executable, offsetof(spprof__py_iframe, f_executable));
    SPPROF__PY_CMP("_PyInterpreterFrame.instr_ptr", d->interpreter_frame.instr_ptr, offsetof(spprof__py_iframe, instr_ptr));
    SPPROF__PY_CMP("_PyInterpreterFrame.owner", d->interpreter_frame.owner, offsetof(spprof__py_iframe, owner));
    SPPROF__PY_CMP("PyCodeObject.co_qualname", d->code_object.qualname, offsetof(PyCodeObject, co_qualname));
    SPPROF__PY_CMP("PyCodeObject.co_filename", d->code_object.filename, offsetof(PyCodeObject, co_filename));
    SPPROF__PY_CMP("PyCodeObject.co_firstlineno", d->code_object.firstlineno, offsetof(PyCodeObject, co_firstlineno));
    SPPROF__PY_CMP("PyCodeObject.co_code_adaptive", d->code_object.co_code_adaptive, offsetof(PyCodeObject, co_code_adaptive));
#  if PY_VERSION_HEX >= 0x030E0000 && defined(Py_GIL_DISABLED)
    SPPROF__PY_CMP("_PyInterpreterFrame.tlbc_index", d->interpreter_frame.tlbc_index, offsetof(spprof__py_iframe, tlbc_index));
    SPPROF__PY_CMP("PyCodeObject.co_tlbc", d->code_object.co_tlbc, offsetof(PyCodeObject, co_tlbc));
#  endif
#  undef SPPROF__PY_CMP
    for (i = 0; i < k; i++) {
        if (c[i].runtime != c[i].compiled) {
            snprintf(err, n, "the running CPython (version 0x%llx) lays out %s at %llu, this build of spprof expects %llu: "
                     "rebuild spprof against this interpreter's headers", (unsigned long long)d->version, c[i].what,
                     (unsigned long long)c[i].runtime, (unsigned long long)c[i].compiled);
            return -1;
        }
    }
    return 0;
}

static const spprof__py_dbgoff *spprof__py_live_offsets(void) {
#  if SPPROF__OS_WINDOWS
    /* exported by python3X.dll, the module that holds PyCode_Type */
    HMODULE py = NULL;
    FARPROC p;
    const void *v = NULL;
    if (!GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                            (LPCWSTR)(const void *)&PyCode_Type, &py))
        return NULL;
    p = GetProcAddress(py, "_PyRuntime");
    memcpy(&v, &p, sizeof v);
    return (const spprof__py_dbgoff *)v;
#  else
    return (const spprof__py_dbgoff *)dlsym(RTLD_DEFAULT, "_PyRuntime");  /* debug_offsets is its first member */
#  endif
}
#endif

/* Checks the compiled-in layout against the running interpreter (3.13+; nothing to check before). Returns
   SPPROF_OK, or SPPROF_ERR_UNSUPPORTED with the difference in spprof_last_error(). */
SPPROF_API spprof_result spprof_py_check_layout(void) {
#ifdef SPPROF__PY_DEBUG_OFFSETS
    char err[320];
    const spprof__py_dbgoff *d = spprof__py_live_offsets();
    if (!d) {  /* not exported (a static embedding without -rdynamic): no evidence either way */
        SPPROF_LOG("_PyRuntime is not visible to dlsym: the frame layout cannot be cross-checked against debug_offsets");
        return SPPROF_OK;
    }
    if (spprof__py_check_offsets(d, err, sizeof err) != 0) return spprof__fail(SPPROF_ERR_UNSUPPORTED, "spprof: %s", err);
#endif
    return SPPROF_OK;
}

/* ==== @walk ===========================================================================================
   Each Python frame: addr = code object, aux = instruction offset (code units), kind = SPPROF_FRAME_PYTHON
   with a 16-bit fingerprint of the code object (first line, size, qualname object) in the high bits. An
   address that now holds another code object is caught by the fingerprint when it is resolved. */
/* The "seen" bitmap: one bit per hash of a code-object address, set by the signal handler for every code
   object it records (a relaxed load, then one atomic OR only when the bit is not set yet: lock-free, so
   async-signal-safe) and read when a code object dies (@pin: a sampled code object is kept alive instead of
   freed, so that its name, file and line table can still be read when the profile is written). 2^20 bits
   (128 KiB, .bss: only the pages of bits set are touched); cleared when the code objects of the previous
   profile are released. A bit set by another code object with the same hash only keeps an unsampled code
   object alive too (a false positive costs memory, never a wrong name). */
#define SPPROF__PY_SEEN_LOG2 20
static uint64_t spprof__py_seen[(1u << SPPROF__PY_SEEN_LOG2) / 64];
static uint32_t spprof__py_seen_hash(const void *co) {
    return (uint32_t)((((uint64_t)(uintptr_t)co >> 4) * 0x9e3779b97f4a7c15ull) >> (64 - SPPROF__PY_SEEN_LOG2));
}
static void spprof__py_mark_seen(const void *co) {  /* [signal-safe] */
    uint32_t h = spprof__py_seen_hash(co);
    uint64_t bit = 1ull << (h & 63);
    if (!(SPPROF__LOADR(&spprof__py_seen[h >> 6]) & bit)) __atomic_fetch_or(&spprof__py_seen[h >> 6], bit, __ATOMIC_RELEASE);
}
static int spprof__py_maybe_seen(const void *co) {
    uint32_t h = spprof__py_seen_hash(co);
    return (SPPROF__LOAD(&spprof__py_seen[h >> 6]) >> (h & 63)) & 1;
}
/* The memory profiler's own bitmap, same hashing: code objects of stacks read without the GIL (@memprof's
   spprof__py_mem_walk cannot take references then); while spprof__py_mkeep_on, the death hook (@pin) keeps a
   marked code object that dies. Separate from the CPU profiler's: each is cleared by its own profiler's start. */
static uint64_t spprof__py_mseen[(1u << SPPROF__PY_SEEN_LOG2) / 64];
static uint32_t spprof__py_mkeep_on;
static void spprof__py_mark_mseen(const void *co) {  /* [hook] */
    uint32_t h = spprof__py_seen_hash(co);
    uint64_t bit = 1ull << (h & 63);
    if (!(SPPROF__LOADR(&spprof__py_mseen[h >> 6]) & bit)) __atomic_fetch_or(&spprof__py_mseen[h >> 6], bit, __ATOMIC_RELEASE);
}
static int spprof__py_maybe_mseen(const void *co) {
    uint32_t h = spprof__py_seen_hash(co);
    return (SPPROF__LOAD(&spprof__py_mseen[h >> 6]) >> (h & 63)) & 1;
}

static uint32_t spprof__py_fingerprint(const PyCodeObject *co) {
    uint64_t h = ((uint64_t)(uint32_t)co->co_firstlineno << 32) ^ SPPROF__PY_FP_SIZE(co) ^ ((uint64_t)(uintptr_t)SPPROF__PY_NAME(co) >> 3);
    h ^= h >> 33; h *= 0xff51afd7ed558ccdull; h ^= h >> 33;
    return (uint32_t)(h & 0xffffu);
}

/* Run boundaries: the Python frames of one call of the interpreter loop (_PyEval_EvalFrameDefault) form a
   run. 3.9/3.10: every frame is evaluated by its own call. 3.11: the outermost frame of a call has is_entry.
   3.12/3.13: each call pushes a C-stack-owned frame (shim / entry frame) below its frames; 3.14: an
   interpreter-owned entry frame. SPPROF__PY_RUN_ENDS_AFTER(f) is true for a recorded frame that closes its
   run; SPPROF__PY_IS_BOUNDARY(f) for a skipped frame that does. */
#if PY_VERSION_HEX < 0x030B0000
#  define SPPROF__PY_RUN_ENDS_AFTER(f) 1
#  define SPPROF__PY_IS_BOUNDARY(f) 0
#elif PY_VERSION_HEX < 0x030C0000
#  define SPPROF__PY_RUN_ENDS_AFTER(f) ((f)->is_entry)
#  define SPPROF__PY_IS_BOUNDARY(f) 0
#else
#  define SPPROF__PY_RUN_ENDS_AFTER(f) 0
#  define SPPROF__PY_IS_BOUNDARY(f) SPPROF__PY_SKIP(f)
#endif

/* Walks the thread's Python frames, leaf first, into frames[0, max). With run_ends: run_ends[k] = index one
   past the last frame of run k (leaf run first), *nruns = runs (a run cut short by max is closed). Returns the
   number of frames, -1 on a torn/stale read or fault, -2 when the thread has no Python frames. */
/* ctx NULL: the calling thread's own frames, read synchronously (the memory profiler's hooks). Nothing else
   changes them meanwhile, and each frame holds a reference to its code object: no guard needed. */
#if SPPROF__OS_LINUX
#  define SPPROF__PY_UNGUARD() do { if (ctx) spprof_guard_release(&g); } while (0)
#else
#  define SPPROF__PY_UNGUARD() do { } while (0)
#endif
/* ts: the thread state whose frames are read (spprof__py_walk_frames: the calling thread's own). */
static int spprof__py_walk_ts(PyThreadState *ts, const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames,
                              uint16_t *run_ends, int max_runs, int *nruns) {
#if SPPROF__OS_LINUX
    spprof_guard g;
#endif
    volatile int n = 0, r = 0;
    const SPPROF__PY_FRAME *f;
    int steps;
    if (nruns) *nruns = 0;
    if (max_frames <= 0) return -1;
    if (!ts) return -2;  /* a thread that never ran Python */
#if SPPROF__OS_LINUX
    if (ctx) {  /* another thread's frames, read from a signal handler: under the fault guard */
        if (!spprof_guard_claim(&g, ctx->tid)) return -1;
        if (sigsetjmp(g.env, 1)) { SPPROF__PY_UNGUARD(); return -1; }  /* a read faulted: drop the sample */
    }
#else
    if (ctx) return -1;  /* elsewhere another thread's frames are read by spprof__py_walk_ext */
#endif
    f = SPPROF__PY_TOP_FRAME(ts);
    /* Bounded: at most max_frames recorded and 4 * max_frames + 64 frames visited (skipped ones included). */
    for (steps = 0; f && n < max_frames && steps < 4 * max_frames + 64; steps++, f = SPPROF__PY_PREV(f)) {
        const PyObject *ex;
        const PyCodeObject *co;
        ptrdiff_t off;
        int skip;
        if (((uintptr_t)f & (sizeof(void *) - 1)) != 0) { SPPROF__PY_UNGUARD(); return -1; }
        skip = SPPROF__PY_SKIP(f);
        if (skip < 0) { SPPROF__PY_UNGUARD(); return -1; }  /* not a frame: torn or stale */
        if (skip) {                                              /* a C-stack or interpreter entry frame */
            if (run_ends && SPPROF__PY_IS_BOUNDARY(f) && r < max_runs && n > (r ? run_ends[r - 1] : 0)) run_ends[r++] = (uint16_t)n;
            continue;
        }
        ex = SPPROF__PY_EXEC(f);
        if (!ex || ((uintptr_t)ex & (sizeof(void *) - 1)) != 0 || Py_TYPE(ex) != &PyCode_Type) {
            SPPROF__PY_UNGUARD();
            return -1;  /* torn or stale: drop rather than guess */
        }
        co = (const PyCodeObject *)ex;
        if (SPPROF__PY_INCOMPLETE(f, co)) continue;  /* being set up: not yet running Python code */
        off = SPPROF__PY_OFFSET(f, co);
        if (off < 0 || off >= SPPROF__PY_NUNITS(co)) off = 0;
        frames[n].addr = (uint64_t)(uintptr_t)co;
        frames[n].aux = (uint32_t)off;
        frames[n].kind = SPPROF_FRAME_PYTHON | (spprof__py_fingerprint(co) << 16);
        if (ctx) spprof__py_mark_seen(co);  /* before the sample is published: see @pin's death hook */
        n++;
        if (run_ends && SPPROF__PY_RUN_ENDS_AFTER(f) && r < max_runs) run_ends[r++] = (uint16_t)n;
    }
    SPPROF__PY_UNGUARD();
    if (run_ends && n > (r ? run_ends[r - 1] : 0) && r < max_runs) run_ends[r++] = (uint16_t)n;
    if (nruns) *nruns = r;
    return n ? n : -2;
}
#undef SPPROF__PY_UNGUARD

static uint32_t spprof__py_hook_on;  /* the death hook is installed (@pin): the pinning thread is not needed */

#if !SPPROF__OS_LINUX
/* ---- The external sampler's walk (Windows; the macOS sampler is meant to share it) ----------------------
   No code runs on the sampled thread: spprof.h's sampler thread suspends it (SuspendThread, then
   GetThreadContext, which returns once it is really stopped), calls the walker with ctx->tid = its native
   thread id, and resumes it. While it is suspended, the walker must not take a lock it could hold (heap,
   loader, stdio, the GIL, any Python API) and must not allocate: this code calls nothing but
   spprof__os_read_mem (ReadProcessMemory on Windows: a system call on the own process, no user-mode lock,
   no allocation; a bad address fails softly instead of faulting) and reads its own lock-free table.
   - Its PyThreadState comes from spprof__py_tstab (native thread id -> thread state), filled off the hot
     path: under the GIL when profiling starts and when a thread registers itself (spprof.register_thread, the
     package's thread hook), and by the sampler between suspensions (spprof__py_ts_refresh, from the drain
     hook, when a sampled thread had no entry). The entry is trusted only if the copied thread state's
     native_thread_id is the suspended thread's (an entry of a thread that exited, its id now reused, is not).
   - Every struct is copied before anything in it is used: the thread state; the top of its data stack,
     which holds the frames of calls, in one read (SPPROF_PY_DATASTACK_COPY); other frames (generators')
     one read each; a code object once per session (spprof__py_cocache). 3 reads per sample at any depth.
     Pointers are checked for alignment, a code object by its type (&PyCode_Type), the chain is bounded as
     in the handler's walk.
     The suspended thread's chain stands still (its frames are its own, each holds a reference to its code
     object); a half-done push at the instant of suspension gives a torn read, which these checks drop.
   Only the 3.13 layout is read this way (the version the Windows build is made and tested for): 3.11 and
   3.12 keep the top frame behind tstate->cframe, 3.14 tags f_executable. */
#  if PY_VERSION_HEX < 0x030D0000 || PY_VERSION_HEX >= 0x030E0000
#    error "spprof_python.h: outside Linux (the suspending sampler), CPython 3.13 is supported"
#  endif
#  ifndef SPPROF_PY_TSTATE_SLOTS
#    define SPPROF_PY_TSTATE_SLOTS 4096  /* threads with a thread state the sampler can find (power of 2) */
#  endif
typedef struct spprof__py_tsent { int tid; PyThreadState *ts; } spprof__py_tsent;
static spprof__py_tsent spprof__py_tstab[SPPROF_PY_TSTATE_SLOTS];
static uint32_t spprof__py_ts_missing;  /* a sampled thread had no (valid) entry: refresh at the next drain */
/* _PyRuntime.debug_offsets, looked up by spprof_py_start (GetProcAddress takes the loader lock: never on the
   sampler thread) */
static const spprof__py_dbgoff *spprof__py_offs;

/* Any thread: records (or updates) tid's thread state. Lock-free: a slot is claimed by CAS on its tid,
   entries are never removed (a stale one is caught by the native_thread_id check). Full table: dropped. */
static void spprof__py_ts_put(int tid, PyThreadState *ts) {
    unsigned i, k;
    if (tid <= 0) return;
    for (k = 0, i = (unsigned)tid & (SPPROF_PY_TSTATE_SLOTS - 1); k < SPPROF_PY_TSTATE_SLOTS;
         k++, i = (i + 1) & (SPPROF_PY_TSTATE_SLOTS - 1)) {
        int cur = SPPROF__LOAD(&spprof__py_tstab[i].tid);
        if (cur == 0) {
            int expect = 0;
            if (__atomic_compare_exchange_n(&spprof__py_tstab[i].tid, &expect, tid, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                cur = tid;
            else
                cur = expect;
        }
        if (cur == tid) {
            SPPROF__STORE(&spprof__py_tstab[i].ts, ts);
            return;
        }
    }
}

/* [suspended-safe] tid's thread state as last recorded, or NULL. */
static PyThreadState *spprof__py_ts_get(int tid) {
    unsigned i, k;
    for (k = 0, i = (unsigned)tid & (SPPROF_PY_TSTATE_SLOTS - 1); k < SPPROF_PY_TSTATE_SLOTS;
         k++, i = (i + 1) & (SPPROF_PY_TSTATE_SLOTS - 1)) {
        int cur = SPPROF__LOAD(&spprof__py_tstab[i].tid);
        if (cur == tid) return SPPROF__LOAD(&spprof__py_tstab[i].ts);
        if (cur == 0) return NULL;
    }
    return NULL;
}

/* [GIL] Every thread state of the main interpreter into the table. */
static void spprof__py_ts_snapshot(void) {
    PyInterpreterState *interp = PyInterpreterState_Main();
    PyThreadState *t = interp ? PyInterpreterState_ThreadHead(interp) : NULL;
    int k;
    for (k = 0; t && k < 100000; k++, t = PyThreadState_Next(t)) spprof__py_ts_put((int)t->native_thread_id, t);
}

/* Sampler thread, between suspensions, without the GIL: the interpreter's thread list followed with copies
   (offsets from _PyRuntime.debug_offsets, the interpreter state being opaque), bounded: threads come and go
   meanwhile, a torn list ends the pass early, the next one completes it. */
static void spprof__py_ts_refresh(void) {
    const spprof__py_dbgoff *d = (const spprof__py_dbgoff *)SPPROF__LOAD(&spprof__py_offs);
    const char *interp = (const char *)PyInterpreterState_Main();  /* a plain read of _PyRuntime */
    const char *t = NULL;
    int k;
    if (!d || !interp) return;
    if (!spprof__os_read_mem(&t, interp + d->interpreter_state.threads_head, sizeof t)) return;
    for (k = 0; t && k < 4096; k++) {
        unsigned long tid = 0;
        const char *next = NULL;
        if (((uintptr_t)t & (sizeof(void *) - 1)) != 0) return;
        if (!spprof__os_read_mem(&tid, t + d->thread_state.native_thread_id, sizeof tid) ||
            !spprof__os_read_mem(&next, t + d->thread_state.next, sizeof next))
            return;
        spprof__py_ts_put((int)tid, (PyThreadState *)(uintptr_t)t);
        t = next;
    }
}

/* What the walk needs of a code object, kept by the sampler thread (the only caller of the walk) so that a
   code object seen before costs no read (each read is a system call: 12 us under wine). Valid for the session
   only where the death hook is installed (@pin): every code object in it was marked seen before it was
   entered, so if it dies during the session it is kept alive and pinned, and its address cannot be taken by
   another object. Cleared by spprof_py_start before the sampler runs. Direct-mapped, 1024 entries. */
typedef struct spprof__py_cocache { const void *co; uint32_t fp; int32_t nunits, first_traceable; } spprof__py_cocache;
static spprof__py_cocache spprof__py_cocache_tab[1024];
/* The top of the thread's data stack (the chunk its frames are pushed on), copied with one read before the
   frames are followed: the frames of function calls lie there, next to each other (generators' frames live
   in their generator objects and are read one by one). Owned by the sampler thread, like the cache. */
#ifndef SPPROF_PY_DATASTACK_COPY
#  define SPPROF_PY_DATASTACK_COPY (16u << 10)  /* one read of 16 KiB costs what one of 256 bytes does */
#endif
static char spprof__py_dsbuf[SPPROF_PY_DATASTACK_COPY];
static unsigned long long spprof__py_ext_reads;  /* spprof__os_read_mem calls of the walk (stats: ext_reads) */

/* [suspended-safe] spprof__os_read_mem, counted */
static int spprof__py_read(void *dst, const void *src, size_t n) {
    spprof__py_ext_reads++;
    return spprof__os_read_mem(dst, src, n);
}

/* [suspended-safe] The Python frames of suspended thread tid (see above); as spprof__py_walk_ts. */
static int spprof__py_walk_ext(int tid, spprof_frame *frames, int max_frames, uint16_t *run_ends, int max_runs,
                               int *nruns) {
    PyThreadState *tsp = spprof__py_ts_get(tid);
    PyThreadState ts;
    spprof__py_iframe f;
    PyCodeObject co;
    const spprof__py_iframe *fa;
    spprof__py_cocache *ce;
    uintptr_t ds_lo, ds_hi;
    int n = 0, r = 0, steps;
    if (nruns) *nruns = 0;
    if (max_frames <= 0) return -1;
    if (!tsp || !spprof__py_read(&ts, tsp, sizeof ts) || ts.native_thread_id != (unsigned long)tid) {
        SPPROF__STORER(&spprof__py_ts_missing, 1u);
        return -2;  /* not found (yet): its native stack */
    }
    {   /* [ds_lo, ds_hi): the part of the current data-stack chunk below its top, copied in one read */
        uintptr_t c = (uintptr_t)ts.datastack_chunk, top = (uintptr_t)ts.datastack_top;
        uintptr_t base = c + offsetof(_PyStackChunk, data);
        ds_lo = ds_hi = 0;
        if (c && ((c | top) & (sizeof(void *) - 1)) == 0 && top > base && top - base < ((uintptr_t)1 << 30)) {
            ds_lo = top - base > SPPROF_PY_DATASTACK_COPY ? top - SPPROF_PY_DATASTACK_COPY : base;
            ds_hi = top;
            if (!spprof__py_read(spprof__py_dsbuf, (const void *)ds_lo, ds_hi - ds_lo)) ds_lo = ds_hi = 0;
        }
    }
    fa = SPPROF__PY_TOP_FRAME(&ts);
    for (steps = 0; fa && n < max_frames && steps < 4 * max_frames + 64; steps++, fa = SPPROF__PY_PREV(&f)) {
        const PyObject *ex;
        const spprof__py_codeunit *first;
        ptrdiff_t off;
        uintptr_t a = (uintptr_t)fa;
        if ((a & (sizeof(void *) - 1)) != 0) return -1;
        if (a >= ds_lo && a < ds_hi && ds_hi - a >= sizeof f)
            memcpy(&f, spprof__py_dsbuf + (a - ds_lo), sizeof f);  /* in the copy of the data stack */
        else if (!spprof__py_read(&f, fa, sizeof f))
            return -1;
        if (SPPROF__PY_SKIP(&f)) {  /* an entry frame of the C stack: a run boundary */
            if (run_ends && r < max_runs && n > (r ? run_ends[r - 1] : 0)) run_ends[r++] = (uint16_t)n;
            continue;
        }
        ex = SPPROF__PY_EXEC(&f);
        if (!ex || ((uintptr_t)ex & (sizeof(void *) - 1)) != 0) return -1;
        ce = &spprof__py_cocache_tab[((uintptr_t)ex >> 4) & 1023];
        if (ce->co != ex || !SPPROF__LOADR(&spprof__py_hook_on)) {
            if (!spprof__py_read(&co, ex, sizeof co) || Py_TYPE((PyObject *)&co) != &PyCode_Type)
                return -1;  /* torn or stale: drop rather than guess */
            spprof__py_mark_seen(ex);  /* before it is cached (see spprof__py_cocache) */
            ce->co = ex;
            ce->fp = spprof__py_fingerprint(&co);
            ce->nunits = (int32_t)SPPROF__PY_NUNITS(&co);
            ce->first_traceable = co._co_firsttraceable;
        }
        /* the bytecode of the real object (co is a copy of its fixed part) */
        first = (const spprof__py_codeunit *)(const void *)((const char *)ex + offsetof(PyCodeObject, co_code_adaptive));
        if (f.owner != SPPROF__PY_OWNED_BY_GENERATOR && f.instr_ptr < first + ce->first_traceable) continue;
        off = f.instr_ptr - first;
        if (off < 0 || off >= ce->nunits) off = 0;
        frames[n].addr = (uint64_t)(uintptr_t)ex;
        frames[n].aux = (uint32_t)off;
        frames[n].kind = SPPROF_FRAME_PYTHON | (ce->fp << 16);
        spprof__py_mark_seen(ex);
        n++;
    }
    if (run_ends && n > (r ? run_ends[r - 1] : 0) && r < max_runs) run_ends[r++] = (uint16_t)n;
    if (nruns) *nruns = r;
    return n ? n : -2;
}
#endif /* !SPPROF__OS_LINUX */

static int spprof__py_walk_frames(const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames,
                                  uint16_t *run_ends, int max_runs, int *nruns) {
#if !SPPROF__OS_LINUX
    if (ctx) return spprof__py_walk_ext(ctx->tid, frames, max_frames, run_ends, max_runs, nruns);
#endif
    /* this thread's own state (TSS), or NULL */
    return spprof__py_walk_ts(PyGILState_GetThisThreadState(), ctx, frames, max_frames, run_ends, max_runs, nruns);
}

/* Wall mode, a thread blocked in the kernel (spprof.h's @offcpu; runs on the collector thread, not in a
   signal handler, without the GIL): its Python frames, read from its thread state. The thread does not run
   while it is blocked, so its frame chain stands still (the collector trusts the sample only if the thread's
   CPU clock did not move during the reads); thread states and frames of other threads may change, so every
   read is under the fault guard and checked as in the handler. The thread state is found by native thread
   id (PyThreadState.native_thread_id, 3.11+; before, through its pthread_t's CPU clock id). */
#if SPPROF__OS_LINUX
static PyThreadState *spprof__py_offcpu_tstate(int tid, spprof_walk_ctx *ctx) {
    spprof_guard g;
    PyThreadState *volatile ts = NULL;
    PyInterpreterState *interp = PyInterpreterState_Main();
    int k;
    memset(ctx, 0, sizeof *ctx);
    ctx->tid = spprof_gettid();  /* the guard is keyed by the thread that reads */
    if (!interp || !spprof_guard_claim(&g, ctx->tid)) return NULL;
    if (sigsetjmp(g.env, 1)) { spprof_guard_release(&g); return NULL; }
    {
        PyThreadState *t = PyInterpreterState_ThreadHead(interp);
        for (k = 0; t && k < 100000; k++, t = PyThreadState_Next(t)) {  /* bounded: a torn list cannot loop */
#if PY_VERSION_HEX >= 0x030B0000
            if (t->native_thread_id == (unsigned long)tid) { ts = t; break; }
#else
            /* before 3.11 a thread state knows its pthread_t only: glibc's pthread_getcpuclockid gives the
               CPU clock of that thread, which encodes its tid (the encoding of spprof__thread_cpu_ns) */
            clockid_t c;
            if (pthread_getcpuclockid((pthread_t)t->thread_id, &c) == 0 && c == (clockid_t)((~(unsigned)tid << 3) | 6u)) {
                ts = t;
                break;
            }
#endif
        }
    }
    spprof_guard_release(&g);
    return ts;
}

static int spprof__py_offcpu_walk(int tid, spprof_frame *frames, int nnative, int max_frames, void *user) {
    spprof_frame py[SPPROF_MAX_DEPTH_LIMIT];
    spprof_walk_ctx ctx;
    PyThreadState *ts;
    int n;
    (void)nnative; (void)user;
    if (max_frames > SPPROF_MAX_DEPTH_LIMIT || !(ts = spprof__py_offcpu_tstate(tid, &ctx))) return 0;
    n = spprof__py_walk_ts(ts, &ctx, py, max_frames, NULL, 0, NULL);
    if (n <= 0) return 0;  /* no Python frame (or a torn read): the native stack stays */
    memcpy(frames, py, (size_t)n * sizeof *frames);
    return n;
}
#endif /* SPPROF__OS_LINUX */

SPPROF_API int spprof_py_walk(const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames) {
    int n = spprof__py_walk_frames(ctx, frames, max_frames, NULL, 0, NULL);
    /* No Python frame running (a thread that never ran Python, an embedding program in its own C code): its
       native stack is the truth. */
    return n == -2 ? spprof_walk_native(ctx, frames, max_frames) : n;
}

#ifdef SPPROF_USE_LIBUNWIND
#  define SPPROF__LIBUNWIND_OR_FP(ctx, fr, n) spprof_walk_libunwind((ctx), (fr), (n))
#else
#  define SPPROF__LIBUNWIND_OR_FP(ctx, fr, n) spprof_walk_native((ctx), (fr), (n))
#endif

/* ==== @mixed ==========================================================================================
   native=True: one stack in call order. The native walk (frame pointers, or libunwind with
   SPPROF_USE_LIBUNWIND) gives every C frame; each frame of the interpreter loop is replaced by the run of
   Python frames that call of the loop was running (leaf run for the innermost loop frame, and so on).
   If the number of loop frames differs from the number of runs (code without frame pointers hides loop
   frames; a walk cut short), the runs are still matched from the leaf, the remaining runs (or loop frames)
   are kept, and a marker frame at the root says so: "[mixed stack: E interpreter frames, R Python runs]".

   Memory in the handler: the native frames go to a scratch array on the signal stack (SPPROF_PY_NATIVE_MAX
   frames of 16 bytes), the Python frames to the end of the output buffer; the merge writes the output from
   its start and never overtakes the Python frames it has not read yet (it writes at most as many frames as
   precede them). */
#ifndef SPPROF_PY_NATIVE_MAX
#  define SPPROF_PY_NATIVE_MAX 128
#endif
#define SPPROF__PY_MARK_ADDR 1u  /* a PYTHON-kind frame with addr 1: the merge marker; aux = E << 16 | R */

/* [lo, hi) of _PyEval_EvalFrameDefault's code, and of its "_PyEval_EvalFrameDefault.cold" part when GCC split
   the rarely run blocks off (a call made from there returns there) */
static uintptr_t spprof__py_eval_lo, spprof__py_eval_hi, spprof__py_cold_lo, spprof__py_cold_hi;
#define SPPROF__PY_EVAL_CHUNKS 16
static uintptr_t spprof__py_eval_chunks[2 * SPPROF__PY_EVAL_CHUNKS];  /* Windows: its other parts */
static int spprof__py_neval_chunks;

/* Finds the interpreter loop's address range (its ELF symbol size), once, outside the handler. */
static int spprof__py_find_eval(void) {
#if SPPROF__OS_LINUX
    Dl_info info;
    const ElfW(Sym) *sym = NULL;
    void *p;
    if (spprof__py_eval_hi) return 1;
    p = dlsym(RTLD_DEFAULT, "_PyEval_EvalFrameDefault");
    if (!p || !dladdr1(p, &info, (void **)&sym, RTLD_DL_SYMENT) || !sym || !sym->st_size) return 0;
    spprof__py_eval_lo = (uintptr_t)p;
    spprof__py_eval_hi = (uintptr_t)p + (uintptr_t)sym->st_size;
    spprof_symbol_range((uintptr_t)p, "_PyEval_EvalFrameDefault.cold", &spprof__py_cold_lo, &spprof__py_cold_hi);
    return 1;
#elif SPPROF__OS_WINDOWS
    /* python3X.dll exports it; its extent comes from the DLL's unwind table (.pdata): the entry that holds
       its first byte, plus every entry whose unwind data chains to that one (the blocks an optimizing
       compiler moves away from the function, e.g. MSVC's profile-guided builds: calls made from there return
       there). At most 1 + SPPROF__PY_EVAL_CHUNKS ranges; more are ignored (those frames then stay native). */
    HMODULE py = NULL;
    FARPROC fp;
    void *p = NULL;
    DWORD64 base = 0;
    const RUNTIME_FUNCTION *root, *rf;
    const IMAGE_NT_HEADERS *nt;
    const IMAGE_DATA_DIRECTORY *dd;
    uint32_t i, nrf;
    if (spprof__py_eval_hi) return 1;
    if (!GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                            (LPCWSTR)(const void *)&PyCode_Type, &py) ||
        !(fp = GetProcAddress(py, "_PyEval_EvalFrameDefault")))
        return 0;
    memcpy(&p, &fp, sizeof p);
    root = RtlLookupFunctionEntry((DWORD64)(uintptr_t)p, &base, NULL);
    if (!root || base != (DWORD64)(uintptr_t)py) return 0;
    nt = (const IMAGE_NT_HEADERS *)((uintptr_t)py + (uintptr_t)((const IMAGE_DOS_HEADER *)(uintptr_t)py)->e_lfanew);
    dd = &nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_EXCEPTION];
    rf = (const RUNTIME_FUNCTION *)((uintptr_t)py + dd->VirtualAddress);
    nrf = dd->Size / (uint32_t)sizeof(RUNTIME_FUNCTION);
    spprof__py_neval_chunks = 0;
    for (i = 0; i < nrf && spprof__py_neval_chunks < SPPROF__PY_EVAL_CHUNKS; i++) {
        const RUNTIME_FUNCTION *e = &rf[i];
        int depth;
        if (e->BeginAddress == root->BeginAddress) continue;
        for (depth = 0; depth < 8; depth++) {  /* follow the chain (bounded) to its primary entry */
            const uint8_t *ui;
            if (e->UnwindData & 1u) {  /* an entry that points at another entry instead of unwind data */
                e = (const RUNTIME_FUNCTION *)((uintptr_t)py + (e->UnwindData & ~1u));
                continue;
            }
            ui = (const uint8_t *)((uintptr_t)py + e->UnwindData);
            if (!((ui[0] >> 3) & UNW_FLAG_CHAININFO)) break;
            e = (const RUNTIME_FUNCTION *)(const void *)(ui + 4 + 2 * (((unsigned)ui[2] + 1u) & ~1u));
        }
        if (e->BeginAddress == root->BeginAddress && e != &rf[i]) {
            spprof__py_eval_chunks[2 * spprof__py_neval_chunks] = (uintptr_t)py + rf[i].BeginAddress;
            spprof__py_eval_chunks[2 * spprof__py_neval_chunks + 1] = (uintptr_t)py + rf[i].EndAddress;
            spprof__py_neval_chunks++;
        }
    }
    spprof__py_eval_lo = (uintptr_t)py + root->BeginAddress;
    spprof__py_eval_hi = (uintptr_t)py + root->EndAddress;
    return 1;
#else
    return 0;
#endif
}

static int spprof__py_in_eval(const spprof_frame *f) {
    uint64_t pc = (f->aux & SPPROF_AUX_RETADDR) ? f->addr - 1 : f->addr;
    int i;
    if (SPPROF_FRAME_KIND(f->kind) != SPPROF_FRAME_NATIVE) return 0;
    if ((pc >= spprof__py_eval_lo && pc < spprof__py_eval_hi) || (pc >= spprof__py_cold_lo && pc < spprof__py_cold_hi)) return 1;
    for (i = 0; i < spprof__py_neval_chunks; i++)
        if (pc >= spprof__py_eval_chunks[2 * i] && pc < spprof__py_eval_chunks[2 * i + 1]) return 1;
    return 0;
}

static int spprof__py_merge(spprof_frame *frames, int max_frames, int pbase, int np, const uint16_t *run_ends,
                            int nruns, const spprof_frame *nat, int nn);

SPPROF_API int spprof_py_walk_mixed(const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames) {
    spprof_frame nat[SPPROF_PY_NATIVE_MAX];
    uint16_t run_ends[SPPROF_PY_NATIVE_MAX];
    int nn, np, nruns = 0, pbase, room;
    if (max_frames < 2) return spprof_py_walk(ctx, frames, max_frames);
    /* Python frames first, into the second half of the output (at most), native frames get the rest. */
    room = max_frames / 2;
    np = spprof__py_walk_frames(ctx, frames + (max_frames - room), room, run_ends, SPPROF_PY_NATIVE_MAX, &nruns);
    if (np == -1) return -1;
    if (np == -2) np = 0;
    pbase = max_frames - room;
    if (np > 0 && np < room) {  /* move them to the very end, so native frames get all the space before */
        memmove(frames + (max_frames - np), frames + pbase, (size_t)np * sizeof *frames);
        pbase = max_frames - np;
    }
    nn = SPPROF__LIBUNWIND_OR_FP(ctx, nat, max_frames - np < SPPROF_PY_NATIVE_MAX ? max_frames - np : SPPROF_PY_NATIVE_MAX);
    if (nn < 0) nn = 0;
    return spprof__py_merge(frames, max_frames, pbase, np, run_ends, nruns, nat, nn);
}

/* The merge of spprof_py_walk_mixed: the Python frames are in frames[pbase, pbase + np), in runs ending at
   run_ends[0, nruns); nat[0, nn) the native frames (not inside frames). Returns the merged count. */
static int spprof__py_merge(spprof_frame *frames, int max_frames, int pbase, int np, const uint16_t *run_ends,
                            int nruns, const spprof_frame *nat, int nn) {
    int evals = 0, i, o = 0, run = 0;
    for (i = 0; i < nn; i++) evals += spprof__py_in_eval(&nat[i]);
    /* Merge, leaf first. o <= pbase + (Python frames read) holds throughout: see @mixed. */
    for (i = 0; i < nn && o < max_frames; i++) {
        if (spprof__py_in_eval(&nat[i]) && run < nruns) {
            int from = run ? run_ends[run - 1] : 0, to = run_ends[run], k;
            for (k = from; k < to && o < max_frames; k++) frames[o++] = frames[pbase + k];
            run++;
            continue;
        }
        if (o >= pbase + (run ? run_ends[run - 1] : 0) && run < nruns) break;  /* would overwrite unread Python frames */
        frames[o++] = nat[i];
    }
    if (run < nruns || evals != nruns) {
        /* Runs without a loop frame (or loop frames without a run): keep the runs, then say so. */
        int k;
        for (k = run ? run_ends[run - 1] : 0; k < np && o < max_frames; k++) frames[o++] = frames[pbase + k];
        if (o >= max_frames) o = max_frames - 1;
        frames[o].addr = SPPROF__PY_MARK_ADDR;
        frames[o].aux = ((uint32_t)(evals > 0xffff ? 0xffff : evals) << 16) | (uint32_t)(nruns > 0xffff ? 0xffff : nruns);
        frames[o].kind = SPPROF_FRAME_PYTHON;
        o++;
    }
    return o;
}

/* Wall mode with native=True, a blocked thread (see spprof__py_offcpu_walk): its recovered native frames
   merged with its Python frames, as spprof_py_walk_mixed does in the handler. */
#if SPPROF__OS_LINUX
static int spprof__py_offcpu_walk_mixed(int tid, spprof_frame *frames, int nnative, int max_frames, void *user) {
    spprof_frame out[SPPROF_MAX_DEPTH_LIMIT];
    uint16_t run_ends[SPPROF_PY_NATIVE_MAX];
    spprof_walk_ctx ctx;
    PyThreadState *ts;
    int np, nruns = 0, pbase, room;
    (void)user;
    if (max_frames < 2 || max_frames > SPPROF_MAX_DEPTH_LIMIT || !(ts = spprof__py_offcpu_tstate(tid, &ctx))) return 0;
    room = max_frames / 2;
    np = spprof__py_walk_ts(ts, &ctx, out + (max_frames - room), room, run_ends, SPPROF_PY_NATIVE_MAX, &nruns);
    if (np <= 0) return 0;  /* no Python frame (or a torn read): the native stack stays */
    pbase = max_frames - room;
    if (np < room) {
        memmove(out + (max_frames - np), out + pbase, (size_t)np * sizeof *out);
        pbase = max_frames - np;
    }
    if (nnative > max_frames - np) nnative = max_frames - np;
    if (nnative > SPPROF_PY_NATIVE_MAX) nnative = SPPROF_PY_NATIVE_MAX;
    np = spprof__py_merge(out, max_frames, pbase, np, run_ends, nruns, frames, nnative);
    memcpy(frames, out, (size_t)np * sizeof *frames);
    return np;
}
#endif /* SPPROF__OS_LINUX */

/* ==== @pin ============================================================================================
   A set of code objects we hold references to (open addressing on the pointer), touched only with the GIL. */
static PyObject **spprof__py_pins;
static size_t spprof__py_npins, spprof__py_pins_cap;
static uint32_t spprof__py_pinned_upto;   /* frames [0, upto) of the profile were looked at */
#if SPPROF__OS_LINUX
static int spprof__py_pipe[2] = {-1, -1};
#endif

/* The table is used by the pinning thread and by resolution (the CPU profile's, a memory snapshot's): with
   the GIL that is one at a time, on a free-threaded build it is not, hence the mutex. It is held only for the
   table itself (Py_INCREF inside, never a call that could run Python code or wait for the interpreter). */
static spprof__mutex spprof__py_pins_mu = SPPROF__MUTEX_INIT;

static int spprof__py_is_pinned(const void *p) {
    size_t i;
    int found = 0;
    spprof__lock(&spprof__py_pins_mu);
    if (spprof__py_pins_cap)
        for (i = ((uintptr_t)p >> 4) & (spprof__py_pins_cap - 1); spprof__py_pins[i]; i = (i + 1) & (spprof__py_pins_cap - 1))
            if (spprof__py_pins[i] == (PyObject *)p) { found = 1; break; }
    spprof__unlock(&spprof__py_pins_mu);
    return found;
}

/* Room for one more pin (the table at most half full); 0 when out of memory. */
static int spprof__py_pin_reserve_locked(void) {
    size_t i;
    if (spprof__py_npins + 1 > spprof__py_pins_cap / 2) {
        size_t ncap = spprof__py_pins_cap ? spprof__py_pins_cap * 2 : 1024, k;
        PyObject **t = (PyObject **)SPPROF_MALLOC(ncap * sizeof(PyObject *));
        if (!t) return 0;
        memset(t, 0, ncap * sizeof(PyObject *));
        for (k = 0; k < spprof__py_pins_cap; k++) {
            PyObject *q = spprof__py_pins[k];
            if (!q) continue;
            for (i = ((uintptr_t)q >> 4) & (ncap - 1); t[i]; i = (i + 1) & (ncap - 1)) {}
            t[i] = q;
        }
        SPPROF_FREE(spprof__py_pins);
        spprof__py_pins = t; spprof__py_pins_cap = ncap;
    }
    return 1;
}

/* Stores o, whose reference the table now owns (room reserved first). */
static void spprof__py_pin_insert_locked(PyObject *o) {
    size_t i;
    for (i = ((uintptr_t)o >> 4) & (spprof__py_pins_cap - 1); spprof__py_pins[i]; i = (i + 1) & (spprof__py_pins_cap - 1)) {}
    spprof__py_pins[i] = o;
    spprof__py_npins++;
}

static int spprof__py_pin_add_locked(PyObject *o) {
    if (!spprof__py_pin_reserve_locked()) return 0;
    Py_INCREF(o);
    spprof__py_pin_insert_locked(o);
    return 1;
}

static int spprof__py_pin_add(PyObject *o) {
    int r;
    spprof__lock(&spprof__py_pins_mu);
    r = spprof__py_pin_add_locked(o);
    spprof__unlock(&spprof__py_pins_mu);
    return r;
}

/* Is p a live code object? Copying its header through a pipe fails with EFAULT instead of faulting when the
   memory is gone (no ptrace permission needed, unlike process_vm_readv). Then the header must look alive:
   type == &PyCode_Type, and a plausible reference count. A freed block keeps its old type pointer, but its
   first word (ob_refcnt) becomes an allocator link: pymalloc's free-list pointer or NULL, glibc's tcache/bin
   pointer. Those are 0 or address-sized (>= 2^40 here), real counts are far smaller (immortal objects of
   3.12+ use 2^32-1), so Py_INCREF never lands on a free list. Memory reused by another code object passes:
   it is then resolved as that one (the risk every sampler that resolves after the fact takes). GIL held. */
static int spprof__py_code_alive(const void *p) {
    PyObject hdr;
#if SPPROF__OS_LINUX
    char sink[sizeof(PyObject)];
    ssize_t k;
    if (!p || ((uintptr_t)p & (sizeof(void *) - 1))) return 0;
    if (spprof__py_pipe[0] < 0 && pipe2(spprof__py_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return 0;
    k = write(spprof__py_pipe[1], p, sizeof hdr);
    if (k != (ssize_t)sizeof hdr) return 0;
    if (read(spprof__py_pipe[0], sink, sizeof sink) != (ssize_t)sizeof sink) return 0;
    memcpy(&hdr, sink, sizeof hdr);
#else
    if (!p || ((uintptr_t)p & (sizeof(void *) - 1)) || !spprof__os_read_mem(&hdr, p, sizeof hdr)) return 0;
#endif
    return Py_TYPE(&hdr) == &PyCode_Type && Py_REFCNT(&hdr) > 0 && (uint64_t)Py_REFCNT(&hdr) < (1ull << 40);
}

static void spprof__py_pin_one(uint32_t id, const spprof_frame *f, void *user) {
    int *count = (int *)user;
    (void)id;
    if (SPPROF_FRAME_KIND(f->kind) != SPPROF_FRAME_PYTHON || !f->addr || spprof__py_is_pinned((const void *)(uintptr_t)f->addr)) return;
    if (spprof__py_code_alive((const void *)(uintptr_t)f->addr) && spprof__py_pin_add((PyObject *)(uintptr_t)f->addr)) (*count)++;
}

static void spprof__py_count_frames(uint32_t id, const spprof_frame *f, void *user) {
    (void)f;
    *(uint32_t *)user = id + 1;
}

SPPROF_API int spprof_py_pin_code_objects(void) {
    int count = 0;
    uint32_t upto = spprof__py_pinned_upto;
    spprof_foreach_frame(spprof__py_pinned_upto, spprof__py_pin_one, &count);
    spprof_foreach_frame(upto, spprof__py_count_frames, &upto);
    spprof__py_pinned_upto = upto;
    return count;
}

/* ---- Code objects that die after being sampled ----
   A code object can die milliseconds after a sample recorded it (module and class bodies, functions that
   dataclasses, namedtuple and enum generate and drop, exec'd code, lambdas): before the collector has drained
   the sample and the pinning thread has taken the GIL. Then only the address was left ("<freed code
   object>": 82% of the samples of an import-heavy start-up). So the death itself is intercepted: when a code
   object whose bit is set in the seen bitmap (@walk) dies while a profile is held, it is kept alive instead
   and pinned, and is resolved like any other later, with its real name, file and line table.
   Why keep the object rather than copy its name and line table at death: the line table formats differ in
   every version (3.9 lnotab, 3.10 linetable, 3.11+ location table), and the pending samples' instruction
   offsets are not known at death (they may still be in the ring); a kept object is resolved by the same
   PyCode_Addr2Line as the living ones, and costs what pinning it 20 ms earlier would have cost.
   The cost for every other code object that dies: one hash and one load of the bitmap.
   - 3.13+: a code watcher (PyCode_AddWatcher); code_dealloc calls it with a count of 1 and lets the object
     live if the count is higher afterwards (its documented resurrection path; also what the free-threaded
     build does).
   - 3.9-3.12: no watcher can keep the object (3.12's code_dealloc frees it after notifying), so PyCode_Type's
     tp_dealloc is wrapped (with the GIL, once per process; never unwrapped, extension modules are never
     unloaded); the wrapper runs before anything is freed and revives the object the way CPython's own
     PyObject_CallFinalizerFromDealloc does (_Py_NewReference: count 1, plus the Py_REF_DEBUG/Py_TRACE_REFS
     bookkeeping).
   Both run with the GIL (or, free-threaded, an attached thread state): the pin table's mutex, no Python code,
   no exception state touched. On from start until stop has pinned every code object of the profile (the
   ring drained: no sample left that is not in the profile); after that a marked code object that dies is
   only one that shares a bit with a sampled one, and dies normally. Out of memory for the table: the
   object dies as before.
   The memory profiler uses the same hook for the code objects of stacks it read without the GIL (@memprof:
   no reference can be taken there): its own bitmap (spprof__py_mseen), on while a memory session's samples
   exist (spprof__py_mkeep_on, from spprof_py_mem_start to shutdown). Such a code object is kept in this
   table; when a CPU session's start releases the table, it dies, is seen again here and kept again. */
static uint32_t spprof__py_keep_on;

/* co is dying (count 0, or 1 inside 3.13's code_dealloc): returns 1 if it was pinned with a new reference. */
static int spprof__py_keep_dying(PyObject *co) {
    int ok;
    if (!(SPPROF__LOADR(&spprof__py_keep_on) && spprof__py_maybe_seen(co)) &&
        !(SPPROF__LOADR(&spprof__py_mkeep_on) && spprof__py_maybe_mseen(co)))
        return 0;
    spprof__lock(&spprof__py_pins_mu);
    ok = spprof__py_pin_reserve_locked();
    if (ok) {
#if PY_VERSION_HEX >= 0x030D0000
        Py_INCREF(co);  /* code_dealloc sees a count above the 1 it set and keeps the object */
#else
        _Py_NewReference(co);
#endif
        spprof__py_pin_insert_locked(co);
    }
    spprof__unlock(&spprof__py_pins_mu);
    return ok;
}

#if PY_VERSION_HEX >= 0x030D0000
static int spprof__py_code_watcher_id = -1;
static int spprof__py_code_watcher(PyCodeEvent ev, PyCodeObject *co) {
    if (ev == PY_CODE_EVENT_DESTROY) spprof__py_keep_dying((PyObject *)co);
    return 0;
}
#else
static destructor spprof__py_code_dealloc_next;
static void spprof__py_code_dealloc(PyObject *co) {
    if (!spprof__py_keep_dying(co)) spprof__py_code_dealloc_next(co);
}
#endif

/* [GIL] Once per process (3.13+: per interpreter, the first one that starts). Without the hook (all eight
   code watchers taken), the pinning thread alone protects code objects, as before. */
static void spprof__py_install_death_hook(void) {
#if PY_VERSION_HEX >= 0x030D0000
    static int tried;
    if (tried) return;
    tried = 1;
    spprof__py_code_watcher_id = PyCode_AddWatcher(spprof__py_code_watcher);
    if (spprof__py_code_watcher_id < 0) {
        PyErr_Clear();
        SPPROF_LOG("no code watcher left (PyCode_AddWatcher failed): code objects that die before the pinning "
                   "thread sees them will be unnamed");
    } else {
        SPPROF__STORE(&spprof__py_hook_on, 1u);
    }
#else
    if (PyCode_Type.tp_dealloc == spprof__py_code_dealloc) return;
    spprof__py_code_dealloc_next = PyCode_Type.tp_dealloc;
    PyCode_Type.tp_dealloc = spprof__py_code_dealloc;
    SPPROF__STORE(&spprof__py_hook_on, 1u);
#endif
}

SPPROF_API void spprof_py_release_code_objects(void) {
    size_t i, cap;
    PyObject **t;
    /* first stop keeping dying code objects, and forget what was sampled: the pins released below die now */
    SPPROF__STORE(&spprof__py_keep_on, 0u);
    memset(spprof__py_seen, 0, sizeof spprof__py_seen);
    spprof__lock(&spprof__py_pins_mu);
    t = spprof__py_pins; cap = spprof__py_pins_cap;
    spprof__py_pins = NULL; spprof__py_npins = spprof__py_pins_cap = 0;
    spprof__py_pinned_upto = 0;
    spprof__unlock(&spprof__py_pins_mu);
    for (i = 0; i < cap; i++) Py_XDECREF(t[i]);  /* outside the lock: a weakref callback may run */
    SPPROF_FREE(t);
}

/* The pinning thread: woken by the collector's drain hook when new frames were seen; takes the GIL and pins.
   One per process, started by the first spprof_py_start and kept (idle on a condition variable) between
   sessions. stop does not wait for it to get the GIL: on a free-threaded build PyGILState_Ensure can wait
   seconds to attach while another thread keeps requesting stop-the-world pauses (a gc.collect() loop did
   2.2 s). Instead each wake-up belongs to a session (spprof__py_pin_gen); stop moves the generation on and
   waits only while a pin is in progress (microseconds; the table is then stop's). A thread that gets its
   thread state after its session ended leaves the table alone. */
static unsigned spprof__py_pin_gen;  /* moved on by every start and stop */
static unsigned long long spprof__py_pin_passes;  /* passes of the pinning thread this session (stats) */
static uint32_t spprof__py_mpin_lock;  /* the memory profiler's pin table try-lock (@memprof) */
#if SPPROF__OS_LINUX
/* (Linux only: on Windows, 3.13's code watcher is the death hook, and without it code objects are pinned at
   stop and when a profile is read) */
static pthread_mutex_t spprof__py_pin_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t spprof__py_pin_cv = PTHREAD_COND_INITIALIZER;
static int spprof__py_pin_wake, spprof__py_pinning, spprof__py_pin_started;

static void *spprof__py_pin_main(void *arg) {
    sigset_t set;
    int sig;
    (void)arg;
    sigemptyset(&set);
    sigaddset(&set, SIGPROF);  /* never sampled, whatever signal a later session uses */
    for (sig = SIGRTMIN; sig <= SIGRTMAX; sig++) sigaddset(&set, sig);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    for (;;) {
        PyGILState_STATE st;
        unsigned gen;
        int mine;
        pthread_mutex_lock(&spprof__py_pin_mu);
        while (!spprof__py_pin_wake) pthread_cond_wait(&spprof__py_pin_cv, &spprof__py_pin_mu);
        spprof__py_pin_wake = 0;
        gen = spprof__py_pin_gen;
        pthread_mutex_unlock(&spprof__py_pin_mu);
        if (!Py_IsInitialized()) continue;
        st = PyGILState_Ensure();  /* may take long (see above); the session may have ended meanwhile */
        pthread_mutex_lock(&spprof__py_pin_mu);
        mine = gen == spprof__py_pin_gen;
        spprof__py_pinning = mine;
        pthread_mutex_unlock(&spprof__py_pin_mu);
        if (mine) {
            spprof_py_pin_code_objects();
            spprof__py_pin_passes++;  /* GIL held: read by stats() with the GIL */
        }
        pthread_mutex_lock(&spprof__py_pin_mu);
        spprof__py_pinning = 0;
        pthread_cond_broadcast(&spprof__py_pin_cv);
        pthread_mutex_unlock(&spprof__py_pin_mu);
        PyGILState_Release(st);
    }
    return NULL;
}
#endif /* SPPROF__OS_LINUX */

/* Collector thread, no GIL, no spprof lock held: wake the pinning thread when there are new frames, unless
   the death hook keeps every sampled code object that dies (then stop pins the living ones: nothing is lost by
   waiting, and the program's GIL is not taken from it every 20 ms). */
static void spprof__py_drain_hook(uint32_t nframes, void *user) {
    (void)user;
#if SPPROF__OS_LINUX
    if (SPPROF__LOADR(&spprof__py_hook_on)) return;
    if (nframes <= SPPROF__LOADR(&spprof__py_pinned_upto)) return;
    pthread_mutex_lock(&spprof__py_pin_mu);
    spprof__py_pin_wake = 1;
    pthread_cond_broadcast(&spprof__py_pin_cv);
    pthread_mutex_unlock(&spprof__py_pin_mu);
#else
    /* the sampler thread, no thread suspended: find the thread states of threads sampled without one */
    (void)nframes;
    if (SPPROF__LOADR(&spprof__py_ts_missing)) {
        SPPROF__STORER(&spprof__py_ts_missing, 0u);
        spprof__py_ts_refresh();
    }
#endif
}

#if SPPROF__OS_LINUX
/* Threads are not inherited by a fork child, and a condition variable that had a waiter (the pinning thread)
   must not be used again there: start over with fresh ones. */
static void spprof__py_atfork_child(void) {
    spprof__py_mpin_lock = 0;  /* the thread that held it does not exist here */
    pthread_mutex_init(&spprof__py_pins_mu, NULL);
    spprof__py_pinning = 0;
    spprof__py_pin_wake = 0;
    spprof__py_pin_started = 0;
    spprof__py_pin_gen++;
    pthread_mutex_init(&spprof__py_pin_mu, NULL);
    pthread_cond_init(&spprof__py_pin_cv, NULL);
}
static pthread_once_t spprof__py_atfork_once = PTHREAD_ONCE_INIT;
static void spprof__py_atfork_init(void) { pthread_atfork(NULL, NULL, spprof__py_atfork_child); }
#endif /* SPPROF__OS_LINUX */

SPPROF_API spprof_result spprof_py_start(const spprof_config *cfg) {
    spprof_result r;
#if SPPROF__OS_LINUX
    pthread_once(&spprof__py_atfork_once, spprof__py_atfork_init);
#endif
    r = spprof_py_check_layout();
    if (r != SPPROF_OK) return r;
    spprof_py_release_code_objects();  /* the previous profile is about to be cleared */
    spprof__py_install_death_hook();
    SPPROF__STORE(&spprof__py_keep_on, 1u);  /* before the first sample; bits are clear until then */
#if !SPPROF__OS_LINUX
    SPPROF__STORE(&spprof__py_offs, spprof__py_live_offsets());
    spprof__py_ts_snapshot();  /* before the first tick: the thread states of the threads there are */
    memset(spprof__py_cocache_tab, 0, sizeof spprof__py_cocache_tab);  /* the sampler is not running */
    spprof__py_ext_reads = 0;
#endif
    r = spprof_start(cfg);
    if (r != SPPROF_OK) return r;
#if SPPROF__OS_LINUX
    pthread_mutex_lock(&spprof__py_pin_mu);
    spprof__py_pin_gen++;
    spprof__py_pin_wake = 0;
    spprof__py_pin_passes = 0;
    if (!spprof__py_pin_started && !SPPROF__LOADR(&spprof__py_hook_on)) {  /* not needed with the hook */
        pthread_attr_t attr;
        pthread_t th;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        /* without the thread, code objects are still pinned (and validated) at stop */
        spprof__py_pin_started = pthread_create(&th, &attr, spprof__py_pin_main, NULL) == 0;
        pthread_attr_destroy(&attr);
    }
    pthread_mutex_unlock(&spprof__py_pin_mu);
#else
    spprof__py_pin_gen++;
    spprof__py_pin_passes = 0;
#endif
    return SPPROF_OK;
}

SPPROF_API spprof_result spprof_py_stop(void) {
    spprof_result r;
    Py_BEGIN_ALLOW_THREADS  /* the pinning thread may be waiting for the GIL */
    r = spprof_stop();
#if SPPROF__OS_LINUX
    pthread_mutex_lock(&spprof__py_pin_mu);
    spprof__py_pin_gen++;  /* retires this session's pinning thread */
    pthread_cond_broadcast(&spprof__py_pin_cv);
    while (spprof__py_pinning) pthread_cond_wait(&spprof__py_pin_cv, &spprof__py_pin_mu);
    pthread_mutex_unlock(&spprof__py_pin_mu);
#endif
    Py_END_ALLOW_THREADS
    if (r == SPPROF_OK) {
        spprof_py_pin_code_objects();
        SPPROF__STORE(&spprof__py_keep_on, 0u);  /* all pinned now (see the death hook) */
    }
    return r;
}

/* ==== @resolve ======================================================================================== */
static void spprof__py_copy_str(char *dst, size_t n, PyObject *s) {
    const char *u = (s && PyUnicode_Check(s)) ? PyUnicode_AsUTF8(s) : NULL;
    if (!u) { PyErr_Clear(); u = "?"; }
    snprintf(dst, n, "%s", u);
}

SPPROF_API int spprof_py_resolve(const spprof_frame *f, spprof_symbol *out, void *user) {
    PyCodeObject *co;
    (void)user;
    if (SPPROF_FRAME_KIND(f->kind) != SPPROF_FRAME_PYTHON) return 0;
    out->file[0] = 0; out->line = 0;
    if (!f->addr) { snprintf(out->name, sizeof out->name, "[native code]"); return 1; }
    if (f->addr == SPPROF__PY_MARK_ADDR) {
        snprintf(out->name, sizeof out->name, "[mixed stack: %u interpreter frames, %u Python runs]", f->aux >> 16, f->aux & 0xffffu);
        return 1;
    }
    co = (PyCodeObject *)(uintptr_t)f->addr;
    if (!spprof__py_is_pinned(co) && (!spprof__py_code_alive(co) || !spprof__py_pin_add((PyObject *)co))) {
        snprintf(out->name, sizeof out->name, "<freed code object 0x%llx>", (unsigned long long)f->addr);
        return 1;
    }
    /* Pinned or alive, but is it still the code object that was sampled? (The address may have been freed
       and reused before the pinning thread saw it.) */
    if ((f->kind >> 16) != spprof__py_fingerprint(co) || (Py_ssize_t)f->aux >= SPPROF__PY_NUNITS(co)) {
        snprintf(out->name, sizeof out->name, "<freed code object 0x%llx>", (unsigned long long)f->addr);
        return 1;
    }
    spprof__py_copy_str(out->name, sizeof out->name, SPPROF__PY_NAME(co));
    spprof__py_copy_str(out->file, sizeof out->file, co->co_filename);
    out->line = PyCode_Addr2Line(co, (int)(f->aux * sizeof(spprof__py_codeunit)));
    if (out->line < 0) out->line = co->co_firstlineno;
    return 1;
}

SPPROF_API int spprof_py_configure_mixed(spprof_config *cfg) {
    if (!spprof__py_find_eval()) return 0;
    spprof_py_configure(cfg);
    cfg->walker = spprof_py_walk_mixed;
#if SPPROF__OS_LINUX
    cfg->offcpu_walker = spprof__py_offcpu_walk_mixed;
#endif
    return 1;
}

SPPROF_API void spprof_py_configure(spprof_config *cfg) {
    cfg->walker = spprof_py_walk;
    cfg->walker_user = NULL;
    cfg->resolver = spprof_py_resolve;
    cfg->resolver_user = NULL;
    cfg->drain_hook = spprof__py_drain_hook;
    cfg->drain_hook_user = NULL;
#if SPPROF__OS_LINUX
    cfg->offcpu_walker = spprof__py_offcpu_walk;
    cfg->guard_faults = 1;
#else
    cfg->offcpu_walker = NULL;  /* the sampler suspends blocked threads too */
    cfg->guard_faults = 0;      /* frames are read with spprof__os_read_mem: no fault to catch */
#endif
}

/* ==== @memprof ========================================================================================
   The memory profiler's Python side: PyMem hooks (MEM and OBJ domains; RAW too when the malloc family is not
   hooked otherwise, since RAW is malloc, else RAW's free alone when MEM/OBJ forward their sampled blocks to it:
   Forwarding, below) that wrap the interpreter's allocators, and a stack walker that
   records the allocating thread's Python frames (its native frames when it runs no Python).
   If the LD_PRELOAD library (spprof.h with SPPROF_ALLOC_SHIM) is in the process, its heap map is used, through
   spprof_alloc_shim_api(): one heap map per process. The hooks keep the interpreter's own ctx pointer as
   theirs and call the saved functions with it, so a thread that reads the allocator while it is being
   swapped (function of one, ctx of the other) still works. */
/* orig: the allocator wrapped; guard_above: the largest request the domain serves itself (0: none, it is malloc);
   fwd: sampled blocks forwarded to the raw domain, the free not hooked (@memprof, Forwarding) */
typedef struct spprof__py_memdom { PyMemAllocatorEx orig; int installed; size_t guard_above; int fwd; } spprof__py_memdom;
static spprof__py_memdom spprof__py_memdoms[3];  /* RAW, MEM, OBJ */
static const spprof_mem_api *spprof__py_mapi;
static int spprof__py_mem_shim;
/* With the preloaded library: the address of its tables pointer, when it offers it (api version 2) and was built
   from a spprof.h whose filter is this one's (tabs_layout): the free hook then tests the library's filter itself
   and crosses into the library only for a pointer that may be sampled. NULL: every free crosses. */
static void *const *spprof__py_shim_tabs;
/* With it, the hooks' own countdown too (this module's spprof__mt, at the library's rate), and the library's
   record_sample for the allocations it picks: no call into the library for an allocation that is not sampled.
   Every byte is still counted by one countdown: the PyMem bytes by this one, the malloc under a PyMem call (its
   large requests, between enter and leave) by none, every other malloc by the library's. 0: not sampling. */
static uint32_t spprof__py_pre_sess;
static uint64_t spprof__py_pre_rate;

/* When this module gave the preloaded library (record --memory) its Python walker: the library samples from
   process start, and what it took before (interpreter start-up, site, the bootstrap's imports) has native
   stacks only, through libpython built without frame pointers. Such a stack gets a root frame that says so,
   rather than standing at the root as if _PyObject_Malloc or arena_map_mark_used were the program's callers. */
static uint64_t spprof__py_mem_attach_ns;
#define SPPROF__PY_MEM_STARTUP "[interpreter start-up, before spprof's Python stacks]"

#define SPPROF__PY_MEM_ENTER() do { if (spprof__py_mem_shim) spprof__py_mapi->enter(); else spprof__mt.busy++; } while (0)
#define SPPROF__PY_MEM_LEAVE() do { if (spprof__py_mem_shim) spprof__py_mapi->leave(); else spprof__mt.busy--; } while (0)
static void spprof__py_pre_alloc(void *p, size_t n);
#define SPPROF__PY_MEM_ALLOC(p, n) do { if (spprof__py_shim_tabs) spprof__py_pre_alloc((p), (n));            \
                                        else if (spprof__py_mem_shim) spprof__py_mapi->record_alloc((p), (n)); \
                                        else spprof__mem_on_alloc((p), (n), __builtin_frame_address(0)); } while (0)
#define SPPROF__PY_MEM_FREE(p) do { if (spprof__py_mem_shim) spprof__py_mapi->record_free(p); else spprof__mem_on_free(p); } while (0)

/* The allocation fast path's test alone, made before the allocation: counts size and returns 1 when the
   allocation is not sampled (the countdown not crossed). On 0 the caller allocates and calls
   spprof__mem_on_alloc, which counts it again: harmless, the sample draws a new threshold. For hooks that want
   their common path to end in a tail call of the real allocator (below).
   A busy thread's bytes (the profiler's own objects, between mem_enter and mem_leave) are counted too: one
   test less per call. A threshold they cross is dropped by spprof__py_mem_busy_crossed in the slow path (a
   new one drawn, nothing sampled); the countdown is memoryless, so the program's bytes are sampled as
   before. */
SPPROF__HOT int spprof__py_mem_alloc_skip(size_t size) {
    spprof__mem_tls *t = &spprof__mt;
    return t->sess == SPPROF__LOADR(&spprof__m.sess) && (t->left -= (int64_t)size) > 0;
}
/* The same with the preloaded library (spprof__py_pre_sess), and its slow side: as spprof__mem_on_alloc and
   spprof__mem_sample (a crossing counted twice is harmless: the sample draws a new threshold), with the
   library's record_sample in place of this module's heap map. A busy thread of the library's (its own
   allocations) is told apart by record_sample, which ignores them: the crossing is dropped, a new threshold
   drawn (memoryless, as spprof__py_mem_busy_crossed). */
SPPROF__HOT int spprof__py_pre_skip(size_t size) {
    spprof__mem_tls *t = &spprof__mt;
    return t->sess == SPPROF__LOADR(&spprof__py_pre_sess) && (t->left -= (int64_t)size) > 0;
}
/* [hook] the countdown of the mode in use (forwarding runs without the preloaded library or with its tables) */
SPPROF__HOT int spprof__py_fwd_skip(size_t n) {
    return spprof__py_shim_tabs ? spprof__py_pre_skip(n) : spprof__py_mem_alloc_skip(n);
}
static void spprof__py_pre_alloc(void *p, size_t n) {
    spprof__mem_tls *t = &spprof__mt;
    uint32_t sess = SPPROF__LOADR(&spprof__py_pre_sess);
    if (t->sess != sess || !t->rng) {  /* this thread's first allocation in this session */
        if (!t->rng) t->rng = (spprof__now_ns() ^ ((uint64_t)(uintptr_t)t << 16) ^ (uint64_t)spprof_gettid()) | 1u;
        t->sess = sess;
        if (!sess) {
            t->left = INT64_MAX;
            return;
        }
        t->left = spprof__mem_draw(t, spprof__py_pre_rate) - (int64_t)n;
        if (t->left > 0) return;
    } else if ((t->left -= (int64_t)n) > 0) {
        return;
    }
    if (!sess) {
        t->left = INT64_MAX;
        return;
    }
    t->left = spprof__mem_draw(t, spprof__py_pre_rate);
    spprof__py_mapi->record_sample(p, n);
}
/* [hook] The slow path's side of the above: a busy thread that crossed its threshold draws a new one. */
static void spprof__py_mem_busy_crossed(void) {
    spprof__mem_tls *t = &spprof__mt;
    if (!spprof__py_mem_shim && t->busy && t->left <= 0 && t->sess == SPPROF__LOADR(&spprof__m.sess) && t->sess)
        t->left = spprof__mem_draw(t, spprof__m.cfg.sampling_rate);
}
/* The free fast path's test alone: could ptr be a sampled pointer (then spprof__mem_on_free has work)? For
   hooks that want their common path to end in a tail call of the real free (below). The busy test is left
   to spprof__mem_on_free: a busy thread's free that passes the filter is rare, and costs only the slow call. */
SPPROF__HOT int spprof__py_mem_free_maybe(void *const *tabs, void *ptr) {
    const spprof__mem_tabs *t = (const spprof__mem_tabs *)SPPROF__LOAD(tabs);
    /* the first counter only: spprof__mem_on_free, in the slow path, tests both (the second here would keep
       the hash and the index in registers for it: two copies on every free, for a counter that is rarely
       reached while the filter is sparse, 2 counters per live sample out of heap_map_capacity / 4) */
    return t && SPPROF__LOADR(&t->bloom[(uint32_t)(spprof__mem_hash((uint64_t)(uintptr_t)ptr) >> 32) & t->bloom_mask]);
}

/* Forwarding (spprof__py_memdoms[D].fwd), the common case: the domain's allocator is plain pymalloc, which
   hands every block it did not allocate itself to PyMem_RawFree (checked at install: spprof__py_mem_forwards).
   Then the domain's free is not hooked at all, and a sampled request of at most 512 bytes is made as a
   SPPROF__PY_FWD_SIZE request, which pymalloc serves from the raw allocator (counted in its own
   raw_allocated_blocks, so sys.getallocatedblocks() is unchanged). A sampled block is then always a raw one,
   and its free comes back through PyMem_RawFree, where the raw level sees it: the RAW domain's hook (its free
   alone where the GOT hooks count the raw allocations), or the preloaded library, which is free itself. An
   unsampled free costs nothing.
   The price: each sampled small object takes 513 bytes (about 0.1 % of the heap at the default rate), and a
   thread's first allocation in a session (the slow path) is forwarded whether sampled or not. A reallocation
   is decided before the call (the countdown), so that a sampled result is a raw block too; a raw block
   stays raw under pymalloc's realloc. */
#define SPPROF__PY_FWD_SIZE 513u  /* pymalloc's SMALL_REQUEST_THRESHOLD (512 in 3.8 and later) + 1 */
#define SPPROF__PY_FWD(D, n) (spprof__py_memdoms[D].fwd && (n) < SPPROF__PY_FWD_SIZE ? SPPROF__PY_FWD_SIZE : (n))
/* [hook] calloc(k, n) of domain d, as a forwarded request when k * n is small */
static void *spprof__py_fwd_calloc(int d, void *ctx, size_t k, size_t n) {
    if (spprof__py_memdoms[d].fwd && (n == 0 || k <= (SPPROF__PY_FWD_SIZE - 1u) / n))
        return spprof__py_memdoms[d].orig.calloc(ctx, 1, SPPROF__PY_FWD_SIZE);
    return spprof__py_memdoms[d].orig.calloc(ctx, k, n);
}

/* Nested calls: a domain's allocator may itself call malloc (pymalloc for requests above 512 bytes, or every
   request when PYTHONMALLOC=malloc), which the GOT hooks see again; the busy counter around the call makes
   that inner call neither sample nor count. Requests pymalloc/mimalloc serve themselves need no guard:
   spprof__py_memdoms[D].guard_above is 448 for them (512 less the debug hooks' padding), 0 when the
   domain's allocator is the raw one.
   Frees need no guard at all: the outer hook has already taken the pointer out of the map, so the inner
   free finds nothing. */
/* The malloc and calloc fast paths of domain D, named spprof__py_{malloc,calloc}<S>_D, with countdown test SKIP
   (this module's, or the preloaded library's stand-in): a request the domain serves itself and that is not
   sampled is a tail call of the interpreter's allocator, anything else a tail call of the slow path. */
#define SPPROF__PY_MEM_FAST(D, S, SKIP)                                                                           \
    static void *spprof__py_malloc##S##_##D(void *ctx, size_t n) {                                              \
        if (n <= spprof__py_memdoms[D].guard_above && SKIP(n)) return spprof__py_memdoms[D].orig.malloc(ctx, n); \
        return spprof__py_malloc_slow_##D(ctx, n);                                                              \
    }                                                                                                           \
    static void *spprof__py_calloc##S##_##D(void *ctx, size_t k, size_t n) {                                    \
        if (k * n <= spprof__py_memdoms[D].guard_above && SKIP(k * n))                                          \
            return spprof__py_memdoms[D].orig.calloc(ctx, k, n);                                                \
        return spprof__py_calloc_slow_##D(ctx, k, n);                                                          \
    }
#define SPPROF__PY_MEM_HOOKS(D)                                                                                   \
    static SPPROF__NOINLINE void *spprof__py_malloc_slow_##D(void *ctx, size_t n) {                             \
        void *p;                                                                                                \
        spprof__py_mem_busy_crossed();                                                                          \
        if (n > spprof__py_memdoms[D].guard_above || spprof__py_memdoms[D].fwd) {                               \
            SPPROF__PY_MEM_ENTER();                                                                             \
            p = spprof__py_memdoms[D].orig.malloc(ctx, SPPROF__PY_FWD(D, n));                                   \
            SPPROF__PY_MEM_LEAVE();                                                                             \
        } else p = spprof__py_memdoms[D].orig.malloc(ctx, n);                                                   \
        if (p) SPPROF__PY_MEM_ALLOC(p, n);                                                                      \
        return p;                                                                                               \
    }                                                                                                           \
    static SPPROF__NOINLINE void *spprof__py_calloc_slow_##D(void *ctx, size_t k, size_t n) {                   \
        void *p;                                                                                                \
        spprof__py_mem_busy_crossed();                                                                          \
        SPPROF__PY_MEM_ENTER(); p = spprof__py_fwd_calloc(D, ctx, k, n); SPPROF__PY_MEM_LEAVE();                 \
        if (p) SPPROF__PY_MEM_ALLOC(p, k * n);                                                                  \
        return p;                                                                                               \
    }                                                                                                           \
    /* A request the domain serves itself and that is not sampled (counted before the call) is a tail call of \
       the interpreter's allocator: no frame, no saved register. The rest is a tail call of the slow path, so \
       a sample's native walk still starts at the hook's caller. spprof__py_mem_hook installs the first pair,  \
       the second with the preloaded library, and the slow paths themselves with an older library. */         \
    SPPROF__PY_MEM_FAST(D, , spprof__py_mem_alloc_skip)                                                       \
    SPPROF__PY_MEM_FAST(D, _pre, spprof__py_pre_skip)                                                         \
    static void *spprof__py_realloc_##D(void *ctx, void *old, size_t n) {                                       \
        void *p;                                                                                                \
        if (old) SPPROF__PY_MEM_FREE(old);  /* before: once realloc returns, old may be someone else's */        \
        if (spprof__py_memdoms[D].fwd && n <= spprof__py_memdoms[D].guard_above && spprof__py_fwd_skip(n)) {    \
            SPPROF__PY_MEM_ENTER(); /* counted, not sampled: the raw realloc under it neither counts nor samples */ \
            p = spprof__py_memdoms[D].orig.realloc(ctx, old, n);                                                \
            SPPROF__PY_MEM_LEAVE();                                                                             \
            return p;                                                                                           \
        }                                                                                                       \
        spprof__py_mem_busy_crossed();                                                                          \
        SPPROF__PY_MEM_ENTER(); p = spprof__py_memdoms[D].orig.realloc(ctx, old, SPPROF__PY_FWD(D, n));          \
        SPPROF__PY_MEM_LEAVE();                                                                                 \
        if (p) SPPROF__PY_MEM_ALLOC(p, n);                                                                      \
        return p;                                                                                               \
    }                                                                                                           \
    static SPPROF__NOINLINE void spprof__py_free_slow_##D(void *ctx, void *p) {                                 \
        SPPROF__PY_MEM_FREE(p);                                                                                 \
        spprof__py_memdoms[D].orig.free(ctx, p);                                                                \
    }                                                                                                           \
    /* the common free (not a sampled pointer) is the filter test and a tail call: no frame, no saved register; \
       free(NULL) takes the filter test too (one test less for every other free) */                             \
    static void spprof__py_free_##D(void *ctx, void *p) {                                                       \
        if (spprof__py_mem_free_maybe((void *const *)(void *)&spprof__m.tabs, p))                               \
            spprof__py_free_slow_##D(ctx, p);  /* NULL: on_free ignores it */                                   \
        else spprof__py_memdoms[D].orig.free(ctx, p);                                                           \
    }                                                                                                           \
    /* the same with the preloaded library's filter (spprof__py_shim_tabs): its record_free, in the slow path, \
       makes the whole test again */                                                                          \
    static void spprof__py_free_shim_##D(void *ctx, void *p) {                                                  \
        if (spprof__py_mem_free_maybe(spprof__py_shim_tabs, p)) spprof__py_free_slow_##D(ctx, p);               \
        else spprof__py_memdoms[D].orig.free(ctx, p);                                                           \
    }
SPPROF__PY_MEM_HOOKS(0)
SPPROF__PY_MEM_HOOKS(1)
SPPROF__PY_MEM_HOOKS(2)

/* Code objects of sampled stacks are kept alive until the session ends (as tracemalloc keeps its file
   names): a snapshot taken later (at exit, say) can still name a function whose code is gone by then (the
   __main__ module's, a generated function's). Taken in the hook, only when the thread holds the GIL (is
   attached): Py_INCREF then needs nothing else. The set is a fixed mmap'ed table (no allocation in the hook)
   behind a try-lock (contended: this sample's code objects are simply not pinned); when 3/4 full, pinning
   stops. */
#define SPPROF__PY_MPIN_CAP 65536u
static PyObject **spprof__py_mpins;
static uint32_t spprof__py_mpins_n;

static void spprof__py_mem_pin(const spprof_frame *f, int n) {
    uint32_t zero = 0;
    int i;
    if (!__atomic_compare_exchange_n(&spprof__py_mpin_lock, &zero, 1u, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) return;
    if (!spprof__py_mpins) {
        spprof__py_mpins = (PyObject **)spprof__os_map_pages(SPPROF__PY_MPIN_CAP * sizeof(PyObject *));
    }
    for (i = 0; spprof__py_mpins && i < n && spprof__py_mpins_n < SPPROF__PY_MPIN_CAP / 4 * 3; i++) {
        PyObject *co = (PyObject *)(uintptr_t)f[i].addr;
        uint32_t h;
        if (SPPROF_FRAME_KIND(f[i].kind) != SPPROF_FRAME_PYTHON || f[i].addr <= SPPROF__PY_MARK_ADDR) continue;
        for (h = (uint32_t)((uintptr_t)co >> 4) & (SPPROF__PY_MPIN_CAP - 1); spprof__py_mpins[h] && spprof__py_mpins[h] != co;
             h = (h + 1) & (SPPROF__PY_MPIN_CAP - 1)) {}
        if (spprof__py_mpins[h]) continue;
        Py_INCREF(co);  /* alive: it is on this thread's stack */
        spprof__py_mpins[h] = co;
        spprof__py_mpins_n++;
    }
    __atomic_store_n(&spprof__py_mpin_lock, 0u, __ATOMIC_RELEASE);
}

/* [GIL] Drops the references of the last session. */
static void spprof__py_mem_unpin(void) {
    uint32_t zero = 0, i;
    while (!__atomic_compare_exchange_n(&spprof__py_mpin_lock, &zero, 1u, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) { zero = 0; spprof__yield(); }
    for (i = 0; spprof__py_mpins && i < SPPROF__PY_MPIN_CAP; i++)
        if (spprof__py_mpins[i]) { PyObject *o = spprof__py_mpins[i]; spprof__py_mpins[i] = NULL; Py_DECREF(o); }
    spprof__py_mpins_n = 0;
    __atomic_store_n(&spprof__py_mpin_lock, 0u, __ATOMIC_RELEASE);
}

/* Is the interpreter shutting down (or not running)? A plain read of _PyRuntime (an atomic one on 3.12+):
   no lock, no allocation, callable without the GIL. */
static int spprof__py_finalizing(void) {
#if PY_VERSION_HEX >= 0x030D0000
    return !Py_IsInitialized() || Py_IsFinalizing();
#else
    return !Py_IsInitialized() || _Py_IsFinalizing();
#endif
}

/* This module's own code (its executable segment): with the preloaded library, a hook's record_alloc call
   walks from inside the hook, whose frame is the profiler's, not the program's; it is dropped from the leaf. */
static uintptr_t spprof__py_own_lo, spprof__py_own_hi;
#if SPPROF__OS_LINUX
static int spprof__py_own_cb(struct dl_phdr_info *info, size_t size, void *data) {
    uintptr_t me = (uintptr_t)data;
    int i;
    (void)size;
    for (i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t a = (uintptr_t)info->dlpi_addr + (uintptr_t)ph->p_vaddr;
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X) || me < a || me >= a + ph->p_memsz) continue;
        spprof__py_own_lo = a;
        spprof__py_own_hi = a + ph->p_memsz;
        return 1;
    }
    return 0;
}
#endif
/* [hook] frames[0, n) less the leading frames in this module's code */
static int spprof__py_mem_strip_own(spprof_frame *frames, int n) {
    int k = 0;
    while (k < n && SPPROF_FRAME_KIND(frames[k].kind) == SPPROF_FRAME_NATIVE && frames[k].addr - 1 >= spprof__py_own_lo &&
           frames[k].addr - 1 < spprof__py_own_hi)
        k++;
    if (k) memmove(frames, frames + k, (size_t)(n - k) * sizeof *frames);
    return n - k;
}

/* [hook] The allocating thread's stack.
   - It holds the GIL (is attached): its Python frames, and their code objects pinned (a reference each).
   - It has released the GIL (a C call inside Py_BEGIN_ALLOW_THREADS: NumPy's calloc of np.zeros, any ctypes
     call, file and socket I/O): the native frames the frame-pointer walk gives from the allocation up to the
     first frame of the interpreter loop (or to where the chain breaks, in code built without frame
     pointers), then its Python frames, the calling Python code. Why its frames can be read without the GIL:
     * Its own thread state comes from CPython's thread-specific-storage key (PyGILState_GetThisThreadState,
       a pthread_getspecific: no lock, no allocation; the signal handler's walk reads it the same way). It is
       this thread's own, the one it detached from (or, for a thread that also owns other thread states, one
       it does not run on now: its frames stand still too).
     * Nothing frees or changes that thread state or its frame chain while the thread is inside the C call:
       frames are pushed and popped by their own thread only (it is here, in the hook); each frame holds a
       reference to its code object; a generator's frame on the chain belongs to a running generator, which
       its caller's frame references and nobody else may resume; 3.11/3.12's cframe lives on this thread's C
       stack, below us. Other threads that look at it (sys._current_frames, a debugger) only read it or add
       a frame object to a frame, never unlink or free one.
     * Only interpreter finalization frees the thread states (and data stacks) of other threads that still
       run, daemon threads in C code without the GIL: Py_FinalizeEx marks the runtime as finalizing first and
       frees them later, after modules and the garbage are cleared. So the walk is skipped when the runtime
       is finalizing (or not initialized), and its frames are dropped when finalization started while it
       read them. What is left is a thread descheduled for that whole clean-up between the check and its
       reads: then the reads are still checked (pointer alignment, every code object's type against
       &PyCode_Type, incomplete frames skipped, the depth bounded: spprof__py_walk_ts), a bad chain ends in
       -1 and the native stack is kept, and a frame read from a freed block is resolved only after
       spprof_py_resolve has checked that code object for life and fingerprint.
     No reference can be taken without the GIL; the code objects are marked in spprof__py_mseen, and the death
     hook (@pin) keeps a marked one that dies during the session, so a snapshot taken later (at exit) still
     names a function or module body whose code is gone by then.
   - It runs no Python (no thread state, no frame): its native frames. */
static int spprof__py_mem_walk(spprof_frame *frames, int max_frames, void *fp, void *user) {
    PyThreadState *ts;
    int n, nn, np, i, end;
    (void)user;
    if (PyGILState_Check()) {
        n = spprof__py_walk_frames(NULL, frames, max_frames, NULL, 0, NULL);
        if (n > 0) spprof__py_mem_pin(frames, n);
        return n == -2 ? spprof__py_mem_strip_own(frames, spprof__mem_walk_native(frames, max_frames, fp, NULL)) : n;
    }
    ts = spprof__py_finalizing() ? NULL : PyGILState_GetThisThreadState();
    if (!ts) return spprof__py_mem_strip_own(frames, spprof__mem_walk_native(frames, max_frames, fp, NULL));
    /* native frames first, in at most half the room; the interpreter loop's frame and everything below it
       is what the Python frames stand for */
    nn = spprof__py_mem_strip_own(frames, spprof__mem_walk_fp(frames, max_frames / 2, fp, &end));
    for (i = 0; i < nn; i++)
        if (spprof__py_in_eval(&frames[i])) break;
    if (i < nn) end = SPPROF__MEM_END_ROOT;  /* reached the interpreter loop: the Python frames go on from there */
    nn = i;
    np = spprof__py_walk_ts(ts, NULL, frames + nn, max_frames - nn, NULL, 0, NULL);
    if (np > 0 && spprof__py_finalizing()) np = -1;  /* finalization began during the reads: not trusted */
    if (np <= 0) return spprof__py_mem_strip_own(frames, spprof__mem_walk_native(frames, max_frames, fp, NULL));
    spprof__mem_fp_count(end);
    for (i = nn; i < nn + np; i++) spprof__py_mark_mseen((const void *)(uintptr_t)frames[i].addr);
    return nn + np;
}

static const PyMemAllocatorDomain spprof__py_domains[3] = {PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ};

/* The probe of spprof__py_mem_forwards: a RAW free that passes the block on and notes the one looked for. */
static PyMemAllocatorEx spprof__py_probe_raw;
static void *spprof__py_probe_ptr;
static uint32_t spprof__py_probe_seen;
static void spprof__py_probe_free(void *ctx, void *p) {
    if (p && p == SPPROF__LOAD(&spprof__py_probe_ptr)) SPPROF__STORE(&spprof__py_probe_seen, 1u);
    spprof__py_probe_raw.free(ctx, p);
}
/* [GIL] Does allocator a (a domain's, before our hooks) serve a SPPROF__PY_FWD_SIZE request from the raw
   domain and hand that block to PyMem_RawFree when it is freed? Plain pymalloc does (3.9 to 3.13); the debug
   hooks (their ctx, and the block they free is not the one they returned), tracemalloc or another tool's
   hooks (their ctx), PYTHONMALLOC=malloc (the raw allocator itself) and mimalloc (its own free) do not, or are
   not trusted to: then every free is hooked. Tried for real: one such block, with a RAW free that notes it
   set for the duration (other threads' raw calls pass through it unchanged, with the same ctx). */
static int spprof__py_mem_forwards(const PyMemAllocatorEx *a) {
    PyMemAllocatorEx raw, probe;
    void *q;
    PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &raw);
    if (a->ctx || a->malloc == raw.malloc) return 0;
    spprof__py_probe_raw = raw;
    probe = raw;
    probe.free = spprof__py_probe_free;
    SPPROF__STORE(&spprof__py_probe_seen, 0u);
    SPPROF__PY_MEM_ENTER();  /* the probe's block is the profiler's, not the program's */
    PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &probe);
    q = a->malloc(a->ctx, SPPROF__PY_FWD_SIZE);
    if (q) {
        SPPROF__STORE(&spprof__py_probe_ptr, q);
        a->free(a->ctx, q);
        SPPROF__STORE(&spprof__py_probe_ptr, (void *)NULL);
    }
    PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &raw);
    SPPROF__PY_MEM_LEAVE();
    return (int)SPPROF__LOAD(&spprof__py_probe_seen);
}

/* [GIL] Wraps the allocators of the domains in mask (1 RAW, 2 MEM, 4 OBJ) that are not wrapped yet. MEM and
   OBJ forward their sampled blocks to the raw domain when they can (above): their frees then come back
   through PyMem_RawFree, so without the preloaded library (which is free itself) the RAW domain's free is
   hooked too, even where the GOT hooks (hook_native) see raw frees: then only its free. */
static void spprof__py_mem_hook(int mask) {
    int d, fwd = 0;
    for (d = 0; d < 3; d++) {
        PyMemAllocatorEx a;
        if (!(mask & (1 << d)) || spprof__py_memdoms[d].installed) continue;
        PyMem_GetAllocator(spprof__py_domains[d], &spprof__py_memdoms[d].orig);
        {   /* the raw domain is malloc; a domain whose allocator is the raw one's (PYTHONMALLOC=malloc) too */
            PyMemAllocatorEx raw;
            PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &raw);
            spprof__py_memdoms[d].guard_above = (d == 0 || spprof__py_memdoms[d].orig.malloc == raw.malloc) ? 0 : 448;  /* 512, less the debug hooks' padding */
        }
        spprof__py_memdoms[d].fwd = d && spprof__py_memdoms[d].guard_above && (!spprof__py_mem_shim || spprof__py_shim_tabs) &&
                                    spprof__py_mem_forwards(&spprof__py_memdoms[d].orig);
        if (spprof__py_memdoms[d].fwd) {
            spprof__py_memdoms[d].guard_above = SPPROF__PY_FWD_SIZE - 1u;  /* plain pymalloc: no debug padding */
            fwd = 1;
        }
        a.ctx = spprof__py_memdoms[d].orig.ctx;
        if (spprof__py_shim_tabs) {  /* the library's heap map, with this module's countdown and its filter */
            a.malloc = d == 0 ? spprof__py_malloc_pre_0 : d == 1 ? spprof__py_malloc_pre_1 : spprof__py_malloc_pre_2;
            a.calloc = d == 0 ? spprof__py_calloc_pre_0 : d == 1 ? spprof__py_calloc_pre_1 : spprof__py_calloc_pre_2;
            a.free = d == 0 ? spprof__py_free_shim_0 : d == 1 ? spprof__py_free_shim_1 : spprof__py_free_shim_2;
        } else if (spprof__py_mem_shim) {  /* an older library: every call takes the slow path, which knows it */
            a.malloc = d == 0 ? spprof__py_malloc_slow_0 : d == 1 ? spprof__py_malloc_slow_1 : spprof__py_malloc_slow_2;
            a.calloc = d == 0 ? spprof__py_calloc_slow_0 : d == 1 ? spprof__py_calloc_slow_1 : spprof__py_calloc_slow_2;
            a.free = d == 0 ? spprof__py_free_slow_0 : d == 1 ? spprof__py_free_slow_1 : spprof__py_free_slow_2;
        } else {
            a.malloc = d == 0 ? spprof__py_malloc_0 : d == 1 ? spprof__py_malloc_1 : spprof__py_malloc_2;
            a.calloc = d == 0 ? spprof__py_calloc_0 : d == 1 ? spprof__py_calloc_1 : spprof__py_calloc_2;
            a.free = d == 0 ? spprof__py_free_0 : d == 1 ? spprof__py_free_1 : spprof__py_free_2;
        }
        a.realloc = d == 0 ? spprof__py_realloc_0 : d == 1 ? spprof__py_realloc_1 : spprof__py_realloc_2;
        if (spprof__py_memdoms[d].fwd) a.free = spprof__py_memdoms[d].orig.free;  /* not hooked: see above */
        PyMem_SetAllocator(spprof__py_domains[d], &a);
        spprof__py_memdoms[d].installed = 1;
    }
    if (fwd && !spprof__py_mem_shim && !spprof__py_memdoms[0].installed) {
        PyMemAllocatorEx a;
        PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &spprof__py_memdoms[0].orig);
        a = spprof__py_memdoms[0].orig;
        a.free = spprof__py_free_0;
        PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &a);
        spprof__py_memdoms[0].installed = 1;
    }
}

/* [GIL] Puts the interpreter's allocators back where ours are still the ones installed. Memory allocated
   through the hooks is freed through the originals from then on, which is right: the hooks only wrap. */
static void spprof__py_mem_unhook(void) {
    int d;
    for (d = 0; d < 3; d++) {
        PyMemAllocatorEx cur;
        if (!spprof__py_memdoms[d].installed) continue;
        PyMem_GetAllocator(spprof__py_domains[d], &cur);
        /* ours: our realloc, or for RAW our free alone (hooked for the forwarded blocks) */
        if (cur.realloc == (d == 0 ? spprof__py_realloc_0 : d == 1 ? spprof__py_realloc_1 : spprof__py_realloc_2) ||
            (d == 0 && cur.free == spprof__py_free_0))
            PyMem_SetAllocator(spprof__py_domains[d], &spprof__py_memdoms[d].orig);
        spprof__py_memdoms[d].installed = 0;
    }
}

/* The heap map to use: the preloaded library's, or this file's. */
static const spprof_mem_api *spprof__py_mem_api(void) {
    if (!spprof__py_mapi) {
        typedef const spprof_mem_api *(*getter)(void);
#if SPPROF__OS_LINUX
        void *sym = dlsym(RTLD_DEFAULT, "spprof_alloc_shim_api");
#else
        void *sym = NULL;  /* the preloaded library is Linux only */
#endif
        getter g;
        const spprof_mem_api *shim;
        memcpy(&g, &sym, sizeof g);
        shim = sym ? g() : NULL;
        spprof__py_mem_shim = shim && shim->version >= 1 && shim != spprof_mem_get_api();
        spprof__py_mapi = spprof__py_mem_shim ? shim : spprof_mem_get_api();
        if (spprof__py_mem_shim && shim->version >= 2 && shim->mem_tabs && shim->record_sample &&
            shim->tabs_layout == SPPROF__MEM_TABS_LAYOUT)
            spprof__py_shim_tabs = shim->mem_tabs;
    }
    return spprof__py_mapi;
}

/* [GIL] Starts the memory profiler for Python: PyMem hooks and the Python walker. With the preloaded library
   already sampling (spprof record --memory), its session goes on (allocations since process start are kept)
   and only gets the Python walker. */
SPPROF_API spprof_result spprof_py_mem_start(const spprof_mem_config *cfg_in) {
    const spprof_mem_api *api = spprof__py_mem_api();
    spprof_mem_config c = cfg_in ? *cfg_in : spprof_mem_config_default();
    spprof_result r;
#if SPPROF__OS_LINUX
    pthread_once(&spprof__py_atfork_once, spprof__py_atfork_init);
#else
    c.hook_native = 0;  /* the GOT hooks of the malloc family are Linux only: the PyMem hooks see RAW too */
#endif
    c.walker = spprof__py_mem_walk;
    c.walker_user = NULL;
    /* the profiler's own set-up (symbol tables: a megabyte for libpython) is not the program's memory: the
       preloaded library, sampling since process start, would show it */
    SPPROF__PY_MEM_ENTER();
#if SPPROF__OS_LINUX
    if (!spprof__py_own_hi) dl_iterate_phdr(spprof__py_own_cb, (void *)(uintptr_t)spprof__py_mem_walk);
#endif
    spprof__py_find_eval();  /* where the walk without the GIL stops its native part (0: not found, no cut) */
    spprof__py_install_death_hook();  /* keeps the code objects of stacks read without the GIL */
    SPPROF__PY_MEM_LEAVE();
    memset(spprof__py_mseen, 0, sizeof spprof__py_mseen);  /* the last session's marks */
    SPPROF__STORE(&spprof__py_mkeep_on, 1u);
    if (spprof__py_mem_shim) {
        /* the walker's counters of native walks live here, the library's session counts the rest */
        SPPROF__STORE(&spprof__m.fp_walks, (uint64_t)0);
        SPPROF__STORE(&spprof__m.fp_rooted, (uint64_t)0);
        SPPROF__STORE(&spprof__m.fp_broken, (uint64_t)0);
        c.hook_native = 0;  /* the library is malloc itself */
        spprof__py_mem_attach_ns = 0;
        if (api->state() == 1) {
            spprof__py_mem_attach_ns = spprof__now_ns();  /* the library's samples before have native stacks */
            r = api->set_walker(spprof__py_mem_walk, NULL);
        } else r = api->start(&c);
        if (r != SPPROF_OK) return spprof__fail(r, "%s", api->last_error());
        if (spprof__py_shim_tabs) {  /* the hooks' countdown runs at the library's rate, in a session of its own */
            spprof_mem_stats st;
            uint32_t next = SPPROF__LOADR(&spprof__py_pre_sess) + 1u;
            memset(&st, 0, sizeof st);
            if (api->get_stats(&st) != SPPROF_OK || !st.sampling_rate)
                return spprof__fail(SPPROF_ERR_SYSTEM, "the preloaded library gave no sampling rate");
            spprof__py_pre_rate = st.sampling_rate;
            SPPROF__STORE(&spprof__py_pre_sess, next ? next : 1u);
        }
        spprof__py_mem_hook(2 | 4);
        return SPPROF_OK;
    }
    r = spprof_mem_start(&c);
    if (r != SPPROF_OK) return r;
    spprof__py_mem_unpin();  /* the last session's samples are gone */
    spprof__py_mem_hook(c.hook_native ? (2 | 4) : (1 | 2 | 4));
    return SPPROF_OK;
}

/* [GIL] Stops sampling; the hooks stay (frees are still tracked). */
SPPROF_API spprof_result spprof_py_mem_stop(void) {
    const spprof_mem_api *api = spprof__py_mem_api();
    spprof_result r = api->stop();
    if (spprof__py_mem_shim) SPPROF__STORE(&spprof__py_pre_sess, 0u);  /* the hooks' countdown stops too */
    if (r != SPPROF_OK && spprof__py_mem_shim) return spprof__fail(r, "%s", api->last_error());
    return r;
}

/* [GIL] One-way: allocators back, GOT entries back, samples forgotten. */
SPPROF_API spprof_result spprof_py_mem_shutdown(void) {
    const spprof_mem_api *api = spprof__py_mem_api();
    spprof_result r;
    spprof__py_mem_unhook();
    SPPROF__STORE(&spprof__py_pre_sess, 0u);
    r = api->shutdown();
    SPPROF__STORE(&spprof__py_mkeep_on, 0u);  /* the samples are gone: nothing to keep code objects for */
    spprof__py_mem_unpin();
    return r;
}


/* ==== @module =========================================================================================
   The extension module `_spprof` (SPPROF_PYTHON_MODULE). The public Python API (package `spprof`) is a thin
   layer on top of it. */
#ifdef SPPROF_PYTHON_MODULE
#ifndef SPPROF_PYTHON_MODULE_NAME
#  define SPPROF_PYTHON_MODULE_NAME "_spprof"
#endif
static PyObject *spprof__py_error;  /* _spprof.Error (RuntimeError) */

static PyObject *spprof__py_raise(spprof_result r) {
    const char *msg = spprof_last_error()[0] ? spprof_last_error() : spprof_result_string(r);
    switch (r) {
    case SPPROF_ERR_INVALID_CONFIG: PyErr_SetString(PyExc_ValueError, msg); break;
    case SPPROF_ERR_NO_MEMORY: PyErr_SetString(PyExc_MemoryError, msg); break;
    case SPPROF_ERR_IO: case SPPROF_ERR_SYSTEM: PyErr_SetString(PyExc_OSError, msg); break;
    default: PyErr_SetString(spprof__py_error, msg); break;
    }
    return NULL;
}

static PyObject *spprof__py_none_or_raise(spprof_result r) {
    if (r != SPPROF_OK) return spprof__py_raise(r);
    Py_RETURN_NONE;
}
/* A module function without arguments that calls an spprof function and returns None or raises. */
#define SPPROF__PY_NOARGS_CALL(name, call) \
    static PyObject *name(PyObject *self, PyObject *noargs) { (void)self; (void)noargs; return spprof__py_none_or_raise(call); }

static PyObject *spprof__py_start(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *kwlist[] = {"interval_ns", "mode", "max_depth", "memory_limit", "source", "native", NULL};
    long long interval_ns, memory_limit = 100ll << 20;
    int mode = 0, max_depth = 128, source = 0, native = 0;
    spprof_config cfg = spprof_config_default();
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "L|iiLii", (char **)kwlist, &interval_ns, &mode, &max_depth, &memory_limit, &source, &native))
        return NULL;
    if (spprof_is_active()) return spprof__py_raise((spprof_result)(spprof__fail(SPPROF_ERR_ALREADY_STARTED, "spprof is already running; stop it first")));
    if (memory_limit < 0) { PyErr_SetString(PyExc_ValueError, "memory_limit must be >= 0"); return NULL; }
    cfg.interval_ns = interval_ns;
    cfg.mode = (spprof_mode)mode;
    cfg.max_depth = max_depth;
    cfg.memory_limit = (uint64_t)memory_limit;
    cfg.source = (spprof_source)source;
    if (!native) spprof_py_configure(&cfg);
    else if (!spprof_py_configure_mixed(&cfg))
        return spprof__py_raise((spprof_result)spprof__fail(SPPROF_ERR_UNSUPPORTED, "native=True: cannot locate the interpreter loop "
                                                             "(_PyEval_EvalFrameDefault has no sized symbol in this build)"));
    return spprof__py_none_or_raise(spprof_py_start(&cfg));
}

SPPROF__PY_NOARGS_CALL(spprof__py_stop, spprof_py_stop())
SPPROF__PY_NOARGS_CALL(spprof__py_pause, spprof_pause())
SPPROF__PY_NOARGS_CALL(spprof__py_resume, spprof_resume())

static PyObject *spprof__py_is_active(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    return PyBool_FromLong(spprof_is_active());
}

static PyObject *spprof__py_state(PyObject *self, PyObject *noargs) {
    spprof_state s = spprof_get_state();
    (void)self; (void)noargs;
    return PyUnicode_FromString(s == SPPROF_STATE_RUNNING ? "running" : s == SPPROF_STATE_PAUSED ? "paused" : "stopped");
}

static PyObject *spprof__py_stats(PyObject *self, PyObject *noargs) {
    spprof_stats st;
    PyObject *r;
    (void)self; (void)noargs;
    spprof_get_stats(&st);
    r = Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsisisK}",
        "samples_captured", (unsigned long long)st.samples_captured, "samples_dropped", (unsigned long long)st.samples_dropped,
        "samples_dropped_memory", (unsigned long long)st.samples_dropped_memory, "samples_stale", (unsigned long long)st.samples_stale,
        "samples_in_profile", (unsigned long long)st.samples_in_profile, "timer_overruns", (unsigned long long)st.timer_overruns,
        "timer_create_failures", (unsigned long long)st.timer_create_failures, "timer_create_retries", (unsigned long long)st.timer_create_retries,
        "threads_registered", (unsigned long long)st.threads_registered, "threads_live", (unsigned long long)st.threads_live,
        "threads_sampled", (unsigned long long)st.threads_sampled, "threads_perf", (unsigned long long)st.threads_perf,
        "walk_errors", (unsigned long long)st.walk_errors,
        "walk_truncated", (unsigned long long)st.walk_truncated, "unique_stacks", (unsigned long long)st.unique_stacks,
        "unique_frames", (unsigned long long)st.unique_frames, "profile_bytes", (unsigned long long)st.profile_bytes,
        "signals_ignored", (unsigned long long)st.signals_ignored, "faults_recovered", (unsigned long long)st.faults_recovered,
        "threads_posix", (unsigned long long)st.threads_posix, "perf_fd_fallbacks", (unsigned long long)st.perf_fd_fallbacks,
        "ticks_late", (unsigned long long)st.ticks_late, "suspensions", (unsigned long long)st.suspensions,
        "threads_skipped", (unsigned long long)st.threads_skipped,
        "suspend_ns_total", (unsigned long long)st.suspend_ns_total, "suspend_ns_max", (unsigned long long)st.suspend_ns_max,
        "signal", st.signo, "handler_replaced", st.handler_replaced, "pin_passes", spprof__py_pin_passes);
#if !SPPROF__OS_LINUX
    if (r) {  /* reads of memory by the external walk (this or the last session; 3 per sample at any depth) */
        PyObject *v = PyLong_FromUnsignedLongLong(spprof__py_ext_reads);
        if (!v || PyDict_SetItemString(r, "ext_reads", v) != 0) Py_CLEAR(r);
        Py_XDECREF(v);
    }
#endif
    return r;
}

typedef struct spprof__py_collect { PyObject *list; PyObject *cache; int failed; } spprof__py_collect;

static PyObject *spprof__py_frame_tuple(spprof__py_collect *c, const spprof_frame *f) {
    PyObject *key = Py_BuildValue("(KII)", (unsigned long long)f->addr, (unsigned)f->aux, (unsigned)f->kind), *val;
    spprof_symbol sym;
    if (!key) return NULL;
    val = PyDict_GetItemWithError(c->cache, key);
    if (val) { Py_DECREF(key); Py_INCREF(val); return val; }
    if (PyErr_Occurred()) { Py_DECREF(key); return NULL; }
    spprof_resolve(f, &sym);
    val = Py_BuildValue("(ssi)", sym.name, sym.file, sym.line);
    if (!val) { PyErr_Clear(); val = Py_BuildValue("(ssi)", "?", "", 0); }
    if (val && PyDict_SetItem(c->cache, key, val) != 0) Py_CLEAR(val);
    Py_DECREF(key);
    return val;
}

static int spprof__py_collect_one(const spprof_sample_view *s, void *user) {
    spprof__py_collect *c = (spprof__py_collect *)user;
    PyObject *frames = PyTuple_New(s->nframes), *item;
    int i;
    if (!frames) { c->failed = 1; return 1; }
    for (i = 0; i < s->nframes; i++) {
        PyObject *t = spprof__py_frame_tuple(c, &s->frames[i]);
        if (!t) { Py_DECREF(frames); c->failed = 1; return 1; }
        PyTuple_SET_ITEM(frames, i, t);
    }
    item = Py_BuildValue("(isKKIIN)", s->tid, s->thread_name, (unsigned long long)s->t_first_ns,
                         (unsigned long long)s->t_last_ns, (unsigned)s->count, (unsigned)s->weight, frames);
    if (!item || PyList_Append(c->list, item) != 0) { Py_XDECREF(item); c->failed = 1; return 1; }
    Py_DECREF(item);
    return 0;
}

/* The callback runs under spprof's profile lock with the GIL held. The collector thread never needs the
   GIL, so that alone cannot deadlock; but an allocation could start a garbage collection, a finalizer could
   run Python code that takes the profile lock again (a profiler call from a __del__).
   So the collector is off while we build the list (tuples, ints and strs run no Python code otherwise). */
static int spprof__py_gc_off(void) {  /* returns whether the collector was enabled */
#if PY_VERSION_HEX >= 0x030A0000
    return PyGC_Disable();
#else
    int was = 0;
    PyObject *gc = PyImport_ImportModule("gc"), *r;
    if (!gc) { PyErr_Clear(); return 0; }
    r = PyObject_CallMethod(gc, "isenabled", NULL);
    was = r && PyObject_IsTrue(r) == 1;
    Py_XDECREF(r);
    r = PyObject_CallMethod(gc, "disable", NULL);
    Py_XDECREF(r);
    Py_DECREF(gc);
    PyErr_Clear();
    return was;
#endif
}
static void spprof__py_gc_on(void) {
#if PY_VERSION_HEX >= 0x030A0000
    PyGC_Enable();
#else
    PyObject *gc = PyImport_ImportModule("gc"), *r = gc ? PyObject_CallMethod(gc, "enable", NULL) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(gc);
    PyErr_Clear();
#endif
}

static PyObject *spprof__py_samples(PyObject *self, PyObject *noargs) {
    spprof__py_collect c;
    int gc_was_on;
    (void)self; (void)noargs;
    spprof_flush();
    spprof_py_pin_code_objects();
    c.list = PyList_New(0); c.cache = PyDict_New(); c.failed = 0;
    if (!c.list || !c.cache) { Py_XDECREF(c.list); Py_XDECREF(c.cache); return NULL; }
    gc_was_on = spprof__py_gc_off();
    spprof_foreach_sample(spprof__py_collect_one, &c);
    if (gc_was_on) spprof__py_gc_on();
    Py_DECREF(c.cache);
    if (c.failed) { Py_DECREF(c.list); if (!PyErr_Occurred()) PyErr_NoMemory(); return NULL; }
    return c.list;
}

static PyObject *spprof__py_write(PyObject *args, int speedscope) {
    const char *path;
    int threads = 0;
    spprof_result r;
    if (!PyArg_ParseTuple(args, speedscope ? "s" : "s|p", &path, &threads)) return NULL;
    spprof_py_pin_code_objects();
    r = speedscope ? spprof_write_speedscope(path) : spprof_write_collapsed(path, threads ? SPPROF_COLLAPSED_THREADS : 0);
    if (r != SPPROF_OK) return spprof__py_raise(r);
    Py_RETURN_NONE;
}
static PyObject *spprof__py_write_speedscope(PyObject *self, PyObject *args) { (void)self; return spprof__py_write(args, 1); }
static PyObject *spprof__py_write_collapsed(PyObject *self, PyObject *args) { (void)self; return spprof__py_write(args, 0); }

static PyObject *spprof__py_set_thread_name(PyObject *self, PyObject *args) {
    int tid;
    const char *name;
    (void)self;
    if (!PyArg_ParseTuple(args, "is", &tid, &name)) return NULL;
    return PyBool_FromLong(spprof_thread_set_name(tid, name) == SPPROF_OK);
}

static PyObject *spprof__py_register_thread(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
#if !SPPROF__OS_LINUX
    spprof__py_ts_put(spprof_gettid(), PyThreadState_Get());  /* [GIL] where the sampler will look for it */
#endif
    return spprof__py_none_or_raise(spprof_thread_register());
}

static PyObject *spprof__py_gettid(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    return PyLong_FromLong(spprof_gettid());
}

static PyObject *spprof__py_check_layout_fn(PyObject *self, PyObject *args) {
    PyObject *data = Py_None;
    (void)self;
    if (!PyArg_ParseTuple(args, "|O", &data)) return NULL;
#ifdef SPPROF__PY_DEBUG_OFFSETS
    if (data == Py_None) {
        if (!spprof__py_live_offsets()) Py_RETURN_FALSE;
        if (spprof_py_check_layout() != SPPROF_OK) return spprof__py_raise(SPPROF_ERR_UNSUPPORTED);
        Py_RETURN_TRUE;
    } else {
        spprof__py_dbgoff d;
        char err[320];
        if (!PyBytes_Check(data) || PyBytes_GET_SIZE(data) < (Py_ssize_t)sizeof d) {
            PyErr_Format(PyExc_ValueError, "data must be bytes of at least %d bytes", (int)sizeof d);
            return NULL;
        }
        memcpy(&d, PyBytes_AS_STRING(data), sizeof d);
        if (spprof__py_check_offsets(&d, err, sizeof err) != 0) { PyErr_SetString(spprof__py_error, err); return NULL; }
        Py_RETURN_TRUE;
    }
#else
    if (data != Py_None) { PyErr_SetString(PyExc_ValueError, "no debug offsets before CPython 3.13"); return NULL; }
    Py_RETURN_FALSE;
#endif
}

/* -- memory profiler functions (_spprof.mem_*) -- */
/* [GIL] Resolves a memory-profiler frame: Python frames by their code object, native ones by symbol. */
static void spprof__py_mem_resolve(const spprof_frame *f, spprof_symbol *out) {
    memset(out, 0, sizeof *out);
    if (spprof_py_resolve(f, out, NULL)) return;
    spprof_symbolize_native(f->addr, f->aux, out);  /* "[unknown...]" when nothing names it */
}
static PyObject *spprof__py_mem_start_fn(PyObject *self, PyObject *args, PyObject *kw) {
    static const char *kwlist[] = {"sampling_rate", "heap_map_capacity", "max_stacks", "max_frames", "freed_capacity",
                                   "max_depth", "native_hooks", NULL};
    spprof_mem_config c = spprof_mem_config_default();
    unsigned long long rate = c.sampling_rate;
    unsigned int cap = c.heap_map_capacity, stacks = c.max_stacks, frames = c.max_frames, freed = c.freed_capacity;
    int depth = c.max_depth, native = 1;
    spprof_result r;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|KIIIIip", (char **)kwlist, &rate, &cap, &stacks, &frames, &freed, &depth, &native))
        return NULL;
    c.sampling_rate = rate; c.heap_map_capacity = cap; c.max_stacks = stacks; c.max_frames = frames;
    c.freed_capacity = freed; c.max_depth = depth; c.hook_native = native;
    r = spprof_py_mem_start(&c);
    return spprof__py_none_or_raise(r);
}
SPPROF__PY_NOARGS_CALL(spprof__py_mem_stop_fn, spprof_py_mem_stop())
SPPROF__PY_NOARGS_CALL(spprof__py_mem_shutdown_fn, spprof_py_mem_shutdown())
static PyObject *spprof__py_mem_state_fn(PyObject *self, PyObject *noargs) {
    static const char *names[4] = {"off", "sampling", "stopped", "shutdown"};
    int st = spprof__py_mem_api()->state();
    (void)self; (void)noargs;
    return PyUnicode_FromString(names[st & 3]);
}
static PyObject *spprof__py_mem_stats_fn(PyObject *self, PyObject *noargs) {
    const spprof_mem_api *api = spprof__py_mem_api();
    spprof_mem_stats st;
    PyObject *d;
    (void)self; (void)noargs;
    api->enter();
    api->get_stats(&st);
    if (spprof__py_mem_shim) {  /* the Python walker (this module's code) counts its native walks here */
        st.native_walks += SPPROF__LOADR(&spprof__m.fp_walks);
        st.native_walks_rooted += SPPROF__LOADR(&spprof__m.fp_rooted);
        st.native_walks_truncated += SPPROF__LOADR(&spprof__m.fp_broken);
    }
    d = Py_BuildValue("{sKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsKsisKsKsKsKsKsKsi}",
        "samples", (unsigned long long)st.samples, "frees_seen", (unsigned long long)st.frees_seen,
        "live_samples", (unsigned long long)st.live_samples, "heap_map_capacity", (unsigned long long)st.heap_map_capacity,
        "heap_map_used", (unsigned long long)st.heap_map_used, "collisions", (unsigned long long)st.collisions,
        "dropped_map_full", (unsigned long long)st.dropped_map_full, "dropped_stacks_full", (unsigned long long)st.dropped_stacks_full,
        "freed_dropped", (unsigned long long)st.freed_dropped, "stale_reclaimed", (unsigned long long)st.stale_reclaimed,
        "death_during_birth", (unsigned long long)st.death_during_birth, "bloom_saturated", (unsigned long long)st.bloom_saturated,
        "unique_stacks", (unsigned long long)st.unique_stacks, "frames_used", (unsigned long long)st.frames_used,
        "estimated_live_bytes", (unsigned long long)st.estimated_live_bytes, "estimated_live_count", (unsigned long long)st.estimated_live_count,
        "estimated_allocated_bytes", (unsigned long long)st.estimated_allocated_bytes, "got_entries_patched", (unsigned long long)st.got_entries_patched,
        "footprint_bytes", (unsigned long long)st.footprint_bytes, "sampling_rate", (unsigned long long)st.sampling_rate,
        "preloaded", spprof__py_mem_shim, "peak_estimated_bytes", (unsigned long long)st.peak_estimated_bytes,
        "peak_time_ns", (unsigned long long)st.peak_time_ns, "native_walks", (unsigned long long)st.native_walks,
        "native_walks_rooted", (unsigned long long)st.native_walks_rooted,
        "native_walks_truncated", (unsigned long long)st.native_walks_truncated,
        "footprint_resident_bytes", (unsigned long long)st.footprint_resident_bytes,
        "pymalloc_forwarding", spprof__py_memdoms[1].fwd || spprof__py_memdoms[2].fwd);
    api->leave();
    return d;
}

typedef struct spprof__py_memcollect { PyObject *list; PyObject *stacks; spprof__py_collect fc; int failed; } spprof__py_memcollect;

/* stack id -> tuple of resolved frames (leaf first), cached in mc->stacks; startup: a sample of a native-only
   stack taken before spprof__py_mem_attach_ns (cached apart, with the start-up frame at the root) */
static PyObject *spprof__py_mem_frames(spprof__py_memcollect *mc, uint32_t id, const spprof_frame *f, int n,
                                       int startup) {
    PyObject *key, *t;
    int i;
    if (f) n = spprof__mem_trusted(f, n);  /* a walk that went astray through code without frame pointers */
    for (i = 0; startup && f && i < n; i++)
        if (SPPROF_FRAME_KIND(f[i].kind) == SPPROF_FRAME_PYTHON) startup = 0;
    key = PyLong_FromUnsignedLongLong((unsigned long long)id | ((unsigned long long)(startup != 0) << 32));
    if (!key) return NULL;
    t = PyDict_GetItemWithError(mc->stacks, key);
    if (t || PyErr_Occurred()) { Py_DECREF(key); Py_XINCREF(t); return t; }
    t = PyTuple_New((f ? n : 0) + (startup != 0));
    if (t && startup) {
        PyObject *v = Py_BuildValue("(ssi)", SPPROF__PY_MEM_STARTUP, "", 0);
        if (!v) Py_CLEAR(t);
        else PyTuple_SET_ITEM(t, f ? n : 0, v);
    }
    for (i = 0; t && f && i < n; i++) {
        PyObject *k2 = Py_BuildValue("(KII)", (unsigned long long)f[i].addr, (unsigned)f[i].aux, (unsigned)f[i].kind), *v;
        spprof_symbol sym;
        if (!k2) { Py_CLEAR(t); break; }
        v = PyDict_GetItemWithError(mc->fc.cache, k2);
        if (v) Py_INCREF(v);
        else if (!PyErr_Occurred()) {
            spprof__py_mem_resolve(&f[i], &sym);
            v = Py_BuildValue("(ssi)", sym.name, sym.file, sym.line);
            if (v && PyDict_SetItem(mc->fc.cache, k2, v) != 0) Py_CLEAR(v);
        }
        Py_DECREF(k2);
        if (!v) { Py_CLEAR(t); break; }
        PyTuple_SET_ITEM(t, i, v);
    }
    if (t && PyDict_SetItem(mc->stacks, key, t) != 0) Py_CLEAR(t);
    Py_DECREF(key);
    return t;
}

static int spprof__py_mem_sample_cb(const spprof_mem_sample *s, void *user) {
    spprof__py_memcollect *mc = (spprof__py_memcollect *)user;
    PyObject *fr = spprof__py_mem_frames(mc, s->stack_id, s->frames, s->nframes, s->t_alloc_ns < spprof__py_mem_attach_ns),
             *item;
    if (!fr) { mc->failed = 1; return 1; }
    item = Py_BuildValue("(KddKKiN)", (unsigned long long)s->size, s->est_bytes, s->est_count, (unsigned long long)s->t_alloc_ns,
                         (unsigned long long)s->t_free_ns, s->tid, fr);
    if (!item || PyList_Append(mc->list, item) != 0) { Py_XDECREF(item); mc->failed = 1; return 1; }
    Py_DECREF(item);
    return 0;
}

static int spprof__py_mem_stack_cb(uint32_t id, const spprof_frame *f, int n, uint64_t samples, double b, double c, void *user) {
    spprof__py_memcollect *mc = (spprof__py_memcollect *)user;
    PyObject *fr = spprof__py_mem_frames(mc, id, f, n, 0), *item;
    if (!fr) { mc->failed = 1; return 1; }
    item = Py_BuildValue("(NKdd)", fr, (unsigned long long)samples, b, c);
    if (!item || PyList_Append(mc->list, item) != 0) { Py_XDECREF(item); mc->failed = 1; return 1; }
    Py_DECREF(item);
    return 0;
}

/* mem_samples(which) -> [(size, est_bytes, est_count, t_alloc_ns, t_free_ns (0: live), tid, frames)];
   mem_stacks() -> [(frames, samples, est_bytes, est_count)] over the session. frames: ((name, file, line), ...)
   leaf first. Allocations made while these lists are built are not sampled. */
static PyObject *spprof__py_mem_collect(int which) {
    const spprof_mem_api *api = spprof__py_mem_api();
    spprof__py_memcollect mc;
    spprof_result r;
    int gc_was_on;
    memset(&mc, 0, sizeof mc);
    api->enter();
    mc.list = PyList_New(0); mc.stacks = PyDict_New(); mc.fc.cache = PyDict_New();
    if (!mc.list || !mc.stacks || !mc.fc.cache) { r = SPPROF_ERR_NO_MEMORY; mc.failed = 1; goto out; }
    gc_was_on = spprof__py_gc_off();
    r = which ? api->foreach_sample(which, spprof__py_mem_sample_cb, &mc) : api->foreach_stack(spprof__py_mem_stack_cb, &mc);
    if (gc_was_on) spprof__py_gc_on();
out:
    api->leave();
    Py_XDECREF(mc.stacks); Py_XDECREF(mc.fc.cache);
    if (r != SPPROF_OK && !mc.failed) {
        Py_XDECREF(mc.list);
        PyErr_SetString(spprof__py_error, api->last_error()[0] ? api->last_error() : spprof_result_string(r));
        return NULL;
    }
    if (mc.failed) { Py_XDECREF(mc.list); if (!PyErr_Occurred()) PyErr_NoMemory(); return NULL; }
    return mc.list;
}
static PyObject *spprof__py_mem_samples_fn(PyObject *self, PyObject *args) {
    int which = SPPROF_MEM_LIVE;
    (void)self;
    if (!PyArg_ParseTuple(args, "|i", &which)) return NULL;
    if (which < 1 || which > 3) { PyErr_SetString(PyExc_ValueError, "which must be 1 (live), 2 (freed) or 3 (both)"); return NULL; }
    return spprof__py_mem_collect(which);
}
/* mem_enter()/mem_leave(): the calling thread's allocations in between are not sampled (the package's own
   snapshot building); frees are not looked at either, so keep the garbage collector off meanwhile. */
static PyObject *spprof__py_mem_enter_fn(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    spprof__py_mem_api()->enter();
    Py_RETURN_NONE;
}
static PyObject *spprof__py_mem_leave_fn(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    spprof__py_mem_api()->leave();
    Py_RETURN_NONE;
}
static PyObject *spprof__py_mem_stacks_fn(PyObject *self, PyObject *noargs) {
    (void)self; (void)noargs;
    return spprof__py_mem_collect(0);
}

/* ---- exit signals: a profile written on a terminating signal, without a Python-level handler ----------
   exit_signals_arm(callback, signals) (used by `spprof record`): for each signal whose disposition is SIG_DFL
   (and whose default action terminates), a C handler is installed that only writes the signal number to a
   pipe (async-signal-safe: one write(2), errno saved). A thread blocked on that pipe takes the GIL, calls
   callback(signo) (which writes the profile), puts SIG_DFL back and raises the signal again from itself, so
   the process dies of it with the status it would have had without spprof. Why not signal.signal():
   - signal.getsignal() answers from CPython's own table, filled at start-up: it still says SIG_DFL, as it
     would without spprof; a handler the program installs later replaces ours (sigaction), so it wins;
   - fork children must not inherit a handler (multiprocessing's Pool.terminate() sends SIGTERM to workers
     and waits for them to die): a pthread_atfork child handler puts SIG_DFL back where ours is installed;
     a child signalled before that handler ran (right after the fork) is told apart by its pid, and dies of
     the signal without telling the parent.
   exit_signals_disarm() puts SIG_DFL back where ours is still installed (called once the profile is written
   at exit, so a signal during interpreter finalization just terminates), and returns the signal that arrived
   and was not acted on yet (0 if none): a program that signals itself as its last statement reaches its
   atexit handlers before the thread can take the GIL, and `record` must then die of that signal itself. */
#if SPPROF__OS_LINUX
#define SPPROF__PY_NSIG 65
static int spprof__py_sig_pipe[2] = {-1, -1};
static unsigned char spprof__py_sig_mine[SPPROF__PY_NSIG];  /* 1: our handler was installed for it */
static PyObject *spprof__py_sig_cb;
static pid_t spprof__py_sig_pid;               /* the process that armed the handlers */
static struct sigaction spprof__py_sig_dfl;    /* SIG_DFL, empty mask: filled by exit_signals_arm */
static volatile sig_atomic_t spprof__py_sig_pending;  /* the last exit signal taken by the handler (0: none) */

static void spprof__py_sig_handler(int signo) {
    int saved = errno;  /* [signal-safe]: getpid(2), then one write(2) to a pipe, or sigaction(2) + raise */
    unsigned char b = (unsigned char)signo;
    if (getpid() != spprof__py_sig_pid) {
        /* A fork child that took the signal before the pthread_atfork child handler put SIG_DFL back
           (multiprocessing's Pool.terminate() SIGTERMs a worker it has just forked): the pipe is still the
           parent's, and a byte written to it would make the parent write its profile and die of the child's
           signal. The child dies of it instead, as without spprof: SIG_DFL, and the signal raised again; it is
           blocked while this handler runs (no SA_NODEFER), so it is delivered when the handler returns. */
        sigaction(signo, &spprof__py_sig_dfl, NULL);
        raise(signo);
        errno = saved;
        return;
    }
    spprof__py_sig_pending = signo;
    if (write(spprof__py_sig_pipe[1], &b, 1) < 0) {
        /* the pipe is full: a byte is already waiting, the thread will act on it */
    }
    errno = saved;
}

static int spprof__py_sig_is_ours(int signo) {
    struct sigaction cur;
    return spprof__py_sig_mine[signo] && sigaction(signo, NULL, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) &&
           cur.sa_handler == spprof__py_sig_handler;
}

static void spprof__py_sig_restore_all(void) {
    int signo;
    for (signo = 1; signo < SPPROF__PY_NSIG; signo++) {
        if (spprof__py_sig_is_ours(signo)) {
            struct sigaction dfl;
            memset(&dfl, 0, sizeof dfl);
            dfl.sa_handler = SIG_DFL;
            sigemptyset(&dfl.sa_mask);
            sigaction(signo, &dfl, NULL);
        }
        spprof__py_sig_mine[signo] = 0;
    }
}

static void spprof__py_sig_atfork_child(void) {
    /* the pipe and the thread are the parent's: the child gets the default dispositions back */
    spprof__py_sig_restore_all();
    if (spprof__py_sig_pipe[0] >= 0) close(spprof__py_sig_pipe[0]);
    if (spprof__py_sig_pipe[1] >= 0) close(spprof__py_sig_pipe[1]);
    spprof__py_sig_pipe[0] = spprof__py_sig_pipe[1] = -1;
}

static void spprof__py_sig_atfork_init_fn(void) { pthread_atfork(NULL, NULL, spprof__py_sig_atfork_child); }

static void *spprof__py_sig_thread(void *arg) {
    unsigned char b = 0;
    ssize_t n;
    int signo;
    sigset_t one;
    (void)arg;
    do {
        n = read(spprof__py_sig_pipe[0], &b, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) return NULL;
    signo = b;
    {
        PyGILState_STATE g = PyGILState_Ensure();
        PyObject *r = PyObject_CallFunction(spprof__py_sig_cb, "i", signo);
        if (!r) PyErr_WriteUnraisable(spprof__py_sig_cb);
        Py_XDECREF(r);
        PyGILState_Release(g);
    }
    /* die of the signal as the program would have: default action, delivered to this thread */
    spprof__py_sig_mine[signo] = 1;
    {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        sigaction(signo, &dfl, NULL);
    }
    sigemptyset(&one);
    sigaddset(&one, signo);
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    raise(signo);
    _exit(128 + signo);  /* not reached: every signal armed here terminates by default */
    return NULL;
}

static PyObject *spprof__py_exit_signals_arm(PyObject *self, PyObject *args) {
    PyObject *cb, *sigs, *armed;
    Py_ssize_t i;
    pthread_t th;
    sigset_t all, old;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO", &cb, &sigs)) return NULL;
    if (!PyCallable_Check(cb)) { PyErr_SetString(PyExc_TypeError, "callback must be callable"); return NULL; }
    if (spprof__py_sig_pipe[0] >= 0) return spprof__py_raise((spprof_result)spprof__fail(SPPROF_ERR_ALREADY_STARTED, "exit signals are already armed"));
    sigs = PySequence_Fast(sigs, "signals must be a sequence of ints");
    if (!sigs) return NULL;
    armed = PyList_New(0);
    if (!armed) { Py_DECREF(sigs); return NULL; }
    if (pipe2(spprof__py_sig_pipe, O_CLOEXEC) != 0) {
        Py_DECREF(sigs);
        Py_DECREF(armed);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    /* the handler must never block: the write end is non-blocking (a full pipe already holds a byte) */
    fcntl(spprof__py_sig_pipe[1], F_SETFL, fcntl(spprof__py_sig_pipe[1], F_GETFL) | O_NONBLOCK);
    pthread_once(&once, spprof__py_sig_atfork_init_fn);
    spprof__py_sig_pid = getpid();
    memset(&spprof__py_sig_dfl, 0, sizeof spprof__py_sig_dfl);
    spprof__py_sig_dfl.sa_handler = SIG_DFL;
    sigemptyset(&spprof__py_sig_dfl.sa_mask);
    Py_XDECREF(spprof__py_sig_cb);
    Py_INCREF(cb);
    spprof__py_sig_cb = cb;
    /* The thread takes no signals: they go to the program's threads as before. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (pthread_create(&th, NULL, spprof__py_sig_thread, NULL) != 0) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        close(spprof__py_sig_pipe[0]);
        close(spprof__py_sig_pipe[1]);
        spprof__py_sig_pipe[0] = spprof__py_sig_pipe[1] = -1;
        Py_DECREF(sigs);
        Py_DECREF(armed);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_detach(th);
    for (i = 0; i < PySequence_Fast_GET_SIZE(sigs); i++) {
        long signo = PyLong_AsLong(PySequence_Fast_GET_ITEM(sigs, i));
        struct sigaction cur, sa;
        PyObject *v;
        if (signo == -1 && PyErr_Occurred()) { Py_DECREF(sigs); Py_DECREF(armed); return NULL; }
        if (signo <= 0 || signo >= SPPROF__PY_NSIG || sigaction((int)signo, NULL, &cur) != 0) continue;
        if ((cur.sa_flags & SA_SIGINFO) || cur.sa_handler != SIG_DFL) continue;  /* the program's choice */
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = spprof__py_sig_handler;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;  /* the program's system calls go on as if nothing happened */
        spprof__py_sig_mine[signo] = 1;
        if (sigaction((int)signo, &sa, NULL) != 0) { spprof__py_sig_mine[signo] = 0; continue; }
        v = PyLong_FromLong(signo);
        if (!v || PyList_Append(armed, v) != 0) { Py_XDECREF(v); Py_DECREF(sigs); Py_DECREF(armed); return NULL; }
        Py_DECREF(v);
    }
    Py_DECREF(sigs);
    return armed;
}

static PyObject *spprof__py_exit_signals_disarm(PyObject *self, PyObject *noargs) {
    int pending;
    (void)self;
    (void)noargs;
    spprof__py_sig_restore_all();
    pending = (int)spprof__py_sig_pending;  /* read after SIG_DFL is back: no handler can set it any more */
    spprof__py_sig_pending = 0;
    return PyLong_FromLong(pending);
}
#else
/* Windows has no terminating POSIX signals to arm (Ctrl+C reaches Python as KeyboardInterrupt, and
   TerminateProcess runs no code of the process): nothing is armed. */
static PyObject *spprof__py_exit_signals_arm(PyObject *self, PyObject *args) {
    PyObject *cb, *sigs;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO", &cb, &sigs)) return NULL;
    if (!PyCallable_Check(cb)) { PyErr_SetString(PyExc_TypeError, "callback must be callable"); return NULL; }
    return PyList_New(0);
}
static PyObject *spprof__py_exit_signals_disarm(PyObject *self, PyObject *noargs) {
    (void)self;
    (void)noargs;
    return PyLong_FromLong(0);
}
#endif

static PyMethodDef spprof__py_methods[] = {
    {"mem_start", (PyCFunction)(void (*)(void))spprof__py_mem_start_fn, METH_VARARGS | METH_KEYWORDS,
     "mem_start(sampling_rate=524288, heap_map_capacity=2**18, max_stacks=2**16, max_frames=2**20, freed_capacity=2**16, max_depth=64, native_hooks=True)"},
    {"mem_stop", spprof__py_mem_stop_fn, METH_NOARGS, "mem_stop(): stop sampling new allocations (frees still tracked)"},
    {"mem_shutdown", spprof__py_mem_shutdown_fn, METH_NOARGS, "mem_shutdown(): unhook and forget (one-way)"},
    {"mem_state", spprof__py_mem_state_fn, METH_NOARGS, "mem_state() -> 'off' | 'sampling' | 'stopped' | 'shutdown'"},
    {"mem_stats", spprof__py_mem_stats_fn, METH_NOARGS, "mem_stats() -> dict"},
    {"mem_samples", spprof__py_mem_samples_fn, METH_VARARGS, "mem_samples(which=1) -> list of sampled allocations (1 live, 2 freed, 3 both)"},
    {"mem_stacks", spprof__py_mem_stacks_fn, METH_NOARGS, "mem_stacks() -> per-stack totals of the session"},
    {"mem_enter", spprof__py_mem_enter_fn, METH_NOARGS, "mem_enter(): this thread's allocations are not sampled until mem_leave()"},
    {"mem_leave", spprof__py_mem_leave_fn, METH_NOARGS, "mem_leave()"},
    {"start", (PyCFunction)(void (*)(void))spprof__py_start, METH_VARARGS | METH_KEYWORDS,
     "start(interval_ns, mode=0, max_depth=128, memory_limit=100 MiB, source=0, native=0): start sampling (mode 0 = cpu, 1 = wall; source: spprof_source; native: mixed native + Python stacks)"},
    {"stop", spprof__py_stop, METH_NOARGS, "stop(): stop sampling; the profile stays readable until the next start"},
    {"pause", spprof__py_pause, METH_NOARGS, "pause(): disarm the timers"},
    {"resume", spprof__py_resume, METH_NOARGS, "resume(): re-arm the timers"},
    {"is_active", spprof__py_is_active, METH_NOARGS, "is_active() -> bool (running or paused)"},
    {"state", spprof__py_state, METH_NOARGS, "state() -> 'stopped' | 'running' | 'paused'"},
    {"stats", spprof__py_stats, METH_NOARGS, "stats() -> dict of counters"},
    {"samples", spprof__py_samples, METH_NOARGS,
     "samples() -> [(tid, thread_name, t_first_ns, t_last_ns, count, weight, ((function, file, line), ...) leaf first)]"},
    {"write_speedscope", spprof__py_write_speedscope, METH_VARARGS, "write_speedscope(path)"},
    {"write_collapsed", spprof__py_write_collapsed, METH_VARARGS, "write_collapsed(path, threads=False)"},
    {"set_thread_name", spprof__py_set_thread_name, METH_VARARGS, "set_thread_name(tid, name) -> bool"},
    {"register_thread", spprof__py_register_thread, METH_NOARGS, "register_thread(): sample the calling thread now"},
    {"gettid", spprof__py_gettid, METH_NOARGS, "gettid() -> the OS thread id"},
    {"exit_signals_arm", spprof__py_exit_signals_arm, METH_VARARGS,
     "exit_signals_arm(callback, signals) -> armed: callback(signo) runs on a terminating signal, then the "
     "process dies of it (only signals at SIG_DFL; no Python-level handler; fork children get SIG_DFL)"},
    {"exit_signals_disarm", spprof__py_exit_signals_disarm, METH_NOARGS,
     "exit_signals_disarm() -> signo: SIG_DFL again where exit_signals_arm's handler is still installed; the "
     "exit signal that arrived and was not acted on yet, or 0"},
    {"_check_layout", spprof__py_check_layout_fn, METH_VARARGS,
     "_check_layout(data=None) -> bool: compare the compiled-in frame layout with _PyRuntime.debug_offsets "
     "(or with `data`, a copy of its first DEBUG_OFFSETS_SIZE bytes); raises Error on a difference; False when "
     "there is nothing to compare (before 3.13)"},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef spprof__py_module = {
    PyModuleDef_HEAD_INIT, SPPROF_PYTHON_MODULE_NAME, "spprof's C core (spprof.h + spprof_python.h)", -1,
    spprof__py_methods, NULL, NULL, NULL, NULL
};

#define SPPROF__PY_CONCAT2(a, b) a##b
#define SPPROF__PY_CONCAT(a, b) SPPROF__PY_CONCAT2(a, b)
#ifndef SPPROF_PYTHON_INIT_NAME
#  define SPPROF_PYTHON_INIT_NAME _spprof
#endif
PyMODINIT_FUNC SPPROF__PY_CONCAT(PyInit_, SPPROF_PYTHON_INIT_NAME)(void) {
    PyObject *m = PyModule_Create(&spprof__py_module);
    if (!m) return NULL;
    spprof__py_error = PyErr_NewException(SPPROF_PYTHON_MODULE_NAME ".Error", PyExc_RuntimeError, NULL);
    if (!spprof__py_error || PyModule_AddObject(m, "Error", spprof__py_error) != 0) { Py_XDECREF(spprof__py_error); Py_DECREF(m); return NULL; }
    Py_INCREF(spprof__py_error);
    PyModule_AddStringConstant(m, "__version__", SPPROF_VERSION_STRING);
#ifdef SPPROF_USE_LIBUNWIND
    PyModule_AddStringConstant(m, "NATIVE_UNWINDER", "libunwind");
#else
    PyModule_AddStringConstant(m, "NATIVE_UNWINDER", "frame pointers");
#endif
#ifdef SPPROF__PY_DEBUG_OFFSETS
    PyModule_AddIntConstant(m, "DEBUG_OFFSETS_SIZE", (long)sizeof(spprof__py_dbgoff));
#else
    PyModule_AddIntConstant(m, "DEBUG_OFFSETS_SIZE", 0);
#endif
#ifdef Py_GIL_DISABLED
    /* Free-threaded builds: the module keeps no Python state of its own that needs the GIL (the pin table is
       only touched under spprof's profile lock), so importing it must not turn the GIL back on. */
    PyUnstable_Module_SetGIL(m, Py_MOD_GIL_NOT_USED);
#endif
    return m;
}
#endif /* SPPROF_PYTHON_MODULE */

#ifdef __cplusplus
}
#endif
#endif /* SPPROF_PYTHON_IMPLEMENTATION */
