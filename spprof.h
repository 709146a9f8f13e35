/* spprof.h - in-process sampling profiler for native code (and, with spprof_python.h, CPython).
   Version 0.1.0. MIT license at the end of this file.

   In exactly one C or C++ file:            Everywhere else: just #include "spprof.h"
       #define _GNU_SOURCE   (C only; before any #include)
       #define SPPROF_IMPLEMENTATION
       #include "spprof.h"

   Usage:
       spprof_config cfg = spprof_config_default();   // 10 ms, CPU time, every thread, depth 128
       cfg.interval_ns = 1000000;                      // 1 kHz
       if (spprof_start(&cfg) != SPPROF_OK) fprintf(stderr, "%s\n", spprof_last_error());
       work();
       spprof_stop();
       spprof_write_speedscope("out.speedscope.json");   // open in https://www.speedscope.app
       spprof_write_collapsed("out.collapsed", 0);       // flamegraph.pl / speedscope / inferno
       spprof_write_pprof("out.pb.gz");                  // go tool pprof, Pyroscope, Parca

   Memory profiler (same header; any thread, any time, alone or with the sampler):
       spprof_mem_config mc = spprof_mem_config_default();   // one sample per 512 KiB allocated
       spprof_mem_start(&mc);                                 // hooks the malloc family of loaded objects
       work();
       spprof_mem_write_collapsed("heap.collapsed", SPPROF_MEM_LIVE);  // live heap, weighted in bytes
       spprof_mem_write_collapsed("peak.collapsed", SPPROF_MEM_PEAK);  // the heap at its high-water mark
       spprof_mem_write_pprof("heap.pb.gz");          // alloc_/inuse_ objects and space (Go's heap profile)
       spprof_mem_stop(); spprof_mem_shutdown();

   Contents (search for the banner, in this order):   @api  @config  @impl  @atomics  @os  @errors  @ring
       @registry  @profile  @state  @walk  @sample  @collector  @os_linux (in it: @handler  @guard  @offcpu)
       @os_windows  @os_macos  @lifecycle  @symbolize  @writers  @memprof  @license
   Platforms: Linux (x86-64; aarch64 run under qemu-user emulation only), Windows x86-64 (mingw-w64: tested
   under wine 8 only, never run on real Windows; link nothing beyond the default kernel32) and macOS arm64
   and x86-64 (built and linked with zig cc, never run: no Mac was available). Portable code calls the
   interface under @os; each OS implements it in its own section: @os_linux, @os_windows, @os_macos, with
   its state in spprof__g.lnx / .win / .mac and each registry slot's lnx / win / mac (the shared slot and
   state hold only what portable code reads: see their comments). Per-OS code outside them, each for a
   reason: the primitives (mutex, clock, gettid) in @os, because the global state needs their types; the
   POSIX output files in @writers, shared by Linux and macOS; pprof's Linux mappings in @writers, which read
   the symbolizer's module table; the native allocation hooks in @memprof (Linux GOT patching, macOS
   malloc_logger), because they are built on @memprof's tables and hot paths.

   What it does: per thread, a perf_event task-clock counter (where the kernel allows it: exact rate) or a
   POSIX timer (CLOCK_THREAD_CPUTIME of that thread) sends a signal (a free real-time signal by default,
   see below) to exactly that thread while it runs (perf events' fds sit at the top of the program's fd
   numbers, never its lowest free ones, and take at most 1/8 of the numbers it has not used: threads beyond
   get POSIX timers, see SPPROF_PERF_FD_SHARE); in wall mode the collector also accounts each blocked
   thread's off-CPU time on the stack it is blocked on, without a signal (@offcpu); the handler walks the
   thread's frame-pointer chain into a lock-free multi-producer ring buffer; a collector thread drains the
   ring into a deduplicated profile (interned frames and stacks, run-length per-thread timelines) bounded
   by a memory limit; writers symbolize off the hot path (dladdr + ELF .symtab, the separate debug file's
   .symtab via build id or .gnu_debuglink, .dynsym) and write Speedscope JSON, collapsed stacks or pprof
   (gzip-compressed profile.proto, encoded without a protobuf or zlib library): a regular file (a symlink:
   its target) atomically by rename, a device, FIFO or /dev/stdout-style path in place, never replaced.

   Windows: a sampler thread suspends each thread in turn (SuspendThread, GetThreadContext, walk with the
   PE unwind tables, ResumeThread); names from the COFF symbols mingw leaves in a PE file, else DbgHelp;
   spprof_config.signo is ignored, source must be AUTO, guard_faults and hook_native (memory) are Linux
   only, spprof_symbol_range finds nothing, there is no off-CPU walker (wall mode suspends blocked threads
   too; each sample weighs the real time since the previous tick). A coarse CPU clock (GetThreadTimes) is
   spread over the following ticks: one sample per interval of CPU. A walker given to the sampler runs while
   its thread is suspended: it may read memory only through spprof__os_read_mem (@os), as spprof_python.h
   does (CPython 3.13 on Windows). See @os_windows.

   macOS: the same design with Mach calls (thread_suspend, thread_get_state, walk, thread_resume; threads
   from a pthread introspection hook plus task_threads; symbols from dladdr and the images' LC_SYMTAB);
   interval_ns >= 1 ms, source must be AUTO, no guard_faults; hook_native (memory) sets malloc_logger. Built
   and linked only: see @os_macos for what is taken from Apple's documentation rather than observed.

   Does not do (yet): Without SPPROF_USE_LIBUNWIND, build the code you profile with
   -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer: a function without a frame pointer hides its caller
   (the walk goes from it straight to its caller's caller). No file:line for native code; 32-bit targets.
   Threads whose stack is switched (ucontext/boost.context coroutines) re-read /proc/self/maps whenever
   their stack pointer leaves the last known stack mapping.

   The profiling signal: by default (spprof_config.signo = 0) spprof_start takes the highest real-time
   signal (SIGRTMAX downwards) that has no handler (SIGPROF if none is free), so the program's own SIGPROF
   (setitimer, save/restore of its handler) is left alone, and two copies of spprof take different signals.
   spprof_config.signo picks one explicitly (SIGPROF, the earlier default, still works). Each thread has at
   most one of our signals pending at a time, also when it blocks the signal (a POSIX timer queues one; a
   perf event is one-shot and re-armed by the handler), so a real-time signal never piles up against
   RLIMIT_SIGPENDING. A program that installs its own handler for the profiling signal wins: the collector
   sees it within drain_interval_ms (up to 4x when idle), disarms every timer and perf event, says so once
   on stderr (SPPROF_WARN) and in spprof_stats.handler_replaced; the profile so far is kept, spprof_stop
   works as usual. Until then (tens of ms) the program's handler may receive a few of our signals; if the
   program set SIG_DFL, one of them terminates the process.

   Threads and signals:
   - The signal handler stays installed after spprof_stop() so that a timer signal which was still pending
     on a thread that blocks the signal cannot kill the process later; it ignores everything that is not
     one of our live timers and forwards foreign signals to the handler that was there before.
   - A thread that blocks the profiling signal is not sampled. The collector thread is never sampled.
   - Functions marked [signal-safe] may be called from a signal handler; all others may not. Unless said
     otherwise, API functions may be called from any thread.
   - fork(): a session (sampler and memory profiler) stays with the process that started it; the parent's
     goes on, its profile only its own. A forked child is not sampled and has no profile: spprof_stop,
     pause, resume, spprof_foreach_sample, spprof_write_*, spprof_mem_stop and the spprof_mem_ writers and
     iterators return SPPROF_ERR_NOT_STARTED (spprof_last_error() names the fork) and write no file;
     spprof_start / spprof_mem_start there begin the child's own, clean session (spprof_clear() also
     lifts it). The memory profiler on macOS is not told of fork (its session goes on in the child).
*/
#ifndef SPPROF_H_INCLUDED
#define SPPROF_H_INCLUDED

#define SPPROF_VERSION_MAJOR 0
#define SPPROF_VERSION_MINOR 1
#define SPPROF_VERSION_PATCH 0
#define SPPROF_VERSION_STRING "0.1.0"
#define SPPROF_VERSION_NUMBER (SPPROF_VERSION_MAJOR * 10000 + SPPROF_VERSION_MINOR * 100 + SPPROF_VERSION_PATCH)

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

/* SPPROF_API: linkage of the API functions. Define SPPROF_STATIC (in the implementation file, before the
   include) to make everything static to that file. */
#ifndef SPPROF_API
#  ifdef SPPROF_STATIC
#    if defined(__GNUC__) || defined(__clang__)
#      define SPPROF_API static __attribute__((unused))
#    else
#      define SPPROF_API static
#    endif
#  else
#    define SPPROF_API extern
#  endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==== @api ============================================================================================ */

typedef enum spprof_result {
    SPPROF_OK = 0,
    SPPROF_ERR_INVALID_CONFIG = 1,  /* a config field or argument is out of range; see spprof_last_error() */
    SPPROF_ERR_ALREADY_STARTED = 2, /* spprof_start() while started */
    SPPROF_ERR_NOT_STARTED = 3,     /* stop/pause/resume while stopped */
    SPPROF_ERR_BAD_STATE = 4,       /* pause while paused, resume while running, clear while started */
    SPPROF_ERR_SYSTEM = 5,          /* a system call failed; spprof_last_error() has errno's text */
    SPPROF_ERR_NO_MEMORY = 6,
    SPPROF_ERR_IO = 7,              /* an output file could not be written; the profile is kept */
    SPPROF_ERR_UNSUPPORTED = 8      /* platform or build without this feature */
} spprof_result;

typedef enum spprof_mode {
    SPPROF_MODE_CPU = 0,  /* interval measured on each thread's own CPU clock: idle threads are not sampled */
    SPPROF_MODE_WALL = 1  /* every thread, running or blocked: running threads are sampled as in CPU mode,
                             blocked ones by the collector, without a signal (a blocked system call is never
                             interrupted); their stack is read from /proc/self/task/TID/syscall, see @offcpu */
} spprof_mode;

/* Where the sampling signals come from (spprof_config.source). POSIX CPU-clock timers are checked at the
   kernel's scheduler tick, so they deliver at most CONFIG_HZ (often 250) signals per CPU-second: above that
   rate each signal carries the merged expirations as weight, time stays right but fewer stacks are seen.
   A perf_event task-clock counter runs on a high-resolution timer and delivers the full rate. */
typedef enum spprof_source {
    SPPROF_SOURCE_AUTO = 0,       /* perf task-clock if the kernel allows it, else POSIX timers */
    SPPROF_SOURCE_POSIX = 1,      /* POSIX timers (timer_create) only */
    SPPROF_SOURCE_PERF = 2,       /* CPU mode only: perf task-clock; spprof_start fails if the kernel refuses */
    SPPROF_SOURCE_PERF_USER = 3   /* as PERF, counting user mode only (what an unprivileged process gets
                                     where perf_event_paranoid >= 2 forbids kernel sampling) */
} spprof_source;

typedef enum spprof_state {
    SPPROF_STATE_STOPPED = 0,
    SPPROF_STATE_RUNNING = 1,
    SPPROF_STATE_PAUSED = 2
} spprof_state;

/* One frame of a sample. Native frames: addr = program counter (leaf) or return address (callers; aux has
   SPPROF_AUX_RETADDR). Other kinds (e.g. SPPROF_FRAME_PYTHON from spprof_python.h) define addr/aux. */
typedef struct spprof_frame {
    uint64_t addr;
    uint32_t aux;
    uint32_t kind;
} spprof_frame;

enum {
    SPPROF_FRAME_NATIVE = 0,
    SPPROF_FRAME_PYTHON = 1,
    SPPROF_FRAME_USER = 16,     /* first kind free for users' own walkers */
    SPPROF_AUX_RETADDR = 1      /* native: addr is a return address; symbolize addr-1 */
};
/* The low 16 bits of spprof_frame.kind are the kind; the high 16 bits are the walker's own tag (the Python
   walker keeps a fingerprint of the code object there, to detect an address reused by another object). */
#define SPPROF_FRAME_KIND(kind) ((kind) & 0xffffu)

/* What a stack walker is given: the interrupted thread's registers, inside its signal handler (Linux), or
   read by the sampler thread while that thread is suspended (Windows). */
typedef struct spprof_walk_ctx {
    uintptr_t pc, sp, fp;   /* program counter, stack pointer, frame pointer (rbp / x29) */
    uintptr_t lr;           /* aarch64: link register x30; 0 on x86-64 */
    const void *os_context; /* Linux: the handler's ucontext_t; Windows: the thread's CONTEXT; macOS: its
                               arm_thread_state64_t / x86_thread_state64_t */
    uintptr_t stack_lo;     /* the thread's stack around sp: [stack_lo, stack_hi) */
    uintptr_t stack_hi;     /* 0 when unknown */
    int tid;                /* the sampled thread (Linux: the calling thread; Windows: a suspended one) */
    void *user;             /* spprof_config.walker_user */
} spprof_walk_ctx;

/* A stack walker runs in the signal handler (Linux) or in the sampler thread while the sampled thread is
   suspended (Windows): it must be async-signal-safe, and may take no lock, allocate nothing and call nothing
   that could (the suspended thread may hold the heap's or the loader's lock). It writes at most max_frames
   frames, leaf first, and returns how many, or -1 to drop the sample (counted as a walk error). */
typedef int (*spprof_walk_fn)(const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames);

/* Wall mode: called by the collector thread (a normal thread, not a signal handler) for a thread blocked in
   the kernel, with frames[0, nnative) its recovered native stack (see @offcpu). It may replace them with up to
   max_frames frames of its own (the thread does not run meanwhile) and returns their number, or 0 to keep the
   native ones. spprof_python.h puts the thread's Python frames there. */
typedef int (*spprof_offcpu_walk_fn)(int tid, spprof_frame *frames, int nnative, int max_frames, void *user);

typedef struct spprof_symbol {
    char name[256];
    char file[256];  /* source file, or the shared object for native code */
    int line;        /* 0 when unknown */
} spprof_symbol;

/* A resolver runs in a normal thread while a profile is written. Return 1 when it filled *out, 0 to fall
   back to the native symbolizer. */
typedef int (*spprof_resolve_fn)(const spprof_frame *frame, spprof_symbol *out, void *user);

/* Called by the collector thread (no locks held) after each drain, with the number of distinct frames in
   the profile so far; lets a glue layer notice new frames (e.g. pin Python code objects). */
typedef void (*spprof_drain_fn)(uint32_t nframes_total, void *user);

/* Fault guard for walkers that follow pointers they cannot fully vouch for (e.g. interpreter frames that
   another thread may be changing). Inside the signal handler:
       spprof_guard g;
       if (!spprof_guard_claim(&g, ctx->tid)) return -1;
       if (sigsetjmp(g.env, 1)) { spprof_guard_release(&g); return -1; }   // a read faulted
       ... reads ...
       spprof_guard_release(&g);
   A SIGSEGV/SIGBUS inside the guarded region jumps back to sigsetjmp instead of killing the process.
   Needs spprof_config.guard_faults = 1 (installs the SIGSEGV/SIGBUS handler while profiling; faults outside
   a guarded region go to the previous handler, or to the default action). Variables changed after sigsetjmp
   and read after a fault must be volatile.
   Declared only where <setjmp.h> declares sigjmp_buf (POSIX: _GNU_SOURCE, _POSIX_C_SOURCE, C++, or the
   compiler's default gnu modes), so a strict -std=c99 file that does not use the guard still compiles. */
#if !defined(_WIN32) && !defined(__APPLE__) && /* Linux only */ \
    (defined(__USE_POSIX) || defined(_POSIX_C_SOURCE) || defined(_GNU_SOURCE) || defined(__cplusplus))
#define SPPROF_HAVE_GUARD 1
typedef struct spprof_guard {
    sigjmp_buf env;
    int slot;
} spprof_guard;
#endif

/* ==== @config ========================================================================================= */

typedef struct spprof_config {
    int64_t interval_ns;     /* sampling interval, 50 us .. 60 s                      (default 10 ms) */
    spprof_mode mode;        /* SPPROF_MODE_CPU or SPPROF_MODE_WALL                   (default CPU) */
    spprof_source source;    /* where the signals come from, see spprof_source          (default AUTO) */
    int signo;               /* signal used by the timers, 1 .. SIGRTMAX; 0: the highest real-time signal
                                that has no handler, else SIGPROF (see the first screen) (default 0) */
    int max_depth;           /* frames kept per sample, 1 .. 1024                     (default 128) */
    uint32_t ring_slots;     /* ring capacity in samples, power of two 16..2^20, at most 256 MiB (default 4096) */
    uint64_t memory_limit;   /* bytes the collected profile may use (strict), 1 MiB .. 1 TiB (default 100 MiB) */
    int auto_threads;        /* 1: sample every thread of the process, found by scanning /proc/self/task;
                                0: only threads that call spprof_thread_register()    (default 1) */
    int scan_interval_ms;    /* how often new and exited threads are looked for, 1 .. 10000 (default 20) */
    int drain_interval_ms;   /* how often the collector drains the ring, 1 .. 10000  (default 20) */
    spprof_walk_fn walker;   /* NULL: spprof_walk_native() */
    void *walker_user;       /* given to walker and offcpu_walker */
    spprof_offcpu_walk_fn offcpu_walker; /* wall mode, blocked threads; NULL: their native stack */
    spprof_resolve_fn resolver; /* NULL: spprof_symbolize_native() only */
    void *resolver_user;
    spprof_drain_fn drain_hook; /* NULL: none */
    void *drain_hook_user;
    int guard_faults;        /* 1: install the fault handler behind spprof_guard_*   (default 0) */
} spprof_config;

typedef struct spprof_stats {
    uint64_t samples_captured;      /* written to the ring buffer */
    uint64_t samples_dropped;       /* ring buffer full (or contended past the retry bound) */
    uint64_t samples_dropped_memory;/* memory_limit reached: sample not added to the profile */
    uint64_t samples_stale;         /* timer signal for a thread slot that no longer matches the thread */
    uint64_t samples_in_profile;    /* samples aggregated into the profile */
    uint64_t timer_overruns;        /* expirations merged by the kernel (si_overrun + timer_getoverrun) */
    uint64_t timer_create_failures; /* timer_create() failed even after retries (thread not sampled) */
    uint64_t timer_create_retries;  /* EAGAIN retries */
    uint64_t threads_registered;    /* threads that got a slot in the registry this session */
    uint64_t threads_live;          /* threads in the registry now */
    uint64_t threads_sampled;       /* threads with at least one sample in the profile */
    uint64_t threads_perf;          /* live threads sampled by a perf task-clock event (the rest: POSIX timers) */
    uint64_t walk_errors;           /* walker returned -1 */
    uint64_t walk_truncated;        /* stack deeper than max_depth */
    uint64_t unique_stacks;
    uint64_t unique_frames;
    uint64_t profile_bytes;         /* memory used by the collected profile */
    uint64_t signals_ignored;       /* our timer signals that arrived while stopped or paused */
    uint64_t faults_recovered;      /* reads that faulted inside a spprof_guard and were recovered */
    uint64_t threads_posix;         /* live threads sampled by a POSIX timer */
    uint64_t perf_fd_fallbacks;     /* threads given a POSIX timer because the perf fd budget (or the process's
                                       fd limit) was reached, this session (see SPPROF_PERF_FD_SHARE) */
    int signo;                      /* the profiling signal of the current (or last) session */
    int handler_replaced;           /* 1: the program replaced spprof's handler; sampling stopped then */
    /* Windows and macOS (a sampler thread suspends each thread in turn); 0 on Linux: */
    uint64_t threads_skipped;       /* samples not taken: suspending the thread or reading its registers
                                       failed (it was exiting) */
    uint64_t suspensions;           /* threads suspended, sampled and resumed */
    uint64_t suspend_ns_total;      /* time threads spent suspended by the sampler, summed */
    uint64_t suspend_ns_max;        /* the longest single suspension */
    uint64_t ticks_late;            /* sampler ticks more than one interval late (the schedule restarts) */
} spprof_stats;

/* A run of identical consecutive samples of one thread, as given by spprof_foreach_sample(). */
typedef struct spprof_sample_view {
    int tid;                     /* OS thread id */
    uint32_t thread_index;       /* index of the thread record (tids can be reused; this cannot) */
    const char *thread_name;
    uint64_t t_first_ns;         /* CLOCK_MONOTONIC of the first and last sample of the run */
    uint64_t t_last_ns;
    uint32_t count;              /* samples in the run */
    uint32_t weight;             /* sampling intervals they stand for (count + timer overruns) */
    const spprof_frame *frames;  /* leaf first */
    int nframes;
} spprof_sample_view;
typedef int (*spprof_sample_fn)(const spprof_sample_view *sample, void *user); /* return non-zero to stop */

SPPROF_API spprof_config spprof_config_default(void);
SPPROF_API spprof_result spprof_start(const spprof_config *cfg);  /* NULL: defaults. Clears the last profile. */
SPPROF_API spprof_result spprof_stop(void);    /* returns within ~100 ms; the profile stays readable */
SPPROF_API spprof_result spprof_pause(void);   /* no sample is taken until resume (POSIX timers are
                                                   disarmed; a perf event runs out at its next overflow) */
SPPROF_API spprof_result spprof_resume(void);
SPPROF_API spprof_state spprof_get_state(void);  /* [signal-safe] */
SPPROF_API int spprof_is_active(void);           /* [signal-safe] 1 while started (running or paused) */
SPPROF_API spprof_result spprof_get_stats(spprof_stats *out);
SPPROF_API spprof_result spprof_flush(void);    /* drain the ring buffer into the profile now */
SPPROF_API spprof_result spprof_clear(void);    /* free the collected profile (only while stopped) */

/* Explicit thread registration: needed only with auto_threads = 0 (or to get a thread sampled before the
   next scan). Call on the thread itself. A registered thread is unregistered automatically at exit. */
SPPROF_API spprof_result spprof_thread_register(void);
SPPROF_API spprof_result spprof_thread_unregister(void);
SPPROF_API spprof_result spprof_thread_set_name(int tid, const char *name); /* name used in the output */
SPPROF_API int spprof_gettid(void);  /* [signal-safe] */

SPPROF_API spprof_result spprof_foreach_sample(spprof_sample_fn fn, void *user);
SPPROF_API spprof_result spprof_write_speedscope(const char *path);
enum { SPPROF_COLLAPSED_THREADS = 1 };  /* flag: first frame of every line is the thread's name */
SPPROF_API spprof_result spprof_write_collapsed(const char *path, int flags);
/* pprof (profile.proto, gzip-compressed: go tool pprof, Pyroscope, Parca, Cloud Profiler): sample types
   samples/count and cpu/nanoseconds (wall/nanoseconds in wall mode), period, time, duration; one sample per
   thread and stack with labels "thread" (name) and "thread_id"; native frames with their object's mapping. */
SPPROF_API spprof_result spprof_write_pprof(const char *path);

typedef void (*spprof_frame_fn)(uint32_t id, const spprof_frame *frame, void *user);
SPPROF_API spprof_result spprof_foreach_frame(uint32_t first_id, spprof_frame_fn fn, void *user); /* distinct frames, in order of first sight */

#ifdef SPPROF_HAVE_GUARD
SPPROF_API int spprof_guard_claim(spprof_guard *g, int tid);  /* [signal-safe] 1 if claimed (see spprof_guard) */
SPPROF_API void spprof_guard_release(spprof_guard *g);        /* [signal-safe] */
#endif

SPPROF_API int spprof_walk_native(const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames); /* [signal-safe] */
#ifdef SPPROF_USE_LIBUNWIND
/* [signal-safe] DWARF unwinding through libunwind (SPPROF_USE_LIBUNWIND, link -lunwind; needs guard_faults). */
SPPROF_API int spprof_walk_libunwind(const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames);
#endif
SPPROF_API int spprof_symbolize_native(uint64_t addr, uint32_t aux, spprof_symbol *out); /* 1 if found */
SPPROF_API int spprof_resolve(const spprof_frame *frame, spprof_symbol *out); /* resolver, then native */
/* The address range [*lo, *hi) of the symbol `name` (ELF .symtab/.dynsym, local symbols too) in the loaded
   object that contains address `near_addr`; 1 if found. Not signal-safe. Finds code that has no exported symbol,
   such as a compiler's split-off "fn.cold" part. */
SPPROF_API int spprof_symbol_range(uintptr_t near_addr, const char *name, uintptr_t *lo, uintptr_t *hi);

/* ---- memory profiler (@memprof) -------------------------------------------------------------------------
   Samples allocations by bytes: on average one sample per sampling_rate bytes allocated, as a Poisson process
   over the bytes (each allocation is sampled with probability 1 - exp(-size/rate)), so every sample carries an
   unbiased weight: est_count = 1 / that probability, est_bytes = size * est_count. Sampled allocations are kept
   in a lock-free heap map until they are freed; freed ones move to a bounded log with their lifetime.
   Allocations reach it through spprof_mem_record_alloc/free (call them from your own allocator), through the
   malloc family of every loaded object (hook_native: their GOT entries are redirected, also in objects loaded
   later with dlopen), through spprof_python.h's PyMem hooks, or through the LD_PRELOAD library built with
   SPPROF_ALLOC_SHIM (see @memprof). The allocation fast path is a thread-local decrement and a branch; a free
   of an unsampled pointer is a counting-bloom-filter test. No lock, no malloc, no stdio in either path. */
typedef int (*spprof_mem_walk_fn)(spprof_frame *frames, int max_frames, void *frame_address, void *user);

typedef struct spprof_mem_config {
    uint64_t sampling_rate;      /* mean bytes between samples, 1 .. 2^40; 1: every allocation (default 512 KiB) */
    uint32_t heap_map_capacity;  /* slots (32 bytes each; half can be live), power of two 1024 .. 2^26 (default 2^18) */
    uint32_t max_stacks;         /* distinct stacks, power of two 256 .. 2^24                     (default 2^16) */
    uint32_t max_frames;         /* frames stored in all distinct stacks, 1024 .. 2^26             (default 2^20) */
    uint32_t freed_capacity;     /* freed samples kept with their lifetime, 0 .. 2^26              (default 2^16) */
    int max_depth;               /* frames per sample, 1 .. 256                                     (default 64) */
    int hook_native;             /* 1: redirect the malloc family of loaded objects (GOT entries; macOS:
                                    malloc_logger; Windows: refused)               (default 1, Windows 0) */
    spprof_mem_walk_fn walker;   /* NULL: frame-pointer walk of the allocating thread */
    void *walker_user;
    uint64_t seed;               /* 0: from the clock */
} spprof_mem_config;

typedef struct spprof_mem_stats {
    uint64_t samples;            /* allocations sampled this session */
    uint64_t frees_seen;         /* frees of sampled allocations */
    uint64_t live_samples;       /* in the heap map now */
    uint64_t heap_map_capacity;
    uint64_t heap_map_used;      /* slots live or tombstoned (load = used / capacity) */
    uint64_t collisions;         /* probe steps past the home slot (inserts and lookups of sampled frees) */
    uint64_t dropped_map_full;   /* samples not tracked: heap map full */
    uint64_t dropped_stacks_full;/* samples recorded without a stack: stack table full */
    uint64_t freed_dropped;      /* freed samples not logged: freed log full (still counted as freed) */
    uint64_t stale_reclaimed;    /* sampled addresses allocated again without their free being seen */
    uint64_t death_during_birth; /* frees that raced the insert of their own sample */
    uint64_t bloom_saturated;    /* filter counters stuck at their maximum (they then only cost speed) */
    uint64_t unique_stacks;
    uint64_t frames_used;
    uint64_t estimated_live_bytes;
    uint64_t estimated_live_count;
    uint64_t estimated_allocated_bytes; /* all sampled allocations of the session, weighted */
    uint64_t got_entries_patched;
    uint64_t footprint_bytes;    /* memory the memory profiler itself holds */
    uint64_t sampling_rate;
    int state;                   /* 0 off, 1 sampling, 2 stopped (frees still tracked), 3 shut down */
    uint64_t peak_estimated_bytes; /* high-water mark of the sampled heap this session (estimated live bytes) */
    uint64_t peak_time_ns;       /* when it was reached (CLOCK_MONOTONIC; 0: nothing sampled yet) */
    /* Frame-pointer health: samples whose stack needed a native walk, those that reached a root (the
       outermost frame; with spprof_python.h also the interpreter loop, below which the Python frames go on)
       and those cut short by code without frame pointers (the rest stopped at max_depth). */
    uint64_t native_walks, native_walks_rooted, native_walks_truncated;
    /* Of footprint_bytes, what is resident now (mincore over the tables' pages: they are mapped whole and
       touched as used); Windows: footprint_bytes. */
    uint64_t footprint_resident_bytes;
} spprof_mem_stats;

typedef struct spprof_mem_sample {
    uint64_t addr;
    uint64_t size;               /* requested bytes */
    double est_bytes;            /* unbiased estimate of the bytes this sample stands for */
    double est_count;            /* ... and of the number of allocations */
    uint64_t t_alloc_ns;         /* CLOCK_MONOTONIC */
    uint64_t t_free_ns;          /* 0: still live */
    int tid;                     /* allocating thread */
    uint32_t stack_id;           /* UINT32_MAX: no stack (table full) */
    const spprof_frame *frames;  /* leaf first */
    int nframes;
} spprof_mem_sample;
typedef int (*spprof_mem_sample_fn)(const spprof_mem_sample *s, void *user); /* return non-zero to stop */
/* SPPROF_MEM_PEAK: the samples that were live at the high-water mark (peak_time_ns): live ones allocated by
   then and logged freed ones freed after it (complete while freed_dropped is 0). */
enum { SPPROF_MEM_LIVE = 1, SPPROF_MEM_FREED = 2, SPPROF_MEM_PEAK = 4 };

SPPROF_API spprof_mem_config spprof_mem_config_default(void);
/* Starts sampling (a new session: the previous session's samples are dropped). Not while sampling. */
SPPROF_API spprof_result spprof_mem_start(const spprof_mem_config *cfg);
/* Stops sampling new allocations; frees of sampled allocations are still tracked, snapshots still work. */
SPPROF_API spprof_result spprof_mem_stop(void);
/* One-way: stops, puts the GOT entries back and forgets every sample. Hooks still running stay safe (late
   frees are passed through). Memory of the tables is kept (a late free may still read it). */
SPPROF_API spprof_result spprof_mem_shutdown(void);
SPPROF_API int spprof_mem_state(void);  /* as spprof_mem_stats.state */
SPPROF_API spprof_result spprof_mem_get_stats(spprof_mem_stats *out);
/* Calls fn for the live samples and/or the logged freed ones (SPPROF_MEM_LIVE | SPPROF_MEM_FREED), or for those
   live at the peak (SPPROF_MEM_PEAK, alone). */
SPPROF_API spprof_result spprof_mem_foreach_sample(int which, spprof_mem_sample_fn fn, void *user);
/* Totals per stack over the whole session (live and freed), for "which code churns memory". */
typedef int (*spprof_mem_stack_fn)(uint32_t stack_id, const spprof_frame *frames, int nframes, uint64_t samples,
                                   double est_bytes, double est_count, void *user);
SPPROF_API spprof_result spprof_mem_foreach_stack(spprof_mem_stack_fn fn, void *user);
/* Collapsed stacks of the live heap (or, with SPPROF_MEM_FREED, of everything allocated; with SPPROF_MEM_PEAK,
   of the heap at its high-water mark), weighted in bytes, one line per distinct stack. */
SPPROF_API spprof_result spprof_mem_write_collapsed(const char *path, int which);
/* pprof of the session (gzip-compressed profile.proto), Go's heap convention: per stack alloc_objects,
   alloc_space (everything sampled this session), inuse_objects, inuse_space (live now; the default),
   in counts and bytes (the unbiased estimates); period = sampling_rate bytes. */
SPPROF_API spprof_result spprof_mem_write_pprof(const char *path);
/* [hook-safe] For allocators of your own: call after an allocation succeeded and before the memory is freed. */
SPPROF_API void spprof_mem_record_alloc(void *ptr, size_t size);
SPPROF_API void spprof_mem_record_free(void *ptr);
/* [hook-safe] Records ptr (size bytes) as one sample now, without the countdown: for a hook that decides
   itself, Poisson by bytes at the session's sampling_rate (spprof_mem_stats), as spprof_python.h's do with the
   preloaded library; any other choice makes the estimates wrong. Ignored when not sampling. */
SPPROF_API void spprof_mem_record_sample(void *ptr, size_t size);
/* [hook-safe] Re-entrancy guard of the calling thread: allocations between enter and leave are not sampled. */
SPPROF_API void spprof_mem_enter(void);
SPPROF_API void spprof_mem_leave(void);
SPPROF_API spprof_result spprof_mem_set_walker(spprof_mem_walk_fn walker, void *user);

/* Every memory-profiler entry point, as a table: the LD_PRELOAD library exports its own as
   spprof_alloc_shim_api(), and a module loaded later (spprof_python.h) uses that one, so that there is a
   single heap map in the process. */
typedef struct spprof_mem_api {
    int version;  /* 2 (1: without mem_tabs, tabs_layout) */
    spprof_result (*start)(const spprof_mem_config *cfg);
    spprof_result (*stop)(void);
    spprof_result (*shutdown)(void);
    int (*state)(void);
    spprof_result (*get_stats)(spprof_mem_stats *out);
    spprof_result (*foreach_sample)(int which, spprof_mem_sample_fn fn, void *user);
    spprof_result (*foreach_stack)(spprof_mem_stack_fn fn, void *user);
    void (*record_alloc)(void *ptr, size_t size);
    void (*record_free)(void *ptr);
    void (*enter)(void);
    void (*leave)(void);
    spprof_result (*set_walker)(spprof_mem_walk_fn walker, void *user);
    const char *(*last_error)(void);
    /* version >= 2: the address of this copy's heap-map tables pointer (read with an acquire load), so that
       a hook built from the same spprof.h (tabs_layout equal to its own) can make the common free's filter
       test itself and call record_free only when the pointer may be sampled; NULL: not offered. And
       record_sample (spprof_mem_record_sample), for a hook with a countdown of its own. */
    void *const *mem_tabs;
    unsigned tabs_layout;
    void (*record_sample)(void *ptr, size_t size);
} spprof_mem_api;
SPPROF_API const spprof_mem_api *spprof_mem_get_api(void);

SPPROF_API const char *spprof_result_string(spprof_result r);
SPPROF_API const char *spprof_last_error(void);  /* the calling thread's last error message, or "" */

#ifdef __cplusplus
}
#endif
#endif /* SPPROF_H_INCLUDED */

/* ==== @impl =========================================================================================== */
#if defined(SPPROF_IMPLEMENTATION) && !defined(SPPROF_IMPLEMENTATION_INCLUDED)
#define SPPROF_IMPLEMENTATION_INCLUDED

/* Platform layer: exactly one of these is 1. Portable code calls the interface listed under @os; each OS
   implements it in its own section (@os_linux: signals, timers, perf events, /proc; @os_windows: a sampler
   thread that suspends threads). */
#if defined(__linux__)
#  define SPPROF__OS_LINUX 1
#  define SPPROF__OS_WINDOWS 0
#  define SPPROF__OS_MACOS 0
#elif defined(_WIN32)
#  define SPPROF__OS_LINUX 0
#  define SPPROF__OS_WINDOWS 1
#  define SPPROF__OS_MACOS 0
#elif defined(__APPLE__) && defined(__MACH__)
#  define SPPROF__OS_LINUX 0
#  define SPPROF__OS_WINDOWS 0
#  define SPPROF__OS_MACOS 1
#else
#  error "spprof.h: the Linux, Windows and macOS samplers are implemented."
#endif
#if !defined(__x86_64__) && !defined(__aarch64__)
#  error "spprof.h: the native stack walker supports x86-64 and aarch64."
#endif

#if SPPROF__OS_LINUX
#ifndef _GNU_SOURCE
#  define _GNU_SOURCE 1  /* effective only if no system header was included before this one */
#endif
#include <dirent.h>
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#if !defined(__USE_GNU)
#  error "spprof.h implementation needs _GNU_SOURCE: put '#define _GNU_SOURCE' before every #include in this file, or compile with -D_GNU_SOURCE"
#endif
#endif /* SPPROF__OS_LINUX */

#if SPPROF__OS_WINDOWS
#ifndef WIN32_LEAN_AND_MEAN
#  define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#include <tlhelp32.h>
#include <dbghelp.h>  /* types only: dbghelp.dll is loaded when a profile is written */
#include <io.h>
#include <fcntl.h>
#include <sys/stat.h>
#endif /* SPPROF__OS_WINDOWS */

#if SPPROF__OS_MACOS
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <mach/mach.h>
#include <mach/mach_time.h>
#include <mach/thread_act.h>
#include <mach/thread_info.h>
#include <mach/vm_map.h>
#include <mach-o/dyld.h>
#include <mach-o/loader.h>
#include <mach-o/nlist.h>
#endif /* SPPROF__OS_MACOS */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Allocator: define all three or none (in the implementation file). Never called from the signal handler. */
#if defined(SPPROF_MALLOC) || defined(SPPROF_REALLOC) || defined(SPPROF_FREE)
#  if !defined(SPPROF_MALLOC) || !defined(SPPROF_REALLOC) || !defined(SPPROF_FREE)
#    error "spprof.h: define all of SPPROF_MALLOC, SPPROF_REALLOC and SPPROF_FREE, or none of them"
#  endif
#else
#  define SPPROF_MALLOC(sz) malloc(sz)
#  define SPPROF_REALLOC(p, sz) realloc((p), (sz))
#  define SPPROF_FREE(p) free(p)
#endif

/* Logging of warnings (never from the signal handler). Define SPPROF_LOG(msg) to redirect; the default
   writes to stderr only when the environment variable SPPROF_DEBUG is set. */
#ifndef SPPROF_LOG
#  define SPPROF_LOG(msg) do { if (getenv("SPPROF_DEBUG")) fprintf(stderr, "spprof: %s\n", (msg)); } while (0)
#endif
/* Messages the user must see (sampling stopped because the program took the profiling signal over), from
   the collector thread. Define SPPROF_WARN(msg) to redirect; the default writes one line to stderr (fd 2,
   one write(), no stdio buffer shared with the program). */
#ifndef SPPROF_WARN
#  define SPPROF_WARN(msg) spprof__warn_stderr(msg)
#  define SPPROF__WARN_DEFAULT 1
#endif

/* Largest accepted max_depth; fixes the size of a ring slot's frame array together with max_depth. */
#ifndef SPPROF_MAX_DEPTH_LIMIT
#  define SPPROF_MAX_DEPTH_LIMIT 1024
#endif
/* Bound on compare-and-swap retries of a producer before a sample is dropped (keeps the handler bounded). */
#ifndef SPPROF_RING_MAX_RETRIES
#  define SPPROF_RING_MAX_RETRIES 64
#endif
/* Largest ring buffer accepted (ring_slots x (header + max_depth frames)). */
#ifndef SPPROF_RING_MAX_BYTES
#  define SPPROF_RING_MAX_BYTES (256ull << 20)
#endif
/* Bound on bytes of /proc/self/maps the handler reads to find a thread's stack mapping. */
#ifndef SPPROF_MAPS_READ_LIMIT
#  define SPPROF_MAPS_READ_LIMIT (8u << 20)
#endif
/* Wall mode: how often the collector accounts the time threads spend off the CPU (see @offcpu), in ms. A
   blocked thread costs one clock read per period and one sample per period (carrying the period's time as
   weight), not one signal per interval. */
#ifndef SPPROF_OFFCPU_PERIOD_MS
#  define SPPROF_OFFCPU_PERIOD_MS 50
#endif
/* Wall mode: bytes of a blocked thread's stack (from its stack pointer up) copied to recover its frames. */
#ifndef SPPROF_OFFCPU_STACK_BYTES
#  define SPPROF_OFFCPU_STACK_BYTES (256u << 10)
#endif

/* How long spprof_stop() waits for signal handlers still running; after that their session's memory is
   left allocated instead of freed (see spprof__stop_locked). */
#ifndef SPPROF_STOP_WAIT_MS
#  define SPPROF_STOP_WAIT_MS 2000
#endif

/* The descriptors spprof keeps (one perf event per thread, the collector's eventfd and /proc/self/mem) live at
   the top of the numbers the program may use, never among its lowest free ones (see spprof__fd_move_high):
   below min(RLIMIT_NOFILE soft limit, SPPROF_PERF_FD_TOP), perf events in a range of at most
   min(SPPROF_PERF_FD_BUDGET, soft limit / SPPROF_PERF_FD_SHARE) numbers, holding at most
   1/SPPROF_PERF_FD_SHARE of the numbers the program has not used yet. Threads beyond that get a POSIX timer
   (no descriptor). Define in the implementation file. A higher SPPROF_PERF_FD_TOP costs every fork() of the
   program (the kernel copies the descriptor table up to the highest open number: +80 us per fork at 20,000,
   measured). */
#ifndef SPPROF_PERF_FD_TOP
#  define SPPROF_PERF_FD_TOP 4096
#endif
#ifndef SPPROF_PERF_FD_BUDGET
#  define SPPROF_PERF_FD_BUDGET 1024
#endif
#ifndef SPPROF_PERF_FD_SHARE
#  define SPPROF_PERF_FD_SHARE 8
#endif
#if SPPROF_PERF_FD_TOP < 1 || SPPROF_PERF_FD_TOP > (1 << 20)
#  error "spprof.h: SPPROF_PERF_FD_TOP must be 1 .. 2^20 (the fd map's range)"
#endif
#if SPPROF_PERF_FD_SHARE < 1 || SPPROF_PERF_FD_BUDGET < 0
#  error "spprof.h: SPPROF_PERF_FD_SHARE must be >= 1 and SPPROF_PERF_FD_BUDGET >= 0"
#endif

/* Define SPPROF_NO_PERF_EVENTS to build without the perf_event sample source (POSIX timers only), e.g.
   where <linux/perf_event.h> is missing. */
#if !defined(SPPROF_NO_PERF_EVENTS) && SPPROF__OS_LINUX
#  include <linux/perf_event.h>
#  include <sys/ioctl.h>
#  define SPPROF__HAVE_PERF 1
#else
#  define SPPROF__HAVE_PERF 0
#endif

#ifndef sigev_notify_thread_id
#  define sigev_notify_thread_id _sigev_un._tid
#endif

#if defined(__has_feature)
#  if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#    define SPPROF__NO_SANITIZE __attribute__((no_sanitize("address", "thread")))
#  endif
#endif
#if !defined(SPPROF__NO_SANITIZE) && (defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__))
#  define SPPROF__NO_SANITIZE __attribute__((no_sanitize_address, no_sanitize_thread))
#endif
#ifndef SPPROF__NO_SANITIZE
#  define SPPROF__NO_SANITIZE
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ==== @atomics ========================================================================================
   GCC/Clang __atomic builtins: the same in C99 and C++, lock-free for these sizes on x86-64 and aarch64, and
   therefore async-signal-safe. */
#define SPPROF__LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define SPPROF__LOADR(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define SPPROF__STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define SPPROF__STORER(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define SPPROF__ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define SPPROF__SUB(p, v) __atomic_fetch_sub((p), (v), __ATOMIC_RELAXED)
#define SPPROF__CAS(p, expp, v) __atomic_compare_exchange_n((p), (expp), (v), 1, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)

/* ==== @os ===============================================================================================
   The platform layer. Portable code (ring, registry, profile, collector's aggregation, lifecycle, writers,
   the memory profiler's tables) calls only this interface; each OS implements it in its own section:
   - primitives (here, per OS): spprof__mutex + SPPROF__MUTEX_INIT + spprof__lock/unlock, spprof__once,
     spprof__now_ns [signal-safe], spprof__sleep_ms, spprof__yield, spprof_gettid, spprof__linux_slot /
     spprof__win_slot / spprof__mac_slot (what a registry slot holds for its sample source: slot->lnx, win,
     mac), spprof__linux_state / spprof__win_state / spprof__mac_state (the OS's state: spprof__g.lnx, win,
     mac);
   - sample source of a thread (@os_linux: a POSIX timer or perf event sending a signal; @os_windows: the
     sampler thread's tick): spprof__create_timer, spprof__arm, spprof__delete_timer, spprof__source_is_perf;
   - threads: spprof__list_threads, spprof__thread_alive, spprof__read_comm (name), spprof__thread_at_exit;
   - code ranges (spprof__refresh_xranges), symbols (spprof__os_symbolize), the collector or sampler thread
     (spprof__os_begin / spprof__os_end), output files (spprof__out_open / spprof__out_close);
   - the OS's own fields, which portable code never names: reset at spprof_start (spprof__os_reset), a
     slot's set up and freed (spprof__os_slot_init / spprof__os_slot_free), reported (spprof__os_stats);
   - spprof__os_read_mem(dst, src, n) [suspended-safe]: copies n bytes of this process's memory, 1 if all of
     them were readable, 0 (nothing faulted) if not: the read an external sampler makes of a suspended
     thread's data (spprof_python.h's frames). Windows: ReadProcessMemory on the own process (a system call:
     no user-mode lock, no allocation); Linux: a copy under the fault guard (@guard).
   Every OS hands a sample to the portable spprof__take_sample() (@sample): the Linux signal handler for its
   own thread, the Windows and macOS sampler threads for a thread they have suspended. */
static void spprof__yield(void);
typedef int spprof__once_t;  /* 0: not run, 1: running, 2: done */
/* Runs fn once per process, whoever calls first; the others wait until it has run. */
static void spprof__once(spprof__once_t *o, void (*fn)(void)) {
    int expect = 0;
    if (SPPROF__LOAD(o) == 2) return;
    if (__atomic_compare_exchange_n(o, &expect, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
        fn();
        SPPROF__STORE(o, 2);
        return;
    }
    while (SPPROF__LOAD(o) != 2) spprof__yield();
}

#if SPPROF__OS_LINUX
typedef pthread_mutex_t spprof__mutex;
#define SPPROF__MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
static void spprof__lock(spprof__mutex *m) { pthread_mutex_lock(m); }
static void spprof__unlock(spprof__mutex *m) { pthread_mutex_unlock(m); }
static void spprof__yield(void) { sched_yield(); }

static uint64_t spprof__now_ns(void) {  /* [signal-safe]: clock_gettime is async-signal-safe (vDSO) */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

SPPROF_API int spprof_gettid(void) { return (int)syscall(SYS_gettid); }

static void spprof__sleep_ms(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Zeroed pages straight from the kernel (the memory profiler's tables: never malloc, which it hooks). */
static void *spprof__os_map_pages(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}
typedef unsigned char spprof__mincore_vec;  /* mincore's vector element (spprof__os_resident) */

/* [signal-safe] The calling thread's stack around address a: the mapping that holds it (@walk). */
static int spprof__find_mapping(uintptr_t sp, uintptr_t *lo, uintptr_t *hi);
static int spprof__own_stack(uintptr_t a, uintptr_t *lo, uintptr_t *hi) { return spprof__find_mapping(a, lo, hi); }

/* perf event fds -> cookie (same layout as a timer's sival_ptr), for the handler: a signal sent by a perf
   event carries only the fd (si_fd). Chunks of SPPROF__FDCHUNK entries are allocated under reg_lock and
   published with a release store. Chunks are never freed (8 KiB per 1024 fd numbers; the next session reuses
   them): a handler may read the map at any time, even after stop or in a fork child. When one of our fds is
   closed, its entry becomes a tombstone (SPPROF__PERF_TOMB in the generation field, the close time in ms
   in the index field): a signal of ours that was still queued then is ignored for SPPROF__PERF_TOMB_MS,
   after which the fd number may belong to another copy of spprof, whose signals are passed on. */
#define SPPROF__FDCHUNK 1024u
#define SPPROF__FDCHUNKS 1024u   /* fds below 2^20 */

/* What a registry slot holds on Linux, and the session's signal state (see @os_linux). Portable code never
   names these fields: it resets and frees them through spprof__os_slot_init / spprof__os_slot_free and
   spprof__os_reset, and reports them through spprof__os_stats. */
typedef struct spprof__linux_slot {
    timer_t timer;           /* the POSIX timer (when the slot has no perf event) */
    int perf_fd;             /* perf task-clock event of this thread, or -1 */
    int perf_rearm;          /* perf source: the one-shot event is spent (or never armed) and waits for a
                                REFRESH at the next resume (atomic; see spprof__arm) */
    /* wall mode, off-CPU accounting (@offcpu): touched only by the collector, under reg_lock */
    int64_t off_wall, off_cpu;  /* CLOCK_MONOTONIC and the thread's CPU clock at the last accounting (0: none) */
    int64_t off_acc;            /* off-CPU time not yet given out as weight (ns) */
    int64_t off_seen_cpu;       /* the thread's CPU clock when off_frames were recovered (-1: not recovered) */
    spprof_frame *off_frames;   /* the stack the thread is blocked on (max_depth frames), or NULL */
    int off_n;                  /* frames in off_frames; 0: the thread is not blocked in the kernel */
    uintptr_t off_lo, off_hi;   /* the mapping that held its stack pointer at the last recovery */
} spprof__linux_slot;
typedef struct spprof__linux_state {
    int perf_on;                   /* this session creates perf events (atomic) */
    int perf_exclude_kernel;       /* perf events count user mode only (requested, or the kernel refused more) */
    pthread_t collector;
    int handler_installed;
    int installed_signo;
    struct sigaction old_action;
    uint64_t *fdmap[SPPROF__FDCHUNKS];  /* handler-visible: perf event fd -> cookie (above) */
    int wake_fd;                   /* eventfd that wakes the collector when the ring fills up */
    uint32_t perf_fds;             /* perf event fds open now (under reg_lock; see spprof__fd_move_high) */
    int mem_fd;                    /* wall mode: the collector's /proc/self/mem, or -1 (under reg_lock), so
                                      that a fork child closes it (it reads the parent's memory) */
    uint64_t perf_fd_fallbacks;    /* threads given a POSIX timer because the fd budget was used up */
} spprof__linux_state;
#endif /* SPPROF__OS_LINUX */

/* The suspending samplers' (Windows, macOS) suspension figures for spprof_stats (@sample: spprof__susp_note);
   atomic: spprof_get_stats reads them from another thread. */
typedef struct spprof__susp_stats { uint64_t n, ns_total, ns_max; } spprof__susp_stats;

#if SPPROF__OS_WINDOWS
typedef SRWLOCK spprof__mutex;
#define SPPROF__MUTEX_INIT SRWLOCK_INIT
static void spprof__lock(spprof__mutex *m) { AcquireSRWLockExclusive(m); }
static void spprof__unlock(spprof__mutex *m) { ReleaseSRWLockExclusive(m); }
static void spprof__yield(void) { SwitchToThread(); }

static uint64_t spprof__now_ns(void) {
    static LARGE_INTEGER freq;  /* constant for the life of the system */
    LARGE_INTEGER c;
    if (!SPPROF__LOADR(&freq.QuadPart)) {
        LARGE_INTEGER f;
        QueryPerformanceFrequency(&f);
        SPPROF__STORER(&freq.QuadPart, f.QuadPart);
    }
    QueryPerformanceCounter(&c);
    return (uint64_t)(c.QuadPart / freq.QuadPart) * 1000000000u +
           (uint64_t)(c.QuadPart % freq.QuadPart) * 1000000000u / (uint64_t)freq.QuadPart;
}

SPPROF_API int spprof_gettid(void) { return (int)GetCurrentThreadId(); }

static void spprof__sleep_ms(int ms) { Sleep((DWORD)ms); }

static void *spprof__os_map_pages(size_t bytes) {
    return VirtualAlloc(NULL, bytes, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);  /* zeroed */
}
static uint64_t spprof__os_resident(const void *p, size_t bytes) {  /* not measured here: the whole size */
    (void)p;
    return bytes;
}

/* [suspended-safe] See @os. ReadProcessMemory fails (no exception) when any page of the range is not
   readable; a partial copy counts as a failure. */
static __attribute__((unused)) int spprof__os_read_mem(void *dst, const void *src, size_t n) {
    SIZE_T got = 0;
    return ReadProcessMemory(GetCurrentProcess(), src, dst, n, &got) && got == n;
}

/* The calling thread's stack: [the lowest address it may reach, its base) (Windows 8+). */
static int spprof__own_stack(uintptr_t a, uintptr_t *lo, uintptr_t *hi) {
    ULONG_PTR l = 0, h = 0;
    GetCurrentThreadStackLimits(&l, &h);
    *lo = (uintptr_t)l;
    *hi = (uintptr_t)h;
    return a >= *lo && a < *hi;
}

/* What a registry slot holds on Windows, and the sampler's state (see @os_windows). */
typedef struct spprof__win_slot {
    HANDLE th;               /* OpenThread: suspend/resume, get context, query information */
    uint64_t cycles;         /* QueryThreadCycleTime at the previous tick */
    uintptr_t stack_base;    /* the thread's stack: [stack_limit at sample time, stack_base) */
    uint64_t adv_ns;         /* when its CPU time was last seen to advance (coarse clocks, see the tick) */
} spprof__win_slot;
typedef struct spprof__win_state {
    HANDLE thread;           /* the sampler thread (it is also the collector) */
    HANDLE wake;             /* auto-reset event: stop */
    uint64_t ticks, ticks_late, suspend_failures;
    spprof__susp_stats susp;
} spprof__win_state;
#endif /* SPPROF__OS_WINDOWS */

#if SPPROF__OS_MACOS
typedef pthread_mutex_t spprof__mutex;
#define SPPROF__MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
static void spprof__lock(spprof__mutex *m) { pthread_mutex_lock(m); }
static void spprof__unlock(spprof__mutex *m) { pthread_mutex_unlock(m); }
static void spprof__yield(void) { sched_yield(); }

/* [signal-safe] mach_absolute_time in ns (the sampler paces itself in the same clock with mach_wait_until).
   The timebase is constant for the life of the system (1/1 on x86-64 Macs, 125/3 on Apple silicon, as
   documented; not observed here). */
static uint64_t spprof__now_ns(void) {
    static mach_timebase_info_data_t tb;  /* written once, by whoever comes first: same values */
    uint64_t t = mach_absolute_time();
    if (!SPPROF__LOADR(&tb.denom)) {
        mach_timebase_info_data_t x;
        mach_timebase_info(&x);
        SPPROF__STORER(&tb.numer, x.numer);
        SPPROF__STORER(&tb.denom, x.denom);
    }
    return t / SPPROF__LOADR(&tb.denom) * SPPROF__LOADR(&tb.numer) +
           t % SPPROF__LOADR(&tb.denom) * SPPROF__LOADR(&tb.numer) / SPPROF__LOADR(&tb.denom);
}

/* The thread's system-wide 64-bit id (pthread_threadid_np), as an int: ids are handed out from a counter
   (documented), so two threads alive together differ in the low 32 bits. */
SPPROF_API int spprof_gettid(void) {
    uint64_t id = 0;
    pthread_threadid_np(NULL, &id);
    return (int)(uint32_t)id;
}

static void spprof__sleep_ms(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

static void *spprof__os_map_pages(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANON, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}
typedef char spprof__mincore_vec;  /* mincore's vector element (spprof__os_resident) */

/* The calling thread's stack: [top - size, top) from libpthread. */
static int spprof__own_stack(uintptr_t a, uintptr_t *lo, uintptr_t *hi) {
    pthread_t self = pthread_self();
    *hi = (uintptr_t)pthread_get_stackaddr_np(self);
    *lo = *hi - (uintptr_t)pthread_get_stacksize_np(self);
    return a >= *lo && a < *hi;
}

/* What a registry slot holds on macOS, and the sampler's state (see @os_macos). */
typedef struct spprof__mac_slot {
    mach_port_t port;        /* the thread's kernel port, with a send right of our own (released at delete) */
    uintptr_t stack_lo, stack_hi;  /* its pthread stack */
} spprof__mac_slot;
typedef struct spprof__mac_state {
    pthread_t thread;        /* the sampler thread (it is also the collector) */
    uint64_t ticks, ticks_late, skipped;
    spprof__susp_stats susp;
} spprof__mac_state;
#endif /* SPPROF__OS_MACOS */

#if SPPROF__OS_LINUX || SPPROF__OS_MACOS
/* Bytes of [p, p + bytes) (pages from spprof__os_map_pages) that are resident: mincore, 1024 pages a call (the
   vector's element type is the one per-OS difference). */
static uint64_t spprof__os_resident(const void *p, size_t bytes) {
    spprof__mincore_vec v[1024];
    size_t pg = (size_t)sysconf(_SC_PAGESIZE), off, k, n;
    uint64_t res = 0;
    for (off = 0; off < bytes; off += n * pg) {
        n = (bytes - off + pg - 1) / pg;
        if (n > sizeof v) n = sizeof v;
        if (mincore((void *)((uintptr_t)p + off), n * pg < bytes - off ? n * pg : bytes - off, v) != 0) return res;
        for (k = 0; k < n; k++) res += (v[k] & 1) ? pg : 0;
    }
    return res;
}
#endif

/* ==== @errors =========================================================================================
   The last error message is per thread (never a plain global). */
static __thread char spprof__errbuf[512];

static spprof_result spprof__fail(spprof_result r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(spprof__errbuf, sizeof spprof__errbuf, fmt, ap);
    va_end(ap);
    return r;
}

SPPROF_API const char *spprof_last_error(void) { return spprof__errbuf; }

SPPROF_API const char *spprof_result_string(spprof_result r) {
    switch (r) {
    case SPPROF_OK: return "ok";
    case SPPROF_ERR_INVALID_CONFIG: return "invalid configuration or argument";
    case SPPROF_ERR_ALREADY_STARTED: return "profiler already started";
    case SPPROF_ERR_NOT_STARTED: return "profiler not started";
    case SPPROF_ERR_BAD_STATE: return "operation not valid in the profiler's current state";
    case SPPROF_ERR_SYSTEM: return "system call failed";
    case SPPROF_ERR_NO_MEMORY: return "out of memory";
    case SPPROF_ERR_IO: return "could not write output file";
    case SPPROF_ERR_UNSUPPORTED: return "not supported on this platform or build";
    }
    return "unknown result";
}

/* ==== @ring ===========================================================================================
   Bounded multi-producer ring (Vyukov's sequence-numbered cells). Producers are signal handlers on any
   number of threads at once; the consumer is the collector (or spprof_flush), serialized by a mutex that the
   handler never touches.
   - Producer: read the enqueue position, CAS it forward if the cell's sequence says the cell is free; write
     the sample in place; publish by storing sequence = pos + 1 (release). No locks, no allocation, and the
     CAS loop is bounded by SPPROF_RING_MAX_RETRIES: a full ring or endless contention drops the sample.
   - A handler cannot be interrupted by its own signal (the signal is blocked while the handler runs), so a
     producer never waits on itself; producers never wait on anyone.
   - Consumer: a cell whose sequence is pos + 1 is complete; after reading it, sequence = pos + slots frees it.
     A producer that claimed a cell and has not published yet makes the consumer stop there until next time. */
typedef struct spprof__sample_hdr {
    uint64_t seq;       /* cell sequence (atomic) */
    uint64_t ts;        /* CLOCK_MONOTONIC ns */
    int32_t tid;
    uint32_t rec;       /* thread record index in the profile */
    int32_t nframes;    /* -1: walk failed, discard */
    uint32_t flags;     /* SPPROF__SAMPLE_TRUNCATED */
    uint32_t weight;    /* intervals this sample stands for: 1 + the timer's overrun count */
    uint32_t reserved;
} spprof__sample_hdr;
#define SPPROF__SAMPLE_TRUNCATED 1u

typedef struct spprof__ring {
    unsigned char *cells;
    size_t cell_size;   /* header + max_depth frames, multiple of 16 */
    uint64_t mask;
    char pad0[40];
    uint64_t enq;       /* producers' position (atomic), on its own cache line */
    char pad1[56];
    uint64_t deq;       /* consumer's position */
} spprof__ring;

static spprof__sample_hdr *spprof__ring_cell(spprof__ring *r, uint64_t pos) {
    return (spprof__sample_hdr *)(void *)(r->cells + (size_t)(pos & r->mask) * r->cell_size);
}

static int spprof__ring_init(spprof__ring *r, uint32_t slots, int max_depth) {
    uint64_t i;
    r->cell_size = (sizeof(spprof__sample_hdr) + (size_t)max_depth * sizeof(spprof_frame) + 15u) & ~(size_t)15u;
    r->cells = (unsigned char *)SPPROF_MALLOC(r->cell_size * slots);
    if (!r->cells) return 0;
    r->mask = slots - 1u;
    r->enq = r->deq = 0;
    for (i = 0; i < slots; i++) spprof__ring_cell(r, i)->seq = i;
    return 1;
}

static void spprof__ring_free(spprof__ring *r) { SPPROF_FREE(r->cells); r->cells = NULL; }

/* [signal-safe] Claim a cell; returns NULL when full. Publish it with spprof__ring_publish. */
static spprof__sample_hdr *spprof__ring_claim(spprof__ring *r, uint64_t *pos_out) {
    uint64_t pos = SPPROF__LOADR(&r->enq);
    int tries;
    for (tries = 0; tries < SPPROF_RING_MAX_RETRIES; tries++) {
        spprof__sample_hdr *c = spprof__ring_cell(r, pos);
        uint64_t seq = SPPROF__LOAD(&c->seq);
        int64_t dif = (int64_t)(seq - pos);
        if (dif == 0) {
            if (SPPROF__CAS(&r->enq, &pos, pos + 1)) { *pos_out = pos; return c; }
            /* pos was reloaded by the failed CAS */
        } else if (dif < 0) {
            return NULL;  /* full: the consumer has not freed this cell yet */
        } else {
            pos = SPPROF__LOADR(&r->enq);
        }
    }
    return NULL;
}

static void spprof__ring_publish(spprof__sample_hdr *c, uint64_t pos) { SPPROF__STORE(&c->seq, pos + 1); }

static uint64_t spprof__ring_fill(spprof__ring *r) {  /* [signal-safe] approximate */
    return SPPROF__LOADR(&r->enq) - SPPROF__LOADR(&r->deq);
}

/* ==== @registry =======================================================================================
   One slot per sampled thread, in chunks of 256 that never move while the profiler runs; a directory of
   chunk pointers that grows by copy-and-publish (old directories are kept until stop, so a handler that
   loaded the old pointer still reads valid memory). No thread cap: chunks and directory grow as needed.
   All mutation happens under reg_lock in normal threads; the handler only reads slots (atomically), and finds
   its slot through the index carried in the timer's sigev_value. */
#define SPPROF__CHUNK 256u
/* Top 16 bits of sival_ptr: a cookie unique to this copy of spprof (derived from the address of its state),
   so two copies in one process (say, two extension modules that each vendor the header) pass each other's
   signals on instead of swallowing them. */
#define SPPROF__COOKIE ((uint64_t)(0x5350u ^ (((uintptr_t)&spprof__g >> 4) & 0xffffu) ^ (((uintptr_t)&spprof__g >> 20) & 0xffffu) ^ (((uintptr_t)&spprof__g >> 36) & 0xffffu)))

typedef struct spprof__slot {
    int32_t tid;           /* 0 = free */
    uint32_t rec;          /* thread record for samples */
    uintptr_t stack_lo;    /* mapping that held sp at the last sample (set by the handler) */
    uintptr_t stack_hi;
#if SPPROF__OS_LINUX
    spprof__linux_slot lnx;  /* the thread's POSIX timer (@os_linux) */
#endif
#if SPPROF__OS_WINDOWS
    spprof__win_slot win;  /* the thread's handle and CPU time (@os_windows) */
#endif
#if SPPROF__OS_MACOS
    spprof__mac_slot mac;  /* the thread's port and stack (@os_macos) */
#endif
    /* Shared by every OS, because portable code reads or resets them: has_timer (the registry retries a
       missing source, pause/resume arm only existing ones, stats count them), timer_failed (the sources of
       all three OSes count a failure once), cpu_last and cpu_carry (the weight of a sample: Linux's perf
       source, and the Windows/macOS samplers' spprof__tick_weight in @sample). */
    int has_timer;         /* a sample source exists (Linux: the POSIX timer, or lnx.perf_fd when >= 0) */
    int timer_failed;      /* creating the sample source failed (counted once) */
    int64_t cpu_last;      /* the thread's CPU clock at its last sample (ns) */
    int64_t cpu_carry;     /* CPU time not yet given out as weight (ns, may be negative) */
} spprof__slot;

typedef struct spprof__dir {
    uint32_t nchunks;
    struct spprof__dir *older;  /* retired directories, freed at stop */
    spprof__slot *chunks[1];    /* nchunks entries */
} spprof__dir;

/* Executable segments of loaded objects (sorted [lo, hi) pairs), published for the handler like the
   directory: replaced by copy-and-publish, old copies freed at stop. Built from dl_iterate_phdr in normal
   threads, refreshed when the loader's add/remove counters change. */
typedef struct spprof__xranges {
    uint32_t n;
    struct spprof__xranges *older;
    uint64_t adds, subs;
    uintptr_t r[2];  /* 2 * n entries */
} spprof__xranges;

/* ==== @profile ======================================================================================
   The aggregated profile: interned frames, interned stacks (sequences of frame ids, leaf first), and one
   record per thread with a run-length timeline. Guarded by prof_lock; memory counted against memory_limit. */
typedef struct spprof__run { uint32_t stack, count, weight, pad; uint64_t t_first, t_last; } spprof__run;

typedef struct spprof__record {
    int tid;
    char name[64];
    int name_set;          /* given by spprof_thread_set_name: not overwritten from comm */
    spprof__run *runs;
    uint32_t nruns, cap;
    uint64_t nsamples;
} spprof__record;

typedef struct spprof__stack { uint64_t hash; uint32_t off, n; } spprof__stack;

typedef struct spprof__profile {
    spprof_frame *frames; uint32_t nframes, frames_cap;
    uint32_t *frame_hash; uint32_t frame_hash_cap;        /* open addressing: frame id + 1, 0 = empty */
    spprof__stack *stacks; uint32_t nstacks, stacks_cap;
    uint32_t *stack_hash; uint32_t stack_hash_cap;
    uint32_t *stack_data; size_t stack_data_len, stack_data_cap;
    spprof__record *recs; uint32_t nrecs, recs_cap;
    uint64_t bytes;
    uint64_t t_start, t_end;
    int64_t interval_ns;
} spprof__profile;

/* ==== @state ========================================================================================== */
typedef struct spprof__counters {  /* written from handlers with relaxed atomic adds */
    uint64_t captured, dropped, stale, overruns, walk_errors, truncated, ignored, inflight, faults;
} spprof__counters;

/* The tombstone of a closed perf event fd (Linux's fd map, see spprof__linux_state): defined here because
   spprof_start skips the session generation that equals SPPROF__PERF_TOMB. */
#define SPPROF__PERF_TOMB 0x8000u
#define SPPROF__PERF_TOMB_MS 200u

/* The session state every OS shares: portable code reads or writes each field (the OS's own are in lnx, win
   or mac; sig_lost, set by Linux only, says why it is here). */
typedef struct spprof__state_t {
    /* handler-visible */
    int state;                     /* spprof_state (atomic) */
    uint32_t gen;                  /* session generation, 16 bits used in the cookie */
    spprof__dir *dir;              /* atomic pointer */
    spprof__xranges *xr;           /* atomic pointer */
    spprof__ring ring;
    spprof_walk_fn walker;
    void *walker_user;
    int max_depth;
    int wake_pending;              /* the ring is half full and the collector was woken (@sample) */
    spprof__counters c;
    /* normal paths */
    spprof_config cfg;
    uint32_t nslots_used;          /* high-water mark of slot indices */
    uint32_t *free_slots; uint32_t nfree, free_cap;
    uint64_t threads_registered, timer_failures, timer_retries, dropped_memory;
    uint32_t leaked_sessions;      /* stops that left memory to a handler still running (spprof__registry_leak) */
    void *kept[3];                 /* the last such directory, ranges and ring cells (reachable, not lost) */
    int *explicit_tids; uint32_t nexplicit, explicit_cap;
    int forked;                    /* 1 in a fork child of a process that had a session (running, or stopped
                                      with its profile), until the child starts its own or clears: stop,
                                      pause, the writers and spprof_foreach_sample say so (spprof__forked) */
    int collector_running; int collector_tid; int collector_stop;
    int sig_lost;                  /* the program replaced our handler: sampling stopped (atomic). Set by
                                      Linux only (0 elsewhere), shared because portable code reads it:
                                      pause/resume stop arming, stats report handler_replaced */
#if SPPROF__OS_LINUX
    spprof__linux_state lnx;       /* signal handler, collector thread, perf events (@os_linux) */
#endif
#if SPPROF__OS_WINDOWS
    spprof__win_state win;         /* the sampler thread (@os_windows) */
#endif
#if SPPROF__OS_MACOS
    spprof__mac_state mac;         /* the sampler thread (@os_macos) */
#endif
    spprof__profile prof;
    spprof_resolve_fn resolver; void *resolver_user;
} spprof__state_t;

static spprof__state_t spprof__g;
/* Lock order: api_lock, then reg_lock, then prof_lock. None of them is ever taken by the signal handler. */
static spprof__mutex spprof__api_lock = SPPROF__MUTEX_INIT;   /* start/stop/pause/resume/clear */
static spprof__mutex spprof__reg_lock = SPPROF__MUTEX_INIT;   /* thread registry */
static spprof__mutex spprof__prof_lock = SPPROF__MUTEX_INIT;  /* profile; the ring's consumer side */


/* The platform interface (see @os): defined by @os_linux, @os_windows and @os_macos (the output files of
   Linux and macOS in @writers). */
typedef struct spprof__out { FILE *f; char tmp[4096]; char real[4096]; const char *path; } spprof__out;
static void spprof__read_comm(int tid, char *out, size_t n);         /* the thread's name, or "" */
static int spprof__create_timer(spprof__slot *s, uint32_t idx, int attempts); /* the slot's sample source */
static int spprof__arm(spprof__slot *s, int on);                      /* ... armed (1) or disarmed (0) */
static void spprof__delete_timer(spprof__slot *s);
static int spprof__source_is_perf(const spprof__slot *s);
static int spprof__list_threads(int **tids_out, size_t *n_out);      /* every thread of the process */
static int spprof__thread_alive(int tid);
static void spprof__thread_at_exit(void);                            /* unregister the caller when it exits */
static void spprof__refresh_xranges(void);                           /* code ranges (under reg_lock) */
static void spprof__symbols_reset(void);
static spprof_result spprof__out_open(spprof__out *o, const char *path);
static spprof_result spprof__out_close(spprof__out *o);
static void spprof__out_abort(spprof__out *o);
static void spprof__wake_collector(void);                            /* [signal-safe] */
static spprof_result spprof__os_validate(const spprof_config *c);
static void spprof__os_init_once(void);
static spprof_result spprof__os_begin(const spprof_config *cfg);     /* session start, under reg_lock */
static spprof_result spprof__os_collector_start(void);
static void spprof__os_collector_stop(void);
static void spprof__os_quiesce_begin(void);                          /* around deleting the sources at stop */
static void spprof__os_quiesce_end(void);
static void spprof__os_end(int handlers_done);                       /* session end */
static void spprof__os_stats(spprof_stats *o);                       /* the OS's own counters, under reg_lock */
static void spprof__os_reset(void);          /* spprof_start, under reg_lock, before anything can fail */
static void spprof__os_slot_init(spprof__slot *s);  /* a new thread's slot, before its tid is published */
static void spprof__os_slot_free(spprof__slot *s);  /* each slot as the registry is freed (no handler runs) */

/* ==== @walk ============================================================================================
   Frame-pointer walk. Every frame record is checked before it is read: inside [sp, stack_hi) of the mapping
   that holds the interrupted stack pointer (that mapping is entirely readable, so no read can fault), aligned
   to 8, strictly increasing (so the walk always terminates), and the depth is bounded by max_frames. */
/* [signal-safe] Is [a, a+len) inside one executable, readable segment of a loaded object? */
/* [signal-safe] The executable segment [*lo, *hi) that holds a, or 0 (then *lo = 1, *hi = 0: holds nothing). */
static int spprof__exec_segment(uintptr_t a, uintptr_t *lo_out, uintptr_t *hi_out) {
    const spprof__xranges *x = (const spprof__xranges *)SPPROF__LOAD(&spprof__g.xr);
    uint32_t lo = 0, hi;
    *lo_out = 1; *hi_out = 0;
    if (!x) return 0;
    hi = x->n;
    while (lo < hi) { uint32_t mid = (lo + hi) / 2; if (x->r[2 * mid] <= a) lo = mid + 1; else hi = mid; }
    if (lo == 0 || a >= x->r[2 * (lo - 1) + 1]) return 0;
    *lo_out = x->r[2 * (lo - 1)]; *hi_out = x->r[2 * (lo - 1) + 1];
    return 1;
}
static int spprof__in_exec(uintptr_t a, size_t len) {
    uintptr_t lo, hi;
    return spprof__exec_segment(a, &lo, &hi) && a + len <= hi;
}

/* [signal-safe] Leaf fix-up (x86-64). A function that has not pushed a frame (a frameless leaf, which GCC
   emits even with -fno-omit-frame-pointer, hand-written libc routines, or any function in its first or last
   instruction) leaves rbp pointing at its caller's frame, so the plain walk would skip the caller. In that
   state [sp] holds the return address. Accept [sp] as a return address only if the 5 or 6 bytes before it,
   in an executable segment, are a call: a direct call (E8 rel32) whose target is at or below pc and within
   1 MiB of it, or an indirect call through memory/register (FF /2). */
#if defined(__x86_64__)  /* aarch64 has lr for this (spprof__walk_fp) */
SPPROF__NO_SANITIZE
static int spprof__leaf_return(uintptr_t pc, uintptr_t cand) {
    const unsigned char *c;
    if (cand < 4096 || !spprof__in_exec(cand - 6, 6)) return 0;
    c = (const unsigned char *)cand;
    if (c[-5] == 0xE8) {
        int32_t rel;
        uintptr_t target;
        memcpy(&rel, c - 4, 4);
        target = cand + (uintptr_t)(intptr_t)rel;
        return target <= pc && pc - target < (1u << 20);
    }
    if (c[-6] == 0xFF && (c[-5] & 0x38) == 0x10) return 1;      /* call *disp32(...) / *[rip+disp32] */
    if (c[-3] == 0xFF && (c[-2] & 0x38) == 0x10 && (c[-2] & 0xC0) == 0x40) return 1; /* call *disp8(reg) */
    if (c[-2] == 0xFF && (c[-1] & 0xF8) == 0xD0) return 1;      /* call *%reg */
    return 0;
}
#endif

#if defined(__aarch64__)
/* [signal-safe] Leaf fix-up (aarch64): is lr (x30) the return address into pc's caller, a caller that the
   frame-pointer chain from x29 does not show? Only where that can be told from the code: lr is also left
   behind by every call the function at pc made itself (a stale copy pointing into that same function: taking
   it invented a "f;f" frame, found when this walker first ran, under qemu-user), so it is taken only
   - in a prologue before x29 is set (the instruction at pc is paciasp/pacibsp/bti, the stp of x29, x30, or
     the mov/add x29, sp) or in an epilogue after x29, x30 are restored (pc at ret/autiasp, or the
     instruction before pc is the ldp of x29, x30): x30 then holds the return into the caller;
   - in a frameless leaf: the instruction before lr is a direct call (bl) to T, T <= pc within 4 KiB, and no
     stp of x29, x30 lies in [T, pc) (a function that saved a frame record has x29 pointing at it, so its lr
     is stale). A frameless leaf reached through a PLT stub or an indirect call (blr) is not recognized: its
     caller is missing from that sample (as the first screen says of code without frame pointers).
   Reads only instruction words inside one executable segment. */
#define SPPROF__A64_STP_FP_LR(w) (((w) & 0xFFC07FFFu) == 0xA9807BFDu || ((w) & 0xFFC07FFFu) == 0xA9007BFDu)
#define SPPROF__A64_LDP_FP_LR(w) (((w) & 0xFFC07FFFu) == 0xA8C07BFDu || ((w) & 0xFFC07FFFu) == 0xA9407BFDu)
SPPROF__NO_SANITIZE
static int spprof__lr_is_caller(uintptr_t pc, uintptr_t lr) {
    uint32_t w, call;
    uintptr_t t, a;
    int32_t imm;
    if ((pc & 3u) || (lr & 3u) || lr < 4096) return 0;
    if (!spprof__in_exec(pc, 4) || !spprof__in_exec(lr - 4, 4)) return 0;
    w = *(const uint32_t *)pc;
    if (w == 0xD503233Fu || w == 0xD503237Fu || w == 0xD503245Fu || w == 0xD50324DFu) return 1; /* pac, bti */
    if (SPPROF__A64_STP_FP_LR(w) || (w & 0xFFC003FFu) == 0x910003FDu) return 1; /* stp x29,x30 / add x29,sp */
    if (w == 0xD65F03C0u || w == 0xD50323BFu || w == 0xD50323FFu) return 1;     /* ret, autiasp, autibsp */
    if (spprof__in_exec(pc - 4, 4) && SPPROF__A64_LDP_FP_LR(*(const uint32_t *)(pc - 4))) return 1;
    call = *(const uint32_t *)(lr - 4);
    if ((call & 0xFC000000u) != 0x94000000u) return 0;  /* not a bl */
    imm = (int32_t)(call << 6) >> 6;                   /* imm26, sign-extended */
    t = lr - 4 + (uintptr_t)((intptr_t)imm * 4);
    if (t > pc || pc - t >= 4096 || !spprof__in_exec(t, (size_t)(pc - t) + 4)) return 0;
    for (a = t; a < pc; a += 4) if (SPPROF__A64_STP_FP_LR(*(const uint32_t *)a)) return 0;
    return 1;
}
#endif

/* [signal-safe] Follows the frame-pointer chain from fp, reading only inside [lo, hi) (the thread's stack),
   appending return addresses to frames[n..max). Shared by the signal handler's walk and the memory
   profiler's (which runs on the thread itself). With check_exec, a return address must point into the code
   of a loaded object: anything else means the chain passed through code without frame pointers and the rest
   would be invented (JIT code ends the walk). */
SPPROF__NO_SANITIZE
static int spprof__fp_chain(uintptr_t fp, uintptr_t lo, uintptr_t hi, int check_exec, spprof_frame *frames, int n, int max,
                            int *at_root) {
    uintptr_t seg_lo = 1, seg_hi = 0;  /* last executable segment a return address fell in */
    while (n < max) {
        uintptr_t next, ret;
        if (fp < lo || fp > hi - 2 * sizeof(uintptr_t) || (fp & (sizeof(uintptr_t) - 1)) != 0) break;
        next = ((const uintptr_t *)fp)[0];
        ret = ((const uintptr_t *)fp)[1];
#if SPPROF__OS_MACOS && defined(__aarch64__)
        /* arm64e code signs saved return addresses (pointer authentication bits above the 47-bit user
           address space, per Apple's arm64e documentation; not observed): strip them */
        ret &= ((uintptr_t)1 << 47) - 1;
#endif
        if (ret < 4096) break;
        /* most callers share a segment with the previous one: look the table up only when they do not */
        if (check_exec && (ret - 1 < seg_lo || ret > seg_hi) && !spprof__exec_segment(ret - 1, &seg_lo, &seg_hi)) break;
        frames[n].addr = ret; frames[n].aux = SPPROF_AUX_RETADDR; frames[n].kind = SPPROF_FRAME_NATIVE; n++;
        if (next <= fp) {
            if (at_root && !next) *at_root = 1;  /* the outermost frame: a thread's entry clears the frame pointer */
            break;
        }
        lo = fp + 2 * sizeof(uintptr_t);  /* callers' frames are above */
        fp = next;
    }
    return n;
}

/* [signal-safe] The frame-pointer walk from the registers in ctx, with the leaf fix-up. spprof_walk_native on
   Linux; on Windows the fallback of the unwind-table walk. */
SPPROF__NO_SANITIZE
static int spprof__walk_fp(const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames) {
    uintptr_t pc, sp, fp, hi;
    int n = 0;
    if (!ctx || max_frames <= 0) return -1;
    pc = ctx->pc;
    sp = ctx->sp;
    fp = ctx->fp;
    frames[n].addr = pc; frames[n].aux = 0; frames[n].kind = SPPROF_FRAME_NATIVE; n++;
    hi = ctx->stack_hi;
    if (!hi || sp < ctx->stack_lo || sp >= hi) return n;  /* unknown stack: the leaf is all we can vouch for */
#if defined(__x86_64__)
    if (n < max_frames && sp + sizeof(uintptr_t) <= hi && (sp & (sizeof(uintptr_t) - 1)) == 0) {
        uintptr_t cand = ((const uintptr_t *)sp)[0];
        int framed = fp >= sp && fp <= hi - 2 * sizeof(uintptr_t) && (fp & 7) == 0 && ((const uintptr_t *)fp)[1] == cand;
        if (!framed && spprof__leaf_return(pc, cand)) {
            frames[n].addr = cand; frames[n].aux = SPPROF_AUX_RETADDR; frames[n].kind = SPPROF_FRAME_NATIVE; n++;
        }
    }
#elif defined(__aarch64__)
    {   /* a frameless leaf keeps its return address in lr (x30) */
        uintptr_t lr = ctx->lr;
        int framed = fp >= sp && fp <= hi - 2 * sizeof(uintptr_t) && (fp & 7) == 0 && ((const uintptr_t *)fp)[1] == lr;
        if (n < max_frames && !framed && spprof__lr_is_caller(pc, lr)) {
            frames[n].addr = lr; frames[n].aux = SPPROF_AUX_RETADDR; frames[n].kind = SPPROF_FRAME_NATIVE; n++;
        }
    }
#endif
    return spprof__fp_chain(fp, sp, hi, 1, frames, n, max_frames, NULL);
}

/* ==== @sample ==========================================================================================
   [signal-safe] One sample of a thread, from the registers in ctx, weight intervals: claims a ring cell,
   runs the walker into it, publishes it, and wakes the collector when the ring is half full. Called by the
   Linux signal handler on the sampled thread itself, and by the Windows sampler thread while the sampled
   thread is suspended: nothing here allocates, locks or makes a call that could. */
SPPROF__NO_SANITIZE
static void spprof__take_sample(const spprof_walk_ctx *ctx, uint32_t rec, uint32_t weight) {
    spprof__sample_hdr *cell;
    spprof_frame *frames;
    uint64_t pos;
    int n;
    cell = spprof__ring_claim(&spprof__g.ring, &pos);
    if (!cell) { SPPROF__ADD(&spprof__g.c.dropped, 1); return; }
    cell->ts = spprof__now_ns();
    cell->tid = ctx->tid;
    cell->rec = rec;
    cell->flags = 0;
    cell->weight = weight;
    frames = (spprof_frame *)(void *)(cell + 1);
    /* A walk that fills every frame is counted as truncated (a stack of exactly max_depth frames too). */
    n = spprof__g.walker(ctx, frames, spprof__g.max_depth);
    if (n < 0) { SPPROF__ADD(&spprof__g.c.walk_errors, 1); cell->nframes = -1; }
    else {
        cell->nframes = n;
        if (n >= spprof__g.max_depth) { cell->flags |= SPPROF__SAMPLE_TRUNCATED; SPPROF__ADD(&spprof__g.c.truncated, 1); }
        SPPROF__ADD(&spprof__g.c.captured, 1);
    }
    spprof__ring_publish(cell, pos);
    /* Wake the collector early when the ring is half full. */
    if (spprof__ring_fill(&spprof__g.ring) > (spprof__g.ring.mask + 1) / 2 && !SPPROF__LOADR(&spprof__g.wake_pending)) {
        SPPROF__STORER(&spprof__g.wake_pending, 1);
        spprof__wake_collector();
    }
}

/* ---- the suspending samplers' share (Windows, macOS: a sampler thread suspends each thread in turn) ------
   [sampler thread, under reg_lock] The weight of one thread's sample at one tick; 0: no sample this tick.
   What is not given out stays in s->cpu_carry (may be negative). CPU mode: cpu_now is the thread's CPU time
   (ns) and the weight its advance in intervals, at most cap when cap > 0 (coarse clocks, see @os_windows);
   a thread that did not run an interval's worth is not sampled. Wall mode: the real time since the previous
   tick (elapsed ns), so a late tick carries the time it stands for; every thread is sampled. */
static __attribute__((unused)) uint32_t spprof__tick_weight(spprof__slot *s, int wall, int64_t cpu_now,
                                                            uint64_t elapsed, int64_t cap) {
    int64_t iv = spprof__g.cfg.interval_ns, acc, w;
    if (wall) {
        acc = (int64_t)elapsed + s->cpu_carry;
    } else {
        acc = cpu_now - s->cpu_last + s->cpu_carry;
        s->cpu_last = cpu_now;
    }
    w = (acc + iv / 2) / iv;
    if (!wall && cap > 0 && w > cap) w = cap;
    if (w < 1 && !wall) {
        s->cpu_carry = acc;
        return 0;
    }
    if (w < 1) w = 1;
    if (w > 1000000) w = 1000000;
    s->cpu_carry = acc - w * iv;
    return (uint32_t)w;
}

/* [suspended-safe] The sample of suspended thread s, from the registers the OS section put in wc. */
static __attribute__((unused)) void spprof__tick_sample(spprof_walk_ctx *wc, const spprof__slot *s,
                                                        uint32_t weight) {
    wc->tid = s->tid;
    wc->user = spprof__g.walker_user;
    if (weight > 1) SPPROF__ADD(&spprof__g.c.overruns, (uint64_t)(weight - 1));
    spprof__take_sample(wc, s->rec, weight);
}

static __attribute__((unused)) void spprof__susp_note(spprof__susp_stats *st, uint64_t t0, uint64_t t1) {
    SPPROF__ADD(&st->n, 1);
    SPPROF__ADD(&st->ns_total, t1 - t0);
    if (t1 - t0 > SPPROF__LOADR(&st->ns_max)) SPPROF__STORER(&st->ns_max, t1 - t0);
}
static __attribute__((unused)) void spprof__susp_report(spprof__susp_stats *st, spprof_stats *o) {
    o->suspensions = SPPROF__LOADR(&st->n);
    o->suspend_ns_total = SPPROF__LOADR(&st->ns_total);
    o->suspend_ns_max = SPPROF__LOADR(&st->ns_max);
}

/* [sampler thread] Between ticks: drain every drain_interval_ms (or when the ring is half full) and rescan
   the threads and code ranges every scan_interval_ms. */
static void spprof__drain_and_notify(void);
static void spprof__sync_threads(void);
static __attribute__((unused)) void spprof__tick_chores(uint64_t now_ns, uint64_t *last_drain,
                                                        uint64_t *last_scan) {
    if (now_ns - *last_drain >= (uint64_t)spprof__g.cfg.drain_interval_ms * 1000000u ||
        spprof__ring_fill(&spprof__g.ring) > (spprof__g.ring.mask + 1) / 2) {
        spprof__drain_and_notify();
        *last_drain = now_ns;
    }
    if (now_ns - *last_scan >= (uint64_t)spprof__g.cfg.scan_interval_ms * 1000000u) {
        spprof__lock(&spprof__reg_lock);
        if (SPPROF__LOADR(&spprof__g.state) != SPPROF_STATE_STOPPED) {
            spprof__sync_threads();
            spprof__refresh_xranges();
        }
        spprof__unlock(&spprof__reg_lock);
        *last_scan = spprof__now_ns();
    }
}

/* ==== @collector ======================================================================================
   Aggregation of raw samples into the profile (under prof_lock). */
static uint64_t spprof__mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h ^= h >> 31; h *= 0xbf58476d1ce4e5b9ull; h ^= h >> 29;
    return h;
}

/* Geometric growth of an array to hold `need` elements; returns the (possibly moved) array, or NULL with the
   old array untouched. Growth is counted in *bytes. */
static void *spprof__grow(void *ptr, size_t elem, uint32_t *cap, size_t need, uint64_t *bytes) {
    size_t ncap;
    void *q;
    if (need <= *cap) return ptr;
    ncap = *cap ? (size_t)*cap * 2 : 64;
    while (ncap < need) ncap *= 2;
    if (ncap > 0xffffffffu || *bytes + (ncap - *cap) * elem > spprof__g.cfg.memory_limit) return NULL;
    q = SPPROF_REALLOC(ptr, ncap * elem);
    if (!q) return NULL;
    *bytes += (ncap - *cap) * elem;
    *cap = (uint32_t)ncap;
    return q;
}

/* Rebuild an open-addressing table of ids (id + 1 stored, 0 = empty) at capacity ncap (power of two). */
static int spprof__rehash(uint32_t **tab, uint32_t *cap, uint32_t ncap, uint32_t count,
                          uint64_t (*hash_of)(spprof__profile *, uint32_t), spprof__profile *p) {
    uint32_t *t;
    uint32_t i;
    if (p->bytes + ((uint64_t)ncap - *cap) * sizeof(uint32_t) > spprof__g.cfg.memory_limit) return 0;
    t = (uint32_t *)SPPROF_MALLOC((size_t)ncap * sizeof(uint32_t));
    if (!t) return 0;
    memset(t, 0, (size_t)ncap * sizeof(uint32_t));
    for (i = 0; i < count; i++) {
        uint32_t h = (uint32_t)hash_of(p, i) & (ncap - 1);
        while (t[h]) h = (h + 1) & (ncap - 1);
        t[h] = i + 1;
    }
    p->bytes += ((uint64_t)ncap - *cap) * sizeof(uint32_t);
    SPPROF_FREE(*tab);
    *tab = t; *cap = ncap;
    return 1;
}

static uint64_t spprof__frame_hash(const spprof_frame *f) {
    return spprof__mix(spprof__mix(f->addr, f->aux), f->kind);
}
static uint64_t spprof__frame_hash_at(spprof__profile *p, uint32_t i) { return spprof__frame_hash(&p->frames[i]); }
static uint64_t spprof__stack_hash_at(spprof__profile *p, uint32_t i) { return p->stacks[i].hash; }

/* Returns the frame id, or UINT32_MAX when out of memory. */
static uint32_t spprof__intern_frame(spprof__profile *p, const spprof_frame *f) {
    uint64_t h = spprof__frame_hash(f);
    uint32_t i;
    if (p->nframes + 1 > p->frame_hash_cap / 2 &&
        !spprof__rehash(&p->frame_hash, &p->frame_hash_cap, p->frame_hash_cap ? p->frame_hash_cap * 2 : 256,
                        p->nframes, spprof__frame_hash_at, p))
        return UINT32_MAX;
    for (i = (uint32_t)h & (p->frame_hash_cap - 1);; i = (i + 1) & (p->frame_hash_cap - 1)) {
        uint32_t id = p->frame_hash[i];
        if (!id) break;
        if (p->frames[id - 1].addr == f->addr && p->frames[id - 1].aux == f->aux && p->frames[id - 1].kind == f->kind)
            return id - 1;
    }
    { spprof_frame *q = (spprof_frame *)spprof__grow(p->frames, sizeof *q, &p->frames_cap, p->nframes + 1, &p->bytes);
      if (!q) return UINT32_MAX;
      p->frames = q; }
    p->frames[p->nframes] = *f;
    p->frame_hash[i] = ++p->nframes;
    return p->nframes - 1;
}

static uint32_t spprof__intern_stack(spprof__profile *p, const uint32_t *ids, uint32_t n) {
    uint64_t h = 0x5350524f46ull;
    uint32_t i, k;
    for (k = 0; k < n; k++) h = spprof__mix(h, ids[k]);
    if (p->nstacks + 1 > p->stack_hash_cap / 2 &&
        !spprof__rehash(&p->stack_hash, &p->stack_hash_cap, p->stack_hash_cap ? p->stack_hash_cap * 2 : 256,
                        p->nstacks, spprof__stack_hash_at, p))
        return UINT32_MAX;
    for (i = (uint32_t)h & (p->stack_hash_cap - 1);; i = (i + 1) & (p->stack_hash_cap - 1)) {
        uint32_t id = p->stack_hash[i];
        spprof__stack *s;
        if (!id) break;
        s = &p->stacks[id - 1];
        if (s->hash == h && s->n == n && (!n || memcmp(p->stack_data + s->off, ids, n * sizeof(uint32_t)) == 0)) return id - 1;
    }
    if (p->stack_data_len + n > p->stack_data_cap) {
        size_t ncap = p->stack_data_cap ? p->stack_data_cap * 2 : 4096;
        uint32_t *q;
        while (ncap < p->stack_data_len + n) ncap *= 2;
        if (p->bytes + (ncap - p->stack_data_cap) * sizeof(uint32_t) > spprof__g.cfg.memory_limit) return UINT32_MAX;
        q = (uint32_t *)SPPROF_REALLOC(p->stack_data, ncap * sizeof(uint32_t));
        if (!q) return UINT32_MAX;
        p->bytes += (ncap - p->stack_data_cap) * sizeof(uint32_t);
        p->stack_data = q; p->stack_data_cap = ncap;
    }
    { spprof__stack *q = (spprof__stack *)spprof__grow(p->stacks, sizeof *q, &p->stacks_cap, p->nstacks + 1, &p->bytes);
      if (!q) return UINT32_MAX;
      p->stacks = q; }
    if (n) memcpy(p->stack_data + p->stack_data_len, ids, n * sizeof(uint32_t));  /* empty stack: stack_data may be NULL */
    p->stacks[p->nstacks].hash = h;
    p->stacks[p->nstacks].off = (uint32_t)p->stack_data_len;
    p->stacks[p->nstacks].n = n;
    p->stack_data_len += n;
    p->stack_hash[i] = ++p->nstacks;
    return p->nstacks - 1;
}

static uint32_t spprof__new_record(int tid, const char *name) {  /* under prof_lock */
    spprof__profile *p = &spprof__g.prof;
    spprof__record *r;
    r = (spprof__record *)spprof__grow(p->recs, sizeof *r, &p->recs_cap, p->nrecs + 1, &p->bytes);
    if (!r) return UINT32_MAX;
    p->recs = r;
    r = &p->recs[p->nrecs];
    memset(r, 0, sizeof *r);
    r->tid = tid;
    snprintf(r->name, sizeof r->name, "%s", name ? name : "");
    return p->nrecs++;
}

static void spprof__add_sample(const spprof__sample_hdr *h) {  /* under prof_lock */
    spprof__profile *p = &spprof__g.prof;
    const spprof_frame *fr = (const spprof_frame *)(const void *)(h + 1);
    uint32_t ids[SPPROF_MAX_DEPTH_LIMIT];
    uint32_t k, sid;
    spprof__record *r;
    int n = h->nframes;
    if (n < 0 || h->rec >= p->nrecs) return;
    if (n > spprof__g.max_depth) n = spprof__g.max_depth;
    r = &p->recs[h->rec];
    for (k = 0; k < (uint32_t)n; k++) {
        ids[k] = spprof__intern_frame(p, &fr[k]);
        if (ids[k] == UINT32_MAX) goto nomem;
    }
    sid = spprof__intern_stack(p, ids, (uint32_t)n);
    if (sid == UINT32_MAX) goto nomem;
    if (r->nruns && r->runs[r->nruns - 1].stack == sid && r->runs[r->nruns - 1].weight < UINT32_MAX - h->weight) {
        r->runs[r->nruns - 1].count++;
        r->runs[r->nruns - 1].weight += h->weight;
        r->runs[r->nruns - 1].t_last = h->ts;
    } else {
        spprof__run *q = (spprof__run *)spprof__grow(r->runs, sizeof *q, &r->cap, r->nruns + 1, &p->bytes);
        if (!q) goto nomem;
        r->runs = q;
        r->runs[r->nruns].stack = sid; r->runs[r->nruns].count = 1; r->runs[r->nruns].weight = h->weight;
        r->runs[r->nruns].t_first = r->runs[r->nruns].t_last = h->ts;
        r->nruns++;
    }
    r->nsamples++;
    if (h->ts > p->t_end) p->t_end = h->ts;
    return;
nomem:
    spprof__g.dropped_memory++;
}

static void spprof__drain(void) {  /* under prof_lock: the single consumer */
    spprof__ring *r = &spprof__g.ring;
    if (!r->cells) return;
    for (;;) {
        spprof__sample_hdr *c = spprof__ring_cell(r, r->deq);
        if (SPPROF__LOAD(&c->seq) != r->deq + 1) break;  /* empty, or a producer still writing */
        spprof__add_sample(c);
        SPPROF__STORE(&c->seq, r->deq + r->mask + 1);
        SPPROF__STORE(&r->deq, r->deq + 1);
    }
    SPPROF__STORER(&spprof__g.wake_pending, 0);
}

/* The sampler threads' periodic drain (every OS): the ring into the profile under prof_lock, then the
   program's drain hook (outside the lock) with the number of distinct frames. */
static void spprof__drain_and_notify(void) {
    uint32_t nframes;
    spprof__lock(&spprof__prof_lock);
    spprof__drain();
    nframes = spprof__g.prof.nframes;
    spprof__unlock(&spprof__prof_lock);
    if (spprof__g.cfg.drain_hook) spprof__g.cfg.drain_hook(nframes, spprof__g.cfg.drain_hook_user);
}

static void spprof__profile_free(spprof__profile *p) {
    uint32_t i;
    for (i = 0; i < p->nrecs; i++) SPPROF_FREE(p->recs[i].runs);
    SPPROF_FREE(p->recs); SPPROF_FREE(p->frames); SPPROF_FREE(p->frame_hash);
    SPPROF_FREE(p->stacks); SPPROF_FREE(p->stack_hash); SPPROF_FREE(p->stack_data);
    memset(p, 0, sizeof *p);
}

/* ---- thread registry maintenance (under reg_lock) ---- */
static spprof__slot *spprof__slot_alloc(uint32_t *idx_out) {
    spprof__dir *d = spprof__g.dir;
    uint32_t idx;
    if (spprof__g.nfree) idx = spprof__g.free_slots[--spprof__g.nfree];
    else idx = spprof__g.nslots_used;
    if (!d || idx / SPPROF__CHUNK >= d->nchunks) {
        uint32_t n = d ? d->nchunks : 0, i;
        spprof__dir *nd = (spprof__dir *)SPPROF_MALLOC(sizeof(spprof__dir) + (size_t)(n * 2 + 1) * sizeof(spprof__slot *));
        spprof__slot *chunk = (spprof__slot *)SPPROF_MALLOC(SPPROF__CHUNK * sizeof(spprof__slot));
        if (!nd || !chunk) { SPPROF_FREE(nd); SPPROF_FREE(chunk); return NULL; }
        memset(chunk, 0, SPPROF__CHUNK * sizeof(spprof__slot));
        for (i = 0; i < n; i++) nd->chunks[i] = d->chunks[i];
        nd->chunks[n] = chunk;
        nd->nchunks = n + 1;
        nd->older = d;  /* retired, not freed: a handler may still be reading it */
        SPPROF__STORE(&spprof__g.dir, nd);
        d = nd;
    }
    if (idx == spprof__g.nslots_used) spprof__g.nslots_used++;
    *idx_out = idx;
    return &d->chunks[idx / SPPROF__CHUNK][idx % SPPROF__CHUNK];
}

static void spprof__thread_add(int tid) {  /* under reg_lock */
    uint32_t idx, rec;
    char name[64];
    spprof__slot *s;
    if (tid == spprof__g.collector_tid) return;
    spprof__read_comm(tid, name, sizeof name);
    spprof__lock(&spprof__prof_lock);
    rec = spprof__new_record(tid, name);
    spprof__unlock(&spprof__prof_lock);
    if (rec == UINT32_MAX) return;
    s = spprof__slot_alloc(&idx);
    if (!s) return;
    SPPROF__STORER(&s->rec, rec);  /* read by the handler: atomic stores, published by the tid store */
    SPPROF__STORER(&s->stack_lo, (uintptr_t)0);
    SPPROF__STORER(&s->stack_hi, (uintptr_t)0);
    s->has_timer = 0;
    s->timer_failed = 0;
    SPPROF__STORER(&s->cpu_last, (int64_t)0);
    SPPROF__STORER(&s->cpu_carry, (int64_t)0);
    spprof__os_slot_init(s);
    SPPROF__STORE(&s->tid, tid);
    spprof__g.threads_registered++;
    spprof__create_timer(s, idx, 3);
}

static void spprof__thread_remove(spprof__slot *s, uint32_t idx) {  /* under reg_lock */
    spprof__delete_timer(s);
    SPPROF__STORE(&s->tid, 0);
    if (spprof__g.nfree == spprof__g.free_cap) {
        uint32_t nc = spprof__g.free_cap ? spprof__g.free_cap * 2 : 64;
        uint32_t *q = (uint32_t *)SPPROF_REALLOC(spprof__g.free_slots, nc * sizeof(uint32_t));
        if (!q) return;  /* the slot is just not reused */
        spprof__g.free_slots = q; spprof__g.free_cap = nc;
    }
    spprof__g.free_slots[spprof__g.nfree++] = idx;
}

static int spprof__cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Bring the registry in line with the threads that should be sampled: every thread of the process (auto
   mode) or the explicitly registered ones, minus those that exited. Also retries threads whose timer could
   not be created before. */
static void spprof__sync_threads(void) {  /* under reg_lock */
    int *tids = NULL;
    unsigned char *seen;
    size_t n = 0, i;
    uint32_t nslots;
    spprof__dir *d;
    if (spprof__g.cfg.auto_threads) {
        if (!spprof__list_threads(&tids, &n)) return;
    } else {
        tids = (int *)SPPROF_MALLOC((spprof__g.nexplicit + 1) * sizeof(int));
        if (!tids) return;
        for (i = 0; i < spprof__g.nexplicit; i++)  /* still alive? */
            if (spprof__thread_alive(spprof__g.explicit_tids[i])) tids[n++] = spprof__g.explicit_tids[i];
    }
    qsort(tids, n, sizeof(int), spprof__cmp_int);
    seen = (unsigned char *)SPPROF_MALLOC(n + 1);
    if (!seen) { SPPROF_FREE(tids); return; }
    memset(seen, 0, n + 1);
    d = spprof__g.dir;
    nslots = spprof__g.nslots_used;
    for (i = 0; d && i < nslots; i++) {
        spprof__slot *s = &d->chunks[i / SPPROF__CHUNK][i % SPPROF__CHUNK];
        int *hit;
        if (!s->tid) continue;
        hit = (int *)bsearch(&s->tid, tids, n, sizeof(int), spprof__cmp_int);
        if (!hit) { spprof__thread_remove(s, i); continue; }  /* the thread exited */
        seen[hit - tids] = 1;
        if (!s->has_timer) spprof__create_timer(s, i, 1);  /* timer_create failed before: try again */
    }
    for (i = 0; i < n; i++) if (!seen[i]) spprof__thread_add(tids[i]);
    SPPROF_FREE(seen);
    SPPROF_FREE(tids);
}

static void spprof__registry_free(void) {  /* under reg_lock, after all timers are gone and no handler runs */
    spprof__dir *d = spprof__g.dir, *older;
    uint32_t i;
    for (i = 0; d && i < spprof__g.nslots_used; i++)
        spprof__os_slot_free(&d->chunks[i / SPPROF__CHUNK][i % SPPROF__CHUNK]);
    if (d) for (i = 0; i < d->nchunks; i++) SPPROF_FREE(d->chunks[i]);
    while (d) { older = d->older; SPPROF_FREE(d); d = older; }
    SPPROF__STORE(&spprof__g.dir, (spprof__dir *)NULL);
    SPPROF_FREE(spprof__g.free_slots);
    spprof__g.free_slots = NULL; spprof__g.nfree = spprof__g.free_cap = 0;
    spprof__g.nslots_used = 0;
}

typedef struct spprof__xr_build { uintptr_t *r; uint32_t n, cap; uint64_t adds, subs; int oom; } spprof__xr_build;

static int spprof__cmp_range(const void *a, const void *b) {
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return (x > y) - (x < y);
}

/* Publishes the ranges in b (sorted here) as the new table; takes b->r. adds/subs: the OS's load counters. */
static void spprof__publish_xranges(spprof__xr_build *b) {
    spprof__xranges *old = spprof__g.xr, *x;
    if (b->oom || (old && old->adds == b->adds && old->subs == b->subs)) { SPPROF_FREE(b->r); return; }
    qsort(b->r, b->n, 2 * sizeof(uintptr_t), spprof__cmp_range);
    x = (spprof__xranges *)SPPROF_MALLOC(sizeof(spprof__xranges) + (size_t)b->n * 2 * sizeof(uintptr_t));
    if (!x) { SPPROF_FREE(b->r); return; }
    x->n = b->n; x->older = old; x->adds = b->adds; x->subs = b->subs;
    if (b->n) memcpy(x->r, b->r, (size_t)b->n * 2 * sizeof(uintptr_t));
    SPPROF_FREE(b->r);
    SPPROF__STORE(&spprof__g.xr, x);  /* old ones stay readable until stop */
}

static void spprof__xranges_free(void) {
    spprof__xranges *x = spprof__g.xr, *older;
    while (x) { older = x->older; SPPROF_FREE(x); x = older; }
    SPPROF__STORE(&spprof__g.xr, (spprof__xranges *)NULL);
}

#if SPPROF__OS_LINUX
/* ==== @os_linux =========================================================================================
   Linux (x86-64; aarch64 under qemu-user only): every thread samples itself. Per thread, a perf_event
   task-clock counter or a POSIX timer on the thread's CPU clock sends the profiling signal to that thread
   while it runs; the handler (@handler) decodes it and hands the interrupted registers to the portable
   spprof__take_sample (@sample). A collector thread drains the ring, keeps the registry in line with
   /proc/self/task and, in wall mode, accounts blocked threads without a signal (@offcpu). State:
   spprof__g.lnx and each slot's lnx (spprof__linux_state / spprof__linux_slot, in @os): perf events and
   their fd map, POSIX timers, the collector's eventfd and /proc/self/mem, off-CPU accounting.
   Elsewhere, each for a reason: the primitives (mutex, clock, gettid) in @os, as for every OS (the global
   state needs them); the POSIX output files in @writers (shared with macOS); pprof's mappings in @writers
   (a branch of a portable function, reading the module table of the symbols below); the GOT-patching
   allocation hooks and the fork handler in @memprof (built on @memprof's tables and hot paths, defined
   there; macOS's malloc_logger too). */

/* ---- the perf events' fd map (spprof__linux_state.fdmap) ---- */
#if SPPROF__HAVE_PERF
/* [signal-safe] the cookie registered for a perf event fd, or 0. */
static uint64_t spprof__fdmap_get(int fd) {
    uint64_t *chunk;
    if (fd < 0 || (unsigned)fd >= SPPROF__FDCHUNK * SPPROF__FDCHUNKS) return 0;
    chunk = (uint64_t *)SPPROF__LOAD(&spprof__g.lnx.fdmap[(unsigned)fd / SPPROF__FDCHUNK]);
    return chunk ? SPPROF__LOAD(&chunk[(unsigned)fd % SPPROF__FDCHUNK]) : 0;
}
/* Under reg_lock. Returns 0 when the fd is out of range or memory runs out (the caller closes the fd). */
static int spprof__fdmap_set(int fd, uint64_t cookie) {
    uint64_t *chunk;
    if (fd < 0 || (unsigned)fd >= SPPROF__FDCHUNK * SPPROF__FDCHUNKS) return 0;
    chunk = spprof__g.lnx.fdmap[(unsigned)fd / SPPROF__FDCHUNK];
    if (!chunk) {
        if (!cookie) return 1;
        chunk = (uint64_t *)SPPROF_MALLOC(SPPROF__FDCHUNK * sizeof(uint64_t));
        if (!chunk) return 0;
        memset(chunk, 0, SPPROF__FDCHUNK * sizeof(uint64_t));
        SPPROF__STORE(&spprof__g.lnx.fdmap[(unsigned)fd / SPPROF__FDCHUNK], chunk);
    }
    SPPROF__STORE(&chunk[(unsigned)fd % SPPROF__FDCHUNK], cookie);
    return 1;
}
/* Under reg_lock: the tombstone of a closed fd (see SPPROF__PERF_TOMB). */
static void spprof__fdmap_tomb(int fd) {
    uint32_t ms = (uint32_t)(spprof__now_ns() / 1000000u);
    spprof__fdmap_set(fd, ((uint64_t)SPPROF__COOKIE << 48) | ((uint64_t)SPPROF__PERF_TOMB << 32) | ms);
}
#endif

/* ---- the default SPPROF_WARN (@errors); the handler's slot lookup (@registry) ---- */
#if defined(SPPROF__WARN_DEFAULT) && SPPROF__OS_LINUX  /* used by @os_linux only */
static void spprof__warn_stderr(const char *msg) {  /* "spprof: msg\n" in one write() */
    char line[512];
    int n = snprintf(line, sizeof line, "spprof: %s\n", msg);
    if (n < 0) return;
    if ((size_t)n >= sizeof line) {
        n = (int)sizeof line - 1;
        line[n - 1] = '\n';
    }
    if (write(2, line, (size_t)n) < 0) { /* nothing to do */ }
}
#endif

/* [signal-safe] the slot for a cookie-carried index, or NULL. */
static spprof__slot *spprof__slot_at(uint32_t idx) {
    spprof__dir *d = (spprof__dir *)SPPROF__LOAD(&spprof__g.dir);
    if (!d || (idx / SPPROF__CHUNK) >= d->nchunks) return NULL;
    return &d->chunks[idx / SPPROF__CHUNK][idx % SPPROF__CHUNK];
}

/* ---- registers of a signal context, spprof_walk_native, the stack mapping, libunwind (@walk) ---- */
static void spprof__context_regs(const void *uc_, uintptr_t *pc, uintptr_t *sp, uintptr_t *fp) {
    const ucontext_t *uc = (const ucontext_t *)uc_;
#if defined(__x86_64__)
    *pc = (uintptr_t)uc->uc_mcontext.gregs[16]; /* REG_RIP */
    *sp = (uintptr_t)uc->uc_mcontext.gregs[15]; /* REG_RSP */
    *fp = (uintptr_t)uc->uc_mcontext.gregs[10]; /* REG_RBP */
#elif defined(__aarch64__)
    *pc = (uintptr_t)uc->uc_mcontext.pc;
    *sp = (uintptr_t)uc->uc_mcontext.sp;
    *fp = (uintptr_t)uc->uc_mcontext.regs[29];
#endif
}

SPPROF_API int spprof_walk_native(const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames) {
    return spprof__walk_fp(ctx, frames, max_frames);
}

/* [signal-safe] Find the mapping that contains sp by parsing /proc/self/maps with open/read/close (all three
   are async-signal-safe) into a stack buffer. The read is bounded by SPPROF_MAPS_READ_LIMIT. Runs once per
   thread (and again only if the thread's stack pointer moves to another mapping). */
static int spprof__find_mapping(uintptr_t sp, uintptr_t *lo, uintptr_t *hi) {
    char buf[512];
    uintptr_t a = 0, b = 0;
    size_t total = 0;
    int st = 0, found = 0, fd;
    do { fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC); } while (fd < 0 && errno == EINTR);
    if (fd < 0) return 0;
    while (!found && total < SPPROF_MAPS_READ_LIMIT) {
        ssize_t i, k = read(fd, buf, sizeof buf);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        total += (size_t)k;
        for (i = 0; i < k && !found; i++) {
            char ch = buf[i];
            int v = (ch >= '0' && ch <= '9') ? ch - '0' : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10 : -1;
            if (st == 0) {
                if (v >= 0) a = (a << 4) | (uintptr_t)v; else st = (ch == '-') ? 1 : 2;
            } else if (st == 1) {
                if (v >= 0) b = (b << 4) | (uintptr_t)v;
                else { if (a <= sp && sp < b) { *lo = a; *hi = b; found = 1; } st = 2; }
            } else if (ch == '\n') {
                st = 0; a = b = 0;
            }
        }
    }
    close(fd);
    return found;
}

#ifdef SPPROF_USE_LIBUNWIND
/* libunwind backend (define SPPROF_USE_LIBUNWIND, link -lunwind): DWARF CFI unwinding for code built without
   frame pointers. Signal safety: libunwind's local unwinder is documented async-signal-safe; it finds unwind
   tables through dl_iterate_phdr, which takes the loader's lock. That lock is recursive in glibc, so a thread
   interrupted while it holds it does not deadlock against itself, but the loader's lists may be half-updated
   while ld.so itself runs (dlopen/dlclose): when the interrupted pc is inside ld.so, only the frame-pointer walk
   is used. (The trap gperftools documented: an unwinder that takes the loader lock from a signal handler.)
   Reads of a corrupt stack fault inside the fault guard (guard_faults) and drop the sample. */
#  define UNW_LOCAL_ONLY
#  include <libunwind.h>
static uintptr_t spprof__ldso_lo, spprof__ldso_hi, spprof__tlsget_lo, spprof__tlsget_hi;
static int spprof__ldso_cb(struct dl_phdr_info *info, size_t size, void *data) {
    int i;
    (void)size; (void)data;
    if (!info->dlpi_name || !strstr(info->dlpi_name, "/ld-linux")) return 0;
    for (i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
            spprof__ldso_lo = info->dlpi_addr + ph->p_vaddr;
            spprof__ldso_hi = spprof__ldso_lo + ph->p_memsz;
        }
    }
    return 1;
}
static void spprof__find_ldso(void) {
    Dl_info info;
    const ElfW(Sym) *sym = NULL;
    void *p;
    if (spprof__ldso_hi) return;
    dl_iterate_phdr(spprof__ldso_cb, NULL);
    /* __tls_get_addr lives in ld.so but never touches the loader's object lists (shared libraries call it for
       every thread-local access: CPython 3.12+ does, constantly): unwinding from it is allowed. */
    p = dlsym(RTLD_DEFAULT, "__tls_get_addr");
    if (p && dladdr1(p, &info, (void **)&sym, RTLD_DL_SYMENT) && sym && sym->st_size) {
        spprof__tlsget_lo = (uintptr_t)p;
        spprof__tlsget_hi = (uintptr_t)p + (uintptr_t)sym->st_size;
    }
}

/* libunwind's one-time set-up (its tdep_init: caches, and on x86-64 a pipe it validates addresses with) runs
   at its first unwind. Left to the first sample it happened in a signal handler in the middle of the
   program, and the pipe took the two lowest free descriptor numbers at that moment: CPython's
   test_os.TestInvalidFD.test_closerange, which needs a run of free numbers above one it just closed, was
   skipped under `record --native`. One unwind of this thread at start does it while the program's
   numbering has not started. Not in a signal handler; once per process. */
static void spprof__libunwind_warm(void) {
    static int done;
    unw_context_t uc;
    unw_cursor_t cur;
    if (done) return;
    done = 1;
    if (unw_getcontext(&uc) == 0 && unw_init_local(&cur, &uc) == 0) (void)unw_step(&cur);
}

SPPROF_API int spprof_walk_libunwind(const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames) {
    unw_cursor_t cur;
    unw_word_t ip;
    uintptr_t pc, sp, fp;
    spprof_guard g;
    volatile int n = 0;
    if (!ctx || !ctx->os_context || max_frames <= 0) return -1;
    spprof__context_regs(ctx->os_context, &pc, &sp, &fp);
    (void)sp; (void)fp;
    if (pc >= spprof__ldso_lo && pc < spprof__ldso_hi && !(pc >= spprof__tlsget_lo && pc < spprof__tlsget_hi))
        return spprof_walk_native(ctx, frames, max_frames);
    if (!spprof_guard_claim(&g, ctx->tid)) return spprof_walk_native(ctx, frames, max_frames);
    if (sigsetjmp(g.env, 1)) { spprof_guard_release(&g); return n > 0 ? n : -1; }
    if (unw_init_local2(&cur, (unw_context_t *)ctx->os_context, UNW_INIT_SIGNAL_FRAME) < 0) {
        spprof_guard_release(&g);
        return spprof_walk_native(ctx, frames, max_frames);
    }
    do {
        if (unw_get_reg(&cur, UNW_REG_IP, &ip) < 0 || !ip) break;
        frames[n].addr = (uint64_t)ip;
        frames[n].aux = n ? SPPROF_AUX_RETADDR : 0;
        frames[n].kind = SPPROF_FRAME_NATIVE;
        n++;
    } while (n < max_frames && unw_step(&cur) > 0);
    spprof_guard_release(&g);
    return n;
}
#endif

/* ---- @handler ----------------------------------------------------------------------------------------
   Async-signal-safety: the handler calls only async-signal-safe functions (syscall(gettid), clock_gettime,
   open/read/close once per thread, write on an eventfd), lock-free atomics, and the walker (which must be
   signal-safe itself). It allocates nothing and takes no lock. errno is saved and restored. Every loop is
   bounded (ring retries, walk depth, maps read size). Signals that are not ours (wrong si_code or cookie)
   are passed to the previous handler. A signal from a timer of an earlier session (generation mismatch), or
   one that reaches a thread other than the slot's owner (the slot was reused), is counted and ignored. */
/* [signal-safe] write() on an eventfd is async-signal-safe. */
static void spprof__wake_collector(void) {
    uint64_t one = 1;
    if (write(spprof__g.lnx.wake_fd, &one, sizeof one) < 0) { /* the collector's poll times out anyway */ }
}

static void spprof__chain(int signo, siginfo_t *info, void *uc) {
    struct sigaction *old = &spprof__g.lnx.old_action;
    if (old->sa_flags & SA_SIGINFO) {
        if (old->sa_sigaction) old->sa_sigaction(signo, info, uc);
    } else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN && old->sa_handler) {
        old->sa_handler(signo);
    }
    /* SIG_DFL: a foreign SIGPROF or real-time signal would terminate the process; we ignore it instead. */
}

static void spprof__handler(int signo, siginfo_t *info, void *uc) {
    int saved_errno = errno;
    uint64_t cookie;
    spprof__slot *slot;
    spprof_walk_ctx ctx;
    uintptr_t pc, sp, fp, lo, hi;
    uint32_t weight;
    int tid, perf = 0;

    if (!info) { spprof__chain(signo, info, uc); errno = saved_errno; return; }
    if (info->si_code == SI_TIMER) {  /* a POSIX timer: the cookie travels in sival_ptr */
        cookie = (uint64_t)(uintptr_t)info->si_value.sival_ptr;
        if ((cookie >> 48) != SPPROF__COOKIE) { spprof__chain(signo, info, uc); errno = saved_errno; return; }
        /* inflight is raised before the state is read; stop() changes the state first and then waits for
           inflight to reach zero, so a handler that saw RUNNING always finishes before stop frees anything. */
        __atomic_fetch_add(&spprof__g.c.inflight, 1, __ATOMIC_SEQ_CST);
    }
#if SPPROF__HAVE_PERF
    else if ((info->si_code == POLL_IN || info->si_code == POLL_HUP) && SPPROF__LOADR(&spprof__g.lnx.perf_on)) {
        /* A perf event (F_SETSIG): only the fd travels; its cookie is in the fd map, which is never freed
           while the handler is installed (entries are cleared before their fd is closed). The cookie is
           looked up whatever the state: a stopped copy must pass on the signals of another copy's running
           perf events (it used to take every POLL_IN for its own while perf_on stayed set). A signal of one
           of our own events that was still queued at stop finds its entry (cleared only when its fd is
           closed, after the event was disabled) or nothing: if nothing, it is passed on like any foreign
           signal; the previous handler ignores it or, if it is SIG_DFL, spprof__chain does. */
        __atomic_fetch_add(&spprof__g.c.inflight, 1, __ATOMIC_SEQ_CST);
        cookie = spprof__fdmap_get(info->si_fd);
        if ((cookie >> 48) != SPPROF__COOKIE) {
            __atomic_fetch_sub(&spprof__g.c.inflight, 1, __ATOMIC_SEQ_CST);
            spprof__chain(signo, info, uc); errno = saved_errno; return;
        }
        if ((cookie >> 32 & 0xffffu) == SPPROF__PERF_TOMB) {  /* one of our closed events */
            uint32_t ms = (uint32_t)(spprof__now_ns() / 1000000u);
            if (ms - (uint32_t)cookie > SPPROF__PERF_TOMB_MS) {  /* long closed: the fd number is someone else's */
                __atomic_fetch_sub(&spprof__g.c.inflight, 1, __ATOMIC_SEQ_CST);
                spprof__chain(signo, info, uc); errno = saved_errno; return;
            }
            SPPROF__ADD(&spprof__g.c.ignored, 1);
            goto out;
        }
        perf = 1;
    }
#endif
    else { spprof__chain(signo, info, uc); errno = saved_errno; return; }

    if (__atomic_load_n(&spprof__g.state, __ATOMIC_SEQ_CST) != SPPROF_STATE_RUNNING ||
        ((cookie >> 32) & 0xffffu) != (SPPROF__LOADR(&spprof__g.gen) & 0xffffu)) {
        SPPROF__ADD(&spprof__g.c.ignored, 1);
#if SPPROF__HAVE_PERF
        if (perf && info->si_code == POLL_HUP &&
            ((cookie >> 32) & 0xffffu) == (SPPROF__LOADR(&spprof__g.gen) & 0xffffu)) {
            /* Paused: the event stays spent until resume re-arms it. Resume stores RUNNING and then takes
               the flag; here the flag is set and then the state read again (both seq_cst): if resume came in
               between, exactly one of the two takes the flag and refreshes. */
            slot = spprof__slot_at((uint32_t)(cookie & 0xffffffffu));
            if (slot) {
                int one = 1;
                __atomic_store_n(&slot->lnx.perf_rearm, 1, __ATOMIC_SEQ_CST);
                if (__atomic_load_n(&spprof__g.state, __ATOMIC_SEQ_CST) == SPPROF_STATE_RUNNING &&
                    __atomic_compare_exchange_n(&slot->lnx.perf_rearm, &one, 0, 0,
                                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
                    ioctl(info->si_fd, PERF_EVENT_IOC_REFRESH, 1);
            }
        }
#endif
        goto out;
    }
#if SPPROF__HAVE_PERF
    /* Our perf events are one-shot (see spprof__arm): POLL_HUP says this overflow disabled the event, and
       re-arming it here, first, keeps the interval's CPU time counting while we walk. A thread that blocks
       the signal therefore has at most one pending: a real-time signal would otherwise queue once per
       interval up to RLIMIT_SIGPENDING (per user!), after which the kernel sends SIGIO instead and kills
       the process. Only a live event of this running session is re-armed (checked just above): stop and the
       loss of our handler wait for or never reach this point before the fd is closed (spprof__stop_locked).
       ioctl is a plain system call (async-signal-safe), about 0.15 us. */
    if (perf && info->si_code == POLL_HUP) ioctl(info->si_fd, PERF_EVENT_IOC_REFRESH, 1);
#endif
    slot = spprof__slot_at((uint32_t)(cookie & 0xffffffffu));
    tid = spprof_gettid();
    /* acquire: pairs with the release store of tid in spprof__thread_add, after rec and bounds were set */
    if (!slot || SPPROF__LOAD(&slot->tid) != tid) { SPPROF__ADD(&spprof__g.c.stale, 1); goto out; }
    if (!perf) {
        /* CPU-clock timers are checked at kernel ticks (HZ), so at short intervals one signal often stands
           for several expirations: si_overrun says how many were merged, and the sample carries that weight. */
        weight = 1u + (info->si_overrun > 0 ? (uint32_t)info->si_overrun : 0u);
    } else {
        /* A perf signal stands for the thread's CPU time since its previous sample, in intervals (rounded,
           remainder carried): the time stays right when signals merge (one SIGPROF pending at a time) and
           when the event counts user mode only (perf skips samples that fall in the kernel; their time goes
           to the next sample, which is on the stack that made the system call or a later one). */
        struct timespec ts;
        int64_t iv = spprof__g.cfg.interval_ns, now, acc, w;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);  /* async-signal-safe */
        now = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        acc = now - SPPROF__LOADR(&slot->cpu_last) + SPPROF__LOADR(&slot->cpu_carry);
        w = (acc + iv / 2) / iv;
        if (w < 1) w = 1;
        if (w > 1000000) w = 1000000;
        SPPROF__STORER(&slot->cpu_last, now);
        SPPROF__STORER(&slot->cpu_carry, acc - w * iv);
        weight = (uint32_t)w;
    }
    if (weight > 1) SPPROF__ADD(&spprof__g.c.overruns, (uint64_t)(weight - 1));

    /* Stack bounds: the mapping holding sp, cached in the slot (only this thread writes its own slot's bounds). */
    spprof__context_regs(uc, &pc, &sp, &fp);
    lo = SPPROF__LOADR(&slot->stack_lo);
    hi = SPPROF__LOADR(&slot->stack_hi);
    if (sp < lo || sp >= hi) {
        if (spprof__find_mapping(sp, &lo, &hi)) { SPPROF__STORER(&slot->stack_lo, lo); SPPROF__STORER(&slot->stack_hi, hi); }
        else { lo = hi = 0; }
    }

    ctx.pc = pc; ctx.sp = sp; ctx.fp = fp; ctx.lr = 0;
#if defined(__aarch64__)
    ctx.lr = (uintptr_t)((const ucontext_t *)uc)->uc_mcontext.regs[30];
#endif
    ctx.os_context = uc; ctx.stack_lo = lo; ctx.stack_hi = hi; ctx.tid = tid; ctx.user = spprof__g.walker_user;
    spprof__take_sample(&ctx, SPPROF__LOADR(&slot->rec), weight);
out:
    __atomic_fetch_sub(&spprof__g.c.inflight, 1, __ATOMIC_SEQ_CST);
    errno = saved_errno;
}

/* [signal-safe] Is our handler the one installed for signo? */
static int spprof__handler_is_ours(int signo) {
    struct sigaction cur;
    if (sigaction(signo, NULL, &cur) != 0) return 0;
    return (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == spprof__handler;
}

/* ---- @guard -----------------------------------------------------------------------------------------
   Active guards live in a fixed table (claimed with CAS, keyed by tid). The fault handler looks up the
   faulting thread there and siglongjmps back into the walker; sigsetjmp(env, 1) saved the signal mask, so the
   mask of the interrupted handler is restored. A fault on a thread with no active guard is passed on. */
#ifndef SPPROF_GUARD_SLOTS
#  define SPPROF_GUARD_SLOTS 256
#endif
typedef struct spprof__guard_entry { int tid; spprof_guard *g; } spprof__guard_entry;
static spprof__guard_entry spprof__guards[SPPROF_GUARD_SLOTS];
static struct sigaction spprof__old_segv, spprof__old_bus;
static int spprof__fault_installed;

SPPROF_API int spprof_guard_claim(spprof_guard *g, int tid) {
    unsigned i, k;
    if (!SPPROF__LOADR(&spprof__fault_installed) || tid <= 0) return 0;
    for (k = 0, i = (unsigned)tid % SPPROF_GUARD_SLOTS; k < SPPROF_GUARD_SLOTS; k++, i = (i + 1) % SPPROF_GUARD_SLOTS) {
        int expect = 0;
        if (SPPROF__LOADR(&spprof__guards[i].tid) == 0 &&
            __atomic_compare_exchange_n(&spprof__guards[i].tid, &expect, -1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            SPPROF__STORER(&spprof__guards[i].g, g);
            SPPROF__STORE(&spprof__guards[i].tid, tid);
            g->slot = (int)i;
            return 1;
        }
    }
    return 0;
}

SPPROF_API void spprof_guard_release(spprof_guard *g) {
    SPPROF__STORER(&spprof__guards[g->slot].g, (spprof_guard *)NULL);
    SPPROF__STORE(&spprof__guards[g->slot].tid, 0);
}

static void spprof__fault_handler(int signo, siginfo_t *info, void *uc) {
    struct sigaction *old = signo == SIGBUS ? &spprof__old_bus : &spprof__old_segv;
    int tid = spprof_gettid(), i;
    for (i = 0; i < SPPROF_GUARD_SLOTS; i++) {
        if (SPPROF__LOAD(&spprof__guards[i].tid) == tid) {
            spprof_guard *g = SPPROF__LOADR(&spprof__guards[i].g);
            if (g) { SPPROF__ADD(&spprof__g.c.faults, 1); siglongjmp(g->env, 1); }
        }
    }
    /* Not ours: hand it on. With the default action, reinstall it and return: the faulting instruction
       runs again and the process dies as it would have without us (core dump included). */
    if (old->sa_flags & SA_SIGINFO) { if (old->sa_sigaction) { old->sa_sigaction(signo, info, uc); return; } }
    else if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN && old->sa_handler) { old->sa_handler(signo); return; }
    signal(signo, SIG_DFL);
}

static spprof_result spprof__install_fault_handler(void) {
    struct sigaction sa;
    if (spprof__fault_installed) return SPPROF_OK;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = spprof__fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &spprof__old_segv) != 0 || sigaction(SIGBUS, &sa, &spprof__old_bus) != 0)
        return spprof__fail(SPPROF_ERR_SYSTEM, "sigaction(SIGSEGV/SIGBUS): %s", strerror(errno));
    SPPROF__STORE(&spprof__fault_installed, 1);
    return SPPROF_OK;
}

/* Give the previous handlers back at stop, unless someone replaced ours meanwhile. */
static void spprof__remove_fault_handler(void) {
    struct sigaction cur;
    if (!spprof__fault_installed) return;
    SPPROF__STORE(&spprof__fault_installed, 0);
    if (sigaction(SIGSEGV, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == spprof__fault_handler)
        sigaction(SIGSEGV, &spprof__old_segv, NULL);
    if (sigaction(SIGBUS, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == spprof__fault_handler)
        sigaction(SIGBUS, &spprof__old_bus, NULL);
}

/* [signal-safe] See @os: the copy under the fault guard of the calling thread (0 if no guard slot is free
   or the handler is not installed: then nothing is read). Unused by the Linux samplers themselves (the
   handler reads under one guard for the whole walk); for code shared with the external samplers. */
static __attribute__((unused)) int spprof__os_read_mem(void *dst, const void *src, size_t n) {
    spprof_guard g;
    if (!spprof_guard_claim(&g, spprof_gettid())) return 0;
    if (sigsetjmp(g.env, 1)) {
        spprof_guard_release(&g);
        return 0;
    }
    memcpy(dst, src, n);
    spprof_guard_release(&g);
    return 1;
}

/* ---- threads and their sample sources (under reg_lock; see @collector) ---- */
/* Reads /proc/self/task/TID/<name> into buf (one read: these files are small), NUL-terminated; returns the
   length, or -1 (buf empty) if it cannot be read. */
static ssize_t spprof__read_task_file(int tid, const char *name, char *buf, size_t n) {
    char path[64];
    int fd;
    ssize_t k;
    snprintf(path, sizeof path, "/proc/self/task/%d/%s", tid, name);
    buf[0] = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    k = read(fd, buf, n - 1);
    close(fd);
    if (k < 0) return -1;
    buf[k] = 0;
    return k;
}

static void spprof__read_comm(int tid, char *out, size_t n) {
    ssize_t k = spprof__read_task_file(tid, "comm", out, n);
    if (k > 0 && out[k - 1] == '\n') out[k - 1] = 0;
}

static int64_t spprof__thread_cpu_ns(int tid) {  /* any thread of this process: see spprof__create_timer */
    struct timespec ts;
    if (clock_gettime((clockid_t)((~(unsigned)tid << 3) | 6u), &ts) != 0) return 0;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The descriptors spprof keeps (perf events; the collector's eventfd and, in wall mode, its /proc/self/mem)
   must not change what the program's own open()/dup()/socket() return: those give the lowest free number,
   which programs and tests rely on, and RLIMIT_NOFILE bounds the numbers, not the count. So each one is
   moved with F_DUPFD_CLOEXEC to the top of the numbers the program may use, below top = min(soft limit,
   SPPROF_PERF_FD_TOP) (read at each call: the program may change its limit): the collector's two in
   [top - 2, top), perf events in [top - 2 - size, top - 2), size = min(SPPROF_PERF_FD_BUDGET, soft limit /
   SPPROF_PERF_FD_SHARE). F_DUPFD gives the lowest free number >= the base: a number the program holds
   there is stepped over, never taken. The low number is closed before the fd is set up (a perf event's
   O_ASYNC registration records the number its signals carry in si_fd).
   Perf events (is_perf) also leave the program most of what it has not used: at most 1/SPPROF_PERF_FD_SHARE
   of the numbers from `fd` (the lowest free one when the event was opened: about what the program uses) to
   the limit are ours. Under `ulimit -n 100` with stdin, stdout and stderr open: 12 perf events at [86, 98),
   the eventfd at 98; the program keeps 83 of its 96. Beyond the budget: -1 with errno EMFILE, the low fd
   closed (the thread gets a POSIX timer, which needs no descriptor). The collector's own (!is_perf) stay
   where they are when no high number is free (one descriptor each, needed).
   Later changes of the limit: lowered, ours stay valid above it, out of the program's reach (new ones go to
   the new range); raised, ours stay where they were and the program's numbering steps over them when it gets
   there. Between the system call and the move (microseconds) a concurrent open() in another thread of the
   program gets the next number instead of this one. Under reg_lock (or before the collector starts). */
#define SPPROF__FD_OWN 2u
static int spprof__fd_move_high(int fd, int is_perf) {
    struct rlimit rl;
    uint64_t lim, top, size;
    int hi;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) rl.rlim_cur = 0;
    lim = rl.rlim_cur == RLIM_INFINITY ? (uint64_t)1 << 20 : (uint64_t)rl.rlim_cur;
    top = lim < SPPROF_PERF_FD_TOP ? lim : SPPROF_PERF_FD_TOP;
    if (top < SPPROF__FD_OWN) {
        size = 0;
    } else if (!is_perf) {
        size = SPPROF__FD_OWN;
    } else {
        uint64_t unused = lim > (uint64_t)fd ? lim - (uint64_t)fd : 0;
        top -= SPPROF__FD_OWN;
        size = lim / SPPROF_PERF_FD_SHARE;
        if (size > SPPROF_PERF_FD_BUDGET) size = SPPROF_PERF_FD_BUDGET;
        if (size > top) size = top;
        if ((uint64_t)spprof__g.lnx.perf_fds + 1u > unused / SPPROF_PERF_FD_SHARE) size = 0;  /* budget used up */
    }
    if (size > 0 && (uint64_t)fd >= top - size && (uint64_t)fd < top) return fd;  /* in its range already */
    hi = size > 0 ? fcntl(fd, F_DUPFD_CLOEXEC, (int)(top - size)) : -1;
    if (hi >= 0 && (uint64_t)hi >= top) {  /* the range is full */
        close(hi);
        hi = -1;
    }
    if (hi < 0 && !is_perf) return fd;
    close(fd);
    if (hi < 0) errno = EMFILE;
    return hi;
}

#if SPPROF__HAVE_PERF

/* A task-clock event counting thread `tid`'s CPU time, created disabled, that sends cfg.signo to that very
   thread (F_SETOWN_EX with F_OWNER_TID, F_SETSIG so that the signal carries si_fd) each time another
   interval of CPU time has run. The kernel drives it with a high-resolution timer while the thread runs,
   so the rate is exact (unlike POSIX CPU timers, bound to the tick). place: moved to the top of the fd
   numbers, within the budget (spprof__fd_move_high; 0 for a probe that closes it at once). Returns the fd,
   or -1 with errno (EMFILE: the fd budget is used up). */
static int spprof__perf_open(int tid, int place) {
    struct perf_event_attr a;
    struct f_owner_ex own;
    int fd, fl;
    memset(&a, 0, sizeof a);
    a.size = sizeof a;
    a.type = PERF_TYPE_SOFTWARE;
    a.config = PERF_COUNT_SW_TASK_CLOCK;
    a.sample_period = (uint64_t)spprof__g.cfg.interval_ns;
    a.disabled = 1;
    a.exclude_hv = 1;
    a.exclude_kernel = spprof__g.lnx.perf_exclude_kernel ? 1u : 0u;
    fd = (int)syscall(SYS_perf_event_open, &a, tid, -1, -1, PERF_FLAG_FD_CLOEXEC);
    if (fd < 0 && !a.exclude_kernel && (errno == EACCES || errno == EPERM)) {
        /* perf_event_paranoid >= 2 and no CAP_PERFMON: user mode only; the handler's weights keep time right */
        spprof__g.lnx.perf_exclude_kernel = 1;
        a.exclude_kernel = 1;
        fd = (int)syscall(SYS_perf_event_open, &a, tid, -1, -1, PERF_FLAG_FD_CLOEXEC);
    }
    if (fd < 0) return -1;
    if (place) fd = spprof__fd_move_high(fd, 1);  /* before O_ASYNC: its signals carry this number */
    if (fd < 0) return -1;
    own.type = F_OWNER_TID;
    own.pid = tid;
    fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETOWN_EX, &own) != 0 || fcntl(fd, F_SETSIG, spprof__g.cfg.signo) != 0 ||
        fcntl(fd, F_SETFL, fl | O_ASYNC | O_NONBLOCK) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}
#endif

static int spprof__arm(spprof__slot *s, int on) {
    struct itimerspec its;
    int64_t iv = spprof__g.cfg.interval_ns;
#if SPPROF__HAVE_PERF
    if (s->lnx.perf_fd >= 0) {
        if (on) {  /* CPU time spent while disarmed is not sampled time */
            SPPROF__STORER(&s->cpu_last, spprof__thread_cpu_ns(s->tid));
            SPPROF__STORER(&s->cpu_carry, (int64_t)0);
        }
        /* One-shot: REFRESH adds one overflow to the event's limit and enables it; the overflow that brings
           the limit to zero disables the event and signals POLL_HUP, and the handler refreshes it again.
           So at most one of our signals per event is pending, whatever the thread's signal mask (measured:
           a thread blocking the signal for 300 ms at 10 kHz, one-shot: SigQ 1; free-running: 2,991, and
           at RLIMIT_SIGPENDING the kernel sends SIGIO instead, which kills the process). The limit is
           never raised twice for one overflow: the kernel has no call that sets it (only adds), so a pause
           does not disable the event (a disabled event with its refresh still due would get a second
           one at resume); it runs out at its next overflow, whose signal the handler ignores and marks
           the slot perf_rearm, and resume refreshes exactly the slots so marked. */
        if (!on) return 1;
        if (__atomic_exchange_n(&s->lnx.perf_rearm, 0, __ATOMIC_SEQ_CST))
            return ioctl(s->lnx.perf_fd, PERF_EVENT_IOC_REFRESH, 1) == 0;
        return 1;
    }
#endif
    memset(&its, 0, sizeof its);
    if (on) {
        its.it_interval.tv_sec = (time_t)(iv / 1000000000);
        its.it_interval.tv_nsec = (long)(iv % 1000000000);
        its.it_value = its.it_interval;
    }
    return timer_settime(s->lnx.timer, 0, &its, NULL) == 0;
}

/* Creates (and, while running, arms) the slot's timer. EAGAIN (RLIMIT_SIGPENDING or kernel memory) is retried
   `attempts` times; a thread left without a timer is retried once per scan and counted once. */
static int spprof__create_timer(spprof__slot *s, uint32_t idx, int attempts) {
    struct sigevent sev;
    clockid_t clk;
    int attempt, err = 0;
    uint64_t cookie = ((uint64_t)SPPROF__COOKIE << 48) | ((uint64_t)(spprof__g.gen & 0xffffu) << 32) | idx;
    if (SPPROF__LOAD(&spprof__g.sig_lost)) return 0;  /* the program took the signal over: arm nothing */
#if SPPROF__HAVE_PERF
    if (SPPROF__LOADR(&spprof__g.lnx.perf_on)) {
        int fd = spprof__perf_open(s->tid, 1);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE)) spprof__g.lnx.perf_fd_fallbacks++;
        if (fd >= 0 && spprof__fdmap_set(fd, cookie)) {
            s->lnx.perf_fd = fd;
            spprof__g.lnx.perf_fds++;
            s->has_timer = 1;
            if (SPPROF__LOADR(&spprof__g.state) == SPPROF_STATE_RUNNING) spprof__arm(s, 1);
            return 1;
        }
        if (fd >= 0) close(fd);
        /* out of fds, over the fd budget, or out of memory (or the thread exited): a POSIX timer instead */
    }
#endif
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = spprof__g.cfg.signo;
    sev.sigev_notify_thread_id = s->tid;
    sev.sigev_value.sival_ptr = (void *)(uintptr_t)cookie;
    /* The per-thread CPU clock of any thread of this process: MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED),
       the same encoding glibc's pthread_getcpuclockid uses (stable kernel ABI).
       Wall mode too: a CLOCK_MONOTONIC timer would interrupt the thread's blocked system calls (see @offcpu). */
    clk = (clockid_t)((~(unsigned)s->tid << 3) | 6u);
    for (attempt = 0; attempt < attempts; attempt++) {
        if (timer_create(clk, &sev, &s->lnx.timer) == 0) {
            s->has_timer = 1;
            if (SPPROF__LOADR(&spprof__g.state) == SPPROF_STATE_RUNNING) spprof__arm(s, 1);
            return 1;
        }
        err = errno;
        if (err != EAGAIN) break;  /* EINVAL: the thread exited meanwhile */
        spprof__g.timer_retries++;
        if (attempt + 1 < attempts) sched_yield();  /* never sleep here: reg_lock is held */
    }
    if (err == EAGAIN && !s->timer_failed) {
        char msg[160];
        s->timer_failed = 1;
        spprof__g.timer_failures++;
        snprintf(msg, sizeof msg, "timer_create for thread %d failed with EAGAIN (RLIMIT_SIGPENDING?): not sampled until a later retry succeeds", s->tid);
        SPPROF_LOG(msg);
    }
    return 0;
}

static void spprof__delete_timer(spprof__slot *s) {
    if (!s->has_timer) return;
#if SPPROF__HAVE_PERF
    if (s->lnx.perf_fd >= 0) {
        /* A signal of this event may still be queued: its map entry becomes a tombstone, so that signal is
           counted as ignored rather than passed on (see SPPROF__PERF_TOMB). */
        ioctl(s->lnx.perf_fd, PERF_EVENT_IOC_DISABLE, 0);
        spprof__fdmap_tomb(s->lnx.perf_fd);
        close(s->lnx.perf_fd);
        s->lnx.perf_fd = -1;
        spprof__g.lnx.perf_fds--;
        s->has_timer = 0;
        return;
    }
#endif
    { int o = timer_getoverrun(s->lnx.timer); if (o > 0) SPPROF__ADD(&spprof__g.c.overruns, (uint64_t)o); }
    timer_delete(s->lnx.timer);
    s->has_timer = 0;
}

/* The threads of the process (auto mode), in *tids (allocated); 0 if they cannot be listed. */
static int spprof__list_threads(int **tids_out, size_t *n_out) {
    int *tids = NULL;
    size_t n = 0, cap = 0;
    DIR *dp = opendir("/proc/self/task");
    struct dirent *de;
    if (!dp) return 0;
    while ((de = readdir(dp)) != NULL) {
        int tid = atoi(de->d_name);
        if (tid <= 0) continue;
        if (n == cap) {
            int *q = (int *)SPPROF_REALLOC(tids, (cap ? cap * 2 : 64) * sizeof(int));
            if (!q) break;
            tids = q; cap = cap ? cap * 2 : 64;
        }
        tids[n++] = tid;
    }
    closedir(dp);
    *tids_out = tids;
    *n_out = n;
    return 1;
}

/* Is thread tid of this process still alive? */
static int spprof__thread_alive(int tid) { return syscall(SYS_tgkill, getpid(), tid, 0) == 0; }

static int spprof__source_is_perf(const spprof__slot *s) { return s->has_timer && s->lnx.perf_fd >= 0; }

/* ---- code ranges: executable segments from dl_iterate_phdr (see @walk) ---- */
static int spprof__xr_cb(struct dl_phdr_info *info, size_t size, void *data) {
    spprof__xr_build *b = (spprof__xr_build *)data;
    int i;
    (void)size;
    b->adds = info->dlpi_adds; b->subs = info->dlpi_subs;
    for (i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X) || !(ph->p_flags & PF_R)) continue;
        if (b->n == b->cap) {
            uint32_t nc = b->cap ? b->cap * 2 : 64;
            uintptr_t *q = (uintptr_t *)SPPROF_REALLOC(b->r, (size_t)nc * 2 * sizeof(uintptr_t));
            if (!q) { b->oom = 1; return 1; }
            b->r = q; b->cap = nc;
        }
        b->r[2 * b->n] = info->dlpi_addr + ph->p_vaddr;
        b->r[2 * b->n + 1] = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
        b->n++;
    }
    return 0;
}


/* Rebuild the executable-segment table when objects were loaded or unloaded since the last build. */
static int spprof__xr_counts_cb(struct dl_phdr_info *info, size_t size, void *data) {
    uint64_t *c = (uint64_t *)data;
    (void)size;
    c[0] = info->dlpi_adds; c[1] = info->dlpi_subs;
    return 1;  /* the loader's counters are the same in every entry: the first one is enough */
}

static void spprof__refresh_xranges(void) {
    spprof__xranges *old = spprof__g.xr;
    spprof__xr_build b;
    uint64_t counts[2] = {0, 0};
    /* Every scan: only the load/unload counters (one callback), so that an unchanged process costs nothing. */
    dl_iterate_phdr(spprof__xr_counts_cb, counts);
    if (old && old->adds == counts[0] && old->subs == counts[1]) return;
    memset(&b, 0, sizeof b);
    dl_iterate_phdr(spprof__xr_cb, &b);
    spprof__publish_xranges(&b);
}

/* ---- @offcpu -----------------------------------------------------------------------------------------
   Wall mode without interrupting anyone. A signal that reaches a thread blocked in nanosleep, poll,
   epoll_wait, pause, sigsuspend or a futex wait ends that call with EINTR even under SA_RESTART, and C code
   rarely retries (measured with a CLOCK_MONOTONIC timer per thread at 1 kHz: sleep(1) returned after 0.02 s,
   usleep(500000), poll(NULL, 0, 500) and epoll_wait(.., 500) after 0.001 s; Python's signal.pause() after
   0.3 ms). So wall mode arms the same per-thread CPU-clock source as CPU mode (perf task-clock or a
   CLOCK_THREAD_CPUTIME timer), which only fires while the thread runs, and the collector accounts the rest:
   - every SPPROF_OFFCPU_PERIOD_MS, per thread, off-CPU time = wall time elapsed - CPU time elapsed (one
     clock_gettime on the thread's CPU clock);
   - the stack it is blocked on comes from /proc/self/task/TID/syscall, which gives the user-space stack
     pointer and program counter of a thread blocked in the kernel ("running" otherwise), readable for our
     own threads without ptrace. The stack itself is copied from /proc/self/mem (a read of memory that went
     away fails instead of faulting), then walked below (spprof__offcpu_walk). While the thread stays blocked
     (its CPU clock has not moved) that stack is reused: one recovery per blocking episode;
   - the accumulated time goes into the ring as one sample per period carrying it as weight (remainder
     carried), so 1,000 sleeping threads cost 1,000 clock reads and samples per period, not 1,000 signals
     per interval (which filled the ring: 15.7% of samples dropped at 2 kHz).
   The stack is only trusted if the thread's CPU clock did not move between the read of the syscall file
   and the end of the copy (the thread did not run, so the stack did not change). What is approximate: the
   off-CPU time of one period goes to the stack the thread is blocked on at its end (a thread that blocked
   on several stacks within one period is seen on the last one); time a thread spends runnable but waiting
   for a CPU goes to the stack of its latest sample (spprof__offcpu_last_stack). Threads that block the
   profiling signal are left out, as in CPU mode. Off-CPU samples hold native frames only (the
   configured walker needs the thread's own signal context), unless spprof_config.offcpu_walker replaces
   them: spprof_python.h reads a blocked thread's Python frames from its thread state and, with
   the mixed walker, merges them with the recovered native frames. */

/* Reads the user-space sp and pc of a thread blocked in the kernel; 0 if it is running or the file cannot
   be read. Format: "nr a1 a2 a3 a4 a5 a6 sp pc" in a system call, "-1 sp pc" blocked outside one. */
static int spprof__blocked_regs(int tid, uintptr_t *sp, uintptr_t *pc) {
    char buf[256];
    char *p, *last = NULL, *prev = NULL;
    if (spprof__read_task_file(tid, "syscall", buf, sizeof buf) <= 0 || buf[0] == 'r') return 0;  /* "running" */
    for (p = buf; *p; p++)
        if ((p == buf || p[-1] == ' ') && *p != ' ' && *p != '\n') { prev = last; last = p; }
    if (!prev || prev == buf) return 0;
    *sp = (uintptr_t)strtoull(prev, NULL, 0);
    *pc = (uintptr_t)strtoull(last, NULL, 0);
    return *sp != 0 && *pc != 0;
}

/* Does thread tid block signal signo (SigBlk in /proc/self/task/TID/status)? Such a thread is not sampled
   (the documented contract: spprof's own helper threads, e.g. spprof_python.h's pinning thread, rely on
   it), in wall mode neither, although no signal would be needed. Unreadable: 0. */
static int spprof__blocks_signal(int tid, int signo) {
    char buf[2048], *p;
    if (spprof__read_task_file(tid, "status", buf, sizeof buf) <= 0) return 0;
    p = strstr(buf, "\nSigBlk:");
    if (!p) return 0;
    return (int)((strtoull(p + 8, NULL, 16) >> (signo - 1)) & 1u);
}

#if defined(__x86_64__)
/* Does the return address ret follow a call that can have entered the function holding inner (an address
   inside the callee)? Direct calls (E8 rel32) are checked: the target, or for a call through a PLT stub
   (jmp *GOT, optionally after endbr64 and a bnd prefix) the GOT entry, must be at or below inner and
   within 1 MiB of it: returns 1. Indirect calls (FF /2) cannot be checked: returns 2 (the walk drops such a
   frame again if the next one calls into the frame below it instead). This is what keeps stale return
   addresses (left in uninitialised slots by earlier calls) out of a recovered stack. */
static int spprof__calls_into(int mem_fd, uintptr_t ret, uintptr_t inner) {
    const unsigned char *c = (const unsigned char *)ret;
    if (ret < 4096 || !spprof__in_exec(ret - 6, 6)) return 0;
    if (c[-5] == 0xE8) {
        int32_t rel;
        uintptr_t t;
        const unsigned char *q;
        memcpy(&rel, c - 4, 4);
        t = ret + (uintptr_t)(intptr_t)rel;
        if (t <= inner && inner - t < (1u << 20)) return 1;
        if (!spprof__in_exec(t, 16)) return 0;
        q = (const unsigned char *)t;
        if (q[0] == 0xF3 && q[1] == 0x0F && q[2] == 0x1E && q[3] == 0xFA) q += 4;  /* endbr64 */
        if (q[0] == 0xF2) q++;                                                      /* bnd */
        if (q[0] == 0xFF && q[1] == 0x25) {  /* jmp *disp32(%rip): the GOT slot holds the real target */
            uintptr_t slot, real;
            memcpy(&rel, q + 2, 4);
            slot = (uintptr_t)(q + 6) + (uintptr_t)(intptr_t)rel;
            /* read through /proc/self/mem: a stale word can make any address look like a GOT slot */
            if (mem_fd < 0 || pread(mem_fd, &real, sizeof real, (off_t)slot) != (ssize_t)sizeof real) return 0;
            return real <= inner && inner - real < (1u << 20);
        }
        return 0;
    }
    if (c[-6] == 0xFF && (c[-5] & 0x38) == 0x10) return 2;
    if (c[-3] == 0xFF && (c[-2] & 0x38) == 0x10 && (c[-2] & 0xC0) == 0x40) return 2;
    if (c[-2] == 0xFF && (c[-1] & 0xF8) == 0xD0) return 2;
    return 0;
}

/* Does w call into inner, or else (when the frame below was accepted on an unverifiable indirect call,
   weak_inner != 0) into the frame below that one (*replace = 1: the indirect one was stale)? */
static int spprof__offcpu_link(int mem_fd, uintptr_t w, uintptr_t inner, uintptr_t weak_inner, int *replace) {
    int k = spprof__calls_into(mem_fd, w, inner);
    *replace = 0;
    if (!k && weak_inner) {
        k = spprof__calls_into(mem_fd, w, weak_inner);
        *replace = k != 0;
    }
    return k;
}
#endif

/* Walks a copy of a blocked thread's stack: buf holds len bytes from address sp. No frame pointer is known
   (the syscall file has sp and pc only; libc's wrappers, built without frame pointers, leave rbp alone or
   save it), so, going up from sp: a word that is a return address which calls into the frame below it
   (spprof__calls_into) is a frame of a function without a frame record (libc's usleep -> nanosleep ->
   clock_nanosleep); the first frame record (saved rbp pointing higher up the stack, next to such a return
   address) starts the frame-pointer chain, followed as in spprof__fp_chain. x86-64 only; elsewhere the
   sample holds the program counter alone. */
static int spprof__offcpu_walk(int mem_fd, uintptr_t pc, uintptr_t sp, const unsigned char *buf, size_t len,
                               spprof_frame *frames, int max) {
    int n = 0;
    frames[n].addr = pc; frames[n].aux = 0; frames[n].kind = SPPROF_FRAME_NATIVE; n++;
#if defined(__x86_64__)
    {
        uintptr_t end = sp + (len & ~(size_t)7), a, inner = pc, weak_inner = 0, fp = 0;
        /* a frameless leaf region is short: look for the first frame record within 16 KiB */
        uintptr_t scan_end = end - sp > 16384 ? sp + 16384 : end;
        for (a = sp; a + 16 <= scan_end && n < max; a += 8) {
            uintptr_t w0, w1;
            int k, repl;
            memcpy(&w0, buf + (a - sp), 8);
            memcpy(&w1, buf + (a - sp) + 8, 8);
            /* A frame record: a saved rbp higher up, next to a return address into the frame below, and the
               record it points to holds a return address that calls into the function of that one. (A
               register pushed by a libc routine often holds a stack address too: checking one level up
               keeps such a pair from being taken for the record and skipping a frame.) */
            if (w0 > a && w0 + 16 <= end && (w0 & 7) == 0 && spprof__offcpu_link(mem_fd, w1, inner, weak_inner, &repl)) {
                uintptr_t up;
                memcpy(&up, buf + (w0 - sp) + 8, 8);
                if (spprof__calls_into(mem_fd, up, w1 - 1)) {
                    if (repl) n--;
                    fp = a;
                    break;
                }
            }
            k = spprof__offcpu_link(mem_fd, w0, inner, weak_inner, &repl);
            if (k) {
                if (repl) { n--; inner = weak_inner; }
                weak_inner = k == 2 ? inner : 0;
                frames[n].addr = w0; frames[n].aux = SPPROF_AUX_RETADDR; frames[n].kind = SPPROF_FRAME_NATIVE; n++;
                inner = w0 - 1;
            }
        }
        while (fp && n < max) {  /* the frame-pointer chain, inside the copy, strictly upwards */
            uintptr_t next, ret;
            memcpy(&next, buf + (fp - sp), 8);
            memcpy(&ret, buf + (fp - sp) + 8, 8);
            if (ret < 4096 || !spprof__in_exec(ret - 1, 1)) break;
            frames[n].addr = ret; frames[n].aux = SPPROF_AUX_RETADDR; frames[n].kind = SPPROF_FRAME_NATIVE; n++;
            if (next <= fp || next + 16 > end || (next & 7) != 0) break;
            fp = next;
        }
    }
#else
    (void)mem_fd; (void)sp; (void)buf; (void)len; (void)max;
#endif
    return n;
}

typedef struct spprof__offcpu_ctx {
    int mem_fd;
    unsigned char *buf;
    uintptr_t *maps;       /* [lo, hi) pairs of /proc/self/maps, sorted, read at most once per round */
    size_t nmaps, maps_cap;
    int maps_fresh;        /* maps were read in this round */
} spprof__offcpu_ctx;

/* The mapping that holds sp (a thread's stack), from one read of /proc/self/maps per accounting round:
   with 1,000 threads the file has thousands of lines, and reading it once per thread cost the collector
   0.2 s of CPU per 1,000 new threads. */
static int spprof__offcpu_mapping(spprof__offcpu_ctx *x, uintptr_t sp, uintptr_t *lo, uintptr_t *hi) {
    size_t a = 0, b;
    if (!x->maps_fresh) {
        FILE *f = fopen("/proc/self/maps", "re");
        char line[512];
        x->maps_fresh = 1;
        x->nmaps = 0;
        if (!f) return 0;
        while (fgets(line, sizeof line, f)) {
            unsigned long long l, h;
            size_t len = strlen(line);
            int whole = len > 0 && line[len - 1] == '\n';
            if (sscanf(line, "%llx-%llx", &l, &h) == 2) {
                if (x->nmaps == x->maps_cap) {
                    size_t nc = x->maps_cap ? x->maps_cap * 2 : 1024;
                    uintptr_t *q = (uintptr_t *)SPPROF_REALLOC(x->maps, nc * 2 * sizeof(uintptr_t));
                    if (!q) break;
                    x->maps = q;
                    x->maps_cap = nc;
                }
                x->maps[2 * x->nmaps] = (uintptr_t)l;
                x->maps[2 * x->nmaps + 1] = (uintptr_t)h;
                x->nmaps++;
            }
            while (!whole && fgets(line, sizeof line, f)) {  /* the rest of a long line (a long path) */
                len = strlen(line);
                whole = len > 0 && line[len - 1] == '\n';
            }
        }
        fclose(f);
    }
    b = x->nmaps;  /* the kernel lists mappings in address order: binary search for the last lo <= sp */
    while (a < b) { size_t m = (a + b) / 2; if (x->maps[2 * m] <= sp) a = m + 1; else b = m; }
    if (a == 0 || sp >= x->maps[2 * (a - 1) + 1]) return 0;
    *lo = x->maps[2 * (a - 1)];
    *hi = x->maps[2 * (a - 1) + 1];
    return 1;
}

/* Recovers the stack slot s's thread is blocked on into s->lnx.off_frames; cpu is its CPU clock read before.
   Returns the number of frames, 0 if the thread is not blocked in the kernel or the stack cannot be read. */
static int spprof__offcpu_recover(spprof__offcpu_ctx *x, spprof__slot *s, int64_t cpu) {
    uintptr_t sp, pc, lo, hi;
    ssize_t k;
    size_t len;
    int n;
    if (!spprof__blocked_regs(s->tid, &sp, &pc) || spprof__blocks_signal(s->tid, spprof__g.cfg.signo)) return 0;
    if (!s->lnx.off_frames) s->lnx.off_frames = (spprof_frame *)SPPROF_MALLOC((size_t)spprof__g.max_depth * sizeof(spprof_frame));
    if (!x->buf) x->buf = (unsigned char *)SPPROF_MALLOC(SPPROF_OFFCPU_STACK_BYTES);
    if (x->mem_fd < 0) {
        x->mem_fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
        if (x->mem_fd >= 0) x->mem_fd = spprof__fd_move_high(x->mem_fd, 0);  /* not among the program's */
        spprof__g.lnx.mem_fd = x->mem_fd;
    }
    if (!s->lnx.off_frames || !x->buf) return 0;
    /* the stack's mapping: the collector's own cache, else the handler's, else /proc/self/maps (long with
       many threads: read once per thread, again only if its stack pointer moves to another mapping) */
    lo = s->lnx.off_lo;
    hi = s->lnx.off_hi;
    if (sp < lo || sp >= hi) {
        lo = SPPROF__LOADR(&s->stack_lo);
        hi = SPPROF__LOADR(&s->stack_hi);
        if ((sp < lo || sp >= hi) && !spprof__offcpu_mapping(x, sp, &lo, &hi)) lo = hi = 0;
        s->lnx.off_lo = lo;
        s->lnx.off_hi = hi;
    }
    len = hi > sp ? (size_t)(hi - sp) : 0;
    if (len > SPPROF_OFFCPU_STACK_BYTES) len = SPPROF_OFFCPU_STACK_BYTES;
    k = (len && x->mem_fd >= 0) ? pread(x->mem_fd, x->buf, len, (off_t)sp) : 0;
    n = spprof__offcpu_walk(x->mem_fd, pc, sp, x->buf, k > 0 ? (size_t)k : 0, s->lnx.off_frames, spprof__g.max_depth);
    if (spprof__g.cfg.offcpu_walker) {
        int m = spprof__g.cfg.offcpu_walker(s->tid, s->lnx.off_frames, n, spprof__g.max_depth, spprof__g.walker_user);
        if (m > 0 && m <= spprof__g.max_depth) n = m;
    }
    /* The thread did not run between the syscall file and the end of the copy: the copy is its stack. */
    if (spprof__thread_cpu_ns(s->tid) != cpu) return 0;
    return n;
}

/* Puts one off-CPU sample into the ring (the collector is one more producer); when the ring is full, drains
   it first (the collector is also its consumer). */
static void spprof__offcpu_emit(spprof__slot *s, uint32_t weight, uint64_t now) {
    uint64_t pos;
    spprof__sample_hdr *cell = spprof__ring_claim(&spprof__g.ring, &pos);
    if (!cell) {
        spprof__lock(&spprof__prof_lock);
        spprof__drain();
        spprof__unlock(&spprof__prof_lock);
        cell = spprof__ring_claim(&spprof__g.ring, &pos);
    }
    if (!cell) { SPPROF__ADD(&spprof__g.c.dropped, 1); return; }
    cell->ts = now;
    cell->tid = s->tid;
    cell->rec = s->rec;
    cell->flags = s->lnx.off_n >= spprof__g.max_depth ? SPPROF__SAMPLE_TRUNCATED : 0u;
    cell->weight = weight;
    cell->nframes = s->lnx.off_n;
    memcpy(cell + 1, s->lnx.off_frames, (size_t)s->lnx.off_n * sizeof(spprof_frame));
    spprof__ring_publish(cell, pos);
    SPPROF__ADD(&spprof__g.c.captured, 1);
}

/* The stack of the latest sample of slot s's thread in the profile, into s->lnx.off_frames (lnx.off_n frames);
   0 if it has none yet. */
static int spprof__offcpu_last_stack(spprof__slot *s) {
    spprof__profile *p = &spprof__g.prof;
    int n = 0;
    if (!s->lnx.off_frames) s->lnx.off_frames = (spprof_frame *)SPPROF_MALLOC((size_t)spprof__g.max_depth * sizeof(spprof_frame));
    if (!s->lnx.off_frames) return 0;
    spprof__lock(&spprof__prof_lock);
    if (s->rec < p->nrecs && p->recs[s->rec].nruns > 0) {
        const spprof__stack *st = &p->stacks[p->recs[s->rec].runs[p->recs[s->rec].nruns - 1].stack];
        for (n = 0; n < (int)st->n && n < spprof__g.max_depth; n++) s->lnx.off_frames[n] = p->frames[p->stack_data[st->off + (uint32_t)n]];
    }
    spprof__unlock(&spprof__prof_lock);
    s->lnx.off_n = n;
    return n > 0;
}

/* One accounting round over the registry (collector, under reg_lock). While paused, only the clocks move
   on (paused time is not profiled). final: at stop, give out what remains (rounded to whole intervals). */
static void spprof__offcpu_account(spprof__offcpu_ctx *x, int running, int final) {
    spprof__dir *d = spprof__g.dir;
    int64_t iv = spprof__g.cfg.interval_ns, period = (int64_t)SPPROF_OFFCPU_PERIOD_MS * 1000000;
    uint32_t i;
    x->maps_fresh = 0;
    for (i = 0; d && i < spprof__g.nslots_used; i++) {
        spprof__slot *s = &d->chunks[i / SPPROF__CHUNK][i % SPPROF__CHUNK];
        int64_t now, cpu, off;
        if (!s->tid) continue;
        now = (int64_t)spprof__now_ns();
        cpu = spprof__thread_cpu_ns(s->tid);
        if (!cpu) continue;  /* the thread has exited */
        off = (now - s->lnx.off_wall) - (cpu - s->lnx.off_cpu);
        if (!s->lnx.off_wall || !running) off = 0;  /* first sight of the thread, or paused */
        s->lnx.off_wall = now;
        s->lnx.off_cpu = cpu;
        if (off < 0) off = 0;
        if (cpu != s->lnx.off_seen_cpu) {  /* it ran since: a new blocking episode, or running now */
            s->lnx.off_n = spprof__offcpu_recover(x, s, cpu);
            s->lnx.off_seen_cpu = s->lnx.off_n ? cpu : -1;
        }
        s->lnx.off_acc += off;
        if (!s->lnx.off_n) {
            /* Not blocked in the kernel now: runnable (preempted, waiting for a CPU: on a loaded machine a
               busy thread's wall time is largely this), or its stack could not be read. Its time goes to the
               stack of its latest sample in the profile (a runnable thread was preempted in the code it was
               running, at most one interval of CPU time after that sample). */
            if (s->lnx.off_acc >= iv && spprof__offcpu_last_stack(s)) {
                int64_t w = s->lnx.off_acc / iv;
                if (w > 1000000) w = 1000000;
                spprof__offcpu_emit(s, (uint32_t)w, (uint64_t)now);
                s->lnx.off_acc -= w * iv;
                s->lnx.off_n = 0;
            }
            if (s->lnx.off_acc > period) s->lnx.off_acc = period;  /* no stack at all: carried at most one period */
            continue;
        }
        if (s->lnx.off_acc >= iv || (final && s->lnx.off_acc >= iv / 2)) {
            int64_t w = final ? (s->lnx.off_acc + iv / 2) / iv : s->lnx.off_acc / iv;
            if (w > 1000000) w = 1000000;
            spprof__offcpu_emit(s, (uint32_t)w, (uint64_t)now);
            s->lnx.off_acc -= w * iv;
            if (s->lnx.off_acc < 0) s->lnx.off_acc = 0;
        }
    }
}

/* The program installed its own handler for our signal (under reg_lock, from the collector): from now on
   every signal we cause would reach the program's handler, which armed nothing. Disarm every source (the
   POSIX timers; the perf events, which without our handler are never re-armed anyway, have at most one
   signal left each), arm no new thread (spprof__create_timer), and say so once. Timers and fds are deleted
   by spprof_stop as usual; the profile so far is kept. */
static void spprof__signal_lost(void) {
    char msg[300];
    uint32_t i;
    SPPROF__STORE(&spprof__g.sig_lost, 1);
    for (i = 0; spprof__g.dir && i < spprof__g.nslots_used; i++) {
        spprof__slot *s = &spprof__g.dir->chunks[i / SPPROF__CHUNK][i % SPPROF__CHUNK];
        if (!s->tid || !s->has_timer) continue;
#if SPPROF__HAVE_PERF
        if (s->lnx.perf_fd >= 0) { ioctl(s->lnx.perf_fd, PERF_EVENT_IOC_DISABLE, 0); continue; }
#endif
        spprof__arm(s, 0);
    }
    snprintf(msg, sizeof msg, "the program installed its own handler for signal %d (%s), spprof's profiling "
             "signal; profiling stopped, the profile so far is kept", spprof__g.cfg.signo,
             spprof__g.cfg.signo == SIGPROF ? "SIGPROF"
             : spprof__g.cfg.signo >= SIGRTMIN ? "real-time" : "standard");
    SPPROF_WARN(msg);
}

/* The collector: drains the ring every drain_interval_ms (sooner when the handler finds it half full), and
   keeps the registry in line with the process's threads. Its own cost, measured on a 2-vCPU VM, was about
   60-80 us per wake-up (0.3-0.4% of a core at 20 ms), mostly system calls; hence two economies:
   - the thread list (/proc/self/task: open, getdents, close) is re-read only when the thread count changed
     (one stat(): /proc/self/task's link count is 2 + the number of threads) or every 10 scan intervals
     (a thread that exited while another started keeps the count);
   - while no sample arrives (idle process in CPU mode, paused) the wake-up interval doubles, up to 4x;
     the first sample brings it back (the handler also wakes the collector when the ring is half full). */
static void *spprof__collector_main(void *arg) {
    uint64_t last_scan = 0, last_full_scan = 0, last_captured = 0, last_offcpu = 0;
    nlink_t last_nlink = 0;
    spprof__offcpu_ctx ox;
    int idle_shift = 0;
    sigset_t set;
    (void)arg;
    sigemptyset(&set);
    sigaddset(&set, spprof__g.cfg.signo);
    pthread_sigmask(SIG_BLOCK, &set, NULL);  /* never sampled */
    SPPROF__STORE(&spprof__g.collector_tid, spprof_gettid());
    memset(&ox, 0, sizeof ox);
    ox.mem_fd = -1;
    for (;;) {
        struct pollfd pfd;
        uint64_t now, junk;
        uint64_t captured;
        pfd.fd = spprof__g.lnx.wake_fd; pfd.events = POLLIN; pfd.revents = 0;
        poll(&pfd, 1, spprof__g.cfg.drain_interval_ms << idle_shift);
        if (pfd.revents & POLLIN) { if (read(spprof__g.lnx.wake_fd, &junk, sizeof junk) < 0) { /* ignore */ } }
        if (SPPROF__LOAD(&spprof__g.collector_stop)) {
            /* the time blocked threads spent since the last round (none once the signal was lost) */
            if (spprof__g.cfg.mode == SPPROF_MODE_WALL && !SPPROF__LOAD(&spprof__g.sig_lost)) {
                spprof__lock(&spprof__reg_lock);
                spprof__offcpu_account(&ox, 1, 1);
                spprof__unlock(&spprof__reg_lock);
            }
            break;
        }
        /* Still our handler? One sigaction() per wake-up (0.1 us measured). */
        if (!SPPROF__LOAD(&spprof__g.sig_lost) && !spprof__handler_is_ours(spprof__g.cfg.signo)) {
            spprof__lock(&spprof__reg_lock);
            if (SPPROF__LOADR(&spprof__g.state) != SPPROF_STATE_STOPPED) spprof__signal_lost();
            spprof__unlock(&spprof__reg_lock);
        }
        if (spprof__g.cfg.mode == SPPROF_MODE_WALL && !SPPROF__LOAD(&spprof__g.sig_lost) &&
            spprof__now_ns() - last_offcpu >= (uint64_t)SPPROF_OFFCPU_PERIOD_MS * 1000000u) {
            spprof__lock(&spprof__reg_lock);
            spprof__offcpu_account(&ox, SPPROF__LOADR(&spprof__g.state) == SPPROF_STATE_RUNNING, 0);
            spprof__unlock(&spprof__reg_lock);
            last_offcpu = spprof__now_ns();
        }
        spprof__drain_and_notify();
        captured = SPPROF__LOADR(&spprof__g.c.captured);
        if (captured != last_captured) idle_shift = 0;
        else if (idle_shift < 2) idle_shift++;
        last_captured = captured;
        now = spprof__now_ns();
        if (now - last_scan >= (uint64_t)spprof__g.cfg.scan_interval_ms * 1000000u) {
            struct stat st;
            int stat_ok = stat("/proc/self/task", &st) == 0;
            int full = !stat_ok || st.st_nlink != last_nlink ||
                       now - last_full_scan >= (uint64_t)spprof__g.cfg.scan_interval_ms * 10000000u;
            spprof__lock(&spprof__reg_lock);
            if (SPPROF__LOADR(&spprof__g.state) != SPPROF_STATE_STOPPED &&
                !SPPROF__LOAD(&spprof__g.sig_lost)) {
                if (full) { spprof__sync_threads(); last_full_scan = now; last_nlink = stat_ok ? st.st_nlink : 0; }
                spprof__refresh_xranges();
            }
            spprof__unlock(&spprof__reg_lock);
            last_scan = now;
        }
    }
    spprof__lock(&spprof__reg_lock);
    spprof__g.lnx.mem_fd = -1;
    spprof__unlock(&spprof__reg_lock);
    if (ox.mem_fd >= 0) close(ox.mem_fd);
    SPPROF_FREE(ox.buf);
    SPPROF_FREE(ox.maps);
    return NULL;
}

/* ---- session start and end: the signal handler, fork, the collector thread (see @lifecycle) ---- */
static spprof_result spprof__os_validate(const spprof_config *c) {
    if (c->signo < 0 || c->signo > SIGRTMAX || c->signo == SIGKILL || c->signo == SIGSTOP)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG,
                            "signo=%d is not a signal that can be caught (0: a free real-time signal)", c->signo);
    return SPPROF_OK;
}

static int spprof__is_default(const struct sigaction *a) {
    return !(a->sa_flags & SA_SIGINFO) && a->sa_handler == SIG_DFL;
}

/* Can a timer deliver sig? A timer created (never armed) and deleted. Under qemu-user (7.2, aarch64 guest
   on x86-64) sigaction accepts signals 63 and 64 but timer_create refuses them (EINVAL): the emulator keeps
   the host's top real-time signals for itself. Without this check the default signal was SIGRTMAX there
   and no thread was ever sampled. */
static int spprof__signal_timer_ok(int sig) {
    struct sigevent sev;
    timer_t t;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_SIGNAL;
    sev.sigev_signo = sig;
    if (timer_create(CLOCK_MONOTONIC, &sev, &t) != 0) return 0;
    timer_delete(t);
    return 1;
}

/* Installs the handler for signo, or (signo 0) for the highest real-time signal nobody handles; returns the
   signal, or 0 with the error set. The handler of an earlier session is kept if it is still installed
   (same signal asked for, or any real-time signal when 0 is). A handler the program put in place of ours
   is the program's: never restored over, never chained to from a later install on another signal. */
static int spprof__install_handler(int signo) {
    struct sigaction sa, old;
    int sig;
    if (spprof__g.lnx.handler_installed) {
        int prev = spprof__g.lnx.installed_signo;
        if (spprof__handler_is_ours(prev)) {
            if (prev == signo || (signo == 0 && prev >= SIGRTMIN && prev <= SIGRTMAX)) return prev;
            /* another signal than last time: give the old one back first (its timers are gone) */
            sigaction(prev, &spprof__g.lnx.old_action, NULL);
        }
        /* else the program took it over: it is not ours to give back */
        spprof__g.lnx.handler_installed = 0;
    }
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = spprof__handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    /* The previous action is written straight into old_action by the same sigaction that installs ours:
       a foreign signal that reaches our handler right after finds the action to pass it on to. */
    if (signo) {
        if (!spprof__signal_timer_ok(signo)) {
            spprof__fail(SPPROF_ERR_SYSTEM, "signo=%d: timer_create refuses this signal here (%s)", signo,
                         strerror(errno));
            return 0;
        }
        if (sigaction(signo, &sa, &spprof__g.lnx.old_action) != 0) {
            spprof__fail(SPPROF_ERR_SYSTEM, "sigaction(%d): %s", signo, strerror(errno));
            return 0;
        }
        sig = signo;
    } else {
        /* From SIGRTMAX down (libraries that use real-time signals usually count up from SIGRTMIN; glibc
           keeps the first two or three for itself, below the SIGRTMIN it reports). Checked and claimed in
           one sigaction: if the old action it returns is not SIG_DFL, another thread (another copy of
           spprof starting at the same time) claimed it first, and it gets its handler back. */
        for (sig = SIGRTMAX; sig >= SIGRTMIN; sig--) {
            if (sigaction(sig, NULL, &old) != 0 || !spprof__is_default(&old)) continue;
            if (!spprof__signal_timer_ok(sig)) continue;  /* reserved by an emulator (qemu-user) */
            if (sigaction(sig, &sa, &spprof__g.lnx.old_action) != 0) continue;
            if (spprof__is_default(&spprof__g.lnx.old_action)) break;
            sigaction(sig, &spprof__g.lnx.old_action, NULL);
        }
        if (sig < SIGRTMIN) {  /* every real-time signal is taken: SIGPROF, chained to its handler */
            sig = SIGPROF;
            if (sigaction(sig, &sa, &spprof__g.lnx.old_action) != 0) {
                spprof__fail(SPPROF_ERR_SYSTEM, "sigaction(SIGPROF): %s", strerror(errno));
                return 0;
            }
        }
    }
    spprof__g.lnx.handler_installed = 1;
    spprof__g.lnx.installed_signo = sig;
    return sig;
}

static void spprof__tls_destructor(void *v) {
    (void)v;
    spprof_thread_unregister();
}
static pthread_key_t spprof__tls_key;
static spprof__once_t spprof__tls_once;
static void spprof__tls_init(void) { pthread_key_create(&spprof__tls_key, spprof__tls_destructor); }
/* The calling thread is unregistered when it exits (explicit registration). */
static void spprof__thread_at_exit(void) {
    spprof__once(&spprof__tls_once, spprof__tls_init);
    pthread_setspecific(spprof__tls_key, (void *)1);
}

/* fork(): POSIX timers and threads are not inherited, so the child starts stopped and clean (its copy of
   the parent's profile is discarded; spprof__g.forked makes stop and the writers say so instead of writing
   an empty profile over the parent's file), and may start its own session. The three locks are taken around
   fork so that the child never inherits one held by a thread that no longer exists there. */
static int spprof__atfork_once;
static void spprof__atfork_prepare(void) {
    spprof__lock(&spprof__api_lock);
    spprof__lock(&spprof__reg_lock);
    spprof__lock(&spprof__prof_lock);
}
static void spprof__atfork_parent(void) {
    spprof__unlock(&spprof__prof_lock);
    spprof__unlock(&spprof__reg_lock);
    spprof__unlock(&spprof__api_lock);
}
static void spprof__atfork_child(void) {
    spprof__g.forked = SPPROF__LOAD(&spprof__g.state) != SPPROF_STATE_STOPPED || spprof__g.prof.nrecs > 0;
    SPPROF__STORE(&spprof__g.state, (int)SPPROF_STATE_STOPPED);
    spprof__g.collector_running = 0;
    spprof__g.c.inflight = 0;
    if (spprof__g.lnx.wake_fd >= 0) { close(spprof__g.lnx.wake_fd); spprof__g.lnx.wake_fd = -1; }
    if (spprof__g.lnx.mem_fd > 0) { close(spprof__g.lnx.mem_fd); spprof__g.lnx.mem_fd = -1; }
    spprof__registry_free();
    spprof__xranges_free();
    spprof__ring_free(&spprof__g.ring);
    spprof__profile_free(&spprof__g.prof);
    spprof__g.nexplicit = 0;
    spprof__atfork_parent();
}
static void spprof__atfork_init(void) {
    pthread_atfork(spprof__atfork_prepare, spprof__atfork_parent, spprof__atfork_child);
}
static void spprof__os_init_once(void) { spprof__once(&spprof__atfork_once, spprof__atfork_init); }
/* every thread samples itself: no suspensions */
static void spprof__os_stats(spprof_stats *o) { o->perf_fd_fallbacks = spprof__g.lnx.perf_fd_fallbacks; }

static void spprof__os_reset(void) {
    spprof__g.lnx.perf_fd_fallbacks = 0;
    spprof__g.lnx.wake_fd = -1;
    spprof__g.lnx.mem_fd = -1;
}

static void spprof__os_slot_init(spprof__slot *s) {
    s->lnx.perf_fd = -1;
    __atomic_store_n(&s->lnx.perf_rearm, 1, __ATOMIC_SEQ_CST);  /* a new event is created disabled */
    s->lnx.off_wall = s->lnx.off_cpu = s->lnx.off_acc = 0;
    s->lnx.off_seen_cpu = -1;
    s->lnx.off_n = 0;  /* off_frames: kept from an earlier owner of the slot (freed with the registry) */
    s->lnx.off_lo = s->lnx.off_hi = 0;
}

static void spprof__os_slot_free(spprof__slot *s) {
#if SPPROF__HAVE_PERF
    if (s->has_timer && s->lnx.perf_fd >= 0) {  /* perf fds are left open only in a fork child */
        spprof__fdmap_set(s->lnx.perf_fd, 0);
        close(s->lnx.perf_fd);
        s->lnx.perf_fd = -1;
        spprof__g.lnx.perf_fds--;
        s->has_timer = 0;
    }
#endif
    SPPROF_FREE(s->lnx.off_frames);
}

/* Session start, under reg_lock: the collector's wake-up, the signal handler, the fault handler, and
   whether perf events can be used. */
static spprof_result spprof__os_begin(const spprof_config *cfg) {
    spprof_result r = SPPROF_OK;
    spprof__g.lnx.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (spprof__g.lnx.wake_fd < 0) r = spprof__fail(SPPROF_ERR_SYSTEM, "eventfd: %s", strerror(errno));
    else spprof__g.lnx.wake_fd = spprof__fd_move_high(spprof__g.lnx.wake_fd, 0);  /* not among the program's */
#ifdef SPPROF_USE_LIBUNWIND
    spprof__find_ldso();
    spprof__libunwind_warm();
#endif
    if (r == SPPROF_OK) {
        int sig = spprof__install_handler(cfg->signo);
        if (!sig) r = SPPROF_ERR_SYSTEM;
        spprof__g.cfg.signo = sig;  /* the signal in use, for the timers, the perf events and the stats */
    }
    SPPROF__STORE(&spprof__g.sig_lost, 0);
    if (r == SPPROF_OK && cfg->guard_faults) r = spprof__install_fault_handler();
    SPPROF__STORER(&spprof__g.lnx.perf_on, 0);
    spprof__g.lnx.perf_exclude_kernel = cfg->source == SPPROF_SOURCE_PERF_USER;
    /* Wall mode arms the same CPU-clock source as CPU mode (signals reach running threads only; see @offcpu) */
    if (r == SPPROF_OK && cfg->source != SPPROF_SOURCE_POSIX) {
#if SPPROF__HAVE_PERF
        int fd = spprof__perf_open(spprof_gettid(), 0);  /* can this process open task-clock events at all? */
        if (fd >= 0) { close(fd); SPPROF__STORER(&spprof__g.lnx.perf_on, 1); }
        else if (cfg->source != SPPROF_SOURCE_AUTO)
            r = spprof__fail(SPPROF_ERR_UNSUPPORTED, "perf_event_open(task-clock): %s (seccomp, perf_event_paranoid=3, or no perf events in this kernel); use SPPROF_SOURCE_AUTO or SPPROF_SOURCE_POSIX", strerror(errno));
#else
        if (cfg->source != SPPROF_SOURCE_AUTO)
            r = spprof__fail(SPPROF_ERR_UNSUPPORTED, "this build has no perf_event source (SPPROF_NO_PERF_EVENTS)");
#endif
    }
    return r;
}

static spprof_result spprof__os_collector_start(void) {
    int err = pthread_create(&spprof__g.lnx.collector, NULL, spprof__collector_main, NULL);
    if (err) return spprof__fail(SPPROF_ERR_SYSTEM, "cannot start the collector thread: %s", strerror(err));
    return SPPROF_OK;
}

static void spprof__os_collector_stop(void) {
    SPPROF__STORE(&spprof__g.collector_stop, 1);
    spprof__wake_collector();
    pthread_join(spprof__g.lnx.collector, NULL);
}

/* Around the deletion of the timers at stop: the signal is blocked on this thread, and the signals still
   pending on it are consumed (sigtimedwait) before it is unblocked. Under api_lock. */
static sigset_t spprof__stop_set, spprof__stop_old;
static void spprof__os_quiesce_begin(void) {
    sigemptyset(&spprof__stop_set);
    sigaddset(&spprof__stop_set, spprof__g.cfg.signo ? spprof__g.cfg.signo : SIGPROF);
    pthread_sigmask(SIG_BLOCK, &spprof__stop_set, &spprof__stop_old);
}
static void spprof__os_quiesce_end(void) {
    struct timespec zero = {0, 0};
    int k;
    for (k = 0; k < 4096 && sigtimedwait(&spprof__stop_set, NULL, &zero) > 0; k++) {}
    pthread_sigmask(SIG_SETMASK, &spprof__stop_old, NULL);
}

/* Session end, after no handler is in flight any more (handlers_done) or not. */
static void spprof__os_end(int handlers_done) {
    if (handlers_done) spprof__remove_fault_handler();
    if (spprof__g.lnx.wake_fd >= 0) { close(spprof__g.lnx.wake_fd); spprof__g.lnx.wake_fd = -1; }
}

/* ---- symbols (see @symbolize) --------------------------------------------------------------------------
   Off the hot path. Modules come from dl_iterate_phdr; each module's symbols from its ELF file (.symtab
   when present, so static functions get names; else the .symtab of its separate debug file, found by build id
   or .gnu_debuglink (Debian's libc6-dbg names libc's start_thread); else .dynsym), sorted by address; the
   executable is shown by its real path (opened as /proc/self/exe); dladdr as a fallback;
   "module+0xoffset" when nothing names a code address, "[unknown in module]" / "[unknown]" for one that is not
   code (never the data symbol that precedes it, nor a bare number). The cache is built on first use and dropped by
   spprof__symbols_reset() after each writer (libraries may be loaded or unloaded in between). */
typedef struct spprof__sym { uint64_t lo, hi; uint32_t name; } spprof__sym;
typedef struct spprof__module {
    uint64_t bias, lo, hi;
    uint64_t xlo, xhi;  /* its executable segments (PF_X), readable too (PF_R) when xread */
    int xread;
    char path[256];
    int loaded;
    spprof__sym *syms; size_t nsyms;
    char *names; size_t names_len;
} spprof__module;

static spprof__mutex spprof__sym_lock = SPPROF__MUTEX_INIT;
static spprof__module *spprof__mods;
static size_t spprof__nmods;

static int spprof__phdr_cb(struct dl_phdr_info *info, size_t size, void *data) {
    size_t *cap = (size_t *)data;
    spprof__module *m;
    uint64_t lo = UINT64_MAX, hi = 0, xlo = UINT64_MAX, xhi = 0;
    int i, xread = 1;
    (void)size;
    for (i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uint64_t a = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type != PT_LOAD) continue;
        if (a < lo) lo = a;
        if (a + ph->p_memsz > hi) hi = a + ph->p_memsz;
        if (!(ph->p_flags & PF_X)) continue;
        if (a < xlo) xlo = a;
        if (a + ph->p_memsz > xhi) xhi = a + ph->p_memsz;
        if (!(ph->p_flags & PF_R)) xread = 0;
    }
    if (hi <= lo) return 0;
    if (spprof__nmods == *cap) {
        size_t nc = *cap ? *cap * 2 : 32;
        spprof__module *q = (spprof__module *)SPPROF_REALLOC(spprof__mods, nc * sizeof(spprof__module));
        if (!q) return 1;
        spprof__mods = q; *cap = nc;
    }
    m = &spprof__mods[spprof__nmods++];
    memset(m, 0, sizeof *m);
    m->bias = info->dlpi_addr; m->lo = lo; m->hi = hi;
    m->xlo = xlo; m->xhi = xhi; m->xread = xread;
    snprintf(m->path, sizeof m->path, "%s", (info->dlpi_name && info->dlpi_name[0]) ? info->dlpi_name : "/proc/self/exe");
    return 0;
}

static int spprof__cmp_sym(const void *a, const void *b) {
    const spprof__sym *x = (const spprof__sym *)a, *y = (const spprof__sym *)b;
    return (x->lo > y->lo) - (x->lo < y->lo);
}

/* Maps a whole file read-only; NULL when it cannot be opened or is not at least an ELF header long. */
static const unsigned char *spprof__map_file(const char *path, size_t *size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    void *base;
    if (fd < 0) return NULL;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(ElfW(Ehdr))) {
        close(fd);
        return NULL;
    }
    base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (base == MAP_FAILED) return NULL;
    *size = (size_t)st.st_size;
    return (const unsigned char *)base;
}

/* The section headers of a mapped ELF file, checked against its size; NULL if it is not one. */
static const ElfW(Shdr) *spprof__elf_sections(const unsigned char *base, size_t size) {
    const ElfW(Ehdr) *eh = (const ElfW(Ehdr) *)(const void *)base;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_shoff == 0 ||
        eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(ElfW(Shdr)) > (uint64_t)size) return NULL;
    return (const ElfW(Shdr) *)(const void *)(base + eh->e_shoff);
}

/* Loads m's function symbols from the section of type `want` (SHT_SYMTAB or SHT_DYNSYM) of a mapped ELF
   file whose addresses are those of m (the object itself or its separate debug file); 1 if any. */
static int spprof__elf_syms(spprof__module *m, const unsigned char *base, size_t size, uint32_t want) {
    const ElfW(Ehdr) *eh = (const ElfW(Ehdr) *)(const void *)base;
    const ElfW(Shdr) *sh = spprof__elf_sections(base, size);
    int i;
    if (!sh) return 0;
    for (i = 0; i < eh->e_shnum; i++) {
        const ElfW(Shdr) *s = &sh[i], *strs;
        const ElfW(Sym) *syms;
        size_t n, k, cnt = 0, nl = 0;
        if (s->sh_type != want || s->sh_link >= eh->e_shnum || s->sh_entsize != sizeof(ElfW(Sym))) continue;
        strs = &sh[s->sh_link];
        if (s->sh_offset + s->sh_size > (uint64_t)size || strs->sh_offset + strs->sh_size > (uint64_t)size) continue;
        syms = (const ElfW(Sym) *)(const void *)(base + s->sh_offset);
        n = s->sh_size / sizeof(ElfW(Sym));
        for (k = 0; k < n; k++) if ((ELF64_ST_TYPE(syms[k].st_info) == STT_FUNC || ELF64_ST_TYPE(syms[k].st_info) == STT_GNU_IFUNC) && syms[k].st_value && syms[k].st_name < strs->sh_size) cnt++;
        if (!cnt) continue;
        m->syms = (spprof__sym *)SPPROF_MALLOC(cnt * sizeof(spprof__sym));
        m->names = (char *)SPPROF_MALLOC((size_t)strs->sh_size + 1);
        if (!m->syms || !m->names) { SPPROF_FREE(m->syms); SPPROF_FREE(m->names); m->syms = NULL; m->names = NULL; return 0; }
        memcpy(m->names, base + strs->sh_offset, (size_t)strs->sh_size);
        m->names[strs->sh_size] = 0;
        m->names_len = (size_t)strs->sh_size;
        for (k = 0; k < n; k++) {
            const ElfW(Sym) *y = &syms[k];
            if (!((ELF64_ST_TYPE(y->st_info) == STT_FUNC || ELF64_ST_TYPE(y->st_info) == STT_GNU_IFUNC) && y->st_value && y->st_name < strs->sh_size)) continue;
            m->syms[nl].lo = y->st_value + m->bias;
            m->syms[nl].hi = y->st_value + m->bias + (y->st_size ? y->st_size : 1);
            m->syms[nl].name = y->st_name;
            nl++;
        }
        m->nsyms = nl;
        qsort(m->syms, m->nsyms, sizeof(spprof__sym), spprof__cmp_sym);
        return 1;
    }
    return 0;
}

/* The separate debug file of a stripped object (distributions ship its .symtab there: libc's start_thread):
   /usr/lib/debug/.build-id/xx/yyyy.debug from its GNU build id, else the name in its .gnu_debuglink, looked
   up beside the object, in its .debug/ directory and under /usr/lib/debug. 1 if one exists. */
static int spprof__debug_file(const unsigned char *base, size_t size, const char *path, char *out, size_t cap) {
    const ElfW(Ehdr) *eh = (const ElfW(Ehdr) *)(const void *)base;
    const ElfW(Shdr) *sh = spprof__elf_sections(base, size);
    const char *shstr;
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path) : 0;
    int i;
    struct stat st;
    if (!sh || eh->e_shstrndx >= eh->e_shnum || sh[eh->e_shstrndx].sh_offset + sh[eh->e_shstrndx].sh_size > size) return 0;
    shstr = (const char *)base + sh[eh->e_shstrndx].sh_offset;
    for (i = 0; i < eh->e_shnum; i++) {  /* the build id: a note of type NT_GNU_BUILD_ID named "GNU" */
        const unsigned char *p = base + sh[i].sh_offset, *end = p + sh[i].sh_size;
        if (sh[i].sh_type != SHT_NOTE || sh[i].sh_offset + sh[i].sh_size > size) continue;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)(const void *)p;
            const unsigned char *name = p + sizeof(ElfW(Nhdr));
            const unsigned char *desc = name + ((nh->n_namesz + 3u) & ~3u);
            if (desc + nh->n_descsz > end) break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && !memcmp(name, "GNU", 4) && nh->n_descsz >= 2 &&
                nh->n_descsz <= 64) {
                char hex[130];
                uint32_t k;
                for (k = 0; k < nh->n_descsz; k++) snprintf(hex + 2 * k, 3, "%02x", desc[k]);
                snprintf(out, cap, "/usr/lib/debug/.build-id/%.2s/%s.debug", hex, hex + 2);
                if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) return 1;
            }
            p = desc + ((nh->n_descsz + 3u) & ~3u);
        }
    }
    for (i = 0; i < eh->e_shnum; i++) {
        const char *link;
        if (sh[i].sh_name >= sh[eh->e_shstrndx].sh_size || strcmp(shstr + sh[i].sh_name, ".gnu_debuglink") != 0 ||
            sh[i].sh_offset + sh[i].sh_size > size || sh[i].sh_size < 2) continue;
        link = (const char *)base + sh[i].sh_offset;
        if (!memchr(link, 0, (size_t)sh[i].sh_size) || strchr(link, '/')) return 0;
        snprintf(out, cap, "%.*s/%s", dirlen, path, link);
        if (strcmp(out, path) != 0 && stat(out, &st) == 0 && S_ISREG(st.st_mode)) return 1;
        snprintf(out, cap, "%.*s/.debug/%s", dirlen, path, link);
        if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) return 1;
        snprintf(out, cap, "/usr/lib/debug%.*s/%s", dirlen, path, link);
        if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) return 1;
        return 0;
    }
    return 0;
}

/* .symtab when present (static functions get names); else the separate debug file's .symtab; else .dynsym. */
static void spprof__load_symbols(spprof__module *m) {
    size_t size = 0, dsize = 0;
    const unsigned char *base, *dbg;
    char dpath[512];
    m->loaded = 1;
    base = spprof__map_file(m->path, &size);
    if (!base) return;
    if (!spprof__elf_syms(m, base, size, SHT_SYMTAB)) {
        if (spprof__debug_file(base, size, m->path, dpath, sizeof dpath) && (dbg = spprof__map_file(dpath, &dsize)) != NULL) {
            spprof__elf_syms(m, dbg, dsize, SHT_SYMTAB);
            munmap((void *)(uintptr_t)dbg, dsize);
        }
        if (!m->nsyms) spprof__elf_syms(m, base, size, SHT_DYNSYM);
    }
    munmap((void *)(uintptr_t)base, size);
}

static void spprof__symbols_reset(void) {
    size_t i;
    spprof__lock(&spprof__sym_lock);
    for (i = 0; i < spprof__nmods; i++) { SPPROF_FREE(spprof__mods[i].syms); SPPROF_FREE(spprof__mods[i].names); }
    SPPROF_FREE(spprof__mods);
    spprof__mods = NULL; spprof__nmods = 0;
    spprof__unlock(&spprof__sym_lock);
}

static const char *spprof__basename(const char *p) { const char *s = strrchr(p, '/'); return s ? s + 1 : p; }

/* The name a module is shown by: its path, the executable's real path rather than /proc/self/exe (which
   stays the one opened: it is still the running file if the path was replaced or deleted meanwhile). */
static void spprof__module_name(const spprof__module *m, char *out, size_t n) {
    ssize_t len;
    if (strcmp(m->path, "/proc/self/exe") == 0 && n > 1 && (len = readlink(m->path, out, n - 1)) > 0) {
        out[len] = 0;
        return;
    }
    snprintf(out, n, "%s", m->path);
}

/* Under sym_lock: (re)build the module table when there is none or the loader's add/remove counters moved
   since it was built (a library loaded after the first symbolization, e.g. an extension imported later). */
static uint64_t spprof__mods_adds, spprof__mods_subs;
static void spprof__mods_fresh(void) {
    uint64_t counts[2] = {0, 0};
    size_t i, cap = 0;
    dl_iterate_phdr(spprof__xr_counts_cb, counts);
    if (spprof__mods && counts[0] == spprof__mods_adds && counts[1] == spprof__mods_subs) return;
    for (i = 0; i < spprof__nmods; i++) { SPPROF_FREE(spprof__mods[i].syms); SPPROF_FREE(spprof__mods[i].names); }
    SPPROF_FREE(spprof__mods);
    spprof__mods = NULL; spprof__nmods = 0;
    dl_iterate_phdr(spprof__phdr_cb, &cap);
    spprof__mods_adds = counts[0]; spprof__mods_subs = counts[1];
}

SPPROF_API int spprof_symbol_range(uintptr_t near_addr, const char *name, uintptr_t *lo, uintptr_t *hi) {
    size_t i, k;
    int found = 0;
    spprof__lock(&spprof__sym_lock);
    spprof__mods_fresh();
    for (i = 0; i < spprof__nmods && !found; i++) {
        spprof__module *m = &spprof__mods[i];
        if (near_addr < m->lo || near_addr >= m->hi) continue;
        if (!m->loaded) spprof__load_symbols(m);
        for (k = 0; k < m->nsyms; k++) {
            if (m->syms[k].name < m->names_len && strcmp(m->names + m->syms[k].name, name) == 0) {
                *lo = (uintptr_t)m->syms[k].lo; *hi = (uintptr_t)m->syms[k].hi; found = 1;
                break;
            }
        }
    }
    spprof__unlock(&spprof__sym_lock);
    return found;
}

/* C++ names: demangled with the C++ runtime's __cxa_demangle, found with dlsym in the process, or in
   libstdc++.so.6 opened for the purpose when the first mangled name shows up (a C++ program whose linker
   dropped libstdc++, or a C program profiling C++ libraries); left mangled if there is none. Called only
   when symbolizing (off the hot path); the pointer is looked up once (atomically published). */
typedef char *(*spprof__demangle_fn)(const char *, char *, size_t *, int *);
static void *spprof__demangler;  /* atomic; (void *)1: looked for, none */
static void spprof__demangle(char *name, size_t n) {
    spprof__demangle_fn fn;
    void *p = SPPROF__LOAD(&spprof__demangler);
    char *d;
    int status = -1;
    if (!p) {
        void *lib;
        p = dlsym(RTLD_DEFAULT, "__cxa_demangle");
        if (!p && (lib = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_LOCAL)) != NULL) p = dlsym(lib, "__cxa_demangle");
        if (!p) p = (void *)1;
        SPPROF__STORE(&spprof__demangler, p);
    }
    if (p == (void *)1) return;
    *(void **)(&fn) = p;
    d = fn(name, NULL, NULL, &status);
    if (d && status == 0) snprintf(name, n, "%s", d);
    free(d);  /* __cxa_demangle allocates with malloc: freed with free, whatever SPPROF_FREE is */
}

/* An address that is not in code (outside every object's executable segments: a data symbol such as
   _PyRuntime, a small integer, a heap pointer) is shown as "[unknown in MODULE]" or "[unknown]", never by the
   name of the symbol that happens to precede it: what names a frame must be a function that contains it (the
   sorted function symbols, or dladdr's symbol when it is a function whose extent holds the address). */
SPPROF_API int spprof_symbolize_native(uint64_t addr, uint32_t aux, spprof_symbol *out) {
    uint64_t pc = (aux & SPPROF_AUX_RETADDR) ? addr - 1 : addr;
    size_t i;
    int found = 0, code = 0;
    Dl_info dli;
    const ElfW(Sym) *dsym = NULL;
    out->name[0] = 0; out->file[0] = 0; out->line = 0;
    spprof__lock(&spprof__sym_lock);
    spprof__mods_fresh();
    for (i = 0; i < spprof__nmods; i++) {
        spprof__module *m = &spprof__mods[i];
        size_t lo = 0, hi;
        if (pc < m->lo || pc >= m->hi) continue;
        spprof__module_name(m, out->file, sizeof out->file);
        if (pc < m->xlo || pc >= m->xhi) {
            snprintf(out->name, sizeof out->name, "[unknown in %.200s]", spprof__basename(out->file));
            break;
        }
        code = 1;
        if (!m->loaded) spprof__load_symbols(m);
        hi = m->nsyms;
        while (lo < hi) { size_t mid = (lo + hi) / 2; if (m->syms[mid].lo <= pc) lo = mid + 1; else hi = mid; }
        /* lo = first symbol above pc; walk back over enclosing candidates (sizes can overlap) */
        while (lo > 0 && !found) {
            const spprof__sym *s = &m->syms[--lo];
            if (pc < s->hi && s->name < m->names_len) { snprintf(out->name, sizeof out->name, "%s", m->names + s->name); found = 1; }
            if (pc - s->lo > (1u << 24)) break;
        }
        if (!found) snprintf(out->name, sizeof out->name, "%.200s+0x%llx", spprof__basename(m->path), (unsigned long long)(pc - m->bias));
        break;
    }
    spprof__unlock(&spprof__sym_lock);
    if (!found && code && dladdr1((void *)(uintptr_t)pc, &dli, (void **)(void *)&dsym, RTLD_DL_SYMENT) && dli.dli_sname &&
        dsym && (ELF64_ST_TYPE(dsym->st_info) == STT_FUNC || ELF64_ST_TYPE(dsym->st_info) == STT_GNU_IFUNC) &&
        pc - (uint64_t)(uintptr_t)dli.dli_saddr < (dsym->st_size ? dsym->st_size : 1)) {
        snprintf(out->name, sizeof out->name, "%s", dli.dli_sname);
        if (dli.dli_fname) snprintf(out->file, sizeof out->file, "%s", dli.dli_fname);
        found = 1;
    }
    if (!out->name[0]) snprintf(out->name, sizeof out->name, "[unknown]");
    if (found && out->name[0] == '_' && out->name[1] == 'Z') spprof__demangle(out->name, sizeof out->name);
    return found;
}

/* Does the return address r follow a call instruction? r - 7 .. r - 1 are readable code. A frame-pointer walk
   through code built without frame pointers reads a register that held anything as the next frame: the word
   above it is then a "return address" that is data, a small integer, or a pointer into code that no call
   precedes. x86-64: call rel32 (E8), call r/m64 (FF /2, its length from ModRM/SIB/displacement; a REX or
   notrack prefix comes before the FF and is not counted); aarch64: BL, BLR, BLRAA/BLRAB/BLRAAZ/BLRABZ. */
static int spprof__after_call(const unsigned char *r) {
#if defined(__x86_64__)
    int k;
    if (r[-5] == 0xE8) return 1;
    for (k = 2; k <= 7; k++) {
        unsigned m = r[-k + 1], mod = m >> 6, rm = m & 7u;
        int len = 2;
        if (r[-k] != 0xFF || ((m >> 3) & 7u) != 2u) continue;
        if (mod != 3 && rm == 4) {
            len++;
            if (mod == 0 && (r[-k + 2] & 7u) == 5u) len += 4;
        }
        if (mod == 1) len += 1;
        else if (mod == 2) len += 4;
        else if (mod == 0 && rm == 5) len += 4;
        if (len == k) return 1;
    }
    return 0;
#elif defined(__aarch64__)
    uint32_t w;
    memcpy(&w, r - 4, sizeof w);
    return (w & 0xFC000000u) == 0x94000000u || (w & 0xFFFFFC1Fu) == 0xD63F0000u || (w & 0xFEFFF800u) == 0xD63F0800u;
#else
    (void)r;
    return 1;
#endif
}

/* Off the hot path (symbolization): how many of a memory sample's frames, leaf first, to believe. The hooks'
   frame-pointer walk cannot check return addresses against the loaded code (see spprof__mem_walk_fp), so it
   is done here: the stack is cut at the first native return address that is not inside an object's
   executable segment right after a call instruction; every frame above it came from the same broken chain. */
static int spprof__mem_trusted(const spprof_frame *f, int n) {
    int i;
    spprof__lock(&spprof__sym_lock);
    spprof__mods_fresh();
    for (i = 0; i < n; i++) {
        uint64_t r = f[i].addr;
        size_t k;
        int ok = 0;
        if (SPPROF_FRAME_KIND(f[i].kind) != SPPROF_FRAME_NATIVE || !(f[i].aux & SPPROF_AUX_RETADDR)) continue;
        for (k = 0; k < spprof__nmods && !ok; k++) {
            const spprof__module *m = &spprof__mods[k];
            if (r - 1 < m->xlo || r - 1 >= m->xhi) continue;
            ok = !m->xread || r - 7 < m->xlo || spprof__after_call((const unsigned char *)(uintptr_t)r);
            break;
        }
        if (!ok) break;
    }
    spprof__unlock(&spprof__sym_lock);
    return i;
}
#else
static int spprof__mem_trusted(const spprof_frame *f, int n) {  /* the walks there check their addresses */
    (void)f;
    return n;
}
#endif /* SPPROF__OS_LINUX */

#if SPPROF__OS_WINDOWS
/* ==== @os_windows =======================================================================================
   Windows (x86-64): one sampler thread, which is also the collector. Every interval it takes each
   registered thread in turn: SuspendThread -> GetThreadContext -> walk -> ResumeThread. While a thread is
   suspended the sampler calls nothing that can take a lock that thread may hold (heap, loader, stdio,
   DbgHelp): the walk reads the suspended stack and the unwind tables of a module table built beforehand;
   RtlVirtualUnwind itself takes no lock and allocates nothing. Threads come from a Toolhelp snapshot per
   scan; the sampler never samples itself.
   - CPU mode: a thread is sampled when its CPU time advanced since the previous tick, with the advance as
     weight (in intervals, remainder carried). CPU time: QueryThreadCycleTime (cycles, converted with the
     TSC rate measured at start) where it works, else GetThreadTimes (coarse: the clock tick, 15.6 ms on
     Windows, 10 ms under wine: its steps are spread over the following ticks, see spprof__win_tick). Wall
     mode: every thread, every tick, weighted by the real time since the previous tick (late ticks under load
     lose no time).
   - Stacks: PE unwind tables (.pdata), looked up in spprof__win_mods (our copy of each module's range and
     exception directory); RtlVirtualUnwind per frame. A pc in code without unwind data is a leaf: its return
     address is at [rsp]. Reads stay inside the thread's committed stack [sp, top) found with VirtualQuery.
     Every module in the table is held with a reference (GetModuleHandleEx) until the table is replaced or
     the session stops, so a DLL the program frees stays mapped meanwhile: its unwind data cannot vanish
     under a walk (the DLL is really unloaded at the next scan or at stop).
   - Ticks: a high-resolution waitable timer where the system has one (Windows 10 1803+), else a plain one.
     Ticks that came later than one interval are counted (ticks_late). */
typedef struct spprof__win_mod {
    uintptr_t lo, hi;             /* the image in memory */
    const RUNTIME_FUNCTION *rf;   /* its exception directory (sorted by BeginAddress), or NULL */
    uint32_t nrf;
    HMODULE ref;                  /* our reference on it */
} spprof__win_mod;
typedef struct spprof__win_mods {
    uint32_t n;
    struct spprof__win_mods *older;  /* replaced tables; freed (and their references dropped) at stop */
    spprof__win_mod m[1];
} spprof__win_mods;
static spprof__win_mods *spprof__win_modtab;  /* atomic pointer, written under reg_lock */

static uint64_t spprof__win_tsc_per_ms;       /* measured at start; 0: cycle times not used */
static int spprof__win_cycles_ok;

static int spprof__source_is_perf(const spprof__slot *s) { (void)s; return 0; }

static void spprof__read_comm(int tid, char *out, size_t n) {
    typedef HRESULT(WINAPI * get_desc_fn)(HANDLE, PWSTR *);
    static void *fn_ptr;  /* GetThreadDescription (Windows 10 1607+), looked up once; (void *)1: absent */
    get_desc_fn fn;
    HANDLE h;
    PWSTR w = NULL;
    out[0] = 0;
    if (!fn_ptr) {
        FARPROC p = GetProcAddress(GetModuleHandleW(L"kernel32.dll"), "GetThreadDescription");
        void *q = (void *)1;
        if (p) memcpy(&q, &p, sizeof q);
        SPPROF__STORE(&fn_ptr, q);
    }
    if (SPPROF__LOAD(&fn_ptr) == (void *)1) return;
    memcpy(&fn, &fn_ptr, sizeof fn);
    h = OpenThread(THREAD_QUERY_LIMITED_INFORMATION, FALSE, (DWORD)tid);
    if (!h) return;
    if (SUCCEEDED(fn(h, &w)) && w) {
        if (!WideCharToMultiByte(CP_UTF8, 0, w, -1, out, (int)n, NULL, NULL)) out[0] = 0;
        LocalFree(w);
    }
    CloseHandle(h);
}

static int spprof__list_threads(int **tids_out, size_t *n_out) {
    HANDLE snap = CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
    THREADENTRY32 te;
    DWORD pid = GetCurrentProcessId();
    int *tids = NULL;
    size_t n = 0, cap = 0;
    if (snap == INVALID_HANDLE_VALUE) return 0;
    te.dwSize = sizeof te;
    if (Thread32First(snap, &te)) {
        do {
            if (te.th32OwnerProcessID != pid) continue;
            if (n == cap) {
                int *q = (int *)SPPROF_REALLOC(tids, (cap ? cap * 2 : 64) * sizeof(int));
                if (!q) break;
                tids = q; cap = cap ? cap * 2 : 64;
            }
            tids[n++] = (int)te.th32ThreadID;
            te.dwSize = sizeof te;
        } while (Thread32Next(snap, &te));
    }
    CloseHandle(snap);
    *tids_out = tids;
    *n_out = n;
    return 1;
}

static int spprof__thread_alive(int tid) {
    HANDLE h = OpenThread(SYNCHRONIZE, FALSE, (DWORD)tid);
    int alive;
    if (!h) return 0;
    alive = WaitForSingleObject(h, 0) == WAIT_TIMEOUT;
    CloseHandle(h);
    return alive;
}

static uint64_t spprof__filetime(FILETIME f) { return ((uint64_t)f.dwHighDateTime << 32) | f.dwLowDateTime; }

/* The thread's CPU time in ns: from its cycle count where that works, else its kernel + user times. */
static int64_t spprof__win_cpu_ns(const spprof__slot *s) {
    FILETIME cr, ex, ke, us;
    if (spprof__win_cycles_ok) {
        ULONG64 c = 0;
        if (QueryThreadCycleTime(s->win.th, &c) && c) return (int64_t)(c * 1000000u / spprof__win_tsc_per_ms);
    }
    if (!GetThreadTimes(s->win.th, &cr, &ex, &ke, &us)) return -1;
    return (int64_t)(spprof__filetime(ke) + spprof__filetime(us)) * 100;
}

/* The "sample source" of a Windows thread is a handle the sampler thread uses. */
static int spprof__create_timer(spprof__slot *s, uint32_t idx, int attempts) {
    (void)idx; (void)attempts;
    s->win.th = OpenThread(THREAD_SUSPEND_RESUME | THREAD_GET_CONTEXT | THREAD_QUERY_INFORMATION, FALSE, (DWORD)s->tid);
    if (!s->win.th) {
        if (!s->timer_failed) { s->timer_failed = 1; spprof__g.timer_failures++; }
        return 0;
    }
    s->cpu_last = spprof__win_cpu_ns(s);
    s->cpu_carry = 0;
    s->has_timer = 1;
    return 1;
}

static int spprof__arm(spprof__slot *s, int on) {
    if (on && s->win.th) {  /* CPU time spent while paused is not sampled time */
        s->cpu_last = spprof__win_cpu_ns(s);
        s->cpu_carry = 0;
    }
    return 1;
}

static void spprof__delete_timer(spprof__slot *s) {
    if (!s->has_timer) return;
    CloseHandle(s->win.th);
    s->win.th = NULL;
    s->has_timer = 0;
}

static void spprof__thread_at_exit(void) {
    /* No thread-exit callback is needed: a registered thread that exits is dropped at the next scan
       (spprof__thread_alive), as on Linux when its destructor did not run. */
}

/* ---- code ranges and unwind tables ---- */
static void spprof__win_mods_free(spprof__win_mods *t) {
    while (t) {
        spprof__win_mods *older = t->older;
        uint32_t i;
        for (i = 0; i < t->n; i++) if (t->m[i].ref) FreeLibrary(t->m[i].ref);
        SPPROF_FREE(t);
        t = older;
    }
}

static int spprof__win_cmp_mod(const void *a, const void *b) {
    uintptr_t x = ((const spprof__win_mod *)a)->lo, y = ((const spprof__win_mod *)b)->lo;
    return (x > y) - (x < y);
}

/* Rebuilds the module table and the executable ranges when the set of modules changed (off the hot path;
   under reg_lock, with no thread suspended). */
static void spprof__refresh_xranges(void) {
    HANDLE snap = CreateToolhelp32Snapshot(TH32CS_SNAPMODULE, 0);
    MODULEENTRY32W me;
    spprof__win_mods *old = spprof__win_modtab, *t = NULL;
    spprof__xr_build b;
    uint64_t sig = 1469598103934665603ull;
    uint32_t n = 0, cap = 0, i;
    if (snap == INVALID_HANDLE_VALUE) return;
    memset(&b, 0, sizeof b);
    me.dwSize = sizeof me;
    if (Module32FirstW(snap, &me)) {
        do {
            uintptr_t base = (uintptr_t)me.modBaseAddr;
            const IMAGE_DOS_HEADER *dos = (const IMAGE_DOS_HEADER *)base;
            const IMAGE_NT_HEADERS *nt;
            const IMAGE_SECTION_HEADER *sec;
            spprof__win_mod *m;
            HMODULE ref = NULL;
            int k;
            sig = (sig ^ base) * 1099511628211ull;
            if (n == cap) {
                uint32_t nc = cap ? cap * 2 : 64;
                spprof__win_mods *q = (spprof__win_mods *)SPPROF_REALLOC(t, sizeof *t + nc * sizeof(spprof__win_mod));
                if (!q) { b.oom = 1; break; }
                t = q; cap = nc;
            }
            /* the reference keeps the image mapped while the table points into it */
            if (!GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS, (LPCWSTR)me.modBaseAddr, &ref)) continue;
            m = &t->m[n];
            m->lo = base; m->hi = base + me.modBaseSize; m->rf = NULL; m->nrf = 0; m->ref = ref;
            n++;
            if (dos->e_magic != IMAGE_DOS_SIGNATURE) continue;
            nt = (const IMAGE_NT_HEADERS *)(base + (uintptr_t)dos->e_lfanew);
            if (nt->Signature != IMAGE_NT_SIGNATURE) continue;
            {
                const IMAGE_DATA_DIRECTORY *dd = &nt->OptionalHeader.DataDirectory[IMAGE_DIRECTORY_ENTRY_EXCEPTION];
                if (dd->VirtualAddress && dd->Size >= sizeof(RUNTIME_FUNCTION)) {
                    m->rf = (const RUNTIME_FUNCTION *)(base + dd->VirtualAddress);
                    m->nrf = dd->Size / (uint32_t)sizeof(RUNTIME_FUNCTION);
                }
            }
            sec = IMAGE_FIRST_SECTION(nt);
            for (k = 0; k < nt->FileHeader.NumberOfSections; k++) {
                if (!(sec[k].Characteristics & IMAGE_SCN_MEM_EXECUTE)) continue;
                if (b.n == b.cap) {
                    uint32_t nc = b.cap ? b.cap * 2 : 64;
                    uintptr_t *q = (uintptr_t *)SPPROF_REALLOC(b.r, (size_t)nc * 2 * sizeof(uintptr_t));
                    if (!q) { b.oom = 1; break; }
                    b.r = q; b.cap = nc;
                }
                b.r[2 * b.n] = base + sec[k].VirtualAddress;
                b.r[2 * b.n + 1] = base + sec[k].VirtualAddress + sec[k].Misc.VirtualSize;
                b.n++;
            }
            me.dwSize = sizeof me;
        } while (Module32NextW(snap, &me));
    }
    CloseHandle(snap);
    if (!t || b.oom || (old && old->n == n && spprof__g.xr && spprof__g.xr->adds == sig)) {
        /* unchanged (or out of memory): keep the published tables */
        if (t) { t->n = n; t->older = NULL; spprof__win_mods_free(t); }
        SPPROF_FREE(b.r);
        return;
    }
    t->n = n;
    t->older = old;
    qsort(t->m, n, sizeof(spprof__win_mod), spprof__win_cmp_mod);
    SPPROF__STORE(&spprof__win_modtab, t);
    b.adds = sig;
    b.subs = n;
    spprof__publish_xranges(&b);
    (void)i;
}

/* [suspended-safe] The module that holds pc, from the published table (reads only). */
static const spprof__win_mod *spprof__win_mod_at(uintptr_t pc) {
    const spprof__win_mods *t = (const spprof__win_mods *)SPPROF__LOAD(&spprof__win_modtab);
    uint32_t lo = 0, hi;
    if (!t) return NULL;
    hi = t->n;
    while (lo < hi) { uint32_t mid = (lo + hi) / 2; if (t->m[mid].lo <= pc) lo = mid + 1; else hi = mid; }
    if (lo == 0 || pc >= t->m[lo - 1].hi) return NULL;
    return &t->m[lo - 1];
}

/* [suspended-safe] The unwind entry of pc in module m, by binary search of its exception directory. */
static RUNTIME_FUNCTION *spprof__win_function(const spprof__win_mod *m, uintptr_t pc) {
    uint32_t rva = (uint32_t)(pc - m->lo), lo = 0, hi = m->nrf;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (m->rf[mid].EndAddress <= rva) lo = mid + 1;
        else if (m->rf[mid].BeginAddress > rva) hi = mid;
        else return (RUNTIME_FUNCTION *)(uintptr_t)&m->rf[mid];
    }
    return NULL;
}

/* [suspended-safe] The native walker on Windows: PE unwind tables, frame pointers where a module has none.
   ctx->os_context is the suspended thread's CONTEXT; it is copied, never changed. */
SPPROF_API int spprof_walk_native(const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames) {
#if defined(__x86_64__)
    CONTEXT c;
    int n = 0;
    uintptr_t lo, hi;
    if (!ctx || !ctx->os_context || max_frames <= 0) return -1;
    lo = ctx->stack_lo;
    hi = ctx->stack_hi;
    memcpy(&c, ctx->os_context, sizeof c);
    while (n < max_frames) {
        uintptr_t pc = (uintptr_t)c.Rip, sp = (uintptr_t)c.Rsp;
        const spprof__win_mod *m;
        RUNTIME_FUNCTION *fe;
        if (pc < 4096) break;
        frames[n].addr = pc;
        frames[n].aux = n ? SPPROF_AUX_RETADDR : 0;
        frames[n].kind = SPPROF_FRAME_NATIVE;
        n++;
        if (!hi || sp < lo || sp + sizeof(uintptr_t) > hi || (sp & 7) != 0) break;
        m = spprof__win_mod_at(n == 1 ? pc : pc - 1);
        if (!m) {
            /* not in any module (JIT code, or a module loaded since the last scan): frame pointers, if the
               chain is plausible, else stop */
            if (n == 1) return spprof__walk_fp(ctx, frames, max_frames);
            break;
        }
        fe = m->rf ? spprof__win_function(m, n == 1 ? pc : pc - 1) : NULL;
        if (fe) {
            PVOID handler_data = NULL;
            DWORD64 establisher = 0;
            RtlVirtualUnwind(UNW_FLAG_NHANDLER, (DWORD64)m->lo, (DWORD64)pc, fe, &c, &handler_data, &establisher, NULL);
        } else {
            c.Rip = *(const DWORD64 *)sp;  /* a leaf without unwind data: nothing pushed, the return address on top */
            c.Rsp += 8;
        }
        if ((uintptr_t)c.Rsp <= sp || (uintptr_t)c.Rsp > hi) break;  /* the stack only grows up while unwinding */
    }
    return n;
#else
    return spprof__walk_fp(ctx, frames, max_frames);
#endif
}

/* ---- the sampler thread ---- */
static void spprof__wake_collector(void) { /* the sampler drains every drain_interval_ms anyway */ }

/* Where a thread's CPU time comes in steps of a clock tick (GetThreadTimes: 15.6 ms on Windows, 10 ms under
   wine), a step is spread over the next ticks instead of being one heavy sample: while the thread's time keeps
   advancing (a step seen within SPPROF__WIN_COARSE_NS), each tick takes at most as many intervals of it as
   real time has passed since the previous tick. One sample per interval of CPU instead of one per clock step
   (10x more samples under wine at 1 kHz: +-1 pp instead of +-3 pp on a 50 % share in 3 s), the same total
   weight; what is left when the thread stops advancing (it blocked) goes into one sample, as before. */
#define SPPROF__WIN_COARSE_NS 32000000
/* One tick: every registered thread, each suspended only for its own sample (under reg_lock, which no
   suspended thread can hold: the sampler holds it). elapsed: ns since the previous tick. */
static void spprof__win_tick(int self, uint64_t tick_ns, uint64_t elapsed) {
    spprof__dir *d = spprof__g.dir;
    uint32_t i;
    int wall = spprof__g.cfg.mode == SPPROF_MODE_WALL;
    int64_t iv = spprof__g.cfg.interval_ns;
    for (i = 0; d && i < spprof__g.nslots_used; i++) {
        spprof__slot *s = &d->chunks[i / SPPROF__CHUNK][i % SPPROF__CHUNK];
        spprof_walk_ctx wc;
        CONTEXT c;
        uint64_t t0, t1;
        uint32_t weight;
        int64_t now = 0, cap = 0;
        int ok;
        if (!s->tid || s->tid == self || !s->has_timer) continue;
        if (!wall) {  /* CPU mode: only a thread whose CPU time advanced, weighted by the advance */
            now = spprof__win_cpu_ns(s);
            if (now < 0) continue;
            if (now != s->cpu_last) s->win.adv_ns = tick_ns;
            if (!spprof__win_cycles_ok && tick_ns - s->win.adv_ns < SPPROF__WIN_COARSE_NS) {
                cap = ((int64_t)elapsed + iv / 2) / iv;  /* a thread runs at most as long as the tick */
                if (cap < 1) cap = 1;
            }
        }
        weight = spprof__tick_weight(s, wall, now, elapsed, cap);
        if (!weight) continue;
        memset(&c, 0, sizeof c);
        c.ContextFlags = CONTEXT_CONTROL | CONTEXT_INTEGER;
        t0 = spprof__now_ns();
        if (SuspendThread(s->win.th) == (DWORD)-1) {
            SPPROF__ADD(&spprof__g.win.suspend_failures, 1);
            continue;
        }
        /* from here until ResumeThread: no allocation, no lock, no call that could take one */
        ok = GetThreadContext(s->win.th, &c) != 0;  /* also waits until the suspension has taken effect */
        if (ok) {
            uintptr_t sp = (uintptr_t)c.Rsp;
            if (sp < s->stack_lo || sp >= s->stack_hi) {
                /* the committed stack above sp: one system call, no user-mode lock */
                MEMORY_BASIC_INFORMATION mbi;
                if (VirtualQuery((LPCVOID)sp, &mbi, sizeof mbi) == sizeof mbi && mbi.State == MEM_COMMIT) {
                    s->stack_lo = (uintptr_t)mbi.AllocationBase;
                    s->stack_hi = (uintptr_t)mbi.BaseAddress + mbi.RegionSize;
                } else {
                    s->stack_lo = s->stack_hi = 0;
                }
            }
            wc.pc = (uintptr_t)c.Rip; wc.sp = sp; wc.fp = (uintptr_t)c.Rbp; wc.lr = 0;
            wc.os_context = &c;
            wc.stack_lo = sp; wc.stack_hi = s->stack_hi;
            spprof__tick_sample(&wc, s, weight);
        }
        ResumeThread(s->win.th);
        t1 = spprof__now_ns();
        spprof__susp_note(&spprof__g.win.susp, t0, t1);
    }
}

static DWORD WINAPI spprof__win_main(LPVOID arg) {
    HANDLE timer;
    HANDLE waits[2];
    uint64_t iv = (uint64_t)spprof__g.cfg.interval_ns, next, last_drain, last_scan, last_tick;
    int self = spprof_gettid();
    (void)arg;
    /* 0x2: CREATE_WAITABLE_TIMER_HIGH_RESOLUTION (Windows 10 1803+); older systems refuse the flag */
    timer = CreateWaitableTimerExW(NULL, NULL, 0x00000002, TIMER_ALL_ACCESS);
    if (!timer) timer = CreateWaitableTimerExW(NULL, NULL, 0, TIMER_ALL_ACCESS);
    SetThreadPriority(GetCurrentThread(), THREAD_PRIORITY_TIME_CRITICAL);
    SPPROF__STORE(&spprof__g.collector_tid, self);
    waits[0] = spprof__g.win.wake;
    waits[1] = timer;
    next = spprof__now_ns() + iv;
    last_drain = last_scan = last_tick = spprof__now_ns();
    for (;;) {
        uint64_t now = spprof__now_ns();
        LARGE_INTEGER due;
        DWORD w;
        due.QuadPart = next > now ? -(LONGLONG)((next - now + 99) / 100) : -1;  /* relative, 100 ns units */
        if (timer && SetWaitableTimer(timer, &due, 0, NULL, NULL, FALSE)) w = WaitForMultipleObjects(2, waits, FALSE, INFINITE);
        else w = WaitForSingleObject(waits[0], (DWORD)(iv / 1000000u ? iv / 1000000u : 1));
        if (w == WAIT_OBJECT_0 || SPPROF__LOAD(&spprof__g.collector_stop)) break;
        now = spprof__now_ns();
        SPPROF__ADD(&spprof__g.win.ticks, 1);
        if (now > next + iv) {
            SPPROF__ADD(&spprof__g.win.ticks_late, 1);
            next = now;
        }
        next += iv;
        if (SPPROF__LOADR(&spprof__g.state) == SPPROF_STATE_RUNNING) {
            spprof__lock(&spprof__reg_lock);
            spprof__win_tick(self, now, now - last_tick);
            spprof__unlock(&spprof__reg_lock);
        }
        last_tick = now;
        spprof__tick_chores(now, &last_drain, &last_scan);
    }
    if (timer) CloseHandle(timer);
    return 0;
}

static spprof_result spprof__os_validate(const spprof_config *c) {
    if (c->source != SPPROF_SOURCE_AUTO)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "source=%d: on Windows threads are sampled by suspending them; "
                            "only SPPROF_SOURCE_AUTO applies", (int)c->source);
    if (c->guard_faults)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "guard_faults=1: the fault guard (spprof_guard) exists on Linux only");
    return SPPROF_OK;
}

static void spprof__os_init_once(void) {}

/* Nothing to do here: spprof__os_begin resets the sampler's state (spprof__g.win), and a slot's handle is
   opened by spprof__create_timer and closed by spprof__delete_timer. */
static void spprof__os_reset(void) {}
static void spprof__os_slot_init(spprof__slot *s) { (void)s; }
static void spprof__os_slot_free(spprof__slot *s) { (void)s; }

static void spprof__os_stats(spprof_stats *o) {
    o->ticks_late = SPPROF__LOADR(&spprof__g.win.ticks_late);
    o->threads_skipped = SPPROF__LOADR(&spprof__g.win.suspend_failures);
    spprof__susp_report(&spprof__g.win.susp, o);
}

/* The TSC rate, for QueryThreadCycleTime (which counts TSC cycles on x86-64). */
static void spprof__win_calibrate(void) {
    ULONG64 c = 0;
    if (spprof__win_tsc_per_ms) return;
#if defined(__x86_64__)
    {
        uint64_t t0 = spprof__now_ns(), c0 = __builtin_ia32_rdtsc(), t1, c1;
        Sleep(10);
        t1 = spprof__now_ns();
        c1 = __builtin_ia32_rdtsc();
        if (t1 > t0 && c1 > c0) spprof__win_tsc_per_ms = (c1 - c0) * 1000000u / (t1 - t0);
    }
#endif
    /* where cycle times are not kept (wine returns 0), GetThreadTimes is used */
    spprof__win_cycles_ok = spprof__win_tsc_per_ms && QueryThreadCycleTime(GetCurrentThread(), &c) && c;
}

static spprof_result spprof__os_begin(const spprof_config *cfg) {
    (void)cfg;
    spprof__win_calibrate();
    memset(&spprof__g.win, 0, sizeof spprof__g.win);
    spprof__g.win.wake = CreateEventW(NULL, FALSE, FALSE, NULL);
    if (!spprof__g.win.wake) return spprof__fail(SPPROF_ERR_SYSTEM, "CreateEvent: error %lu", (unsigned long)GetLastError());
    return SPPROF_OK;
}

static spprof_result spprof__os_collector_start(void) {
    spprof__g.win.thread = CreateThread(NULL, 0, spprof__win_main, NULL, 0, NULL);
    if (!spprof__g.win.thread)
        return spprof__fail(SPPROF_ERR_SYSTEM, "cannot start the sampler thread: error %lu", (unsigned long)GetLastError());
    return SPPROF_OK;
}

static void spprof__os_collector_stop(void) {
    SPPROF__STORE(&spprof__g.collector_stop, 1);
    SetEvent(spprof__g.win.wake);
    WaitForSingleObject(spprof__g.win.thread, INFINITE);
    CloseHandle(spprof__g.win.thread);
    spprof__g.win.thread = NULL;
}

static void spprof__os_quiesce_begin(void) {}
static void spprof__os_quiesce_end(void) {}

static void spprof__os_end(int handlers_done) {
    (void)handlers_done;
    spprof__win_mods_free((spprof__win_mods *)SPPROF__LOAD(&spprof__win_modtab));
    SPPROF__STORE(&spprof__win_modtab, (spprof__win_mods *)NULL);
    if (spprof__g.win.wake) { CloseHandle(spprof__g.win.wake); spprof__g.win.wake = NULL; }
}

/* ---- symbols: DbgHelp, loaded when a profile is written (never while a thread is suspended) ---- */
typedef BOOL(WINAPI *spprof__sym_init_fn)(HANDLE, PCSTR, BOOL);
typedef BOOL(WINAPI *spprof__sym_cleanup_fn)(HANDLE);
typedef DWORD(WINAPI *spprof__sym_opts_fn)(DWORD);
typedef BOOL(WINAPI *spprof__sym_from_addr_fn)(HANDLE, DWORD64, PDWORD64, void *);
typedef BOOL(WINAPI *spprof__sym_line_fn)(HANDLE, DWORD64, PDWORD, void *);
typedef struct spprof__dbghelp {
    int state;  /* 0: not loaded, 1: ready, 2: unavailable */
    HMODULE lib;
    spprof__sym_init_fn init;
    spprof__sym_cleanup_fn cleanup;
    spprof__sym_opts_fn opts;
    spprof__sym_from_addr_fn from_addr;
    spprof__sym_line_fn line;
} spprof__dbghelp;
static spprof__dbghelp spprof__dh;
static spprof__mutex spprof__sym_lock = SPPROF__MUTEX_INIT;

#define SPPROF__DH_PROC(field, type, name) do { FARPROC p_ = GetProcAddress(spprof__dh.lib, name); \
    memcpy(&spprof__dh.field, &p_, sizeof p_); } while (0)
static int spprof__dh_ready(void) {  /* under sym_lock */
    if (spprof__dh.state) return spprof__dh.state == 1;
    spprof__dh.state = 2;
    spprof__dh.lib = LoadLibraryW(L"dbghelp.dll");
    if (!spprof__dh.lib) return 0;
    SPPROF__DH_PROC(init, spprof__sym_init_fn, "SymInitialize");
    SPPROF__DH_PROC(cleanup, spprof__sym_cleanup_fn, "SymCleanup");
    SPPROF__DH_PROC(opts, spprof__sym_opts_fn, "SymSetOptions");
    SPPROF__DH_PROC(from_addr, spprof__sym_from_addr_fn, "SymFromAddr");
    SPPROF__DH_PROC(line, spprof__sym_line_fn, "SymGetLineFromAddr64");
    if (!spprof__dh.init || !spprof__dh.from_addr || !spprof__dh.cleanup) return 0;
    if (spprof__dh.opts) spprof__dh.opts(0x00000002u | 0x00000010u | 0x00000004u); /* UNDNAME, LOAD_LINES, DEFERRED_LOADS */
    if (!spprof__dh.init(GetCurrentProcess(), NULL, TRUE)) return 0;
    spprof__dh.state = 1;
    return 1;
}

static void spprof__coff_reset(void);
/* After each writer: modules may be loaded or unloaded before the next one. */
static void spprof__symbols_reset(void) {
    spprof__lock(&spprof__sym_lock);
    spprof__coff_reset();
    if (spprof__dh.state == 1) spprof__dh.cleanup(GetCurrentProcess());
    if (spprof__dh.state == 1) spprof__dh.state = 0;
    spprof__unlock(&spprof__sym_lock);
}

/* The COFF symbol table that mingw-w64 (and clang for mingw) leave in a PE file unless it is stripped: every
   function, static ones too, which DbgHelp cannot read (it reads PDB files). Read from the module's file once
   per writer; symbols sorted by address. */
typedef struct spprof__coff_sym { uintptr_t addr; uint32_t name; } spprof__coff_sym;
typedef struct spprof__coff_mod {
    uintptr_t base;
    spprof__coff_sym *syms; uint32_t n;
    char *names; uint32_t names_len;
} spprof__coff_mod;
static spprof__coff_mod spprof__coff[64];
static uint32_t spprof__ncoff;

static int spprof__coff_cmp(const void *a, const void *b) {
    uintptr_t x = ((const spprof__coff_sym *)a)->addr, y = ((const spprof__coff_sym *)b)->addr;
    return (x > y) - (x < y);
}

static void spprof__coff_load(spprof__coff_mod *m, HMODULE mod) {  /* under sym_lock */
    const IMAGE_DOS_HEADER *dos = (const IMAGE_DOS_HEADER *)(uintptr_t)mod;
    const IMAGE_NT_HEADERS *nt = (const IMAGE_NT_HEADERS *)((uintptr_t)mod + (uintptr_t)dos->e_lfanew);
    const IMAGE_SECTION_HEADER *sec = IMAGE_FIRST_SECTION(nt);
    uint32_t nsym = nt->FileHeader.NumberOfSymbols, off = nt->FileHeader.PointerToSymbolTable, i, strsz = 0, len;
    unsigned char *tab = NULL;
    wchar_t path[1024];
    FILE *f;
    m->base = (uintptr_t)mod;
    if (!nsym || !off || nsym > (1u << 24) || !GetModuleFileNameW(mod, path, 1024)) return;
    f = _wfopen(path, L"rb");
    if (!f) return;
    tab = (unsigned char *)SPPROF_MALLOC((size_t)nsym * 18);
    if (!tab || fseek(f, (long)off, SEEK_SET) != 0 || fread(tab, 18, nsym, f) != nsym || fread(&strsz, 4, 1, f) != 1 ||
        strsz < 4 || strsz > (64u << 20))
        goto out;
    /* names: the string table (long names, by offset), then the short names (8 bytes in the entry) appended */
    m->names = (char *)SPPROF_MALLOC((size_t)strsz + (size_t)nsym * 9 + 1);
    m->syms = (spprof__coff_sym *)SPPROF_MALLOC((size_t)nsym * sizeof(spprof__coff_sym));
    if (!m->names || !m->syms || fread(m->names + 4, 1, strsz - 4, f) != strsz - 4) goto out;
    memset(m->names, 0, 4);
    len = strsz;
    for (i = 0; i < nsym; i += 1u + tab[(size_t)i * 18 + 17]) {  /* + its auxiliary records */
        const unsigned char *e = tab + (size_t)i * 18;
        uint32_t value, zeroes, stroff;
        int16_t secno;
        uint16_t type;
        memcpy(&zeroes, e, 4);
        memcpy(&stroff, e + 4, 4);
        memcpy(&value, e + 8, 4);
        memcpy(&secno, e + 12, 2);
        memcpy(&type, e + 14, 2);
        if (secno <= 0 || secno > nt->FileHeader.NumberOfSections || (type & 0x30) != 0x20) continue;  /* functions */
        if (!(sec[secno - 1].Characteristics & IMAGE_SCN_MEM_EXECUTE)) continue;
        if (zeroes) {
            memcpy(m->names + len, e, 8);
            m->names[len + 8] = 0;
            m->syms[m->n].name = len;
            len += 9;
        } else if (stroff >= 4 && stroff < strsz) {
            m->syms[m->n].name = stroff;
        } else {
            continue;
        }
        m->syms[m->n].addr = (uintptr_t)mod + sec[secno - 1].VirtualAddress + value;
        m->n++;
    }
    m->names[len] = 0;
    m->names_len = len;
    qsort(m->syms, m->n, sizeof *m->syms, spprof__coff_cmp);
out:
    fclose(f);
    SPPROF_FREE(tab);
}

/* The function that holds pc in a mingw-built module, from its COFF symbols; 1 if found. Under sym_lock. */
static int spprof__coff_lookup(HMODULE mod, uintptr_t pc, char *name, size_t n) {
    spprof__coff_mod *m = NULL;
    uint32_t i, lo = 0, hi;
    for (i = 0; i < spprof__ncoff; i++) if (spprof__coff[i].base == (uintptr_t)mod) m = &spprof__coff[i];
    if (!m) {
        if (spprof__ncoff == sizeof spprof__coff / sizeof spprof__coff[0]) return 0;
        m = &spprof__coff[spprof__ncoff++];
        memset(m, 0, sizeof *m);
        spprof__coff_load(m, mod);
    }
    hi = m->n;
    while (lo < hi) { uint32_t mid = (lo + hi) / 2; if (m->syms[mid].addr <= pc) lo = mid + 1; else hi = mid; }
    if (lo == 0 || pc - m->syms[lo - 1].addr > (1u << 20)) return 0;
    snprintf(name, n, "%s", m->names + m->syms[lo - 1].name);
    return 1;
}

static void spprof__coff_reset(void) {  /* under sym_lock */
    uint32_t i;
    for (i = 0; i < spprof__ncoff; i++) { SPPROF_FREE(spprof__coff[i].syms); SPPROF_FREE(spprof__coff[i].names); }
    spprof__ncoff = 0;
}

SPPROF_API int spprof_symbolize_native(uint64_t addr, uint32_t aux, spprof_symbol *out) {
    uint64_t pc = (aux & SPPROF_AUX_RETADDR) ? addr - 1 : addr;
    union { SYMBOL_INFO si; char buf[sizeof(SYMBOL_INFO) + 256]; } u;
    IMAGEHLP_LINE64 li;
    HMODULE mod = NULL;
    DWORD64 disp = 0;
    DWORD ldisp = 0;
    int found = 0;
    out->name[0] = 0; out->file[0] = 0; out->line = 0;
    if (GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                           (LPCWSTR)(uintptr_t)pc, &mod))
        GetModuleFileNameA(mod, out->file, sizeof out->file);
    spprof__lock(&spprof__sym_lock);
    if (mod && spprof__coff_lookup(mod, (uintptr_t)pc, out->name, sizeof out->name)) found = 1;
    if (!found && spprof__dh_ready()) {
        memset(&u, 0, sizeof u);
        u.si.SizeOfStruct = sizeof(SYMBOL_INFO);
        u.si.MaxNameLen = 255;
        if (spprof__dh.from_addr(GetCurrentProcess(), (DWORD64)pc, &disp, &u.si)) {
            snprintf(out->name, sizeof out->name, "%s", u.si.Name);
            found = 1;
            memset(&li, 0, sizeof li);
            li.SizeOfStruct = sizeof li;
            if (spprof__dh.line && spprof__dh.line(GetCurrentProcess(), (DWORD64)pc, &ldisp, &li) && li.FileName) {
                snprintf(out->file, sizeof out->file, "%s", li.FileName);
                out->line = (int)li.LineNumber;
            }
        }
    }
    spprof__unlock(&spprof__sym_lock);
    if (!found) {
        const char *base = strrchr(out->file, '\\');
        base = base ? base + 1 : out->file;
        if (mod) snprintf(out->name, sizeof out->name, "%.200s+0x%llx", base, (unsigned long long)(pc - (uintptr_t)mod));
        else snprintf(out->name, sizeof out->name, "[unknown]");  /* in no module: not named by an address */
    }
    return found;
}

SPPROF_API int spprof_symbol_range(uintptr_t near_addr, const char *name, uintptr_t *lo, uintptr_t *hi) {
    (void)near_addr; (void)name; (void)lo; (void)hi;
    return 0;  /* not implemented on Windows: finds nothing */
}

/* ---- output files ----
   A regular file (or a new one) is written to "<path>.tmp.<pid>" and moved over the target when complete
   (MoveFileEx, replacing); a device name (NUL, CON) is written in place. Paths are UTF-8. */
static int spprof__win_wide(const char *s, wchar_t *w, int cap) {
    return MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, s, -1, w, cap) > 0;
}

static int spprof__win_is_device(const wchar_t *wpath) {
    HANDLE h = CreateFileW(wpath, 0, FILE_SHARE_READ | FILE_SHARE_WRITE, NULL, OPEN_EXISTING, 0, NULL);
    int dev;
    if (h == INVALID_HANDLE_VALUE) return 0;
    dev = GetFileType(h) == FILE_TYPE_CHAR;
    CloseHandle(h);
    return dev;
}

static spprof_result spprof__out_open(spprof__out *o, const char *path) {
    wchar_t wpath[4096], wtmp[4200];
    DWORD attr;
    if (!path || !path[0]) return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "output path is empty");
    o->path = path;
    o->tmp[0] = 0;
    o->real[0] = 0;
    o->f = NULL;
    if (!spprof__win_wide(path, wpath, 4096))
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "output path is not valid UTF-8 or too long");
    attr = GetFileAttributesW(wpath);
    if (attr != INVALID_FILE_ATTRIBUTES && (attr & FILE_ATTRIBUTE_DIRECTORY)) {
        errno = EISDIR;
    } else if (spprof__win_is_device(wpath)) {
        o->f = _wfopen(wpath, L"wb");  /* a device (NUL, CON): in place */
    } else {
        if ((size_t)snprintf(o->real, sizeof o->real, "%s", path) >= sizeof o->real ||
            (size_t)snprintf(o->tmp, sizeof o->tmp, "%s.tmp.%lu", path, (unsigned long)GetCurrentProcessId()) >= sizeof o->tmp ||
            !spprof__win_wide(o->tmp, wtmp, 4200))
            return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "output path is too long");
        o->f = _wfopen(wtmp, L"wb");
        if (!o->f) o->tmp[0] = 0;
    }
    if (o->f) return SPPROF_OK;
    return spprof__fail(SPPROF_ERR_IO, "cannot write '%s': %s (the profile is kept in memory; write it elsewhere)", path, strerror(errno));
}

static void spprof__out_abort(spprof__out *o) {
    wchar_t w[4200];
    fclose(o->f);
    if (o->tmp[0] && spprof__win_wide(o->tmp, w, 4200)) DeleteFileW(w);
}

static spprof_result spprof__out_close(spprof__out *o) {
    wchar_t wtmp[4200], wreal[4200];
    int bad = fflush(o->f) != 0 || ferror(o->f);
    if (fclose(o->f) != 0) bad = 1;
    if (!bad && o->tmp[0]) {
        if (!spprof__win_wide(o->tmp, wtmp, 4200) || !spprof__win_wide(o->real, wreal, 4200) ||
            !MoveFileExW(wtmp, wreal, MOVEFILE_REPLACE_EXISTING))
            bad = 1;
    }
    if (bad) {
        if (o->tmp[0] && spprof__win_wide(o->tmp, wtmp, 4200)) DeleteFileW(wtmp);
        return spprof__fail(SPPROF_ERR_IO, "cannot write '%s' (the profile is kept in memory; write it elsewhere)", o->path);
    }
    return SPPROF_OK;
}
#endif /* SPPROF__OS_WINDOWS */

#if SPPROF__OS_MACOS
/* ==== @os_macos =========================================================================================
   macOS (arm64 and x86-64). BUILT AND LINKED, NEVER RUN: `make test` compiles it with zig cc against the
   macOS headers and libSystem stubs that PyPI's ziglang ships and checks that the executables import the
   Mach calls below; no Mac was available. Where a behaviour is stated here it comes from Apple's
   documentation and headers (pthread/introspection.h, mach/thread_act.h, mach/thread_info.h, dyld(3),
   mach-o/loader.h, nlist.h, libmalloc's malloc_logger protocol), not from observation.
   One sampler thread, which is also the collector, as on Windows:
   - Threads: a table fed by a pthread introspection hook (THREAD_START, sent on the new thread itself once
     its stack exists; THREAD_TERMINATE, sent on the thread before its stack goes), chained to the hook that
     was installed before ours, plus the threads that exist when a session starts (task_threads). An entry
     keeps the thread's Mach port (libpthread's name for it), pthread_t, thread id and stack bounds
     (pthread_get_stackaddr_np / pthread_get_stacksize_np). Terminated entries are reused (the table never
     grows past the most threads alive at once). The hook takes no lock and allocates only whole pages
     (mmap): Apple documents it as called "in contexts with invalid thread state". Threads that are not
     pthreads (no pthread_t for their port) are not sampled.
   - The sampler paces itself with mach_wait_until on absolute deadlines (a tick more than one interval
     late is counted in ticks_late and the schedule restarts from now: the time is not lost in CPU mode,
     where the weight is the thread's CPU time). Per registered thread: thread_suspend -> thread_get_state
     (x86_THREAD_STATE64, or ARM_THREAD_STATE64 through the arm_thread_state64_get_* accessors, which strip
     pointer authentication) -> frame-pointer walk inside the thread's stack (Apple's ABIs keep frame
     pointers) -> thread_resume at once. A suspend or get-state that fails (KERN_TERMINATED,
     KERN_INVALID_ARGUMENT, a dead port) is counted as skipped, never fatal. While a thread is suspended
     the sampler calls nothing that allocates or locks (the walk reads the suspended stack and the
     published code ranges; the ring is lock-free). It never samples itself.
   - CPU mode: a thread is sampled when its CPU time (thread_info THREAD_BASIC_INFO, user + system, in
     microseconds) advanced, weighted by the advance (in intervals, the rest carried); wall mode: every
     thread every tick. interval_ns >= 1 ms: a sampler thread that suspends every thread at a higher rate
     costs more than it measures.
   - walker context: ctx->os_context points at the thread's arm_thread_state64_t / x86_thread_state64_t.
   - Symbols: dladdr plus the LC_SYMTAB of the image that holds the address (static functions too, where
     the image was not stripped), read in memory through its __LINKEDIT segment, when a profile is written.
   - Memory profiler: hook_native = 1 sets libmalloc's malloc_logger (see @memprof). */

/* From Apple's pthread/introspection.h (not among zig's headers): documented API, macOS 10.9+. */
typedef void (*spprof__pthread_hook_t)(unsigned int event, pthread_t thread, void *addr, size_t size);
enum { SPPROF__PTHREAD_THREAD_START = 2, SPPROF__PTHREAD_THREAD_TERMINATE = 3 };
extern spprof__pthread_hook_t pthread_introspection_hook_install(spprof__pthread_hook_t hook);

#define SPPROF__MAC_CHUNK 256u
#define SPPROF__MAC_CHUNKS 1024u  /* threads alive at once: up to 262144 */
typedef struct spprof__mac_thread {
    int state;             /* 0 free, 1 being filled, 2 live, 3 terminated (atomic) */
    int tid;               /* pthread_threadid_np, as spprof_gettid gives it */
    mach_port_t port;      /* libpthread's name of the thread's kernel port (its reference, not ours) */
    pthread_t pth;
    uintptr_t stack_lo, stack_hi;
} spprof__mac_thread;
static spprof__mac_thread *spprof__mac_tab[SPPROF__MAC_CHUNKS];  /* chunks: published atomically, kept */
static uint32_t spprof__mac_hw;                                  /* entries ever handed out (atomic) */
static spprof__pthread_hook_t spprof__mac_prev_hook;
static uint64_t spprof__mac_images[2];                           /* dyld images added, removed (atomic) */

static spprof__mac_thread *spprof__mac_entry(uint32_t i) {
    spprof__mac_thread *c;
    if (i >= SPPROF__MAC_CHUNK * SPPROF__MAC_CHUNKS) return NULL;
    c = (spprof__mac_thread *)SPPROF__LOAD(&spprof__mac_tab[i / SPPROF__MAC_CHUNK]);
    return c ? &c[i % SPPROF__MAC_CHUNK] : NULL;
}

/* [hook-safe] Claims an entry (state 0 -> 1): a reused one, else the next new one (its chunk mapped here if
   needed; a lost race unmaps ours). Bounded: one pass over the table, then a few new indices. */
static spprof__mac_thread *spprof__mac_claim(void) {
    uint32_t i, hw = SPPROF__LOAD(&spprof__mac_hw);
    int tries;
    for (i = 0; i < hw; i++) {
        spprof__mac_thread *e = spprof__mac_entry(i);
        int z = 0;
        if (e && SPPROF__LOADR(&e->state) == 0 &&
            __atomic_compare_exchange_n(&e->state, &z, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            return e;
    }
    for (tries = 0; tries < 8; tries++) {
        spprof__mac_thread *e, *chunk;
        int z = 0;
        i = SPPROF__ADD(&spprof__mac_hw, 1u);
        if (i >= SPPROF__MAC_CHUNK * SPPROF__MAC_CHUNKS) return NULL;  /* full: the thread is not sampled */
        chunk = (spprof__mac_thread *)SPPROF__LOAD(&spprof__mac_tab[i / SPPROF__MAC_CHUNK]);
        if (!chunk) {
            spprof__mac_thread *none = NULL;
            chunk = (spprof__mac_thread *)spprof__os_map_pages(SPPROF__MAC_CHUNK * sizeof(spprof__mac_thread));
            if (!chunk) return NULL;
            if (!__atomic_compare_exchange_n(&spprof__mac_tab[i / SPPROF__MAC_CHUNK], &none, chunk, 0,
                                             __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                munmap((void *)chunk, SPPROF__MAC_CHUNK * sizeof(spprof__mac_thread));
                chunk = none;
            }
        }
        e = &chunk[i % SPPROF__MAC_CHUNK];
        if (__atomic_compare_exchange_n(&e->state, &z, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) return e;
    }
    return NULL;
}

/* [hook-safe] The live entry of a thread id, or NULL. */
static spprof__mac_thread *spprof__mac_find(int tid) {
    uint32_t i, hw = SPPROF__LOAD(&spprof__mac_hw);
    for (i = 0; i < hw; i++) {
        spprof__mac_thread *e = spprof__mac_entry(i);
        if (e && SPPROF__LOAD(&e->state) == 2 && e->tid == tid) return e;
    }
    return NULL;
}

/* [hook-safe] Records a pthread (on itself at THREAD_START, or any thread at session start). */
static void spprof__mac_add(pthread_t pth, int tid) {
    spprof__mac_thread *e;
    uintptr_t top;
    if (spprof__mac_find(tid)) return;  /* seen both at session start and by the hook */
    e = spprof__mac_claim();
    if (!e) return;
    top = (uintptr_t)pthread_get_stackaddr_np(pth);  /* the stack grows down from here */
    e->tid = tid;
    e->pth = pth;
    e->port = pthread_mach_thread_np(pth);
    e->stack_hi = top;
    e->stack_lo = top - (uintptr_t)pthread_get_stacksize_np(pth);
    SPPROF__STORE(&e->state, 2);
}

/* The introspection hook: errno kept, then the previous hook (the caller chains, per Apple's header). */
static void spprof__mac_pthread_hook(unsigned int event, pthread_t thread, void *addr, size_t size) {
    int saved = errno;
    if (event == SPPROF__PTHREAD_THREAD_START) {
        uint64_t id = 0;
        pthread_threadid_np(thread, &id);
        spprof__mac_add(thread, (int)(uint32_t)id);
    } else if (event == SPPROF__PTHREAD_THREAD_TERMINATE) {
        uint32_t i, hw = SPPROF__LOAD(&spprof__mac_hw);
        for (i = 0; i < hw; i++) {
            spprof__mac_thread *e = spprof__mac_entry(i);
            int live = 2;
            /* every entry of it (a thread starting while a session starts can be entered twice) */
            if (e && SPPROF__LOAD(&e->state) == 2 && e->pth == thread)
                __atomic_compare_exchange_n(&e->state, &live, 3, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
        }
    }
    errno = saved;
    if (spprof__mac_prev_hook) spprof__mac_prev_hook(event, thread, addr, size);
}

/* The threads that exist now (task_threads), for those that started before the hook was installed. */
static void spprof__mac_seed(void) {
    thread_act_array_t list = NULL;
    mach_msg_type_number_t n = 0, k;
    if (task_threads(mach_task_self(), &list, &n) != KERN_SUCCESS) return;
    for (k = 0; k < n; k++) {
        pthread_t pth = pthread_from_mach_thread_np(list[k]);
        thread_identifier_info_data_t ii;
        mach_msg_type_number_t cnt = THREAD_IDENTIFIER_INFO_COUNT;
        if (pth && thread_info(list[k], THREAD_IDENTIFIER_INFO, (thread_info_t)&ii, &cnt) == KERN_SUCCESS)
            spprof__mac_add(pth, (int)(uint32_t)ii.thread_id);
        mach_port_deallocate(mach_task_self(), list[k]);  /* task_threads gave us a reference on each */
    }
    vm_deallocate(mach_task_self(), (vm_address_t)(uintptr_t)list, (vm_size_t)(n * sizeof(list[0])));
}

static void spprof__mac_image_added(const struct mach_header *mh, intptr_t slide) {
    (void)mh; (void)slide;
    SPPROF__ADD(&spprof__mac_images[0], 1u);
}
static void spprof__mac_image_removed(const struct mach_header *mh, intptr_t slide) {
    (void)mh; (void)slide;
    SPPROF__ADD(&spprof__mac_images[1], 1u);
}

static int spprof__source_is_perf(const spprof__slot *s) { (void)s; return 0; }

/* Under reg_lock (entries are reused only by spprof__list_threads, also under it: an entry found live here
   keeps its fields meanwhile). */
static void spprof__read_comm(int tid, char *out, size_t n) {
    spprof__mac_thread *e = spprof__mac_find(tid);
    thread_extended_info_data_t xi;
    mach_msg_type_number_t cnt = THREAD_EXTENDED_INFO_COUNT;
    out[0] = 0;
    if (e && thread_info(e->port, THREAD_EXTENDED_INFO, (thread_info_t)&xi, &cnt) == KERN_SUCCESS)
        snprintf(out, n, "%.*s", (int)sizeof xi.pth_name, xi.pth_name);
}

/* Live threads of the table; terminated entries are freed for reuse here. Under reg_lock. */
static int spprof__list_threads(int **tids_out, size_t *n_out) {
    uint32_t i, hw = SPPROF__LOAD(&spprof__mac_hw);
    int *tids = (int *)SPPROF_MALLOC(((size_t)hw + 1) * sizeof(int));
    size_t n = 0, k, m = 0;
    if (!tids) return 0;
    for (i = 0; i < hw; i++) {
        spprof__mac_thread *e = spprof__mac_entry(i);
        int st = e ? SPPROF__LOAD(&e->state) : 0;
        if (st == 3) SPPROF__STORE(&e->state, 0);
        else if (st == 2) tids[n++] = e->tid;
    }
    qsort(tids, n, sizeof(int), spprof__cmp_int);
    for (k = 0; k < n; k++) if (!m || tids[m - 1] != tids[k]) tids[m++] = tids[k];  /* once each */
    *tids_out = tids;
    *n_out = m;
    return 1;
}

static int spprof__thread_alive(int tid) { return spprof__mac_find(tid) != NULL; }

/* The thread's CPU time (user + system) in ns, or -1 (the thread is gone). */
static int64_t spprof__mac_cpu_ns(mach_port_t port) {
    thread_basic_info_data_t bi;
    mach_msg_type_number_t cnt = THREAD_BASIC_INFO_COUNT;
    if (thread_info(port, THREAD_BASIC_INFO, (thread_info_t)&bi, &cnt) != KERN_SUCCESS) return -1;
    return ((int64_t)bi.user_time.seconds + bi.system_time.seconds) * 1000000000 +
           ((int64_t)bi.user_time.microseconds + bi.system_time.microseconds) * 1000;
}

/* The "sample source" of a macOS thread: a send right of our own on its port, so that the name cannot be
   reused for another port while the slot holds it (a dead thread's name becomes a dead name: thread_suspend
   then fails and the thread is skipped until the next scan removes it). */
static int spprof__create_timer(spprof__slot *s, uint32_t idx, int attempts) {
    spprof__mac_thread *e = spprof__mac_find(s->tid);
    (void)idx; (void)attempts;
    if (!e || mach_port_mod_refs(mach_task_self(), e->port, MACH_PORT_RIGHT_SEND, 1) != KERN_SUCCESS) {
        if (!s->timer_failed) { s->timer_failed = 1; spprof__g.timer_failures++; }
        return 0;
    }
    s->mac.port = e->port;
    s->mac.stack_lo = e->stack_lo;
    s->mac.stack_hi = e->stack_hi;
    s->cpu_last = spprof__mac_cpu_ns(s->mac.port);
    s->cpu_carry = 0;
    s->has_timer = 1;
    return 1;
}

static int spprof__arm(spprof__slot *s, int on) {
    if (on && s->has_timer) {  /* CPU time spent while paused is not sampled time */
        s->cpu_last = spprof__mac_cpu_ns(s->mac.port);
        s->cpu_carry = 0;
    }
    return 1;
}

static void spprof__delete_timer(spprof__slot *s) {
    if (!s->has_timer) return;
    mach_port_deallocate(mach_task_self(), s->mac.port);
    s->mac.port = MACH_PORT_NULL;
    s->has_timer = 0;
}

static void spprof__thread_at_exit(void) {
    /* Nothing: a registered thread that exits is dropped at the next scan (its entry is no longer live). */
}

/* [suspended-safe] spprof__os_read_mem (see @os): copies n bytes of this process's memory at src (a suspended
   thread's stack or interpreter frames) to dst with vm_read_overwrite, a Mach call: an unmapped or
   unreadable source is an error return, never a fault; no user-mode lock, no allocation. 1 if all n bytes
   were copied, 0 if not. The external-sampler path of spprof_python.h reads through it. */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((unused))
#endif
static int spprof__os_read_mem(void *dst, const void *src, size_t n) {
    vm_size_t got = 0;
    if (vm_read_overwrite(mach_task_self(), (vm_address_t)(uintptr_t)src, (vm_size_t)n,
                          (vm_address_t)(uintptr_t)dst, &got) != KERN_SUCCESS)
        return 0;
    return got == (vm_size_t)n;
}

/* ---- code ranges: the executable segments of dyld's images, rebuilt when an image came or went ---- */
static void spprof__refresh_xranges(void) {
    spprof__xr_build b;
    uint32_t i, count;
    uint64_t adds = SPPROF__LOAD(&spprof__mac_images[0]), subs = SPPROF__LOAD(&spprof__mac_images[1]);
    if (spprof__g.xr && spprof__g.xr->adds == adds && spprof__g.xr->subs == subs) return;
    memset(&b, 0, sizeof b);
    b.adds = adds;
    b.subs = subs;
    /* _dyld_image_count/_dyld_get_image_header are not safe against a concurrent dlclose (dyld(3)); an
       image unloaded meanwhile is dropped by the next refresh (its counter moved). */
    count = _dyld_image_count();
    for (i = 0; i < count && !b.oom; i++) {
        const struct mach_header_64 *mh;
        intptr_t slide = _dyld_get_image_vmaddr_slide(i);
        const unsigned char *lc;
        uint32_t k;
        mh = (const struct mach_header_64 *)(const void *)_dyld_get_image_header(i);
        if (!mh || mh->magic != MH_MAGIC_64) continue;
        lc = (const unsigned char *)(mh + 1);
        for (k = 0; k < mh->ncmds; k++) {
            const struct load_command *c = (const struct load_command *)(const void *)lc;
            if (c->cmd == LC_SEGMENT_64) {
                const struct segment_command_64 *sg = (const struct segment_command_64 *)(const void *)c;
                if ((sg->initprot & VM_PROT_EXECUTE) && sg->vmsize) {
                    if (b.n == b.cap) {
                        uint32_t nc = b.cap ? b.cap * 2 : 64;
                        uintptr_t *q = (uintptr_t *)SPPROF_REALLOC(b.r, (size_t)nc * 2 * sizeof(uintptr_t));
                        if (!q) { b.oom = 1; break; }
                        b.r = q;
                        b.cap = nc;
                    }
                    b.r[2 * b.n] = (uintptr_t)(sg->vmaddr + (uint64_t)slide);
                    b.r[2 * b.n + 1] = (uintptr_t)(sg->vmaddr + (uint64_t)slide + sg->vmsize);
                    b.n++;
                }
            }
            lc += c->cmdsize;
        }
    }
    spprof__publish_xranges(&b);
}

SPPROF_API int spprof_walk_native(const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames) {
    return spprof__walk_fp(ctx, frames, max_frames);
}

/* ---- the sampler thread ---- */
static void spprof__wake_collector(void) { /* the sampler drains every drain_interval_ms anyway */ }

/* One tick: every registered thread, each suspended only for its own sample (under reg_lock, which no
   suspended thread can hold: the sampler holds it). */
static void spprof__mac_tick(int self, uint64_t elapsed) {
    spprof__dir *d = spprof__g.dir;
    uint32_t i;
    int wall = spprof__g.cfg.mode == SPPROF_MODE_WALL;
    for (i = 0; d && i < spprof__g.nslots_used; i++) {
        spprof__slot *s = &d->chunks[i / SPPROF__CHUNK][i % SPPROF__CHUNK];
        spprof_walk_ctx wc;
#if defined(__aarch64__)
        arm_thread_state64_t st;
        mach_msg_type_number_t cnt = ARM_THREAD_STATE64_COUNT;
#else
        x86_thread_state64_t st;
        mach_msg_type_number_t cnt = x86_THREAD_STATE64_COUNT;
#endif
        uint64_t t0, t1;
        uint32_t weight;
        int64_t now = 0;
        if (!s->tid || s->tid == self || !s->has_timer) continue;
        if (!wall) {  /* CPU mode: only a thread whose CPU time advanced, weighted by the advance */
            now = spprof__mac_cpu_ns(s->mac.port);
            if (now < 0) { spprof__g.mac.skipped++; continue; }
        }
        weight = spprof__tick_weight(s, wall, now, elapsed, 0);
        if (!weight) continue;
        t0 = spprof__now_ns();
        if (thread_suspend(s->mac.port) != KERN_SUCCESS) { spprof__g.mac.skipped++; continue; }
        /* from here until thread_resume: no allocation, no lock, no call that could take one */
#if defined(__aarch64__)
        if (thread_get_state(s->mac.port, ARM_THREAD_STATE64, (thread_state_t)&st, &cnt) == KERN_SUCCESS) {
            wc.pc = (uintptr_t)arm_thread_state64_get_pc(st);
            wc.sp = (uintptr_t)arm_thread_state64_get_sp(st);
            wc.fp = (uintptr_t)arm_thread_state64_get_fp(st);
            wc.lr = (uintptr_t)arm_thread_state64_get_lr(st);
#else
        if (thread_get_state(s->mac.port, x86_THREAD_STATE64, (thread_state_t)&st, &cnt) == KERN_SUCCESS) {
            wc.pc = (uintptr_t)st.__rip;
            wc.sp = (uintptr_t)st.__rsp;
            wc.fp = (uintptr_t)st.__rbp;
            wc.lr = 0;
#endif
            wc.os_context = &st;
            /* the pthread stack, if sp is in it (else, e.g. on a signal's alternate stack: the leaf only) */
            wc.stack_lo = wc.sp;
            wc.stack_hi = wc.sp >= s->mac.stack_lo && wc.sp < s->mac.stack_hi ? s->mac.stack_hi : 0;
            spprof__tick_sample(&wc, s, weight);
        } else {
            spprof__g.mac.skipped++;
        }
        thread_resume(s->mac.port);
        t1 = spprof__now_ns();
        spprof__susp_note(&spprof__g.mac.susp, t0, t1);
    }
}

static void *spprof__mac_main(void *arg) {
    mach_timebase_info_data_t tb;
    uint64_t iv, slice, next, last_drain, last_scan, last_tick;
    int self = spprof_gettid();
    (void)arg;
    mach_timebase_info(&tb);
    iv = (uint64_t)spprof__g.cfg.interval_ns * tb.denom / tb.numer;  /* in mach_absolute_time units */
    slice = (uint64_t)20000000 * tb.denom / tb.numer;                /* longest single wait: 20 ms */
    if (!iv) iv = 1;
    SPPROF__STORE(&spprof__g.collector_tid, self);
    next = mach_absolute_time() + iv;
    last_drain = last_scan = last_tick = spprof__now_ns();
    for (;;) {
        uint64_t now = mach_absolute_time(), now_ns;
        if (next > now) mach_wait_until(next - now > slice ? now + slice : next);  /* stop: seen within 20 ms */
        if (SPPROF__LOAD(&spprof__g.collector_stop)) break;
        now = mach_absolute_time();
        if (now >= next) {
            SPPROF__ADD(&spprof__g.mac.ticks, 1);  /* atomic: spprof_get_stats reads them outside this thread */
            if (now > next + iv) {
                SPPROF__ADD(&spprof__g.mac.ticks_late, 1);
                next = now;
            }
            next += iv;
            now_ns = spprof__now_ns();
            if (SPPROF__LOADR(&spprof__g.state) == SPPROF_STATE_RUNNING) {
                spprof__lock(&spprof__reg_lock);
                spprof__mac_tick(self, now_ns - last_tick);  /* wall mode: a late tick carries its time */
                spprof__unlock(&spprof__reg_lock);
            }
            last_tick = now_ns;
        }
        spprof__tick_chores(spprof__now_ns(), &last_drain, &last_scan);
    }
    return NULL;
}

static spprof_result spprof__os_validate(const spprof_config *c) {
    if (c->source != SPPROF_SOURCE_AUTO)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "source=%d: on macOS threads are sampled by suspending "
                            "them; only SPPROF_SOURCE_AUTO applies", (int)c->source);
    if (c->guard_faults)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG,
                            "guard_faults=1: the fault guard (spprof_guard) exists on Linux only");
    if (c->interval_ns < 1000000)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "interval_ns=%lld: on macOS the interval is at least "
                            "1 ms (1000000 ns): every tick suspends every thread", (long long)c->interval_ns);
    return SPPROF_OK;
}

/* fork(): only the forking thread exists in the child, the sampler does not; the child starts stopped and
   clean, as on Linux, and its thread table forgets the parent's threads (their ports mean nothing there). */
static void spprof__mac_atfork_prepare(void) {
    spprof__lock(&spprof__api_lock);
    spprof__lock(&spprof__reg_lock);
    spprof__lock(&spprof__prof_lock);
}
static void spprof__mac_atfork_parent(void) {
    spprof__unlock(&spprof__prof_lock);
    spprof__unlock(&spprof__reg_lock);
    spprof__unlock(&spprof__api_lock);
}
static void spprof__mac_atfork_child(void) {
    uint32_t i, hw = SPPROF__LOAD(&spprof__mac_hw);
    uint64_t id = 0;
    spprof__g.forked = SPPROF__LOAD(&spprof__g.state) != SPPROF_STATE_STOPPED || spprof__g.prof.nrecs > 0;
    SPPROF__STORE(&spprof__g.state, (int)SPPROF_STATE_STOPPED);
    spprof__g.collector_running = 0;
    spprof__registry_free();  /* the slots' ports are not this task's: nothing to release */
    spprof__xranges_free();
    spprof__ring_free(&spprof__g.ring);
    spprof__profile_free(&spprof__g.prof);
    spprof__g.nexplicit = 0;
    for (i = 0; i < hw; i++) {
        spprof__mac_thread *e = spprof__mac_entry(i);
        if (e) SPPROF__STORE(&e->state, 0);
    }
    pthread_threadid_np(NULL, &id);
    spprof__mac_add(pthread_self(), (int)(uint32_t)id);
    spprof__mac_atfork_parent();
}

static void spprof__mac_init(void) {
    spprof__mac_prev_hook = pthread_introspection_hook_install(spprof__mac_pthread_hook);
    /* both are called once for every image already loaded, then for each one that comes or goes */
    _dyld_register_func_for_add_image(spprof__mac_image_added);
    _dyld_register_func_for_remove_image(spprof__mac_image_removed);
    pthread_atfork(spprof__mac_atfork_prepare, spprof__mac_atfork_parent, spprof__mac_atfork_child);
}
static spprof__once_t spprof__mac_once;
static void spprof__os_init_once(void) { spprof__once(&spprof__mac_once, spprof__mac_init); }

/* under reg_lock, as the sampler's tick that writes all but the tick counters */
/* Nothing to do here: spprof__os_begin resets the sampler's state (spprof__g.mac), and a slot's port is
   taken by spprof__create_timer and released by spprof__delete_timer. */
static void spprof__os_reset(void) {}
static void spprof__os_slot_init(spprof__slot *s) { (void)s; }
static void spprof__os_slot_free(spprof__slot *s) { (void)s; }

static void spprof__os_stats(spprof_stats *o) {
    o->ticks_late = SPPROF__LOADR(&spprof__g.mac.ticks_late);
    o->threads_skipped = spprof__g.mac.skipped;
    spprof__susp_report(&spprof__g.mac.susp, o);
}

static spprof_result spprof__os_begin(const spprof_config *cfg) {
    (void)cfg;
    memset(&spprof__g.mac, 0, sizeof spprof__g.mac);
    spprof__mac_seed();
    return SPPROF_OK;
}

static spprof_result spprof__os_collector_start(void) {
    int err = pthread_create(&spprof__g.mac.thread, NULL, spprof__mac_main, NULL);
    if (err) return spprof__fail(SPPROF_ERR_SYSTEM, "cannot start the sampler thread: %s", strerror(err));
    return SPPROF_OK;
}

static void spprof__os_collector_stop(void) {
    SPPROF__STORE(&spprof__g.collector_stop, 1);
    pthread_join(spprof__g.mac.thread, NULL);
}

static void spprof__os_quiesce_begin(void) {}
static void spprof__os_quiesce_end(void) {}
static void spprof__os_end(int handlers_done) { (void)handlers_done; }

/* ---- symbols: dladdr + the image's LC_SYMTAB (off the hot path, under sym_lock) ---- */
typedef struct spprof__mac_sym { uintptr_t addr; uint32_t name; } spprof__mac_sym;
typedef struct spprof__mac_symtab {
    uintptr_t base;                 /* the image's mach header */
    spprof__mac_sym *syms; uint32_t n;
    const char *strs; uint32_t strsize;  /* the image's string table, in memory */
} spprof__mac_symtab;
static spprof__mac_symtab spprof__mac_syms[1024];  /* a process maps a few hundred images */
static uint32_t spprof__mac_nsyms;
static spprof__mutex spprof__sym_lock = SPPROF__MUTEX_INIT;

static int spprof__mac_sym_cmp(const void *a, const void *b) {
    uintptr_t x = ((const spprof__mac_sym *)a)->addr, y = ((const spprof__mac_sym *)b)->addr;
    return (x > y) - (x < y);
}

/* The defined symbols of the image whose header is at base: LC_SYMTAB's entries, read in memory through
   __LINKEDIT (mapped at its vmaddr + slide, symoff/stroff counted from its file offset). Images in the
   dyld shared cache keep only their exported symbols there (documented: local symbols of the cache are
   stripped to a side file); dladdr covers those. */
static void spprof__mac_load_syms(spprof__mac_symtab *t) {
    const struct mach_header_64 *mh = (const struct mach_header_64 *)t->base;
    const struct segment_command_64 *text = NULL, *link = NULL;
    const struct symtab_command *st = NULL;
    const unsigned char *lc;
    const struct nlist_64 *nl;
    uintptr_t slide, lbase;
    uint32_t k, cnt = 0;
    if (mh->magic != MH_MAGIC_64) return;
    lc = (const unsigned char *)(mh + 1);
    for (k = 0; k < mh->ncmds; k++) {
        const struct load_command *c = (const struct load_command *)(const void *)lc;
        if (c->cmd == LC_SEGMENT_64) {
            const struct segment_command_64 *sg = (const struct segment_command_64 *)(const void *)c;
            if (!strncmp(sg->segname, "__TEXT", 16)) text = sg;
            if (!strncmp(sg->segname, "__LINKEDIT", 16)) link = sg;
        } else if (c->cmd == LC_SYMTAB) {
            st = (const struct symtab_command *)(const void *)c;
        }
        lc += c->cmdsize;
    }
    if (!text || !link || !st || !st->nsyms) return;
    slide = t->base - (uintptr_t)text->vmaddr;
    lbase = slide + (uintptr_t)link->vmaddr - (uintptr_t)link->fileoff;
    nl = (const struct nlist_64 *)(lbase + st->symoff);
    t->strs = (const char *)(lbase + st->stroff);
    t->strsize = st->strsize;
    t->syms = (spprof__mac_sym *)SPPROF_MALLOC((size_t)st->nsyms * sizeof(spprof__mac_sym));
    if (!t->syms) return;
    for (k = 0; k < st->nsyms; k++) {
        if ((nl[k].n_type & N_STAB) || (nl[k].n_type & N_TYPE) != N_SECT || !nl[k].n_value) continue;
        if (nl[k].n_un.n_strx == 0 || nl[k].n_un.n_strx >= st->strsize) continue;
        t->syms[cnt].addr = (uintptr_t)nl[k].n_value + slide;
        t->syms[cnt].name = nl[k].n_un.n_strx;
        cnt++;
    }
    t->n = cnt;
    qsort(t->syms, cnt, sizeof *t->syms, spprof__mac_sym_cmp);
}

static spprof__mac_symtab *spprof__mac_symtab_of(uintptr_t base) {  /* under sym_lock */
    uint32_t i;
    for (i = 0; i < spprof__mac_nsyms; i++) if (spprof__mac_syms[i].base == base) return &spprof__mac_syms[i];
    if (spprof__mac_nsyms == sizeof spprof__mac_syms / sizeof spprof__mac_syms[0]) return NULL;
    memset(&spprof__mac_syms[spprof__mac_nsyms], 0, sizeof spprof__mac_syms[0]);
    spprof__mac_syms[spprof__mac_nsyms].base = base;
    spprof__mac_load_syms(&spprof__mac_syms[spprof__mac_nsyms]);
    return &spprof__mac_syms[spprof__mac_nsyms++];
}

/* After each writer: images may be loaded or unloaded before the next one. */
static void spprof__symbols_reset(void) {
    uint32_t i;
    spprof__lock(&spprof__sym_lock);
    for (i = 0; i < spprof__mac_nsyms; i++) SPPROF_FREE(spprof__mac_syms[i].syms);
    spprof__mac_nsyms = 0;
    spprof__unlock(&spprof__sym_lock);
}

/* C symbols carry a leading underscore in Mach-O; C++ names ("__Z...") are demangled with the C++
   runtime's __cxa_demangle when the process has one. */
static void spprof__mac_name(const char *raw, char *out, size_t n) {
    typedef char *(*demangle_fn)(const char *, char *, size_t *, int *);
    static void *dm;  /* (void *)1: looked for, none */
    const char *nm = raw[0] == '_' ? raw + 1 : raw;
    snprintf(out, n, "%s", nm);
    if (nm[0] != '_' || nm[1] != 'Z') return;
    if (!SPPROF__LOAD(&dm)) {
        void *p = dlsym(RTLD_DEFAULT, "__cxa_demangle");
        SPPROF__STORE(&dm, p ? p : (void *)1);
    }
    if (SPPROF__LOAD(&dm) != (void *)1) {
        demangle_fn fn;
        void *p = SPPROF__LOAD(&dm);
        int status = -1;
        char *d;
        memcpy(&fn, &p, sizeof fn);
        d = fn(nm, NULL, NULL, &status);
        if (d && status == 0) snprintf(out, n, "%s", d);
        free(d);  /* allocated by the C++ runtime with malloc */
    }
}

SPPROF_API int spprof_symbolize_native(uint64_t addr, uint32_t aux, spprof_symbol *out) {
    uintptr_t pc = (uintptr_t)((aux & SPPROF_AUX_RETADDR) ? addr - 1 : addr);
    Dl_info dli;
    const char *best = NULL;
    uintptr_t best_addr = 0;
    int found = 0, from_dladdr = 0;
    out->name[0] = 0; out->file[0] = 0; out->line = 0;
    memset(&dli, 0, sizeof dli);
    if (!dladdr((const void *)pc, &dli)) {
        snprintf(out->name, sizeof out->name, "[unknown]");  /* in no image: not named by an address */
        return 0;
    }
    if (dli.dli_fname) snprintf(out->file, sizeof out->file, "%s", dli.dli_fname);
    if (dli.dli_sname && dli.dli_saddr && (uintptr_t)dli.dli_saddr <= pc) {
        best = dli.dli_sname;
        best_addr = (uintptr_t)dli.dli_saddr;
        from_dladdr = 1;
    }
    spprof__lock(&spprof__sym_lock);
    if (dli.dli_fbase) {
        const spprof__mac_symtab *t = spprof__mac_symtab_of((uintptr_t)dli.dli_fbase);
        uint32_t lo = 0, hi = t ? t->n : 0;
        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;
            if (t->syms[mid].addr <= pc) lo = mid + 1;
            else hi = mid;
        }
        if (lo > 0 && t->syms[lo - 1].addr > best_addr) {  /* closer than dladdr's: a static function */
            best = t->strs + t->syms[lo - 1].name;
            best_addr = t->syms[lo - 1].addr;
            from_dladdr = 0;
        }
    }
    if (best) {
        /* dladdr's names have no leading underscore; the symbol table's do */
        if (from_dladdr) snprintf(out->name, sizeof out->name, "%s", best);
        else spprof__mac_name(best, out->name, sizeof out->name);
        found = 1;
    }
    spprof__unlock(&spprof__sym_lock);
    if (!found) {
        const char *base = strrchr(out->file, '/');
        base = base ? base + 1 : out->file;
        snprintf(out->name, sizeof out->name, "%.200s+0x%llx", base,
                 (unsigned long long)(pc - (uintptr_t)dli.dli_fbase));
    }
    return found;
}

SPPROF_API int spprof_symbol_range(uintptr_t near_addr, const char *name, uintptr_t *lo, uintptr_t *hi) {
    Dl_info dli;
    int found = 0;
    uint32_t k;
    if (!name || !dladdr((const void *)near_addr, &dli) || !dli.dli_fbase) return 0;
    spprof__lock(&spprof__sym_lock);
    {
        const spprof__mac_symtab *t = spprof__mac_symtab_of((uintptr_t)dli.dli_fbase);
        for (k = 0; t && k < t->n && !found; k++) {
            const char *s = t->strs + t->syms[k].name;
            if (s[0] == '_' && !strcmp(s + 1, name)) {
                *lo = t->syms[k].addr;
                *hi = k + 1 < t->n ? t->syms[k + 1].addr : t->syms[k].addr + 1;  /* up to the next symbol */
                found = 1;
            }
        }
    }
    spprof__unlock(&spprof__sym_lock);
    return found;
}
#endif /* SPPROF__OS_MACOS */

/* ==== @lifecycle ====================================================================================== */
SPPROF_API spprof_config spprof_config_default(void) {
    spprof_config c;
    memset(&c, 0, sizeof c);
    c.interval_ns = 10000000;
    c.mode = SPPROF_MODE_CPU;
    c.signo = 0;  /* Linux: a free real-time signal, chosen by spprof_start; Windows: no signal (ignored) */
    c.max_depth = 128;
    c.ring_slots = 4096;
    c.memory_limit = 100u << 20;
    c.auto_threads = 1;
    c.scan_interval_ms = 20;
    c.drain_interval_ms = 20;  /* the ring also wakes the collector when half full */
    return c;
}

static spprof_result spprof__validate(const spprof_config *c) {
    if (c->interval_ns < 50000 || c->interval_ns > 60000000000ll)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "interval_ns=%lld is out of range (50000 .. 60000000000 ns, i.e. 50 us .. 60 s)", (long long)c->interval_ns);
    if (c->mode != SPPROF_MODE_CPU && c->mode != SPPROF_MODE_WALL)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "mode=%d is neither SPPROF_MODE_CPU (0) nor SPPROF_MODE_WALL (1)", (int)c->mode);
    if ((int)c->source < 0 || (int)c->source > 3)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "source=%d is not an spprof_source (0 .. 3)", (int)c->source);
    if ((c->source == SPPROF_SOURCE_PERF || c->source == SPPROF_SOURCE_PERF_USER) && c->mode != SPPROF_MODE_CPU)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "source=%s counts CPU time: it needs mode=SPPROF_MODE_CPU",
                            c->source == SPPROF_SOURCE_PERF ? "SPPROF_SOURCE_PERF" : "SPPROF_SOURCE_PERF_USER");
    if (c->max_depth < 1 || c->max_depth > SPPROF_MAX_DEPTH_LIMIT)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "max_depth=%d is out of range (1 .. %d)", c->max_depth, SPPROF_MAX_DEPTH_LIMIT);
    if (c->ring_slots < 16 || c->ring_slots > (1u << 20) || (c->ring_slots & (c->ring_slots - 1)) != 0)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "ring_slots=%u must be a power of two between 16 and 1048576", c->ring_slots);
    if ((uint64_t)c->ring_slots * (sizeof(spprof__sample_hdr) + (uint64_t)c->max_depth * sizeof(spprof_frame)) > SPPROF_RING_MAX_BYTES)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "ring_slots=%u x max_depth=%d needs more than %llu MiB for the ring buffer; lower one of them",
                            c->ring_slots, c->max_depth, (unsigned long long)(SPPROF_RING_MAX_BYTES >> 20));
    if (c->memory_limit < (1u << 20) || c->memory_limit > (1ull << 40))
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "memory_limit=%llu is out of range (1 MiB .. 1 TiB)", (unsigned long long)c->memory_limit);
    if (c->guard_faults != 0 && c->guard_faults != 1)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "guard_faults=%d must be 0 or 1", c->guard_faults);
    if (c->auto_threads != 0 && c->auto_threads != 1)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "auto_threads=%d must be 0 or 1", c->auto_threads);
    if (c->scan_interval_ms < 1 || c->scan_interval_ms > 10000 || c->drain_interval_ms < 1 || c->drain_interval_ms > 10000)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "scan_interval_ms=%d / drain_interval_ms=%d out of range (1 .. 10000)", c->scan_interval_ms, c->drain_interval_ms);
    return spprof__os_validate(c);
}

static void spprof__stop_locked(void);

SPPROF_API spprof_result spprof_start(const spprof_config *cfg_in) {
    spprof_config cfg = cfg_in ? *cfg_in : spprof_config_default();
    spprof_result r = spprof__validate(&cfg);
    uint32_t i;
    if (r != SPPROF_OK) return r;
    spprof__os_init_once();
    spprof__lock(&spprof__api_lock);
    if (SPPROF__LOAD(&spprof__g.state) != SPPROF_STATE_STOPPED) {
        spprof__unlock(&spprof__api_lock);
        return spprof__fail(SPPROF_ERR_ALREADY_STARTED, "spprof_start: the profiler is already started; call spprof_stop() first");
    }
    spprof__lock(&spprof__reg_lock);
    spprof__lock(&spprof__prof_lock);
    spprof__profile_free(&spprof__g.prof);
    spprof__g.forked = 0;
    spprof__g.cfg = cfg;
    spprof__g.prof.interval_ns = cfg.interval_ns;
    spprof__g.prof.t_start = spprof__g.prof.t_end = spprof__now_ns();
    spprof__g.walker = cfg.walker ? cfg.walker : spprof_walk_native;
    spprof__g.walker_user = cfg.walker_user;
    spprof__g.resolver = cfg.resolver;
    spprof__g.resolver_user = cfg.resolver_user;
    spprof__g.max_depth = cfg.max_depth;
    /* atomic stores: a late signal of an earlier session may be updating these right now */
    SPPROF__STORER(&spprof__g.c.captured, 0); SPPROF__STORER(&spprof__g.c.dropped, 0);
    SPPROF__STORER(&spprof__g.c.stale, 0); SPPROF__STORER(&spprof__g.c.overruns, 0);
    SPPROF__STORER(&spprof__g.c.walk_errors, 0); SPPROF__STORER(&spprof__g.c.truncated, 0);
    SPPROF__STORER(&spprof__g.c.ignored, 0); SPPROF__STORER(&spprof__g.c.faults, 0);
    spprof__g.threads_registered = spprof__g.timer_failures = spprof__g.timer_retries = spprof__g.dropped_memory = 0;
    spprof__g.collector_stop = 0;
    spprof__g.collector_tid = 0;
    spprof__os_reset();
    r = SPPROF_OK;
    if (!spprof__ring_init(&spprof__g.ring, cfg.ring_slots, cfg.max_depth))
        r = spprof__fail(SPPROF_ERR_NO_MEMORY, "cannot allocate the ring buffer (%u slots)", cfg.ring_slots);
    spprof__unlock(&spprof__prof_lock);
    if (r == SPPROF_OK) r = spprof__os_begin(&cfg);
    if (r == SPPROF_OK) {
        SPPROF__STORE(&spprof__g.gen, spprof__g.gen + 1);
        if ((spprof__g.gen & 0xffffu) == SPPROF__PERF_TOMB)  /* that value marks closed perf events */
            SPPROF__STORE(&spprof__g.gen, spprof__g.gen + 1);
        SPPROF__STORE(&spprof__g.state, (int)SPPROF_STATE_RUNNING);
        r = spprof__os_collector_start();
        if (r == SPPROF_OK) {
            spprof__g.collector_running = 1;
            for (i = 0; i < 1000 && !SPPROF__LOAD(&spprof__g.collector_tid); i++) spprof__sleep_ms(1);
            spprof__refresh_xranges();
            spprof__sync_threads();  /* every thread now (auto), or the registered ones */
        }
    }
    spprof__unlock(&spprof__reg_lock);
    if (r != SPPROF_OK) spprof__stop_locked();  /* never leave a half-started profiler */
    spprof__unlock(&spprof__api_lock);
    return r;
}

/* Waits up to ms milliseconds for the handlers in flight to finish (yielding first, then sleeping 1 ms);
   returns 1 when none is left. */
static int spprof__wait_handlers(int ms) {
    uint64_t deadline = spprof__now_ns() + (uint64_t)ms * 1000000u;
    int k;
    for (k = 0; __atomic_load_n(&spprof__g.c.inflight, __ATOMIC_SEQ_CST) != 0; k++) {
        if (spprof__now_ns() > deadline) return 0;
        if (k < 1000) spprof__yield();
        else spprof__sleep_ms(1);
    }
    return 1;
}

/* Stop after a handler outlived spprof__wait_handlers: the registry directories, execution ranges and ring
   cells stay allocated (the handler may still use them); the state forgets them so that the next session
   builds new ones. The perf fds and timers are gone already. */
static void spprof__registry_leak(void) {
    char msg[200];
    snprintf(msg, sizeof msg, "spprof_stop: a signal handler was still running after %d ms; "
             "its session's memory is left allocated rather than freed under it", SPPROF_STOP_WAIT_MS);
    SPPROF_LOG(msg);
    spprof__g.kept[0] = spprof__g.dir;
    spprof__g.kept[1] = spprof__g.xr;
    SPPROF__STORE(&spprof__g.dir, (spprof__dir *)NULL);
    SPPROF__STORE(&spprof__g.xr, (spprof__xranges *)NULL);
    spprof__g.free_slots = NULL;
    spprof__g.nfree = spprof__g.free_cap = 0;
    spprof__g.nslots_used = 0;
    spprof__g.leaked_sessions++;
}

/* Stop: state first (handlers bail out), then delete every timer (collecting overruns), drain signals pending
   on this thread with sigtimedwait, wait for handlers in flight, join the collector, drain the ring. */
static void spprof__stop_locked(void) {
    uint32_t i;
    int free_ok;
    SPPROF__STORE(&spprof__g.state, (int)SPPROF_STATE_STOPPED);
    if (spprof__g.collector_running) {
        spprof__os_collector_stop();
        spprof__g.collector_running = 0;
    }
    /* Handlers that saw RUNNING finish before any perf fd is closed: such a handler may still re-arm its
       event by fd number (one-shot REFRESH, see the handler), and a closed number may be reused by the
       program at once. Later handlers see STOPPED and never re-arm. */
    free_ok = spprof__wait_handlers(SPPROF_STOP_WAIT_MS);
    spprof__os_quiesce_begin();
    spprof__lock(&spprof__reg_lock);
    if (spprof__g.dir) {
        for (i = 0; i < spprof__g.nslots_used; i++) {
            spprof__slot *s = &spprof__g.dir->chunks[i / SPPROF__CHUNK][i % SPPROF__CHUNK];
            if (s->tid) {  /* take the latest name: threads often name themselves after they were discovered */
                char name[64];
                spprof__read_comm(s->tid, name, sizeof name);
                spprof__lock(&spprof__prof_lock);
                if (name[0] && s->rec < spprof__g.prof.nrecs && !spprof__g.prof.recs[s->rec].name_set)
                    snprintf(spprof__g.prof.recs[s->rec].name, sizeof spprof__g.prof.recs[s->rec].name, "%s", name);
                spprof__unlock(&spprof__prof_lock);
            }
            spprof__delete_timer(s);
        }
    }
    spprof__os_quiesce_end();
    /* Handlers in flight: inflight is raised before a handler reads the state (seq_cst on both sides), so
       once stop has stored STOPPED and then sees inflight == 0, no handler can touch the registry, the
       execution ranges or the ring any more. A handler that saw RUNNING runs a bounded number of steps, but
       its thread may be preempted for long on a loaded machine, stopped by a debugger, or never come back
       (a program's signal handler that longjmps out of a nested signal). So the wait is long but bounded,
       and if it runs out, that memory is NOT freed (deliberately leaked, once, with a message): a late
       handler only ever reads and writes memory that stays valid. The fd map is never freed (see
       SPPROF__FDCHUNK). */
    free_ok = free_ok && spprof__wait_handlers(SPPROF_STOP_WAIT_MS);
    if (free_ok) {
        spprof__registry_free();
        spprof__xranges_free();
    } else {
        spprof__registry_leak();
    }
    spprof__unlock(&spprof__reg_lock);
    spprof__lock(&spprof__prof_lock);
    spprof__drain();
    if (free_ok) spprof__ring_free(&spprof__g.ring);
    else {  /* kept with the registry: a late handler may still write its cell */
        spprof__g.kept[2] = spprof__g.ring.cells;
        spprof__g.ring.cells = NULL;
    }
    spprof__g.prof.t_end = spprof__g.prof.t_end > spprof__g.prof.t_start ? spprof__g.prof.t_end : spprof__now_ns();
    spprof__unlock(&spprof__prof_lock);
    spprof__os_end(free_ok);  /* the fault handler goes only when no handler is in flight any more */
}

/* In a fork child whose parent had a session: the error of a call that needs one (see spprof__g.forked). */
#define SPPROF__FORKED_TEXT "this process was forked from one whose session stays the parent's: a forked child " \
    "is not sampled and has no profile until it starts its own session"
static spprof_result spprof__forked(const char *fn) {
    return spprof__fail(SPPROF_ERR_NOT_STARTED, "%s: %s (nothing written)", fn, SPPROF__FORKED_TEXT);
}

SPPROF_API spprof_result spprof_stop(void) {
    spprof__lock(&spprof__api_lock);
    if (SPPROF__LOAD(&spprof__g.state) == SPPROF_STATE_STOPPED) {
        int forked = spprof__g.forked;
        spprof__unlock(&spprof__api_lock);
        if (forked) return spprof__fail(SPPROF_ERR_NOT_STARTED, "spprof_stop: %s", SPPROF__FORKED_TEXT);
        return spprof__fail(SPPROF_ERR_NOT_STARTED, "spprof_stop: the profiler is not started");
    }
    spprof__stop_locked();
    spprof__unlock(&spprof__api_lock);
    return SPPROF_OK;
}

static spprof_result spprof__set_armed(int pause) {
    uint32_t i;
    int st;
    spprof__lock(&spprof__api_lock);
    st = SPPROF__LOAD(&spprof__g.state);
    if (st == SPPROF_STATE_STOPPED) {
        int forked = spprof__g.forked;
        spprof__unlock(&spprof__api_lock);
        if (forked) return spprof__fail(SPPROF_ERR_NOT_STARTED, "spprof_%s: %s", pause ? "pause" : "resume", SPPROF__FORKED_TEXT);
        return spprof__fail(SPPROF_ERR_NOT_STARTED, "spprof_%s: the profiler is not started", pause ? "pause" : "resume");
    }
    if ((pause && st == SPPROF_STATE_PAUSED) || (!pause && st == SPPROF_STATE_RUNNING)) {
        spprof__unlock(&spprof__api_lock);
        return spprof__fail(SPPROF_ERR_BAD_STATE, "spprof_%s: the profiler is already %s", pause ? "pause" : "resume", pause ? "paused" : "running");
    }
    spprof__lock(&spprof__reg_lock);
    /* Pausing: state first, so that a signal already queued is ignored; resuming: state first, then arm. */
    SPPROF__STORE(&spprof__g.state, pause ? (int)SPPROF_STATE_PAUSED : (int)SPPROF_STATE_RUNNING);
    for (i = 0; i < spprof__g.nslots_used && !SPPROF__LOAD(&spprof__g.sig_lost); i++) {
        spprof__slot *s = &spprof__g.dir->chunks[i / SPPROF__CHUNK][i % SPPROF__CHUNK];
        if (s->tid && s->has_timer) spprof__arm(s, !pause);
    }
    spprof__unlock(&spprof__reg_lock);
    spprof__unlock(&spprof__api_lock);
    return SPPROF_OK;
}

SPPROF_API spprof_result spprof_pause(void) { return spprof__set_armed(1); }
SPPROF_API spprof_result spprof_resume(void) { return spprof__set_armed(0); }
SPPROF_API spprof_state spprof_get_state(void) { return (spprof_state)SPPROF__LOAD(&spprof__g.state); }
SPPROF_API int spprof_is_active(void) { return SPPROF__LOAD(&spprof__g.state) != SPPROF_STATE_STOPPED; }

SPPROF_API spprof_result spprof_get_stats(spprof_stats *o) {
    uint32_t i;
    if (!o) return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "spprof_get_stats: out is NULL");
    memset(o, 0, sizeof *o);
    o->samples_captured = SPPROF__LOADR(&spprof__g.c.captured);
    o->samples_dropped = SPPROF__LOADR(&spprof__g.c.dropped);
    o->samples_stale = SPPROF__LOADR(&spprof__g.c.stale);
    o->timer_overruns = SPPROF__LOADR(&spprof__g.c.overruns);
    o->walk_errors = SPPROF__LOADR(&spprof__g.c.walk_errors);
    o->walk_truncated = SPPROF__LOADR(&spprof__g.c.truncated);
    o->signals_ignored = SPPROF__LOADR(&spprof__g.c.ignored);
    o->faults_recovered = SPPROF__LOADR(&spprof__g.c.faults);
    o->handler_replaced = SPPROF__LOAD(&spprof__g.sig_lost);
    spprof__lock(&spprof__reg_lock);
    o->signo = spprof__g.cfg.signo;
    o->timer_create_failures = spprof__g.timer_failures;
    o->timer_create_retries = spprof__g.timer_retries;
    o->threads_registered = spprof__g.threads_registered;
    if (spprof__g.dir)
        for (i = 0; i < spprof__g.nslots_used; i++)
            if (spprof__g.dir->chunks[i / SPPROF__CHUNK][i % SPPROF__CHUNK].tid) {
                const spprof__slot *s = &spprof__g.dir->chunks[i / SPPROF__CHUNK][i % SPPROF__CHUNK];
                o->threads_live++;
                if (spprof__source_is_perf(s)) o->threads_perf++;
                else if (s->has_timer) o->threads_posix++;
            }
    spprof__os_stats(o);
    spprof__lock(&spprof__prof_lock);
    o->samples_dropped_memory = spprof__g.dropped_memory;
    for (i = 0; i < spprof__g.prof.nrecs; i++) {
        o->samples_in_profile += spprof__g.prof.recs[i].nsamples;
        if (spprof__g.prof.recs[i].nsamples) o->threads_sampled++;
    }
    o->unique_stacks = spprof__g.prof.nstacks;
    o->unique_frames = spprof__g.prof.nframes;
    o->profile_bytes = spprof__g.prof.bytes;
    spprof__unlock(&spprof__prof_lock);
    spprof__unlock(&spprof__reg_lock);
    return SPPROF_OK;
}

SPPROF_API spprof_result spprof_flush(void) {
    spprof__lock(&spprof__prof_lock);
    spprof__drain();
    spprof__unlock(&spprof__prof_lock);
    return SPPROF_OK;
}

SPPROF_API spprof_result spprof_clear(void) {
    spprof__lock(&spprof__api_lock);
    if (SPPROF__LOAD(&spprof__g.state) != SPPROF_STATE_STOPPED) {
        spprof__unlock(&spprof__api_lock);
        return spprof__fail(SPPROF_ERR_BAD_STATE, "spprof_clear: stop the profiler first");
    }
    spprof__lock(&spprof__prof_lock);
    spprof__profile_free(&spprof__g.prof);
    spprof__g.forked = 0;  /* nothing of the parent's is left to protect: an empty profile from here on */
    spprof__unlock(&spprof__prof_lock);
    spprof__unlock(&spprof__api_lock);
    return SPPROF_OK;
}

SPPROF_API spprof_result spprof_thread_register(void) {
    int tid = spprof_gettid();
    uint32_t i;
    spprof__lock(&spprof__reg_lock);
    for (i = 0; i < spprof__g.nexplicit; i++) if (spprof__g.explicit_tids[i] == tid) break;
    if (i == spprof__g.nexplicit) {
        if (spprof__g.nexplicit == spprof__g.explicit_cap) {
            uint32_t nc = spprof__g.explicit_cap ? spprof__g.explicit_cap * 2 : 16;
            int *q = (int *)SPPROF_REALLOC(spprof__g.explicit_tids, nc * sizeof(int));
            if (!q) { spprof__unlock(&spprof__reg_lock); return spprof__fail(SPPROF_ERR_NO_MEMORY, "spprof_thread_register: out of memory"); }
            spprof__g.explicit_tids = q; spprof__g.explicit_cap = nc;
        }
        spprof__g.explicit_tids[spprof__g.nexplicit++] = tid;
        spprof__thread_at_exit();  /* unregisters it when it exits */
    }
    if (SPPROF__LOAD(&spprof__g.state) != SPPROF_STATE_STOPPED) {  /* sample it now, not at the next scan */
        int found = 0;
        for (i = 0; spprof__g.dir && i < spprof__g.nslots_used && !found; i++)
            found = spprof__g.dir->chunks[i / SPPROF__CHUNK][i % SPPROF__CHUNK].tid == tid;
        if (!found) spprof__thread_add(tid);
    }
    spprof__unlock(&spprof__reg_lock);
    return SPPROF_OK;
}

SPPROF_API spprof_result spprof_thread_unregister(void) {
    int tid = spprof_gettid();
    uint32_t i;
    spprof__lock(&spprof__reg_lock);
    for (i = 0; i < spprof__g.nexplicit; i++)
        if (spprof__g.explicit_tids[i] == tid) { spprof__g.explicit_tids[i] = spprof__g.explicit_tids[--spprof__g.nexplicit]; break; }
    if (spprof__g.dir)
        for (i = 0; i < spprof__g.nslots_used; i++) {
            spprof__slot *s = &spprof__g.dir->chunks[i / SPPROF__CHUNK][i % SPPROF__CHUNK];
            if (s->tid == tid) { spprof__thread_remove(s, i); break; }
        }
    spprof__unlock(&spprof__reg_lock);
    return SPPROF_OK;
}

SPPROF_API spprof_result spprof_thread_set_name(int tid, const char *name) {
    uint32_t i;
    int found = 0;
    if (!name) return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "spprof_thread_set_name: name is NULL");
    spprof__lock(&spprof__prof_lock);
    for (i = spprof__g.prof.nrecs; i-- > 0;)  /* newest record of that tid */
        if (spprof__g.prof.recs[i].tid == tid) {
            snprintf(spprof__g.prof.recs[i].name, sizeof spprof__g.prof.recs[i].name, "%s", name);
            spprof__g.prof.recs[i].name_set = 1;
            found = 1;
            break;
        }
    spprof__unlock(&spprof__prof_lock);
    return found ? SPPROF_OK : spprof__fail(SPPROF_ERR_INVALID_CONFIG, "spprof_thread_set_name: no thread %d in the profile", tid);
}

/* ==== @symbolize ======================================================================================
   Off the hot path: a frame goes to the resolver given in the config, else to the OS's native symbolizer
   (spprof_symbolize_native: @os_linux, @os_windows, @os_macos). */
SPPROF_API int spprof_resolve(const spprof_frame *f, spprof_symbol *out) {
    if (spprof__g.resolver && spprof__g.resolver(f, out, spprof__g.resolver_user)) return 1;
    if (SPPROF_FRAME_KIND(f->kind) == SPPROF_FRAME_NATIVE) return spprof_symbolize_native(f->addr, f->aux, out);
    snprintf(out->name, sizeof out->name, "<kind %u frame 0x%llx>", f->kind, (unsigned long long)f->addr);
    out->file[0] = 0; out->line = 0;
    return 0;
}

/* ==== @writers ========================================================================================
   Both writers hold prof_lock while they run (the collector waits). A regular file (or a symlink to one, which
   stays a symlink) is written to "<real target>.tmp.<pid>" and renamed over the target only when everything
   was written, so a failed write never leaves a truncated file; devices, FIFOs and /dev/stdout-style paths are
   written in place, never replaced (spprof__out_open). A failed write never loses the profile: it stays in
   memory and can be written again elsewhere. spprof's own functions at the leaf of a stack are left out
   (spprof__own_leaf): the sample stays with their caller. */
SPPROF_API spprof_result spprof_foreach_sample(spprof_sample_fn fn, void *user) {
    spprof__profile *p = &spprof__g.prof;
    spprof_frame buf[SPPROF_MAX_DEPTH_LIMIT];
    uint32_t i, k;
    size_t j;
    if (!fn) return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "spprof_foreach_sample: fn is NULL");
    if (SPPROF__LOAD(&spprof__g.forked)) return spprof__forked("spprof_foreach_sample");
    spprof__lock(&spprof__prof_lock);
    for (i = 0; i < p->nrecs; i++) {
        spprof__record *r = &p->recs[i];
        for (j = 0; j < r->nruns; j++) {
            spprof_sample_view v;
            const spprof__stack *s = &p->stacks[r->runs[j].stack];
            for (k = 0; k < s->n; k++) buf[k] = p->frames[p->stack_data[s->off + k]];
            v.tid = r->tid; v.thread_index = i; v.thread_name = r->name;
            v.t_first_ns = r->runs[j].t_first; v.t_last_ns = r->runs[j].t_last; v.count = r->runs[j].count; v.weight = r->runs[j].weight;
            v.frames = buf; v.nframes = (int)s->n;
            if (fn(&v, user)) { spprof__unlock(&spprof__prof_lock); return SPPROF_OK; }
        }
    }
    spprof__unlock(&spprof__prof_lock);
    return SPPROF_OK;
}

SPPROF_API spprof_result spprof_foreach_frame(uint32_t first_id, spprof_frame_fn fn, void *user) {
    uint32_t i;
    if (!fn) return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "spprof_foreach_frame: fn is NULL");
    spprof__lock(&spprof__prof_lock);
    for (i = first_id; i < spprof__g.prof.nframes; i++) fn(i, &spprof__g.prof.frames[i], user);
    spprof__unlock(&spprof__prof_lock);
    return SPPROF_OK;
}

/* JSON string with escapes; bytes that are not valid UTF-8 become '?'. */
static void spprof__json_str(FILE *f, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    while (*p) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') { fputc('\\', f); fputc(c, f); p++; }
        else if (c < 0x20) { fprintf(f, "\\u%04x", c); p++; }
        else if (c < 0x80) { fputc(c, f); p++; }
        else {
            int len = (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0, k;
            for (k = 1; k < len; k++) if ((p[k] & 0xc0) != 0x80) { len = 0; break; }
            if (len) { fwrite(p, 1, (size_t)len, f); p += len; } else { fputc('?', f); p++; }
        }
    }
    fputc('"', f);
}

/* The one output policy of every writer (Python's spprof._write_output does the same):
   - "/dev/stdout", "/dev/stderr", "/dev/fd/N", "/proc/self/fd/N": written to a dup of that descriptor (its
     offset and O_APPEND; reopening would start at offset 0, a rename would replace what the shell opened);
   - an existing path that is not a regular file (character device, FIFO, socket): opened for writing in
     place, without O_CREAT / O_TRUNC, never renamed over (/dev/null stays a device, /dev/full gives ENOSPC);
   - otherwise (a regular file or nothing): symlinks resolved, "<real>.tmp.<pid>" written beside the real
     target with the target's permission bits (else 0666 & ~umask) and renamed over it at close: a symlink
     stays a symlink, a failed write leaves no partial file.
   tmp is "" when writing in place (nothing to remove when a write is given up: spprof__out_abort). */
#if SPPROF__OS_LINUX || SPPROF__OS_MACOS  /* POSIX */

/* The descriptor a /dev/stdout-style path names, else -1. */
static int spprof__out_fd_path(const char *path) {
    const char *num = NULL;
    char *end;
    long n;
    if (!strcmp(path, "/dev/stdout")) return 1;
    if (!strcmp(path, "/dev/stderr")) return 2;
    if (!strncmp(path, "/dev/fd/", 8)) num = path + 8;
    else if (!strncmp(path, "/proc/self/fd/", 14)) num = path + 14;
    if (!num || *num < '0' || *num > '9') return -1;
    n = strtol(num, &end, 10);
    return (*end || n > 1 << 20) ? -1 : (int)n;
}

/* real := path with its symlinks followed (also a dangling last link: its target is what gets written). */
static int spprof__out_resolve(const char *path, char *real, size_t cap) {
    char cur[4096], link[4096];
    int hops;
    if ((size_t)snprintf(cur, sizeof cur, "%s", path) >= sizeof cur) return ENAMETOOLONG;
    for (hops = 0; hops < 40; hops++) {
        struct stat ls;
        ssize_t n;
        if (realpath(cur, real) && strlen(real) < cap) return 0;
        if (lstat(cur, &ls) != 0 || !S_ISLNK(ls.st_mode)) break;  /* absent: written as named */
        n = readlink(cur, link, sizeof link - 1);
        if (n < 0) return errno;
        link[n] = 0;
        if (link[0] != '/') {  /* relative to the link's directory */
            char *slash = strrchr(cur, '/');
            char joined[4096];
            int len = slash ? (int)(slash - cur + 1) : 0;
            if ((size_t)snprintf(joined, sizeof joined, "%.*s%s", len, cur, link) >= sizeof joined) return ENAMETOOLONG;
            memcpy(cur, joined, sizeof cur);
        } else {
            memcpy(cur, link, (size_t)n + 1);
        }
    }
    if (hops == 40) return ELOOP;
    if ((size_t)snprintf(real, cap, "%s", cur) >= cap) return ENAMETOOLONG;
    return 0;
}

static spprof_result spprof__out_open(spprof__out *o, const char *path) {
    struct stat st;
    int fd = -1;
    int have;
    int err;
    if (!path || !path[0]) return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "output path is empty");
    have = stat(path, &st) == 0;
    o->path = path;
    o->tmp[0] = 0;
    o->real[0] = 0;
    if (spprof__out_fd_path(path) >= 0) {
        fd = fcntl(spprof__out_fd_path(path), F_DUPFD_CLOEXEC, 3);
    } else if (have && !S_ISREG(st.st_mode)) {
        if (S_ISDIR(st.st_mode)) { errno = EISDIR; goto fail; }
        fd = open(path, O_WRONLY | O_NOCTTY | O_CLOEXEC);  /* in place: no O_CREAT, no O_TRUNC */
    } else {
        err = spprof__out_resolve(path, o->real, sizeof o->real);
        if (err) { errno = err; goto fail; }
        if ((size_t)snprintf(o->tmp, sizeof o->tmp, "%s.tmp.%d", o->real, (int)getpid()) >= sizeof o->tmp)
            return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "output path is too long");
        fd = open(o->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
        if (fd >= 0 && have && fchmod(fd, st.st_mode & 07777) != 0) {  /* keep the target's permissions */
            err = errno;
            close(fd);
            unlink(o->tmp);
            errno = err;
            fd = -1;
        }
    }
    if (fd < 0) goto fail;
    o->f = fdopen(fd, "w");
    if (o->f) return SPPROF_OK;
    err = errno;
    close(fd);
    if (o->tmp[0]) unlink(o->tmp);
    errno = err;
fail:
    o->tmp[0] = 0;
    return spprof__fail(SPPROF_ERR_IO, "cannot write '%s': %s (the profile is kept in memory; write it elsewhere)", path, strerror(errno));
}

static spprof_result spprof__out_close(spprof__out *o) {
    int bad = fflush(o->f) != 0 || ferror(o->f);
    int err = errno;
    if (fclose(o->f) != 0 && !bad) { bad = 1; err = errno; }
    if (!bad && o->tmp[0] && rename(o->tmp, o->real) != 0) { bad = 1; err = errno; }
    if (bad) {
        if (o->tmp[0]) unlink(o->tmp);
        return spprof__fail(SPPROF_ERR_IO, "cannot write '%s': %s (the profile is kept in memory; write it elsewhere)", o->path, strerror(err));
    }
    return SPPROF_OK;
}

/* A write given up: the temporary file goes, the target stays as it was. */
static void spprof__out_abort(spprof__out *o) {
    fclose(o->f);
    if (o->tmp[0]) unlink(o->tmp);
}
#endif /* SPPROF__OS_LINUX || SPPROF__OS_MACOS */

/* Resolve every interned frame once; map frames with the same name/file/line to one output frame.
   Returns an array (nframes entries) of output indices and fills syms/nsyms with the distinct symbols. */
static uint32_t *spprof__resolve_all(spprof__profile *p, spprof_symbol **syms_out, uint32_t *nsyms_out) {
    uint32_t *map = (uint32_t *)SPPROF_MALLOC(((size_t)p->nframes + 1) * sizeof(uint32_t));
    spprof_symbol *syms = (spprof_symbol *)SPPROF_MALLOC(((size_t)p->nframes + 1) * sizeof(spprof_symbol));
    uint32_t *tab = NULL, cap = 16, i, nsyms = 0;
    while (cap < p->nframes * 2 + 2) cap *= 2;
    tab = (uint32_t *)SPPROF_MALLOC(cap * sizeof(uint32_t));
    if (!map || !syms || !tab) { SPPROF_FREE(map); SPPROF_FREE(syms); SPPROF_FREE(tab); return NULL; }
    memset(tab, 0, cap * sizeof(uint32_t));
    for (i = 0; i < p->nframes; i++) {
        spprof_symbol *s = &syms[nsyms];
        uint64_t h = 1469598103934665603ull;
        const char *c;
        uint32_t slot;
        spprof_resolve(&p->frames[i], s);
        for (c = s->name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
        for (c = s->file; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
        h = spprof__mix(h, (uint64_t)s->line);
        for (slot = (uint32_t)h & (cap - 1);; slot = (slot + 1) & (cap - 1)) {
            uint32_t id = tab[slot];
            if (!id) { tab[slot] = ++nsyms; map[i] = nsyms - 1; break; }
            if (syms[id - 1].line == s->line && !strcmp(syms[id - 1].name, s->name) && !strcmp(syms[id - 1].file, s->file)) { map[i] = id - 1; break; }
        }
    }
    SPPROF_FREE(tab);
    spprof__symbols_reset();
    *syms_out = syms; *nsyms_out = nsyms;
    return map;
}

/* How many frames at the leaf end of stack s are spprof's own native functions (spprof_thread_unregister,
   run by a registered thread's exit): the writers leave them out, the sample stays with their caller. */
static uint32_t spprof__own_leaf(const spprof__profile *p, const spprof__stack *s, const uint32_t *map,
                                 const spprof_symbol *syms) {
    uint32_t k = 0;
    while (k < s->n) {
        const spprof_frame *f = &p->frames[p->stack_data[s->off + k]];
        if (SPPROF_FRAME_KIND(f->kind) != SPPROF_FRAME_NATIVE || strncmp(syms[map[p->stack_data[s->off + k]]].name, "spprof_", 7) != 0)
            break;
        k++;
    }
    return k;
}

SPPROF_API spprof_result spprof_write_speedscope(const char *path) {
    spprof__profile *p = &spprof__g.prof;
    spprof__out o;
    spprof_symbol *syms = NULL;
    uint32_t nsyms = 0, *map, i, k, active = 0, nprof = 0;
    uint64_t most = 0;
    size_t j;
    int first = 1;
    spprof_result r;
    if (SPPROF__LOAD(&spprof__g.forked)) return spprof__forked("spprof_write_speedscope");  /* before the file is opened */
    r = spprof__out_open(&o, path);
    if (r != SPPROF_OK) return r;
    spprof__lock(&spprof__prof_lock);
    spprof__drain();
    map = spprof__resolve_all(p, &syms, &nsyms);
    if (!map) { spprof__unlock(&spprof__prof_lock); spprof__out_abort(&o); return spprof__fail(SPPROF_ERR_NO_MEMORY, "out of memory while writing '%s'", path); }
    for (i = 0; i < p->nrecs; i++) {  /* the viewer opens the busiest thread, not whichever came first */
        uint64_t w = 0;
        if (!p->recs[i].nruns) continue;
        for (j = 0; j < p->recs[i].nruns; j++) w += p->recs[i].runs[j].weight;
        if (w > most) {
            most = w;
            active = nprof;
        }
        nprof++;
    }
    fprintf(o.f, "{\"$schema\":\"https://www.speedscope.app/file-format-schema.json\",\"exporter\":\"spprof %s\",\"name\":\"spprof profile\",\"activeProfileIndex\":%u,\"shared\":{\"frames\":[", SPPROF_VERSION_STRING, active);
    for (i = 0; i < nsyms; i++) {
        fprintf(o.f, "%s{\"name\":", i ? "," : "");
        spprof__json_str(o.f, syms[i].name);
        if (syms[i].file[0]) { fputs(",\"file\":", o.f); spprof__json_str(o.f, syms[i].file); }
        if (syms[i].line > 0) fprintf(o.f, ",\"line\":%d", syms[i].line);
        fputc('}', o.f);
    }
    fputs("]},\"profiles\":[", o.f);
    for (i = 0; i < p->nrecs; i++) {
        spprof__record *rec = &p->recs[i];
        uint64_t start, total = 0;
        char title[128];
        if (!rec->nruns) continue;
        start = rec->runs[0].t_first >= p->t_start ? rec->runs[0].t_first - p->t_start : 0;
        snprintf(title, sizeof title, "%s (tid %d)", rec->name[0] ? rec->name : "thread", rec->tid);
        fprintf(o.f, "%s{\"type\":\"sampled\",\"name\":", first ? "" : ",");
        first = 0;
        spprof__json_str(o.f, title);
        fputs(",\"unit\":\"nanoseconds\",\"samples\":[", o.f);
        for (j = 0; j < rec->nruns; j++) {
            const spprof__stack *s = &p->stacks[rec->runs[j].stack];
            uint32_t lead = spprof__own_leaf(p, s, map, syms);
            fputs(j ? ",[" : "[", o.f);
            for (k = s->n; k-- > lead;) fprintf(o.f, "%u%s", map[p->stack_data[s->off + k]], k > lead ? "," : "");  /* root first */
            fputc(']', o.f);
        }
        fputs("],\"weights\":[", o.f);
        for (j = 0; j < rec->nruns; j++) {
            uint64_t w = (uint64_t)rec->runs[j].weight * (uint64_t)p->interval_ns;
            total += w;
            fprintf(o.f, "%s%llu", j ? "," : "", (unsigned long long)w);
        }
        fprintf(o.f, "],\"startValue\":%llu,\"endValue\":%llu}", (unsigned long long)start, (unsigned long long)(start + total));
    }
    if (first)  /* no samples: one empty profile, so viewers still open the file */
        fputs("{\"type\":\"sampled\",\"name\":\"no samples\",\"unit\":\"nanoseconds\",\"samples\":[],\"weights\":[],\"startValue\":0,\"endValue\":0}", o.f);
    fputs("]}\n", o.f);
    spprof__unlock(&spprof__prof_lock);
    SPPROF_FREE(map); SPPROF_FREE(syms);
    return spprof__out_close(&o);
}

/* canon[k] = the first stack whose frames symbolize to the same output frames as stack k. */
static uint32_t *spprof__canonical_stacks(const spprof__profile *p, const uint32_t *map) {
    uint32_t *canon = (uint32_t *)SPPROF_MALLOC(((size_t)p->nstacks + 1) * sizeof(uint32_t));
    uint32_t *tab, cap = 16, k, m;
    while (cap < p->nstacks * 2 + 2) cap *= 2;
    tab = (uint32_t *)SPPROF_MALLOC(cap * sizeof(uint32_t));
    if (!canon || !tab) { SPPROF_FREE(canon); SPPROF_FREE(tab); return NULL; }
    memset(tab, 0, cap * sizeof(uint32_t));
    for (k = 0; k < p->nstacks; k++) {
        const spprof__stack *s = &p->stacks[k];
        uint64_t h = s->n;
        uint32_t i;
        for (m = 0; m < s->n; m++) h = spprof__mix(h, map[p->stack_data[s->off + m]]);
        for (i = (uint32_t)h & (cap - 1);; i = (i + 1) & (cap - 1)) {
            const spprof__stack *t;
            if (!tab[i]) { tab[i] = k + 1; canon[k] = k; break; }
            t = &p->stacks[tab[i] - 1];
            if (t->n == s->n) {
                for (m = 0; m < s->n && map[p->stack_data[s->off + m]] == map[p->stack_data[t->off + m]]; m++) {}
                if (m == s->n) { canon[k] = tab[i] - 1; break; }
            }
        }
    }
    SPPROF_FREE(tab);
    return canon;
}

static void spprof__collapsed_name(FILE *f, const char *s) {
    for (; *s; s++) fputc(*s == ';' ? ':' : (*s == '\n' || *s == '\r') ? ' ' : *s, f);
}

SPPROF_API spprof_result spprof_write_collapsed(const char *path, int flags) {
    spprof__profile *p = &spprof__g.prof;
    spprof__out o;
    spprof_symbol *syms = NULL;
    uint32_t nsyms = 0, *map, i, k;
    uint64_t *counts;
    uint32_t *canon = NULL;
    size_t j;
    spprof_result r;
    if (SPPROF__LOAD(&spprof__g.forked)) return spprof__forked("spprof_write_collapsed");  /* before the file is opened */
    r = spprof__out_open(&o, path);
    if (r != SPPROF_OK) return r;
    spprof__lock(&spprof__prof_lock);
    spprof__drain();
    map = spprof__resolve_all(p, &syms, &nsyms);
    counts = (uint64_t *)SPPROF_MALLOC(((size_t)p->nstacks + 1) * sizeof(uint64_t));
    if (map) canon = spprof__canonical_stacks(p, map);
    if (!map || !counts || !canon) {
        spprof__unlock(&spprof__prof_lock);
        SPPROF_FREE(map); SPPROF_FREE(syms); SPPROF_FREE(counts); SPPROF_FREE(canon); spprof__out_abort(&o);
        return spprof__fail(SPPROF_ERR_NO_MEMORY, "out of memory while writing '%s'", path);
    }
    /* Without thread names: one line per distinct stack (summed over threads); with: per thread and stack.
       The count is in sampling intervals (samples plus the timer overruns they stand for), i.e. time. */
    for (i = 0; i < p->nrecs; i++) {
        spprof__record *rec = &p->recs[i];
        if (!(flags & SPPROF_COLLAPSED_THREADS) && i > 0) break;
        memset(counts, 0, ((size_t)p->nstacks + 1) * sizeof(uint64_t));
        if (flags & SPPROF_COLLAPSED_THREADS) { for (j = 0; j < rec->nruns; j++) counts[canon[rec->runs[j].stack]] += rec->runs[j].weight; }
        else { uint32_t t; for (t = 0; t < p->nrecs; t++) for (j = 0; j < p->recs[t].nruns; j++) counts[canon[p->recs[t].runs[j].stack]] += p->recs[t].runs[j].weight; }
        for (k = 0; k < p->nstacks; k++) {
            const spprof__stack *s = &p->stacks[k];
            uint32_t m, lead;
            if (!counts[k]) continue;
            if (flags & SPPROF_COLLAPSED_THREADS) {
                char title[128];
                snprintf(title, sizeof title, "%s (tid %d)", rec->name[0] ? rec->name : "thread", rec->tid);
                spprof__collapsed_name(o.f, title);
                fputc(';', o.f);  /* also before "[empty]": every line is "thread;frames count" */
            }
            lead = spprof__own_leaf(p, s, map, syms);
            for (m = s->n; m-- > lead;) {  /* "name", or "name (file:line)" when the line is known (as py-spy) */
                const spprof_symbol *y = &syms[map[p->stack_data[s->off + m]]];
                spprof__collapsed_name(o.f, y->name);
                if (y->line > 0) { fputs(" (", o.f); spprof__collapsed_name(o.f, y->file); fprintf(o.f, ":%d)", y->line); }
                if (m > lead) fputc(';', o.f);
            }
            if (s->n == lead) fputs("[empty]", o.f);
            fprintf(o.f, " %llu\n", (unsigned long long)counts[k]);
        }
    }
    spprof__unlock(&spprof__prof_lock);
    SPPROF_FREE(map); SPPROF_FREE(syms); SPPROF_FREE(counts); SPPROF_FREE(canon);
    return spprof__out_close(&o);
}

/* ---- pprof ---------------------------------------------------------------------------------------------
   profile.proto (github.com/google/pprof/proto/profile.proto), gzip-compressed, without a protobuf or zlib
   library: the message is encoded by hand into memory (spprof__pb), then deflated by the small encoder below
   (fixed Huffman codes, greedy LZ77: about a third of the size, zlib -6 makes it a fifth smaller still) into
   one gzip member with the CRC-32 and length gzip requires. Every pprof reader accepts it (go tool pprof,
   Pyroscope, Parca). Field numbers below are those of profile.proto. */
typedef struct spprof__pb { unsigned char *d; size_t n, cap; int oom; } spprof__pb;

static void spprof__pb_put(spprof__pb *b, const void *src, size_t len) {
    if (b->oom || !len) return;
    if (b->n + len > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        unsigned char *q;
        while (nc < b->n + len) nc *= 2;
        q = (unsigned char *)SPPROF_REALLOC(b->d, nc);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->d = q;
        b->cap = nc;
    }
    memcpy(b->d + b->n, src, len);
    b->n += len;
}

static void spprof__pb_varint(spprof__pb *b, uint64_t v) {
    unsigned char tmp[10];
    size_t n = 0;
    while (v >= 0x80) {
        tmp[n++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (unsigned char)v;
    spprof__pb_put(b, tmp, n);
}

/* A varint field (wire type 0). Zero is every field's default and is left out, as protobuf encoders do. */
static void spprof__pb_int(spprof__pb *b, unsigned field, uint64_t v) {
    if (!v) return;
    spprof__pb_varint(b, (uint64_t)field << 3);
    spprof__pb_varint(b, v);
}

/* A length-delimited field (wire type 2): a string, an embedded message or a packed repeated field. */
static void spprof__pb_bytes(spprof__pb *b, unsigned field, const spprof__pb *data) {
    spprof__pb_varint(b, ((uint64_t)field << 3) | 2);
    spprof__pb_varint(b, data->n);
    spprof__pb_put(b, data->d, data->n);
    if (data->oom) b->oom = 1;
}

/* Interned strings (Profile.string_table; index 0 is ""), owned copies. */
typedef struct spprof__strtab { char **s; uint32_t n, cap; uint32_t *slots; uint32_t nslots; int oom; } spprof__strtab;

static uint64_t spprof__str_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static uint32_t spprof__str(spprof__strtab *t, const char *s) {
    uint32_t i, k;
    size_t len;
    if (t->oom) return 0;
    if ((t->n + 1) * 2 > t->nslots) {  /* grow and rehash: at most half full */
        uint32_t ns = t->nslots ? t->nslots * 2 : 256;
        uint32_t *q = (uint32_t *)SPPROF_MALLOC(ns * sizeof(uint32_t));
        if (!q) {
            t->oom = 1;
            return 0;
        }
        memset(q, 0, ns * sizeof(uint32_t));
        for (k = 0; k < t->n; k++) {
            for (i = (uint32_t)spprof__str_hash(t->s[k]) & (ns - 1); q[i]; i = (i + 1) & (ns - 1)) {}
            q[i] = k + 1;
        }
        SPPROF_FREE(t->slots);
        t->slots = q;
        t->nslots = ns;
    }
    for (i = (uint32_t)spprof__str_hash(s) & (t->nslots - 1); t->slots[i]; i = (i + 1) & (t->nslots - 1))
        if (!strcmp(t->s[t->slots[i] - 1], s)) return t->slots[i] - 1;
    if (t->n == t->cap) {
        uint32_t nc = t->cap ? t->cap * 2 : 256;
        char **q = (char **)SPPROF_REALLOC(t->s, nc * sizeof(char *));
        if (!q) {
            t->oom = 1;
            return 0;
        }
        t->s = q;
        t->cap = nc;
    }
    len = strlen(s);
    t->s[t->n] = (char *)SPPROF_MALLOC(len + 1);
    if (!t->s[t->n]) {
        t->oom = 1;
        return 0;
    }
    memcpy(t->s[t->n], s, len + 1);
    t->slots[i] = t->n + 1;
    return t->n++;
}

/* A map from a 128-bit key to an id (1, 2, ...; 0: absent), for functions, mappings and locations. */
typedef struct spprof__idmap { uint64_t *keys; uint32_t *ids; uint32_t n, nslots; int oom; } spprof__idmap;

/* The id of (a, b); *fresh = 1 when it was not there (it gets the next id). 0 when out of memory. */
static uint32_t spprof__idmap_get(spprof__idmap *m, uint64_t a, uint64_t b, int *fresh) {
    uint32_t i, k;
    *fresh = 0;
    if (m->oom) return 0;
    if ((m->n + 1) * 2 > m->nslots) {
        uint32_t ns = m->nslots ? m->nslots * 2 : 256;
        uint64_t *nk = (uint64_t *)SPPROF_MALLOC((size_t)ns * 2 * sizeof(uint64_t));
        uint32_t *ni = (uint32_t *)SPPROF_MALLOC((size_t)ns * sizeof(uint32_t));
        if (!nk || !ni) {
            SPPROF_FREE(nk);
            SPPROF_FREE(ni);
            m->oom = 1;
            return 0;
        }
        memset(ni, 0, (size_t)ns * sizeof(uint32_t));
        for (k = 0; k < m->nslots; k++) {
            if (!m->ids[k]) continue;
            for (i = (uint32_t)spprof__mix(m->keys[2 * k], m->keys[2 * k + 1]) & (ns - 1); ni[i]; i = (i + 1) & (ns - 1)) {}
            nk[2 * i] = m->keys[2 * k];
            nk[2 * i + 1] = m->keys[2 * k + 1];
            ni[i] = m->ids[k];
        }
        SPPROF_FREE(m->keys);
        SPPROF_FREE(m->ids);
        m->keys = nk;
        m->ids = ni;
        m->nslots = ns;
    }
    for (i = (uint32_t)spprof__mix(a, b) & (m->nslots - 1); m->ids[i]; i = (i + 1) & (m->nslots - 1))
        if (m->keys[2 * i] == a && m->keys[2 * i + 1] == b) return m->ids[i];
    m->keys[2 * i] = a;
    m->keys[2 * i + 1] = b;
    m->ids[i] = ++m->n;
    *fresh = 1;
    return m->n;
}

/* One pprof Profile being built: `out` is the message, `msg` and `sub` scratch for embedded messages. */
typedef struct spprof__pprof {
    spprof__pb out, msg, sub;
    spprof__strtab str;
    spprof__idmap funcs, maps, locs;
} spprof__pprof;

static void spprof__pprof_free(spprof__pprof *b) {
    uint32_t i;
    SPPROF_FREE(b->out.d);
    SPPROF_FREE(b->msg.d);
    SPPROF_FREE(b->sub.d);
    for (i = 0; i < b->str.n; i++) SPPROF_FREE(b->str.s[i]);
    SPPROF_FREE(b->str.s);
    SPPROF_FREE(b->str.slots);
    SPPROF_FREE(b->funcs.keys);
    SPPROF_FREE(b->funcs.ids);
    SPPROF_FREE(b->maps.keys);
    SPPROF_FREE(b->maps.ids);
    SPPROF_FREE(b->locs.keys);
    SPPROF_FREE(b->locs.ids);
}

static int spprof__pprof_oom(const spprof__pprof *b) {
    return b->out.oom || b->msg.oom || b->sub.oom || b->str.oom || b->funcs.oom || b->maps.oom || b->locs.oom;
}

/* A ValueType {type, unit} as field `field` of the Profile (1: sample_type, 11: period_type). */
static void spprof__pprof_vtype(spprof__pprof *b, unsigned field, const char *type, const char *unit) {
    b->msg.n = 0;
    spprof__pb_int(&b->msg, 1, spprof__str(&b->str, type));
    spprof__pb_int(&b->msg, 2, spprof__str(&b->str, unit));
    spprof__pb_bytes(&b->out, field, &b->msg);
}

static void spprof__pprof_begin(spprof__pprof *b) {
    memset(b, 0, sizeof *b);
    spprof__str(&b->str, "");  /* string_table[0] must be "" */
}

/* The Mapping of the loaded object that holds native code address pc (0: none known). Linux: the object's
   PT_LOAD span from the symbolizer's module table, its path (the executable's real path, not
   /proc/self/exe), file_offset so that pprof can map addresses back to the file. Windows: none. */
static uint32_t spprof__pprof_mapping(spprof__pprof *b, uint64_t pc) {
#if SPPROF__OS_LINUX
    size_t i;
    uint32_t id = 0;
    int fresh;
    spprof__lock(&spprof__sym_lock);
    spprof__mods_fresh();
    for (i = 0; i < spprof__nmods; i++) {
        const spprof__module *m = &spprof__mods[i];
        char path[256];
        if (pc < m->lo || pc >= m->hi) continue;
        id = spprof__idmap_get(&b->maps, m->lo, m->hi, &fresh);
        if (!fresh) break;
        spprof__module_name(m, path, sizeof path);
        b->msg.n = 0;
        spprof__pb_int(&b->msg, 1, id);                /* id */
        spprof__pb_int(&b->msg, 2, m->lo);             /* memory_start */
        spprof__pb_int(&b->msg, 3, m->hi);             /* memory_limit */
        spprof__pb_int(&b->msg, 4, m->lo - m->bias);   /* file_offset: the first PT_LOAD's address in the file */
        spprof__pb_int(&b->msg, 5, spprof__str(&b->str, path));  /* filename */
        spprof__pb_int(&b->msg, 7, 1);                 /* has_functions: names are in the profile */
        spprof__pb_bytes(&b->out, 3, &b->msg);
        break;
    }
    spprof__unlock(&spprof__sym_lock);
    return id;
#else
    (void)b;
    (void)pc;
    return 0;
#endif
}

/* Emits Location `id` for frame f, symbolized as y: one Line (function, line when known: native frames
   have none, and get no ":0"), the mapping and instruction address of native frames (a return address is
   given as addr - 1, inside its call instruction). */
static void spprof__pprof_location(spprof__pprof *b, uint32_t id, const spprof_frame *f, const spprof_symbol *y) {
    uint32_t name = spprof__str(&b->str, y->name[0] ? y->name : "?");
    uint32_t file = spprof__str(&b->str, y->file);
    uint32_t fid, mid = 0;
    uint64_t addr = 0;
    int fresh;
    fid = spprof__idmap_get(&b->funcs, name, file, &fresh);
    if (fresh) {
        b->msg.n = 0;
        spprof__pb_int(&b->msg, 1, fid);
        spprof__pb_int(&b->msg, 2, name);   /* name (no system_name: pprof would demangle an equal one again,
                                               and makes "<module>" empty doing so) */
        spprof__pb_int(&b->msg, 4, file);   /* filename */
        spprof__pb_bytes(&b->out, 5, &b->msg);
    }
    if (SPPROF_FRAME_KIND(f->kind) == SPPROF_FRAME_NATIVE && f->addr) {
        addr = (f->aux & SPPROF_AUX_RETADDR) ? f->addr - 1 : f->addr;
        mid = spprof__pprof_mapping(b, addr);
    }
    b->sub.n = 0;
    spprof__pb_int(&b->sub, 1, fid);                                    /* Line.function_id */
    spprof__pb_int(&b->sub, 2, y->line > 0 ? (uint64_t)y->line : 0);   /* Line.line */
    b->msg.n = 0;
    spprof__pb_int(&b->msg, 1, id);
    spprof__pb_int(&b->msg, 2, mid);
    spprof__pb_int(&b->msg, 3, addr);
    spprof__pb_bytes(&b->msg, 4, &b->sub);
    spprof__pb_bytes(&b->out, 4, &b->msg);
}

/* Emits one Sample: locations leaf first, values, and optionally the thread labels. */
static void spprof__pprof_sample(spprof__pprof *b, const uint32_t *locs, uint32_t nlocs, const uint64_t *values,
                                 int nvalues, const char *thread, int tid) {
    uint32_t k;
    int v;
    b->msg.n = 0;
    b->sub.n = 0;
    for (k = 0; k < nlocs; k++) spprof__pb_varint(&b->sub, locs[k]);
    if (nlocs) spprof__pb_bytes(&b->msg, 1, &b->sub);   /* location_id, packed */
    b->sub.n = 0;
    for (v = 0; v < nvalues; v++) spprof__pb_varint(&b->sub, values[v]);
    spprof__pb_bytes(&b->msg, 2, &b->sub);               /* value, packed (zeros included) */
    if (thread) {
        b->sub.n = 0;
        spprof__pb_int(&b->sub, 1, spprof__str(&b->str, "thread"));
        spprof__pb_int(&b->sub, 2, spprof__str(&b->str, thread));
        spprof__pb_bytes(&b->msg, 3, &b->sub);
        b->sub.n = 0;
        spprof__pb_int(&b->sub, 1, spprof__str(&b->str, "thread_id"));
        spprof__pb_int(&b->sub, 3, (uint64_t)(int64_t)tid);
        spprof__pb_bytes(&b->msg, 3, &b->sub);
    }
    spprof__pb_bytes(&b->out, 2, &b->msg);
}

/* Wall-clock nanoseconds since the epoch of the monotonic instant t (time_nanos wants the wall clock). */
static uint64_t spprof__wall_ns(uint64_t t) {
    uint64_t now = spprof__now_ns(), real;
#if SPPROF__OS_WINDOWS
    FILETIME ft;  /* 100 ns units since 1601-01-01 */
    GetSystemTimeAsFileTime(&ft);
    real = ((((uint64_t)ft.dwHighDateTime << 32) | ft.dwLowDateTime) - 116444736000000000ull) * 100u;
#else
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    real = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#endif
    return real - (now > t ? now - t : 0);
}

static uint32_t spprof__crc32(const unsigned char *p, size_t n) {
    uint32_t table[256], crc = 0xffffffffu;
    uint32_t i;
    for (i = 0; i < 256; i++) {
        uint32_t c = i;
        int k;
        for (k = 0; k < 8; k++) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
        table[i] = c;
    }
    while (n--) crc = table[(crc ^ *p++) & 0xffu] ^ (crc >> 8);
    return ~crc;
}

/* ---- deflate (RFC 1951) with the fixed Huffman code: greedy LZ77 over a 32 KiB window (hash chains of
   at most SPPROF__LZ_CHAIN steps), one block. No tables to build or send; profiles (repeated varints, paths)
   shrink to a fraction. Bits go out least significant first; Huffman codes most significant first. */
#define SPPROF__LZ_WINDOW 32768u
#define SPPROF__LZ_HASH 32768u
#define SPPROF__LZ_CHAIN 48
typedef struct spprof__bits { spprof__pb *out; uint32_t acc; int n; } spprof__bits;

static void spprof__bits_put(spprof__bits *w, uint32_t v, int n) {  /* n <= 16 bits, value's LSB first */
    w->acc |= v << w->n;
    w->n += n;
    while (w->n >= 8) {
        unsigned char c = (unsigned char)(w->acc & 0xff);
        spprof__pb_put(w->out, &c, 1);
        w->acc >>= 8;
        w->n -= 8;
    }
}

static void spprof__bits_code(spprof__bits *w, uint32_t code, int n) {  /* a Huffman code: MSB first */
    uint32_t r = 0;
    int i;
    for (i = 0; i < n; i++) r |= ((code >> i) & 1u) << (n - 1 - i);
    spprof__bits_put(w, r, n);
}

static void spprof__deflate_sym(spprof__bits *w, uint32_t v) {  /* literal/length symbol, fixed code */
    if (v < 144) spprof__bits_code(w, 0x30 + v, 8);
    else if (v < 256) spprof__bits_code(w, 0x190 + (v - 144), 9);
    else if (v < 280) spprof__bits_code(w, v - 256, 7);
    else spprof__bits_code(w, 0xc0 + (v - 280), 8);
}

static void spprof__deflate_match(spprof__bits *w, uint32_t len, uint32_t dist) {
    static const uint16_t lbase[29] = {3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59,
                                       67, 83, 99, 115, 131, 163, 195, 227, 258};
    static const unsigned char lextra[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
                                             4, 4, 4, 4, 5, 5, 5, 5, 0};
    static const uint16_t dbase[30] = {1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513,
                                       769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
    static const unsigned char dextra[30] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8,
                                             9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
    int l = 28, d = 29;
    while (lbase[l] > len) l--;
    while (dbase[d] > dist) d--;
    spprof__deflate_sym(w, 257u + (uint32_t)l);
    if (lextra[l]) spprof__bits_put(w, len - lbase[l], lextra[l]);
    spprof__bits_code(w, (uint32_t)d, 5);
    if (dextra[d]) spprof__bits_put(w, dist - dbase[d], dextra[d]);
}

/* Deflates in[0, n) into out as one final fixed-Huffman block; 0 when out of memory (out is then unusable). */
static int spprof__deflate(const unsigned char *in, size_t n, spprof__pb *out) {
    uint32_t *head = (uint32_t *)SPPROF_MALLOC(SPPROF__LZ_HASH * sizeof(uint32_t));
    uint32_t *prev = (uint32_t *)SPPROF_MALLOC(SPPROF__LZ_WINDOW * sizeof(uint32_t));
    spprof__bits w;
    size_t i = 0;
    if (!head || !prev) {
        SPPROF_FREE(head);
        SPPROF_FREE(prev);
        return 0;
    }
    memset(head, 0xff, SPPROF__LZ_HASH * sizeof(uint32_t));  /* UINT32_MAX: empty */
    w.out = out;
    w.acc = 0;
    w.n = 0;
    spprof__bits_put(&w, 1, 1);  /* BFINAL */
    spprof__bits_put(&w, 1, 2);  /* BTYPE 01: fixed Huffman codes */
    while (i < n) {
        uint32_t best = 0, bdist = 0;
        if (i + 3 <= n) {
            uint32_t h = ((uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2]) * 2654435761u >> 17;
            uint32_t cand = head[h & (SPPROF__LZ_HASH - 1)];
            int steps = SPPROF__LZ_CHAIN;
            size_t maxlen = n - i < 258 ? n - i : 258;
            while (cand != UINT32_MAX && steps-- > 0 && i - cand <= SPPROF__LZ_WINDOW - 1 && cand < i) {
                size_t k = 0;
                while (k < maxlen && in[cand + k] == in[i + k]) k++;
                if (k > best) {
                    best = (uint32_t)k;
                    bdist = (uint32_t)(i - cand);
                    if (k == maxlen) break;
                }
                cand = prev[cand & (SPPROF__LZ_WINDOW - 1)];
            }
        }
        if (best >= 3) {
            size_t end = i + best;
            spprof__deflate_match(&w, best, bdist);
            for (; i < end; i++) {  /* every position of the match goes into the chains */
                if (i + 3 <= n) {
                    uint32_t h = ((uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2]) * 2654435761u >> 17;
                    prev[i & (SPPROF__LZ_WINDOW - 1)] = head[h & (SPPROF__LZ_HASH - 1)];
                    head[h & (SPPROF__LZ_HASH - 1)] = (uint32_t)i;
                }
            }
        } else {
            if (i + 3 <= n) {
                uint32_t h = ((uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2]) * 2654435761u >> 17;
                prev[i & (SPPROF__LZ_WINDOW - 1)] = head[h & (SPPROF__LZ_HASH - 1)];
                head[h & (SPPROF__LZ_HASH - 1)] = (uint32_t)i;
            }
            spprof__deflate_sym(&w, in[i]);
            i++;
        }
    }
    spprof__deflate_sym(&w, 256);  /* end of block */
    if (w.n) spprof__bits_put(&w, 0, 8 - w.n);
    SPPROF_FREE(head);
    SPPROF_FREE(prev);
    return !out->oom;
}

/* Finishes the Profile (string table last: every string is known by then) and writes it to f as a gzip
   member (RFC 1952): deflated (above), or, if that memory is not to be had, in stored blocks (RFC 1951
   3.2.4, at most 65535 bytes each). */
static void spprof__pprof_write(spprof__pprof *b, FILE *f) {
    static const unsigned char head[10] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255};  /* deflate, no name/mtime */
    unsigned char blk[5], tail[8];
    uint32_t i, crc;
    size_t off = 0;
    spprof__pb z;
    for (i = 0; i < b->str.n; i++) {
        spprof__pb s;
        s.d = (unsigned char *)b->str.s[i];
        s.n = strlen(b->str.s[i]);
        s.cap = s.n;
        s.oom = 0;
        spprof__pb_bytes(&b->out, 6, &s);
    }
    if (spprof__pprof_oom(b)) return;
    crc = spprof__crc32(b->out.d, b->out.n);
    fwrite(head, 1, sizeof head, f);
    memset(&z, 0, sizeof z);
    if (spprof__deflate(b->out.d, b->out.n, &z)) {
        fwrite(z.d, 1, z.n, f);
    } else {
        do {
            size_t len = b->out.n - off > 65535 ? 65535 : b->out.n - off;
            blk[0] = (unsigned char)(off + len == b->out.n);  /* BFINAL on the last block; BTYPE 00: stored */
            blk[1] = (unsigned char)(len & 0xff);
            blk[2] = (unsigned char)(len >> 8);
            blk[3] = (unsigned char)(~len & 0xff);
            blk[4] = (unsigned char)((~len >> 8) & 0xff);
            fwrite(blk, 1, sizeof blk, f);
            fwrite(b->out.d + off, 1, len, f);
            off += len;
        } while (off < b->out.n);
    }
    SPPROF_FREE(z.d);
    for (i = 0; i < 4; i++) tail[i] = (unsigned char)(crc >> (8 * i));
    for (i = 0; i < 4; i++) tail[4 + i] = (unsigned char)((uint64_t)b->out.n >> (8 * i));  /* ISIZE: mod 2^32 */
    fwrite(tail, 1, sizeof tail, f);
}

SPPROF_API spprof_result spprof_write_pprof(const char *path) {
    spprof__profile *p = &spprof__g.prof;
    spprof__out o;
    spprof__pprof b;
    spprof_symbol *syms = NULL;
    uint32_t nsyms = 0, *map, *canon = NULL, *first = NULL, *touched = NULL, *locs = NULL, i, k;
    uint64_t *counts = NULL, *weights = NULL, t_end;
    const char *cpu = spprof__g.cfg.mode == SPPROF_MODE_WALL ? "wall" : "cpu";
    size_t j;
    int oom;
    spprof_result r;
    if (SPPROF__LOAD(&spprof__g.forked)) return spprof__forked("spprof_write_pprof");  /* before the file is opened */
    r = spprof__out_open(&o, path);
    if (r != SPPROF_OK) return r;
    spprof__pprof_begin(&b);
    spprof__lock(&spprof__prof_lock);
    spprof__drain();
    map = spprof__resolve_all(p, &syms, &nsyms);
    if (map) {
        canon = spprof__canonical_stacks(p, map);
        first = (uint32_t *)SPPROF_MALLOC(((size_t)nsyms + 1) * sizeof(uint32_t));
        touched = (uint32_t *)SPPROF_MALLOC(((size_t)p->nstacks + 1) * sizeof(uint32_t));
        locs = (uint32_t *)SPPROF_MALLOC(SPPROF_MAX_DEPTH_LIMIT * sizeof(uint32_t));
        counts = (uint64_t *)SPPROF_MALLOC(((size_t)p->nstacks + 1) * sizeof(uint64_t));
        weights = (uint64_t *)SPPROF_MALLOC(((size_t)p->nstacks + 1) * sizeof(uint64_t));
    }
    oom = !map || !canon || !first || !touched || !locs || !counts || !weights;
    if (!oom) {
        /* Header: sample types [samples/count, cpu|wall/nanoseconds], period, time, duration. */
        t_end = p->t_end > p->t_start ? p->t_end : spprof__now_ns();
        spprof__pprof_vtype(&b, 1, "samples", "count");
        spprof__pprof_vtype(&b, 1, cpu, "nanoseconds");
        spprof__pprof_vtype(&b, 11, cpu, "nanoseconds");
        spprof__pb_int(&b.out, 12, (uint64_t)p->interval_ns);
        spprof__pb_int(&b.out, 9, spprof__wall_ns(p->t_start));
        spprof__pb_int(&b.out, 10, t_end - p->t_start);
        spprof__pb_int(&b.out, 14, spprof__str(&b.str, cpu));   /* default_sample_type */
        spprof__pb_int(&b.out, 13, spprof__str(&b.str, "spprof " SPPROF_VERSION_STRING));  /* comment */
        /* One Location per distinct symbol (id = its index + 1), with the address of its first frame. */
        for (i = 0; i < nsyms; i++) first[i] = UINT32_MAX;
        for (i = 0; i < p->nframes; i++) if (first[map[i]] == UINT32_MAX) first[map[i]] = i;
        for (i = 0; i < nsyms; i++) if (first[i] != UINT32_MAX) spprof__pprof_location(&b, i + 1, &p->frames[first[i]], &syms[i]);
        /* One Sample per thread and distinct stack (stacks that symbolize alike are one). */
        memset(counts, 0, ((size_t)p->nstacks + 1) * sizeof(uint64_t));
        memset(weights, 0, ((size_t)p->nstacks + 1) * sizeof(uint64_t));
        for (i = 0; i < p->nrecs; i++) {
            spprof__record *rec = &p->recs[i];
            uint32_t ntouched = 0;
            for (j = 0; j < rec->nruns; j++) {
                uint32_t c = canon[rec->runs[j].stack];
                if (!counts[c] && !weights[c]) touched[ntouched++] = c;
                counts[c] += rec->runs[j].count;
                weights[c] += rec->runs[j].weight;
            }
            for (k = 0; k < ntouched; k++) {
                const spprof__stack *s = &p->stacks[touched[k]];
                uint64_t values[2];
                uint32_t m;
                uint32_t lead = spprof__own_leaf(p, s, map, syms);
                for (m = lead; m < s->n; m++) locs[m - lead] = map[p->stack_data[s->off + m]] + 1;  /* leaf first */
                values[0] = counts[touched[k]];
                values[1] = weights[touched[k]] * (uint64_t)p->interval_ns;
                spprof__pprof_sample(&b, locs, s->n - lead, values, 2, rec->name[0] ? rec->name : "thread", rec->tid);
                counts[touched[k]] = 0;
                weights[touched[k]] = 0;
            }
        }
        spprof__pprof_write(&b, o.f);
        oom = spprof__pprof_oom(&b);
    }
    spprof__unlock(&spprof__prof_lock);
    spprof__symbols_reset();
    SPPROF_FREE(map); SPPROF_FREE(syms); SPPROF_FREE(canon); SPPROF_FREE(first); SPPROF_FREE(touched);
    SPPROF_FREE(locs); SPPROF_FREE(counts); SPPROF_FREE(weights);
    spprof__pprof_free(&b);
    if (oom) {
        spprof__out_abort(&o);
        return spprof__fail(SPPROF_ERR_NO_MEMORY, "out of memory while writing '%s'", path);
    }
    return spprof__out_close(&o);
}

/* The memory profiler's pprof: one Sample per distinct stack, values [alloc_objects, alloc_space,
   inuse_objects, inuse_space] (counts and bytes, the unbiased estimates; Go's heap-profile convention), the
   session totals from spprof_mem_foreach_stack, what is live from the live samples. */
typedef struct spprof__mem_pp {
    spprof__idmap ids;              /* stack id -> row + 1 */
    uint64_t *rows;                 /* 4 values per row */
    uint32_t *off, *len;            /* each row's frames in `frames` */
    spprof_frame *frames;
    uint32_t nrows, cap, nframes, fcap;
    int oom;
} spprof__mem_pp;

static uint32_t spprof__mem_pp_row(spprof__mem_pp *m, uint32_t stack_id, const spprof_frame *f, int n) {
    int fresh;
    uint32_t id = spprof__idmap_get(&m->ids, stack_id, 0, &fresh);
    if (!id) {
        m->oom = 1;
        return UINT32_MAX;
    }
    if (!fresh) return id - 1;
    if (m->nrows == m->cap) {
        uint32_t nc = m->cap ? m->cap * 2 : 256;
        uint64_t *r = (uint64_t *)SPPROF_REALLOC(m->rows, (size_t)nc * 4 * sizeof(uint64_t));
        uint32_t *o2, *l2;
        if (r) m->rows = r;
        o2 = (uint32_t *)SPPROF_REALLOC(m->off, (size_t)nc * sizeof(uint32_t));
        if (o2) m->off = o2;
        l2 = (uint32_t *)SPPROF_REALLOC(m->len, (size_t)nc * sizeof(uint32_t));
        if (l2) m->len = l2;
        if (!r || !o2 || !l2) {
            m->oom = 1;
            return UINT32_MAX;
        }
        m->cap = nc;
    }
    if (n < 0) n = 0;
    if (m->nframes + (uint32_t)n > m->fcap) {
        uint32_t nc = m->fcap ? m->fcap : 1024;
        spprof_frame *q;
        while (nc < m->nframes + (uint32_t)n) nc *= 2;
        q = (spprof_frame *)SPPROF_REALLOC(m->frames, (size_t)nc * sizeof(spprof_frame));
        if (!q) {
            m->oom = 1;
            return UINT32_MAX;
        }
        m->frames = q;
        m->fcap = nc;
    }
    if (n) memcpy(m->frames + m->nframes, f, (size_t)n * sizeof(spprof_frame));
    m->off[m->nrows] = m->nframes;
    m->len[m->nrows] = (uint32_t)n;
    m->nframes += (uint32_t)n;
    memset(&m->rows[4 * (size_t)m->nrows], 0, 4 * sizeof(uint64_t));
    return m->nrows++;
}

static int spprof__mem_pp_stack(uint32_t id, const spprof_frame *f, int n, uint64_t samples, double b, double c, void *user) {
    spprof__mem_pp *m = (spprof__mem_pp *)user;
    uint32_t row = spprof__mem_pp_row(m, id, f, n);
    (void)samples;
    if (row == UINT32_MAX) return 1;
    m->rows[4 * (size_t)row + 0] += (uint64_t)(c + 0.5);
    m->rows[4 * (size_t)row + 1] += (uint64_t)(b + 0.5);
    return 0;
}

static int spprof__mem_pp_live(const spprof_mem_sample *s, void *user) {
    spprof__mem_pp *m = (spprof__mem_pp *)user;
    uint32_t row = spprof__mem_pp_row(m, s->stack_id, s->frames, s->nframes);
    if (row == UINT32_MAX) return 1;
    m->rows[4 * (size_t)row + 2] += (uint64_t)(s->est_count + 0.5);
    m->rows[4 * (size_t)row + 3] += (uint64_t)(s->est_bytes + 0.5);
    return 0;
}

SPPROF_API spprof_result spprof_mem_write_pprof(const char *path) {
    spprof__out o;
    spprof__pprof b;
    spprof__mem_pp m;
    spprof_mem_stats st;
    uint32_t locs[256], i;
    int k;
    spprof_result r;
    memset(&m, 0, sizeof m);
    if (spprof_mem_get_stats(&st) != SPPROF_OK || st.state == 0 || st.state == 3)
        return spprof__fail(SPPROF_ERR_NOT_STARTED, "spprof_mem_write_pprof: the memory profiler has no session (call spprof_mem_start() first)");
    r = spprof__out_open(&o, path);
    if (r != SPPROF_OK) return r;
    spprof_mem_enter();  /* the writer's own allocations are not sampled */
    r = spprof_mem_foreach_stack(spprof__mem_pp_stack, &m);
    if (r == SPPROF_OK) r = spprof_mem_foreach_sample(SPPROF_MEM_LIVE, spprof__mem_pp_live, &m);
    spprof__pprof_begin(&b);
    if (r == SPPROF_OK && !m.oom) {
        spprof__pprof_vtype(&b, 1, "alloc_objects", "count");
        spprof__pprof_vtype(&b, 1, "alloc_space", "bytes");
        spprof__pprof_vtype(&b, 1, "inuse_objects", "count");
        spprof__pprof_vtype(&b, 1, "inuse_space", "bytes");
        spprof__pprof_vtype(&b, 11, "space", "bytes");
        spprof__pb_int(&b.out, 12, st.sampling_rate);
        spprof__pb_int(&b.out, 9, spprof__wall_ns(spprof__now_ns()));
        spprof__pb_int(&b.out, 14, spprof__str(&b.str, "inuse_space"));
        spprof__pb_int(&b.out, 13, spprof__str(&b.str, "spprof " SPPROF_VERSION_STRING));
        for (i = 0; i < m.nrows; i++) {
            const spprof_frame *f = m.frames + m.off[i];
            int n = spprof__mem_trusted(f, (int)m.len[i] > 256 ? 256 : (int)m.len[i]);
            for (k = 0; k < n; k++) {  /* one Location per distinct frame */
                int fresh;
                uint32_t id = spprof__idmap_get(&b.locs, f[k].addr, ((uint64_t)f[k].kind << 32) | f[k].aux, &fresh);
                if (fresh) {
                    spprof_symbol y;
                    memset(&y, 0, sizeof y);
                    if (!spprof_resolve(&f[k], &y) && !y.name[0]) snprintf(y.name, sizeof y.name, "0x%llx", (unsigned long long)f[k].addr);
                    spprof__pprof_location(&b, id, &f[k], &y);
                }
                locs[k] = id;
            }
            spprof__pprof_sample(&b, locs, (uint32_t)n, &m.rows[4 * (size_t)i], 4, NULL, 0);
        }
        spprof__pprof_write(&b, o.f);
    }
    spprof__symbols_reset();
    spprof_mem_leave();
    if (r == SPPROF_OK && (m.oom || spprof__pprof_oom(&b))) r = spprof__fail(SPPROF_ERR_NO_MEMORY, "out of memory while writing '%s'", path);
    spprof__pprof_free(&b);
    SPPROF_FREE(m.ids.keys); SPPROF_FREE(m.ids.ids); SPPROF_FREE(m.rows); SPPROF_FREE(m.off); SPPROF_FREE(m.len);
    SPPROF_FREE(m.frames);
    if (r != SPPROF_OK) {
        spprof__out_abort(&o);
        return r;
    }
    return spprof__out_close(&o);
}

/* ==== @memprof ========================================================================================
   Sampling memory profiler. Paths, and what each may do:
   - allocation fast path (every malloc/PyMem call): thread-local `left -= size` and a branch on a session
     number. Thread-local state is initial-exec TLS (no __tls_get_addr, which may malloc on a thread's first
     access to a dlopen'ed object's TLS).
   - allocation slow path (about once per sampling_rate bytes): draw the next exponential threshold, walk the
     stack, intern it (lock-free table), insert into the heap map (lock-free). Re-entrancy guard set; memory
     only from mmap; bounded loops.
   - free: counting-bloom-filter test (2 counters in one cache line); only if both are non-zero, a bounded
     probe of the heap map.
   Ordering argument for the heap map: the free hook removes a pointer before the real free(), the malloc hook
   inserts after the real malloc() returned. The allocator orders free(p) before any later malloc() returning
   p, so a removal and a later insert of one address never overlap. "Death during birth" (a free of p while p's
   insert is still in progress, possible only with a custom allocator that publishes p before
   spprof_mem_record_alloc returns) is handled: the free marks the reserved key, the insert sees it and logs a
   freed sample of lifetime 0. A free that was missed (memory released inside libc, which is not hooked)
   leaves a stale entry; when the address is sampled again the stale entry is logged as freed (counted). */
#ifndef SPPROF_MEM_MAX_PROBE
#  define SPPROF_MEM_MAX_PROBE 128   /* bound on stack-table probes */
#endif
/* The bloom filter has heap_map_capacity / 4 counters (64 KiB by default): small enough to stay in cache,
   which is what a free of an unsampled pointer pays for. */
#if defined(__GNUC__) || defined(__clang__)
#  define SPPROF__TLS_IE __attribute__((tls_model("initial-exec")))
#  define SPPROF__LIKELY(x) __builtin_expect(!!(x), 1)
#  define SPPROF__NOINLINE __attribute__((noinline))
#  define SPPROF__HOT static inline __attribute__((always_inline))
#else
#  define SPPROF__HOT static inline
#  define SPPROF__TLS_IE
#  define SPPROF__LIKELY(x) (x)
#  define SPPROF__NOINLINE
#endif

#define SPPROF__MEM_EMPTY 0u
#define SPPROF__MEM_TOMB 1u
#define SPPROF__MEM_BIRTH 2u   /* low bits of a key: being inserted */
#define SPPROF__MEM_DIED 4u    /* ... and freed meanwhile */
#define SPPROF__MEM_NOSTACK 0xffffffffu

typedef struct spprof__mem_tls {
    int64_t left;        /* bytes until the next sample */
    uint32_t sess;       /* session the threshold was drawn for */
    int busy;            /* re-entrancy depth */
    uint64_t rng;
    uintptr_t stack_lo, stack_hi;
} spprof__mem_tls;
static __thread spprof__mem_tls spprof__mt SPPROF__TLS_IE;

typedef struct spprof__mem_entry { uint64_t key, size, t_alloc; uint32_t stack; int32_t tid; } spprof__mem_entry;
/* A copy of a heap-map entry that another thread may be filling or freeing: each field is read with a relaxed
   atomic load (the writers store them atomically too), so a reader sees whole fields, never torn ones; the
   reader decides from the key it reads before and after whether the copy is one entry's (seqlock style). */
/* Clears a table that hooks of the previous session may still be reading (atomically): word by word with
   relaxed atomic stores, so that each reader sees a whole old word or a zero, never a torn one (memset is not
   atomic). The tables are whole pages and all their structs are multiples of 8 bytes. */
static void spprof__mem_zero(void *p, size_t bytes) {
    uint64_t *w = (uint64_t *)p;
    size_t i;
    for (i = 0; i < bytes / 8; i++) __atomic_store_n(&w[i], (uint64_t)0, __ATOMIC_RELAXED);
}

static void spprof__mem_entry_load(const spprof__mem_entry *src, spprof__mem_entry *dst) {
    dst->key = __atomic_load_n(&src->key, __ATOMIC_ACQUIRE);
    dst->size = __atomic_load_n(&src->size, __ATOMIC_RELAXED);
    dst->t_alloc = __atomic_load_n(&src->t_alloc, __ATOMIC_RELAXED);
    dst->stack = __atomic_load_n(&src->stack, __ATOMIC_RELAXED);
    dst->tid = __atomic_load_n(&src->tid, __ATOMIC_RELAXED);
}
typedef struct spprof__mem_freed { uint64_t addr, size, t_alloc, t_free; uint32_t stack; int32_t tid; } spprof__mem_freed;
typedef struct spprof__mem_stack {
    uint64_t hash;       /* 0: empty; set first (claims the slot) */
    uint32_t off;        /* frames in the pool */
    uint16_t n;
    uint16_t ready;      /* 1: off/n published */
    uint64_t samples, est_bytes, est_count_fx;  /* session totals; count in 1/1024 */
} spprof__mem_stack;

/* The tables as the hooks see them, published as one unit by one atomic pointer store: a hook loads the
   pointer once and uses that table with its own mask or capacity, even when a new session changed the sizes
   meanwhile (separate stores let a late free index an old table with a new mask). Immutable once published
   and never unmapped, like the tables themselves; a session that keeps every table reuses it. */
typedef struct spprof__mem_tabs {
    spprof__mem_entry *map;    uint32_t map_mask;
    spprof__mem_stack *stacks; uint32_t stacks_mask;
    spprof_frame *pool;        uint32_t pool_cap;
    spprof__mem_freed *freed;  uint32_t freed_cap;
    uint8_t *bloom;            uint32_t bloom_mask;
} spprof__mem_tabs;
/* What another copy of spprof.h must share to test this copy's free filter (spprof_mem_api.tabs_layout):
   the struct's layout and the filter's hash and indexing (SPPROF__MEM_FILTER_REV: change it with them). */
#define SPPROF__MEM_FILTER_REV 1u
#define SPPROF__MEM_TABS_LAYOUT ((SPPROF__MEM_FILTER_REV << 16) | ((unsigned)sizeof(spprof__mem_tabs) << 8) | \
                                 (unsigned)offsetof(spprof__mem_tabs, bloom))

typedef struct spprof__mem_state {
    int state;                 /* as spprof_mem_stats.state */
    uint32_t sess;             /* 0 unless sampling: the fast path's only global read */
    spprof_mem_config cfg;
    spprof_mem_walk_fn walker;
    void *walker_user;
    spprof__mem_tabs *tabs;    /* atomic: what the hooks use; NULL after shutdown (frees stop there) */
    spprof__mem_tabs *tabs_last;  /* the last one published (reused while no table changes) */
    /* the same tables for the API (under spprof__mem_lock) */
    spprof__mem_entry *map;    uint32_t map_mask; uint32_t map_used, map_live;
    uint8_t *bloom;            /* counting bloom filter of the pointers in the map; NULL: off */
    uint32_t bloom_mask;       /* counters - 1 */
    spprof__mem_stack *stacks; uint32_t stacks_mask;
    spprof_frame *pool;        uint32_t pool_cap, pool_used;
    spprof__mem_freed *freed;  uint32_t freed_cap, freed_n;
    uint64_t samples, frees_seen, collisions, dropped_map, dropped_stacks, freed_dropped, stale, ddb;
    uint64_t footprint, got_patched;
    /* The sampled heap's size (estimated bytes, each sample's rounded) and its high-water mark with the time it
       was reached: kept by the hooks, one atomic add per sampled allocation or free plus a compare-and-swap
       when the mark moves. Peak and time are two stores: with samples racing on several threads, the time can
       be that of a mark a few bytes lower (microseconds apart). */
    int64_t live_est;
    uint64_t peak_est, peak_t;
    uint64_t fp_walks, fp_rooted, fp_broken;  /* native walks of samples, by how they ended */
    int forked;  /* 1: forked from a process with a session, none started here yet (error messages) */
} spprof__mem_state;
static spprof__mem_state spprof__m;
static spprof__mutex spprof__mem_lock = SPPROF__MUTEX_INIT;  /* API calls only, never the hooks */

/* -- small math without libm: ln for thresholds, exp for weights (relative error < 1e-7) -- */
static double spprof__ln(double x) {  /* x > 0 */
    union { double d; uint64_t u; } v;
    double m, s, s2;
    int e;
    v.d = x;
    e = (int)((v.u >> 52) & 0x7ff) - 1023;
    v.u = (v.u & 0x000fffffffffffffull) | 0x3ff0000000000000ull;  /* mantissa in [1, 2) */
    m = v.d;
    if (m > 1.41421356237) { m *= 0.5; e++; }
    s = (m - 1) / (m + 1); s2 = s * s;
    return e * 0.69314718055994531 + 2 * s * (1 + s2 * (1.0 / 3 + s2 * (1.0 / 5 + s2 * (1.0 / 7 + s2 * (1.0 / 9 + s2 / 11)))));
}
static double spprof__exp_neg(double x) {  /* exp(-x), x >= 0 */
    double r, t = 1, sum = 1;
    int k, i;
    if (x > 700) return 0;
    k = (int)(x / 0.69314718055994531);
    r = x - k * 0.69314718055994531;       /* exp(-x) = exp(-r) / 2^k, 0 <= r < ln 2 */
    for (i = 1; i < 16; i++) { t *= -r / i; sum += t; }
    while (k-- > 0) sum *= 0.5;
    return sum;
}
/* Probability that an allocation of `size` is sampled, and its weight 1/p (tcmalloc's unbiased estimator). */
static double spprof__mem_inv_p(uint64_t size, uint64_t rate) {
    double x = (double)size / (double)rate;
    if (rate <= 1) return 1;
    if (x < 1e-5) return 1 / x + 0.5;     /* 1 / (1 - exp(-x)) ~ 1/x + 1/2 */
    return 1 / (1 - spprof__exp_neg(x));
}
static uint64_t spprof__mem_rand(spprof__mem_tls *t) {  /* xorshift64* */
    t->rng ^= t->rng >> 12; t->rng ^= t->rng << 25; t->rng ^= t->rng >> 27;
    return t->rng * 0x2545F4914F6CDD1Dull;
}
static int64_t spprof__mem_draw(spprof__mem_tls *t, uint64_t rate) {  /* exponential, mean rate */
    double u = ((double)(spprof__mem_rand(t) >> 11) + 1) * (1.0 / 9007199254740993.0);  /* (0, 1] */
    double d;
    if (rate <= 1) return 0;
    d = -spprof__ln(u) * (double)rate;
    return d < 1 ? 1 : d > 9e18 ? (int64_t)9e18 : (int64_t)d;
}

/* The tables' mappings, for footprint_resident_bytes (none is ever unmapped). Mapped under spprof__mem_lock,
   the GOT patch list under its own lock: a slot is claimed atomically and published by its pointer, stored
   last; a reader skips a slot whose pointer is not there yet. Past 32 mappings the rest are not measured. */
#define SPPROF__MEM_REGIONS 32
static struct { const void *p; size_t n; } spprof__mem_regions[SPPROF__MEM_REGIONS];
static uint32_t spprof__mem_nregions;
static void *spprof__mem_map_pages(size_t bytes) {
    void *p = spprof__os_map_pages(bytes);
    uint32_t k;
    if (!p) return p;
    SPPROF__ADD(&spprof__m.footprint, bytes);
    k = __atomic_fetch_add(&spprof__mem_nregions, 1u, __ATOMIC_RELAXED);
    if (k < SPPROF__MEM_REGIONS) {
        spprof__mem_regions[k].n = bytes;
        __atomic_store_n(&spprof__mem_regions[k].p, (const void *)p, __ATOMIC_RELEASE);
    }
    return p;
}
static uint64_t spprof__mem_resident(void) {
    uint32_t i, n = __atomic_load_n(&spprof__mem_nregions, __ATOMIC_RELAXED);
    uint64_t r = 0;
    for (i = 0; i < n && i < SPPROF__MEM_REGIONS; i++) {
        const void *p = __atomic_load_n(&spprof__mem_regions[i].p, __ATOMIC_ACQUIRE);
        if (p) r += spprof__os_resident(p, spprof__mem_regions[i].n);
    }
    return r;
}

/* Fibonacci hashing of the pointer: one multiply; the high half is well mixed (every bit of p reaches it) and
   is what the map and the filter index with. The low bits of p, zero for allocations (16-aligned), only
   shift what reaches the high half, so p is not shifted first (one instruction less on every free). */
SPPROF__HOT uint64_t spprof__mem_hash(uint64_t p) { return p * 0x9E3779B97F4A7C15ull; }

/* Counting bloom filter over the pointers in the heap map: a pointer's two 8-bit counters (in one cache line)
   go up when it is inserted and down when it leaves, so a freed sample stops costing anything. (A filter of
   bits cannot forget: pymalloc hands a freed address out again at once, and every later free of that address
   went to the slow path; that made the hooks cost 50 % on an object-churning loop.) A counter that reaches
   250 sticks at 255 (never decremented again): only a false positive, counted in bloom_saturated. */
SPPROF__HOT void spprof__bloom_idx(const spprof__mem_tabs *t, uint64_t h, uint32_t *i, uint32_t *j) {
    *i = (uint32_t)(h >> 32) & t->bloom_mask;
    *j = (*i & ~63u) | ((uint32_t)(h >> 26) & 63u);
    if (*j == *i) *j ^= 1;
}
static void spprof__bloom_add(const spprof__mem_tabs *t, uint64_t h, int up) {
    uint8_t *b = t->bloom;
    uint32_t k[2];
    int n;
    spprof__bloom_idx(t, h, &k[0], &k[1]);
    for (n = 0; n < 2; n++) {
        uint8_t v = SPPROF__LOADR(&b[k[n]]);
        if (v == 255) continue;  /* stuck */
        if (up) {
            if (v >= 250) SPPROF__STORER(&b[k[n]], (uint8_t)255);
            else __atomic_fetch_add(&b[k[n]], (uint8_t)1, __ATOMIC_RELAXED);
        } else if (v > 0) {
            __atomic_fetch_sub(&b[k[n]], (uint8_t)1, __ATOMIC_RELAXED);
        }
    }
}
/* The first counter alone answers most frees (a sparse filter: few live samples): its index is a shift and a
   mask of the hash; the second index is computed only when the first counter is set. */
SPPROF__HOT int spprof__bloom_test(const spprof__mem_tabs *t, uint64_t h) {
    const uint8_t *b = t->bloom;
    uint32_t i, j;
    if (SPPROF__LIKELY(!SPPROF__LOADR(&b[(uint32_t)(h >> 32) & t->bloom_mask]))) return 0;
    spprof__bloom_idx(t, h, &i, &j);
    return SPPROF__LOADR(&b[j]) != 0;
}

/* Interns frames[0, n); returns the stack id or SPPROF__MEM_NOSTACK. Lock-free: a slot is claimed by CAS on
   its hash, then filled and published (ready). A reader that meets a claimed, unpublished slot with its hash
   keeps probing and may intern a duplicate: harmless (same frames, two ids). */
static uint32_t spprof__mem_intern(const spprof__mem_tabs *t, const spprof_frame *f, int n) {
    uint64_t h = 0x84222325cbf29ce4ull;
    uint32_t i, k;
    int j;
    for (j = 0; j < n; j++) h = spprof__mix(spprof__mix(h, f[j].addr), ((uint64_t)f[j].kind << 32) | f[j].aux);
    h |= 1;
    for (k = 0, i = (uint32_t)h & t->stacks_mask; k < SPPROF_MEM_MAX_PROBE; k++, i = (i + 1) & t->stacks_mask) {
        spprof__mem_stack *s = &t->stacks[i];
        uint64_t cur = SPPROF__LOAD(&s->hash), zero = 0;
        if (cur == h) {
            if (SPPROF__LOAD(&s->ready) == 1 && s->n == n && !memcmp(&t->pool[s->off], f, (size_t)n * sizeof *f)) return i;
            continue;
        }
        if (cur != 0) continue;
        if (__atomic_compare_exchange_n(&s->hash, &zero, h, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            uint32_t off = SPPROF__ADD(&spprof__m.pool_used, (uint32_t)n);
            if ((uint64_t)off + (uint64_t)n > t->pool_cap) { SPPROF__STORE(&s->ready, (uint16_t)2); return SPPROF__MEM_NOSTACK; }
            memcpy(&t->pool[off], f, (size_t)n * sizeof *f);
            s->off = off; s->n = (uint16_t)n;
            SPPROF__STORE(&s->ready, (uint16_t)1);
            return i;
        }
        if (SPPROF__LOAD(&s->hash) == h) k--, i = (i - 1) & t->stacks_mask;  /* lost the race to the same stack: look again */
    }
    return SPPROF__MEM_NOSTACK;
}

static void spprof__mem_log_freed(const spprof__mem_tabs *t, const spprof__mem_entry *e, uint64_t addr, uint64_t t_free) {
    uint32_t i = SPPROF__ADD(&spprof__m.freed_n, 1u);
    spprof__mem_freed *r;
    SPPROF__ADD(&spprof__m.frees_seen, 1);
    if (i >= t->freed_cap) { SPPROF__ADD(&spprof__m.freed_dropped, 1); SPPROF__STORER(&spprof__m.freed_n, t->freed_cap); return; }
    r = &t->freed[i];
    r->size = e->size; r->t_alloc = e->t_alloc; r->stack = e->stack; r->tid = e->tid; r->t_free = t_free;
    SPPROF__STORE(&r->addr, addr);  /* published last: readers skip records with addr 0 */
}

/* [hook] Frame-pointer walk of the calling thread from frame address fp, inside its own stack mapping (found
   once per thread from /proc/self/maps with open/read). Reads stay in that mapping, so a chain broken by code
   without frame pointers ends the walk instead of faulting. Return addresses are not checked against the
   loaded code: the sampler's table of it is freed at its stop, which does not wait for allocation hooks. */
/* *end says how the walk ended (frame-pointer health, spprof_mem_stats.native_walks*): at a root (the
   outermost frame, whose saved frame pointer is 0), at max frames, or broken (a frame without a frame pointer,
   a pointer out of the stack: the callers above are missing). */
enum { SPPROF__MEM_END_BROKEN = 0, SPPROF__MEM_END_ROOT = 1, SPPROF__MEM_END_DEPTH = 2 };
static int spprof__mem_walk_fp(spprof_frame *frames, int max, void *fp_, int *end) {
    spprof__mem_tls *t = &spprof__mt;
    uintptr_t fp = (uintptr_t)fp_;
    int n, i, root = 0;
    *end = SPPROF__MEM_END_BROKEN;
    if (!t->stack_hi || fp < t->stack_lo || fp >= t->stack_hi) {
        uintptr_t lo, hi;
        if (!spprof__own_stack(fp, &lo, &hi)) return 0;
        t->stack_lo = lo; t->stack_hi = hi;
    }
    n = spprof__fp_chain(fp, t->stack_lo, t->stack_hi, 0, frames, 0, max, &root);
    /* A saved "frame pointer" that code without frame pointers left in the register can still point into
       the stack, and the word above it is then data: a "return address" inside the stack itself is one (the
       stack is not executable), and the walk ends before it. */
    for (i = 0; i < n; i++)
        if (frames[i].addr >= t->stack_lo && frames[i].addr < t->stack_hi) break;
    if (i == n) *end = root ? SPPROF__MEM_END_ROOT : n >= max ? SPPROF__MEM_END_DEPTH : SPPROF__MEM_END_BROKEN;
    return i;
}
/* [hook] Counts one sample's native walk by how it ended. */
static void spprof__mem_fp_count(int end) {
    SPPROF__ADD(&spprof__m.fp_walks, 1);
    if (end == SPPROF__MEM_END_ROOT) SPPROF__ADD(&spprof__m.fp_rooted, 1);
    else if (end == SPPROF__MEM_END_BROKEN) SPPROF__ADD(&spprof__m.fp_broken, 1);
}
static int spprof__mem_walk_native(spprof_frame *frames, int max, void *fp, void *user) {
    int end, n = spprof__mem_walk_fp(frames, max, fp, &end);
    (void)user;
    spprof__mem_fp_count(end);
    return n;
}

/* The heap map is open addressing within a window: p lives in one of the SPPROF_MEM_WINDOW slots from its
   home slot. A free leaves a tombstone, which any later insert in that window may take; lookups scan the
   whole window and never stop at an empty slot, so tombstones need no clean-up (linear probing whose lookups
   stop at empty slots needs tombstones to keep chains intact, and then fills up with them under churn). The
   scan is 64 x 32 bytes, paid only for sampled allocations and for frees that pass the bloom filter. New
   samples are refused (counted) once half of the slots are live (at that load a full window is vanishingly
   rare; at 61 % load, 1 insert in 160000 found none). */
#ifndef SPPROF_MEM_WINDOW
#  define SPPROF_MEM_WINDOW 64
#endif
/* The estimated bytes one sample of `size` stands for, rounded as live_est counts them. */
static int64_t spprof__mem_est(uint64_t size) {
    return (int64_t)(spprof__mem_inv_p(size, spprof__m.cfg.sampling_rate) * (double)size + 0.5);
}
/* [hook] A sample joined the heap map at time now: the size grows, and the high-water mark with it. */
static void spprof__mem_live_add(int64_t est, uint64_t now) {
    int64_t live = SPPROF__ADD(&spprof__m.live_est, est) + est;
    uint64_t peak = SPPROF__LOADR(&spprof__m.peak_est);
    while (live > 0 && (uint64_t)live > peak) {  /* bounded: each failed CAS means the mark rose meanwhile */
        if (__atomic_compare_exchange_n(&spprof__m.peak_est, &peak, (uint64_t)live, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            SPPROF__STORER(&spprof__m.peak_t, now);
            break;
        }
    }
}

static int spprof__mem_insert(const spprof__mem_tabs *t, uint64_t p, uint64_t size, uint32_t stack, int tid) {
    uint32_t i, k, home, taken = UINT32_MAX;
    uint64_t h = spprof__mem_hash(p), birth = p | SPPROF__MEM_BIRTH, now;
    spprof__mem_entry *e;
    if (SPPROF__LOADR(&spprof__m.map_live) >= (t->map_mask + 1) / 2) return 0;
    home = (uint32_t)(h >> 32) & t->map_mask;
    /* One pass over the window: retire a stale entry of p (allocated again, so its free was missed), and take
       the first free slot. */
    for (k = 0; k < SPPROF_MEM_WINDOW; k++) {
        uint64_t cur;
        i = (home + k) & t->map_mask;
        e = &t->map[i];
        cur = SPPROF__LOAD(&e->key);
        if (cur == p) {
            spprof__mem_entry copy;
            spprof__mem_entry_load(e, &copy);
            if (__atomic_compare_exchange_n(&e->key, &cur, SPPROF__MEM_TOMB, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
                SPPROF__SUB(&spprof__m.map_live, 1u);
                SPPROF__SUB(&spprof__m.live_est, spprof__mem_est(copy.size));
                SPPROF__ADD(&spprof__m.stale, 1);
                spprof__bloom_add(t, h, 0);
                spprof__mem_log_freed(t, &copy, p, spprof__now_ns());
                cur = SPPROF__MEM_TOMB;
            }
        }
        if (taken == UINT32_MAX && (cur == SPPROF__MEM_EMPTY || cur == SPPROF__MEM_TOMB) &&
            __atomic_compare_exchange_n(&e->key, &cur, birth, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            taken = i;
            if (cur == SPPROF__MEM_EMPTY) SPPROF__ADD(&spprof__m.map_used, 1u);
            if (k) SPPROF__ADD(&spprof__m.collisions, k);
        }
    }
    if (taken == UINT32_MAX) return 0;
    e = &t->map[taken];
    now = spprof__now_ns();
    __atomic_store_n(&e->size, size, __ATOMIC_RELAXED);
    __atomic_store_n(&e->t_alloc, now, __ATOMIC_RELAXED);
    __atomic_store_n(&e->stack, stack, __ATOMIC_RELAXED);
    __atomic_store_n(&e->tid, tid, __ATOMIC_RELAXED);
    spprof__bloom_add(t, h, 1);
    if (__atomic_compare_exchange_n(&e->key, &birth, p, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
        SPPROF__ADD(&spprof__m.map_live, 1u);
        spprof__mem_live_add(spprof__mem_est(size), now);
    } else {
        /* died during birth: the free marked the key; log it with lifetime 0 and release the slot */
        spprof__mem_entry copy;
        spprof__mem_entry_load(e, &copy);
        SPPROF__ADD(&spprof__m.ddb, 1);
        spprof__mem_log_freed(t, &copy, p, copy.t_alloc);
        SPPROF__STORE(&e->key, (uint64_t)SPPROF__MEM_TOMB);
        spprof__bloom_add(t, h, 0);
    }
    return 1;
}

SPPROF__NOINLINE static void spprof__mem_take(spprof__mem_tls *t, void *ptr, size_t size, void *fp);
SPPROF__NOINLINE static void spprof__mem_sample(spprof__mem_tls *t, void *ptr, size_t size, void *fp) {
    uint32_t sess = SPPROF__LOADR(&spprof__m.sess);
    if (t->sess != sess || !t->rng) {  /* first allocation of this thread in this session */
        if (!t->rng) t->rng = (spprof__m.cfg.seed ? spprof__m.cfg.seed : spprof__now_ns()) ^ ((uint64_t)(uintptr_t)t << 16) ^ (uint64_t)spprof_gettid();
        if (!t->rng) t->rng = 1;
        t->sess = sess;
        if (!sess) { t->left = INT64_MAX; return; }   /* not sampling: the fast path ends up here again */
        t->left = spprof__mem_draw(t, spprof__m.cfg.sampling_rate) - (int64_t)size;
        if (t->left > 0) return;
    }
    if (!sess) { t->left = INT64_MAX; return; }
    /* One sample, however many thresholds the allocation crossed; the next threshold counts from its end
       (memoryless, so the process over the bytes stays Poisson). */
    t->left = spprof__mem_draw(t, spprof__m.cfg.sampling_rate);
    spprof__mem_take(t, ptr, size, fp);
}

/* [hook] ptr (size bytes) into the heap map as one sample, with the walker's stack from fp. */
SPPROF__NOINLINE static void spprof__mem_take(spprof__mem_tls *t, void *ptr, size_t size, void *fp) {
    const spprof__mem_tabs *tab;
    spprof_frame frames[256];
    int n;
    uint32_t stack;
    double w;
    if (t->busy || !ptr) return;   /* the profiler's own allocation, or one inside another hook */
    tab = (const spprof__mem_tabs *)SPPROF__LOAD(&spprof__m.tabs);  /* once: one session's tables throughout */
    if (!tab) return;
    t->busy++;
    n = spprof__m.walker ? spprof__m.walker(frames, spprof__m.cfg.max_depth, fp, spprof__m.walker_user) : 0;
    if (n < 0) n = 0;
    stack = spprof__mem_intern(tab, frames, n);
    if (stack == SPPROF__MEM_NOSTACK) SPPROF__ADD(&spprof__m.dropped_stacks, 1);
    w = spprof__mem_inv_p(size, spprof__m.cfg.sampling_rate);
    if (stack != SPPROF__MEM_NOSTACK) {
        SPPROF__ADD(&tab->stacks[stack].samples, 1);
        SPPROF__ADD(&tab->stacks[stack].est_bytes, (uint64_t)(w * (double)size + 0.5));
        SPPROF__ADD(&tab->stacks[stack].est_count_fx, (uint64_t)(w * 1024 + 0.5));
    }
    SPPROF__ADD(&spprof__m.samples, 1);
    if (!spprof__mem_insert(tab, (uint64_t)(uintptr_t)ptr, size, stack, spprof_gettid())) SPPROF__ADD(&spprof__m.dropped_map, 1);
    t->busy--;
}

/* The allocation fast path. */
SPPROF__HOT void spprof__mem_on_alloc(void *ptr, size_t size, void *fp) {
    spprof__mem_tls *t = &spprof__mt;
    /* busy: the bytes of a nested call (malloc under PyMem_Malloc) were counted by the outer hook */
    if (SPPROF__LIKELY(t->busy || (t->sess == SPPROF__LOADR(&spprof__m.sess) && (t->left -= (int64_t)size) > 0))) return;
    spprof__mem_sample(t, ptr, size, fp);
}

SPPROF__NOINLINE static void spprof__mem_free_slow(const spprof__mem_tabs *t, uint64_t p, uint64_t h) {
    uint32_t i, k, home = (uint32_t)(h >> 32) & t->map_mask;
    for (k = 0; k < SPPROF_MEM_WINDOW; k++) {
        spprof__mem_entry *e;
        uint64_t cur;
        i = (home + k) & t->map_mask;
        e = &t->map[i];
        cur = SPPROF__LOAD(&e->key);
        if (cur == p) {
            spprof__mem_entry copy;   /* the slot is p's until the CAS below */
            spprof__mem_entry_load(e, &copy);
            if (__atomic_compare_exchange_n(&e->key, &cur, SPPROF__MEM_TOMB, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
                SPPROF__SUB(&spprof__m.map_live, 1u);
                SPPROF__SUB(&spprof__m.live_est, spprof__mem_est(copy.size));
                if (k) SPPROF__ADD(&spprof__m.collisions, k);
                spprof__bloom_add(t, h, 0);
                spprof__mem_log_freed(t, &copy, p, spprof__now_ns());
            }
            return;
        }
        if (cur == (p | SPPROF__MEM_BIRTH)) {  /* freed while its insert runs: tell the inserter */
            __atomic_compare_exchange_n(&e->key, &cur, p | SPPROF__MEM_DIED, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
            return;
        }
    }
}

/* The free fast path: two bits of the bloom filter. */
SPPROF__HOT void spprof__mem_on_free(void *ptr) {
    const spprof__mem_tabs *t = (const spprof__mem_tabs *)SPPROF__LOAD(&spprof__m.tabs);
    uint64_t h;
    if (!ptr || !t || spprof__mt.busy) return;  /* busy: the outer hook handled this pointer */
    h = spprof__mem_hash((uint64_t)(uintptr_t)ptr);
    if (SPPROF__LIKELY(!spprof__bloom_test(t, h))) return;
    spprof__mem_free_slow(t, (uint64_t)(uintptr_t)ptr, h);
}


/* noinline: the walk starts at this function's frame, so the first frame is its caller's call site. That frame
   must still exist during the walk: the empty asm after the call keeps the call out of tail position (a sibling
   call would pop the frame first and the callee's own frame reuse its memory; on aarch64 the frame record then
   holds the callee's locals, and the walk reads them as the chain: seen as truncated walks under qemu). */
#define SPPROF__NO_TAIL_CALL() __asm__ __volatile__("")
SPPROF__NOINLINE SPPROF_API void spprof_mem_record_alloc(void *ptr, size_t size) {
    spprof__mem_on_alloc(ptr, size, __builtin_frame_address(0));
    SPPROF__NO_TAIL_CALL();
}
SPPROF_API void spprof_mem_record_free(void *ptr) { spprof__mem_on_free(ptr); }
SPPROF__NOINLINE SPPROF_API void spprof_mem_record_sample(void *ptr, size_t size) {
    if (SPPROF__LOADR(&spprof__m.sess)) spprof__mem_take(&spprof__mt, ptr, size, __builtin_frame_address(0));
    SPPROF__NO_TAIL_CALL();
}
SPPROF_API void spprof_mem_enter(void) { spprof__mt.busy++; }
SPPROF_API void spprof_mem_leave(void) { spprof__mt.busy--; }

#if SPPROF__OS_LINUX
/* -- native hooks: the malloc family of loaded objects, through their GOT ----------------------------------
   Every object's relocations (DT_JMPREL and DT_RELA) are scanned for JUMP_SLOT/GLOB_DAT entries of malloc,
   calloc, realloc, free, posix_memalign, aligned_alloc, memalign, valloc, pvalloc and dlopen; each such GOT
   entry is pointed at a hook that calls the process's real function (dlsym(RTLD_DEFAULT) at start, i.e. what
   the entry would have been bound to) and records. An entry that holds something else (an object bound to a
   different allocator) is left alone. The dlopen hook patches objects loaded later. Not patched: ld.so, libc
   (its internal allocations are direct calls anyway), the vDSO, sanitizer runtimes. A RELRO page is made
   writable for the write and read-only again. spprof_mem_shutdown puts the saved values back. */
typedef struct spprof__mem_real {
    void *(*malloc_)(size_t);
    void *(*calloc_)(size_t, size_t);
    void *(*realloc_)(void *, size_t);
    void (*free_)(void *);
    int (*posix_memalign_)(void **, size_t, size_t);
    void *(*aligned_alloc_)(size_t, size_t);
    void *(*memalign_)(size_t, size_t);
    void *(*valloc_)(size_t);
    void *(*pvalloc_)(size_t);
    void *(*dlopen_)(const char *, int);
} spprof__mem_real;
static spprof__mem_real spprof__mr;

/* The malloc family's wrappers, written once and defined twice: here as GOT hooks (static, calling what
   dlsym found), and in the LD_PRELOAD library as malloc & co. themselves (calling glibc's __libc_*).
   LINK: linkage; NAME(x): the wrapper's name; REAL(x): the function it wraps. A realloc takes the old
   pointer out first: once realloc returns, that address may already be someone else's. */
#define SPPROF__MEM_ALLOCATED(p, n) do { if (p) spprof__mem_on_alloc((p), (n), __builtin_frame_address(0)); } while (0)
#define SPPROF__MEM_WRAPPERS(LINK, NAME, REAL)                                                                      \
    LINK void *NAME(malloc)(size_t n) { void *p = REAL(malloc)(n); SPPROF__MEM_ALLOCATED(p, n); return p; }           \
    LINK void *NAME(calloc)(size_t a, size_t b) { void *p = REAL(calloc)(a, b); SPPROF__MEM_ALLOCATED(p, a * b); return p; } \
    LINK void *NAME(realloc)(void *old, size_t n) {                                                               \
        void *p;                                                                                                  \
        if (old) spprof__mem_on_free(old);                                                                        \
        p = REAL(realloc)(old, n);                                                                                \
        SPPROF__MEM_ALLOCATED(p, n);                                                                              \
        return p;                                                                                                 \
    }                                                                                                             \
    LINK void NAME(free)(void *p) { spprof__mem_on_free(p); REAL(free)(p); }                                      \
    LINK void *NAME(memalign)(size_t al, size_t n) { void *p = REAL(memalign)(al, n); SPPROF__MEM_ALLOCATED(p, n); return p; } \
    LINK void *NAME(valloc)(size_t n) { void *p = REAL(valloc)(n); SPPROF__MEM_ALLOCATED(p, n); return p; }           \
    LINK void *NAME(pvalloc)(size_t n) { void *p = REAL(pvalloc)(n); SPPROF__MEM_ALLOCATED(p, n); return p; }
#define SPPROF__H_NAME(x) spprof__h_##x
#define SPPROF__MR_REAL(x) spprof__mr.x##_
SPPROF__MEM_WRAPPERS(static, SPPROF__H_NAME, SPPROF__MR_REAL)
static int spprof__h_posix_memalign(void **out, size_t al, size_t n) {
    int r = spprof__mr.posix_memalign_(out, al, n);
    if (!r) SPPROF__MEM_ALLOCATED(*out, n);
    return r;
}
static void *spprof__h_aligned_alloc(size_t al, size_t n) { void *p = spprof__mr.aligned_alloc_(al, n); SPPROF__MEM_ALLOCATED(p, n); return p; }
static void spprof__mem_patch_all(void);
static void *spprof__h_dlopen(const char *file, int flags) {
    void *h = spprof__mr.dlopen_(file, flags);
    if (h && SPPROF__LOAD(&spprof__m.state) != 0 && SPPROF__LOAD(&spprof__m.state) != 3) spprof__mem_patch_all();
    return h;
}

typedef struct spprof__mem_fn { const char *name; void **real; void *hook; } spprof__mem_fn;
#define SPPROF__MEM_NFN 10
static spprof__mem_fn spprof__mem_fns[SPPROF__MEM_NFN];
typedef struct spprof__mem_patch { void **slot; void *orig; int fn, ro; } spprof__mem_patch;
static spprof__mem_patch *spprof__mem_patches;  /* mmap'ed, 4096 entries */
static uint32_t spprof__mem_npatches;
static spprof__mutex spprof__mem_patch_lock = SPPROF__MUTEX_INIT;

static int spprof__mem_resolve_real(void) {
    static const char *names[SPPROF__MEM_NFN] = {"malloc", "calloc", "realloc", "free", "posix_memalign",
                                                 "aligned_alloc", "memalign", "valloc", "pvalloc", "dlopen"};
    typedef void (*spprof__anyfn)(void);
    spprof__anyfn fns[SPPROF__MEM_NFN];
    void **reals[SPPROF__MEM_NFN];
    void *hooks[SPPROF__MEM_NFN];
    int i;
    if (spprof__mr.malloc_) return 1;  /* resolved by an earlier session */
    fns[0] = (spprof__anyfn)spprof__h_malloc; fns[1] = (spprof__anyfn)spprof__h_calloc; fns[2] = (spprof__anyfn)spprof__h_realloc;
    fns[3] = (spprof__anyfn)spprof__h_free; fns[4] = (spprof__anyfn)spprof__h_posix_memalign; fns[5] = (spprof__anyfn)spprof__h_aligned_alloc;
    fns[6] = (spprof__anyfn)spprof__h_memalign; fns[7] = (spprof__anyfn)spprof__h_valloc; fns[8] = (spprof__anyfn)spprof__h_pvalloc;
    fns[9] = (spprof__anyfn)spprof__h_dlopen;
    for (i = 0; i < SPPROF__MEM_NFN; i++) memcpy(&hooks[i], &fns[i], sizeof(void *));  /* POSIX: same representation */
    reals[0] = (void **)&spprof__mr.malloc_; reals[1] = (void **)&spprof__mr.calloc_; reals[2] = (void **)&spprof__mr.realloc_;
    reals[3] = (void **)&spprof__mr.free_; reals[4] = (void **)&spprof__mr.posix_memalign_; reals[5] = (void **)&spprof__mr.aligned_alloc_;
    reals[6] = (void **)&spprof__mr.memalign_; reals[7] = (void **)&spprof__mr.valloc_; reals[8] = (void **)&spprof__mr.pvalloc_;
    reals[9] = (void **)&spprof__mr.dlopen_;
    for (i = 0; i < SPPROF__MEM_NFN; i++) {
        void *f = dlsym(RTLD_DEFAULT, names[i]);
        if (!f) return 0;
        *reals[i] = f;
        spprof__mem_fns[i].name = names[i]; spprof__mem_fns[i].real = reals[i]; spprof__mem_fns[i].hook = hooks[i];
    }
    return 1;
}

static int spprof__mem_skip_object(const char *name) {
    const char *b = spprof__basename(name);
    return !strncmp(b, "ld-linux", 8) || !strncmp(b, "ld64.so", 7) || !strncmp(b, "libc.so", 7) || !strncmp(b, "linux-vdso", 10) ||
           !strncmp(b, "linux-gate", 10) || !strncmp(b, "libasan", 7) || !strncmp(b, "libtsan", 7) || !strncmp(b, "liblsan", 7) ||
           !strncmp(b, "libspprof_alloc", 15);
}

/* The pages the loader made read-only for a PT_GNU_RELRO segment [start, start + size): it rounds both ends
   down to the page size (glibc's _dl_protect_relro), so the last partial page stays writable and must stay
   so after a patch (on 64 KiB-page aarch64 that page often holds .data). */
static void spprof__relro_pages(uintptr_t start, uintptr_t size, uintptr_t pagesz, uintptr_t *lo, uintptr_t *hi) {
    *lo = start & ~(pagesz - 1);
    *hi = (start + size) & ~(pagesz - 1);
}

static void spprof__mem_patch_slot(void **slot, int fn, uintptr_t lo, uintptr_t hi, uintptr_t relro_lo, uintptr_t relro_hi) {
    void *cur = SPPROF__LOADR(slot);
    uintptr_t pagesz = (uintptr_t)sysconf(_SC_PAGESIZE), page = (uintptr_t)slot & ~(pagesz - 1);
    int ro = (uintptr_t)slot >= relro_lo && (uintptr_t)slot < relro_hi;
    /* only what it would be bound to anyway: the real function, or a lazy-binding stub inside the object */
    if (cur == spprof__mem_fns[fn].hook) return;
    if (cur != *spprof__mem_fns[fn].real && !((uintptr_t)cur >= lo && (uintptr_t)cur < hi)) return;
    if (spprof__mem_npatches >= 4096) return;
    if (ro && mprotect((void *)page, pagesz, PROT_READ | PROT_WRITE) != 0) return;
    spprof__mem_patches[spprof__mem_npatches].slot = slot;
    spprof__mem_patches[spprof__mem_npatches].orig = cur;
    spprof__mem_patches[spprof__mem_npatches].fn = fn;
    spprof__mem_patches[spprof__mem_npatches].ro = ro;
    spprof__mem_npatches++;
    __atomic_store_n(slot, spprof__mem_fns[fn].hook, __ATOMIC_RELEASE);
    if (ro) mprotect((void *)page, pagesz, PROT_READ);
    spprof__m.got_patched++;
}

static int spprof__mem_patch_cb(struct dl_phdr_info *info, size_t size, void *data) {
    const ElfW(Dyn) *dyn = NULL;
    const ElfW(Sym) *symtab = NULL;
    const char *strtab = NULL;
    uintptr_t base = (uintptr_t)info->dlpi_addr, lo = UINTPTR_MAX, hi = 0, relro_lo = 0, relro_hi = 0;
    uintptr_t jmprel = 0, rela = 0;
    size_t jmprelsz = 0, relasz = 0;
    int i, pass;
    (void)size; (void)data;
    if (info->dlpi_name && info->dlpi_name[0] && spprof__mem_skip_object(info->dlpi_name)) return 0;
    for (i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_DYNAMIC) dyn = (const ElfW(Dyn) *)(base + ph->p_vaddr);
        if (ph->p_type == PT_LOAD) {
            if (base + ph->p_vaddr < lo) lo = base + ph->p_vaddr;
            if (base + ph->p_vaddr + ph->p_memsz > hi) hi = base + ph->p_vaddr + ph->p_memsz;
        }
        if (ph->p_type == PT_GNU_RELRO)
            spprof__relro_pages(base + ph->p_vaddr, ph->p_memsz, (uintptr_t)sysconf(_SC_PAGESIZE), &relro_lo, &relro_hi);
    }
    if (!dyn) return 0;
    /* glibc relocates the d_ptr values in place where .dynamic is writable; else they are link-time addresses */
#define SPPROF__DPTR(v) ((uintptr_t)(v) < base ? base + (uintptr_t)(v) : (uintptr_t)(v))
    for (; dyn->d_tag != DT_NULL; dyn++) {
        switch (dyn->d_tag) {
        case DT_SYMTAB: symtab = (const ElfW(Sym) *)SPPROF__DPTR(dyn->d_un.d_ptr); break;
        case DT_STRTAB: strtab = (const char *)SPPROF__DPTR(dyn->d_un.d_ptr); break;
        case DT_JMPREL: jmprel = SPPROF__DPTR(dyn->d_un.d_ptr); break;
        case DT_PLTRELSZ: jmprelsz = dyn->d_un.d_val; break;
        case DT_RELA: rela = SPPROF__DPTR(dyn->d_un.d_ptr); break;
        case DT_RELASZ: relasz = dyn->d_un.d_val; break;
        default: break;
        }
    }
#undef SPPROF__DPTR
    if (!symtab || !strtab) return 0;
    for (pass = 0; pass < 2; pass++) {
        const ElfW(Rela) *r = (const ElfW(Rela) *)(pass ? rela : jmprel);
        size_t nr = (pass ? relasz : jmprelsz) / sizeof(ElfW(Rela)), j;
        if (!r) continue;
        for (j = 0; j < nr; j++) {
            unsigned long type = ELF64_R_TYPE(r[j].r_info);
            const char *nm;
            int fn;
#if defined(__x86_64__)
            if (type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT) continue;
#elif defined(__aarch64__)
            if (type != R_AARCH64_JUMP_SLOT && type != R_AARCH64_GLOB_DAT) continue;
#endif
            if (!ELF64_R_SYM(r[j].r_info)) continue;
            nm = strtab + symtab[ELF64_R_SYM(r[j].r_info)].st_name;
            for (fn = 0; fn < SPPROF__MEM_NFN; fn++)
                if (!strcmp(nm, spprof__mem_fns[fn].name)) {
                    spprof__mem_patch_slot((void **)(base + r[j].r_offset), fn, lo, hi, relro_lo, relro_hi);
                    break;
                }
        }
    }
    return 0;
}

static void spprof__mem_patch_all(void) {
    spprof__lock(&spprof__mem_patch_lock);
    if (!spprof__mem_patches) spprof__mem_patches = (spprof__mem_patch *)spprof__mem_map_pages(4096 * sizeof(spprof__mem_patch));
    if (spprof__mem_patches) { spprof__mt.busy++; dl_iterate_phdr(spprof__mem_patch_cb, NULL); spprof__mt.busy--; }
    spprof__unlock(&spprof__mem_patch_lock);
}

/* Puts the saved GOT values back, in objects that are still loaded (dladdr finds them) and whose entry still
   holds our hook: an object unloaded meanwhile, its address range possibly reused, is left alone. */
static void spprof__mem_unpatch_all(void) {
    uint32_t i;
    uintptr_t pagesz = (uintptr_t)sysconf(_SC_PAGESIZE);
    spprof__lock(&spprof__mem_patch_lock);
    for (i = spprof__mem_npatches; i-- > 0;) {
        spprof__mem_patch *pt = &spprof__mem_patches[i];
        uintptr_t page = (uintptr_t)pt->slot & ~(pagesz - 1);
        Dl_info info;
        if (!dladdr((void *)pt->slot, &info) || SPPROF__LOADR(pt->slot) != spprof__mem_fns[pt->fn].hook) continue;
        if (pt->ro && mprotect((void *)page, pagesz, PROT_READ | PROT_WRITE) != 0) continue;
        __atomic_store_n(pt->slot, pt->orig, __ATOMIC_RELEASE);
        if (pt->ro) mprotect((void *)page, pagesz, PROT_READ);
    }
    spprof__mem_npatches = 0;
    spprof__m.got_patched = 0;
    spprof__unlock(&spprof__mem_patch_lock);
}

#endif /* SPPROF__OS_LINUX (native hooks) */
#if SPPROF__OS_WINDOWS
/* Native allocation hooks are not implemented on Windows (hook_native = 1 is refused by spprof_mem_start):
   allocations reach the memory profiler through spprof_mem_record_alloc/free or the PyMem hooks. */
static uint32_t spprof__mem_npatches;
static int spprof__mem_resolve_real(void) { return 0; }
static void spprof__mem_patch_all(void) {}
static void spprof__mem_unpatch_all(void) {}
#elif SPPROF__OS_MACOS
/* -- macOS: malloc_logger (hook_native = 1) ------------------------------------------------------------------
   BUILT, NEVER RUN (see @os_macos). Written from libmalloc's malloc_logger protocol (its documented use by
   MallocStackLogging; the variable is exported by libSystem but declared in no public header, so it is
   declared here). libmalloc calls the global malloc_logger, when set, for every zone: allocations after they
   succeed (type ALLOCATE, arg2 = size, result = pointer), frees before the memory is released (DEALLOCATE,
   arg2 = pointer), realloc once after the fact (ALLOCATE|DEALLOCATE, arg2 = old pointer, arg3 = size,
   result = new pointer). Install: an atomic compare-and-swap of the variable (another logger already there,
   e.g. MallocStackLogging's, is kept and called after ours); remove: swapped back only while ours is there.
   A call that loaded our pointer just before removal may still run after it (a "zombie" call): every call
   first checks the install sequence (odd: installed) and does nothing but chain when it is even.
   Limitation: realloc's old pointer is removed late, so another thread may already have been given that
   address and had it sampled: that newer sample is then dropped as freed (rare; one sample's weight). */
typedef void (spprof__malloc_logger_t)(uint32_t type, uintptr_t arg1, uintptr_t arg2, uintptr_t arg3, uintptr_t result,
                                       uint32_t num_hot_frames_to_skip);
extern spprof__malloc_logger_t *malloc_logger;
#define SPPROF__MLOG_ALLOCATE 2u
#define SPPROF__MLOG_DEALLOCATE 4u
static uint32_t spprof__mem_npatches;             /* 1 while our logger is installed (under mem_lock) */
static uint32_t spprof__mac_mlog_seq;             /* odd: installed (atomic) */
static spprof__malloc_logger_t *spprof__mac_mlog_prev;  /* the logger that was there before ours */
/* dyld allocates a thread's thread-local variables with malloc when the thread first touches one: the
   logger's first touch of spprof__mt on a thread would call malloc, which calls the logger, which touches
   spprof__mt ... So each thread's state is tracked in a pthread key (its slots are a fixed array in the
   thread, no allocation): 0 = spprof__mt not touched yet, 1 = being set up (allocations inside are not
   sampled), 2 = ready. */
static pthread_key_t spprof__mac_tls_key;
static int spprof__mac_tls_key_ok;
static int spprof__mac_tls_ready(void) {
    void *v = pthread_getspecific(spprof__mac_tls_key);
    if (v == (void *)2) return 1;
    if (v == (void *)1) return 0;
    pthread_setspecific(spprof__mac_tls_key, (void *)1);
    SPPROF__STORER(&spprof__mt.busy, SPPROF__LOADR(&spprof__mt.busy));  /* the first touch: may malloc */
    pthread_setspecific(spprof__mac_tls_key, (void *)2);
    return 1;
}
static void spprof__mac_malloc_logger(uint32_t type, uintptr_t arg1, uintptr_t arg2, uintptr_t arg3,
                                      uintptr_t result, uint32_t skip) {
    spprof__malloc_logger_t *prev = (spprof__malloc_logger_t *)SPPROF__LOAD(&spprof__mac_mlog_prev);
    /* odd sequence: installed (even: a zombie call after removal) */
    if ((SPPROF__LOAD(&spprof__mac_mlog_seq) & 1u) && spprof__mac_tls_ready()) {
        if ((type & SPPROF__MLOG_ALLOCATE) && (type & SPPROF__MLOG_DEALLOCATE)) {  /* realloc */
            if (arg2 && arg2 != result) spprof__mem_on_free((void *)arg2);
            if (result && arg2 != result)
                spprof__mem_on_alloc((void *)result, (size_t)arg3, __builtin_frame_address(0));
        } else if (type & SPPROF__MLOG_DEALLOCATE) {
            spprof__mem_on_free((void *)arg2);
        } else if ((type & SPPROF__MLOG_ALLOCATE) && result) {
            spprof__mem_on_alloc((void *)result, (size_t)arg2, __builtin_frame_address(0));
        }
    }
    if (prev) prev(type, arg1, arg2, arg3, result, skip);
}
static int spprof__mem_resolve_real(void) { return 1; }  /* nothing to resolve: libmalloc calls us */
static void spprof__mem_patch_all(void) {                 /* under mem_lock */
    spprof__malloc_logger_t *cur = malloc_logger;
    if (spprof__mem_npatches) return;
    if (!spprof__mac_tls_key_ok && pthread_key_create(&spprof__mac_tls_key, NULL) != 0) return;
    spprof__mac_tls_key_ok = 1;
    SPPROF__STORE(&spprof__mac_mlog_prev, cur);
    if ((SPPROF__LOAD(&spprof__mac_mlog_seq) & 1u) == 0) SPPROF__ADD(&spprof__mac_mlog_seq, 1u);
    if (__atomic_compare_exchange_n(&malloc_logger, &cur, spprof__mac_malloc_logger, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
        spprof__mem_npatches = 1;
    else
        SPPROF__ADD(&spprof__mac_mlog_seq, 1u);  /* the variable changed under us: not installed */
}
static void spprof__mem_unpatch_all(void) {               /* under mem_lock */
    spprof__malloc_logger_t *ours = spprof__mac_malloc_logger;
    if (!spprof__mem_npatches) return;
    SPPROF__ADD(&spprof__mac_mlog_seq, 1u);  /* even: calls still in flight do nothing */
    /* only if ours is still the one installed (a logger set after ours stays, and keeps calling ours) */
    __atomic_compare_exchange_n(&malloc_logger, &ours, SPPROF__LOAD(&spprof__mac_mlog_prev), 0,
                                __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    spprof__mem_npatches = 0;
}
#endif

/* -- lifecycle ------------------------------------------------------------------------------------------ */
SPPROF_API spprof_mem_config spprof_mem_config_default(void) {
    spprof_mem_config c;
    memset(&c, 0, sizeof c);
    c.sampling_rate = 512u * 1024u;
    c.heap_map_capacity = 1u << 18;
    c.max_stacks = 1u << 16;
    c.max_frames = 1u << 20;
    c.freed_capacity = 1u << 16;
    c.max_depth = 64;
    c.hook_native = SPPROF__OS_LINUX || SPPROF__OS_MACOS;  /* GOT entries (Linux), malloc_logger (macOS) */
    return c;
}

static int spprof__pow2(uint64_t v) { return v && !(v & (v - 1)); }

#define SPPROF__MEM_FORKED_HINT " (this process was forked from one whose memory session stays the parent's: " \
    "a forked child is not sampled until it starts its own)"
#if SPPROF__OS_LINUX
static void spprof__mem_atfork_child(void) {
    /* Only the forking thread exists in the child; the patch lock may have been held by another thread.
       The parent's session is the parent's: the child is not sampled and has no session ("off": snapshots,
       writers and stop say so) until it starts its own, so the parent's samples are never reported twice
       (by the parent, and by a child writing the same file). The tables stay mapped (the child's copy), to
       be reused by the child's own start; frees stop at the NULL tables pointer meanwhile, and the hooks
       stay installed (sess 0: nothing is sampled). */
    pthread_mutex_init(&spprof__mem_lock, NULL);
    pthread_mutex_init(&spprof__mem_patch_lock, NULL);
    if (spprof__m.state == 1 || spprof__m.state == 2) {
        SPPROF__STORE(&spprof__m.sess, 0u);
        SPPROF__STORE(&spprof__m.tabs, (spprof__mem_tabs *)NULL);
        SPPROF__STORE(&spprof__m.state, 0);
        spprof__m.forked = 1;
    }
}
static int spprof__mem_once;
static void spprof__mem_once_init(void) { pthread_atfork(NULL, NULL, spprof__mem_atfork_child); }
#else
static int spprof__mem_once;
static void spprof__mem_once_init(void) {}
#endif

SPPROF_API spprof_result spprof_mem_start(const spprof_mem_config *cfg_in) {
    spprof_mem_config c = cfg_in ? *cfg_in : spprof_mem_config_default();
    spprof_result r = SPPROF_OK;
    size_t need;
    spprof__once(&spprof__mem_once, spprof__mem_once_init);
    if (c.sampling_rate < 1 || c.sampling_rate > (1ull << 40))
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "spprof_mem_start: sampling_rate must be 1 .. 2^40 bytes (got %llu)", (unsigned long long)c.sampling_rate);
    if (!spprof__pow2(c.heap_map_capacity) || c.heap_map_capacity < 1024 || c.heap_map_capacity > (1u << 26))
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "spprof_mem_start: heap_map_capacity must be a power of two, 1024 .. 2^26 (got %u)", c.heap_map_capacity);
    if (!spprof__pow2(c.max_stacks) || c.max_stacks < 256 || c.max_stacks > (1u << 24))
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "spprof_mem_start: max_stacks must be a power of two, 256 .. 2^24 (got %u)", c.max_stacks);
    if (c.max_frames < 1024 || c.max_frames > (1u << 26))
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "spprof_mem_start: max_frames must be 1024 .. 2^26 (got %u)", c.max_frames);
    if (c.freed_capacity > (1u << 26))
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "spprof_mem_start: freed_capacity must be at most 2^26 (got %u)", c.freed_capacity);
    if (c.max_depth < 1 || c.max_depth > 256)
        return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "spprof_mem_start: max_depth must be 1 .. 256 (got %d)", c.max_depth);
    if (c.hook_native && !SPPROF__OS_LINUX && !SPPROF__OS_MACOS)
        return spprof__fail(SPPROF_ERR_UNSUPPORTED, "spprof_mem_start: hook_native=1 (native allocation hooks) "
                            "exists on Linux and macOS only; "
                            "use hook_native=0 and spprof_mem_record_alloc/free");
    spprof__lock(&spprof__mem_lock);
    if (spprof__m.state == 1) { spprof__unlock(&spprof__mem_lock); return spprof__fail(SPPROF_ERR_ALREADY_STARTED, "spprof_mem_start: the memory profiler is already sampling"); }
    if (spprof__m.state == 3) { spprof__unlock(&spprof__mem_lock); return spprof__fail(SPPROF_ERR_BAD_STATE, "spprof_mem_start: the memory profiler was shut down (one-way)"); }
    /* A new session. Tables of the right size are reused (cleared: hooks of the old session that may still be
       running see either the old or the cleared contents, both safe to read); a size change maps new ones and
       leaves the old mapped (a late free may still be reading them). */
    spprof__mt.busy++;
    SPPROF__STORE(&spprof__m.sess, 0u);
    if (!spprof__m.map || spprof__m.map_mask + 1 != c.heap_map_capacity) {
        spprof__m.map = (spprof__mem_entry *)spprof__mem_map_pages((size_t)c.heap_map_capacity * sizeof(spprof__mem_entry));
        spprof__m.map_mask = c.heap_map_capacity - 1;
    } else spprof__mem_zero(spprof__m.map, (size_t)c.heap_map_capacity * sizeof(spprof__mem_entry));
    if (!spprof__m.stacks || spprof__m.stacks_mask + 1 != c.max_stacks) {
        spprof__m.stacks = (spprof__mem_stack *)spprof__mem_map_pages((size_t)c.max_stacks * sizeof(spprof__mem_stack));
        spprof__m.stacks_mask = c.max_stacks - 1;
    } else spprof__mem_zero(spprof__m.stacks, (size_t)c.max_stacks * sizeof(spprof__mem_stack));
    if (!spprof__m.pool || spprof__m.pool_cap != c.max_frames) {
        spprof__m.pool = (spprof_frame *)spprof__mem_map_pages((size_t)c.max_frames * sizeof(spprof_frame));
        spprof__m.pool_cap = c.max_frames;
    }
    need = (size_t)(c.freed_capacity ? c.freed_capacity : 1) * sizeof(spprof__mem_freed);
    if (!spprof__m.freed || spprof__m.freed_cap != c.freed_capacity) {
        spprof__m.freed = (spprof__mem_freed *)spprof__mem_map_pages(need);
        spprof__m.freed_cap = c.freed_capacity;
    } else spprof__mem_zero(spprof__m.freed, need);
    if (!spprof__m.bloom || spprof__m.bloom_mask + 1 != c.heap_map_capacity / 4) {
        /* a new size: the old filter stays mapped (a late free may still read it) */
        spprof__m.bloom = (uint8_t *)spprof__mem_map_pages(c.heap_map_capacity / 4);
        spprof__m.bloom_mask = c.heap_map_capacity / 4 - 1;
    } else spprof__mem_zero(spprof__m.bloom, c.heap_map_capacity / 4);
    if (!spprof__m.map || !spprof__m.stacks || !spprof__m.pool || !spprof__m.freed || !spprof__m.bloom) {
        r = spprof__fail(SPPROF_ERR_NO_MEMORY, "spprof_mem_start: mmap of the tables failed: %s", strerror(errno));
        goto out;
    }
    {   /* publish the tables as one unit (see spprof__mem_tabs) */
        spprof__mem_tabs nt, *cur = spprof__m.tabs_last;
        memset(&nt, 0, sizeof nt);
        nt.map = spprof__m.map; nt.map_mask = spprof__m.map_mask;
        nt.stacks = spprof__m.stacks; nt.stacks_mask = spprof__m.stacks_mask;
        nt.pool = spprof__m.pool; nt.pool_cap = spprof__m.pool_cap;
        nt.freed = spprof__m.freed; nt.freed_cap = spprof__m.freed_cap;
        nt.bloom = spprof__m.bloom; nt.bloom_mask = spprof__m.bloom_mask;
        if (!cur || memcmp(cur, &nt, sizeof nt) != 0) {
            cur = (spprof__mem_tabs *)spprof__mem_map_pages(sizeof nt);
            if (!cur) {
                r = spprof__fail(SPPROF_ERR_NO_MEMORY, "spprof_mem_start: mmap of the tables failed: %s", strerror(errno));
                goto out;
            }
            *cur = nt;
            spprof__m.tabs_last = cur;
        }
        SPPROF__STORE(&spprof__m.tabs, cur);
    }
    /* counters that late hooks of the previous session may still be adding to: atomic stores */
    SPPROF__STORE(&spprof__m.pool_used, 0);
    SPPROF__STORE(&spprof__m.freed_n, 0);
    SPPROF__STORE(&spprof__m.map_used, 0);
    SPPROF__STORE(&spprof__m.map_live, 0);
    SPPROF__STORE(&spprof__m.samples, 0);
    SPPROF__STORE(&spprof__m.frees_seen, 0);
    SPPROF__STORE(&spprof__m.collisions, 0);
    SPPROF__STORE(&spprof__m.dropped_map, 0);
    SPPROF__STORE(&spprof__m.dropped_stacks, 0);
    SPPROF__STORE(&spprof__m.freed_dropped, 0);
    SPPROF__STORE(&spprof__m.stale, 0);
    SPPROF__STORE(&spprof__m.ddb, 0);
    SPPROF__STORE(&spprof__m.live_est, (int64_t)0);
    SPPROF__STORE(&spprof__m.peak_est, (uint64_t)0);
    SPPROF__STORE(&spprof__m.peak_t, (uint64_t)0);
    SPPROF__STORE(&spprof__m.fp_walks, (uint64_t)0);
    SPPROF__STORE(&spprof__m.fp_rooted, (uint64_t)0);
    SPPROF__STORE(&spprof__m.fp_broken, (uint64_t)0);
    spprof__m.cfg = c;
    if (c.walker) { spprof__m.walker = c.walker; spprof__m.walker_user = c.walker_user; }
    else { spprof__m.walker = spprof__mem_walk_native; spprof__m.walker_user = NULL; }
    if (c.hook_native) {
        if (!spprof__mem_resolve_real()) {
            r = spprof__fail(SPPROF_ERR_UNSUPPORTED, "spprof_mem_start: the malloc family was not found with dlsym");
            goto out;
        }
        spprof__mem_patch_all();
    } else if (spprof__mem_npatches) spprof__mem_unpatch_all();  /* a session before this one hooked */
    SPPROF__STORE(&spprof__m.state, 1);
    spprof__m.forked = 0;
    {   /* session numbers skip 0 (0 = not sampling) */
        static uint32_t next_sess;
        if (++next_sess == 0) next_sess = 1;
        SPPROF__STORE(&spprof__m.sess, next_sess);
    }
out:
    spprof__mt.busy--;
    spprof__unlock(&spprof__mem_lock);
    return r;
}

SPPROF_API spprof_result spprof_mem_stop(void) {
    spprof__lock(&spprof__mem_lock);
    if (spprof__m.state != 1) {
        spprof__unlock(&spprof__mem_lock);
        return spprof__fail(SPPROF_ERR_NOT_STARTED, "spprof_mem_stop: the memory profiler is not sampling%s",
                            spprof__m.forked && spprof__m.state == 0 ? SPPROF__MEM_FORKED_HINT : "");
    }
    SPPROF__STORE(&spprof__m.sess, 0u);
    SPPROF__STORE(&spprof__m.state, 2);
    spprof__unlock(&spprof__mem_lock);
    return SPPROF_OK;
}

SPPROF_API spprof_result spprof_mem_shutdown(void) {
    spprof__lock(&spprof__mem_lock);
    if (spprof__m.state == 3) { spprof__unlock(&spprof__mem_lock); return SPPROF_OK; }
    SPPROF__STORE(&spprof__m.sess, 0u);
    SPPROF__STORE(&spprof__m.state, 3);
    spprof__mem_unpatch_all();
    /* Frees from now on stop at the NULL tables pointer. The tables stay mapped: a free that loaded the
       pointer just before may still probe the map. */
    SPPROF__STORE(&spprof__m.tabs, (spprof__mem_tabs *)NULL);
    spprof__unlock(&spprof__mem_lock);
    return SPPROF_OK;
}

SPPROF_API int spprof_mem_state(void) { return SPPROF__LOAD(&spprof__m.state); }

SPPROF_API spprof_result spprof_mem_set_walker(spprof_mem_walk_fn walker, void *user) {
    spprof__lock(&spprof__mem_lock);
    spprof__m.walker_user = user;  /* a sample taken meanwhile may pair the old walker with the new user */
    SPPROF__STORE(&spprof__m.walker, walker ? walker : spprof__mem_walk_native);
    spprof__unlock(&spprof__mem_lock);
    return SPPROF_OK;
}

SPPROF_API spprof_result spprof_mem_foreach_sample(int which, spprof_mem_sample_fn fn, void *user) {
    spprof_mem_sample s;
    uint32_t i, n;
    uint64_t pt = SPPROF__LOADR(&spprof__m.peak_t);
    int peak = (which & SPPROF_MEM_PEAK) != 0;
    if (peak) which = SPPROF_MEM_LIVE | SPPROF_MEM_FREED;  /* both, filtered by the time of the peak */
    if (!fn) return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "spprof_mem_foreach_sample: fn is NULL");
    if (!spprof__m.map || SPPROF__LOAD(&spprof__m.state) == 3 || SPPROF__LOAD(&spprof__m.state) == 0)
        return spprof__fail(SPPROF_ERR_NOT_STARTED, "spprof_mem_foreach_sample: the memory profiler has no session%s",
                            spprof__m.forked ? SPPROF__MEM_FORKED_HINT : "");
    spprof__mt.busy++;
    if (which & SPPROF_MEM_LIVE) {
        for (i = 0; i <= spprof__m.map_mask; i++) {
            spprof__mem_entry e;
            uint64_t k;
            spprof__mem_entry_load(&spprof__m.map[i], &e);
            k = SPPROF__LOAD(&spprof__m.map[i].key);
            if (k <= SPPROF__MEM_TOMB || (k & 7) || k != e.key) continue;  /* empty, tombstone, in flux */
            if (peak && e.t_alloc > pt) continue;  /* allocated after the peak */
            memset(&s, 0, sizeof s);
            s.addr = k; s.size = e.size; s.t_alloc_ns = e.t_alloc; s.tid = e.tid; s.stack_id = e.stack;
            s.est_count = spprof__mem_inv_p(e.size, spprof__m.cfg.sampling_rate); s.est_bytes = s.est_count * (double)e.size;
            if (e.stack != SPPROF__MEM_NOSTACK && e.stack <= spprof__m.stacks_mask && spprof__m.stacks[e.stack].ready == 1) {
                s.frames = &spprof__m.pool[spprof__m.stacks[e.stack].off]; s.nframes = spprof__m.stacks[e.stack].n;
            }
            if (fn(&s, user)) break;
        }
    }
    if (which & SPPROF_MEM_FREED) {
        n = SPPROF__LOAD(&spprof__m.freed_n);
        if (n > spprof__m.freed_cap) n = spprof__m.freed_cap;
        for (i = 0; i < n; i++) {
            const spprof__mem_freed *f = &spprof__m.freed[i];
            if (!SPPROF__LOAD(&f->addr)) continue;
            if (peak && (f->t_alloc > pt || f->t_free <= pt)) continue;  /* not live at the peak */
            memset(&s, 0, sizeof s);
            s.addr = f->addr; s.size = f->size; s.t_alloc_ns = f->t_alloc; s.t_free_ns = f->t_free ? f->t_free : 1;
            s.tid = f->tid; s.stack_id = f->stack;
            s.est_count = spprof__mem_inv_p(f->size, spprof__m.cfg.sampling_rate); s.est_bytes = s.est_count * (double)f->size;
            if (f->stack != SPPROF__MEM_NOSTACK && f->stack <= spprof__m.stacks_mask && spprof__m.stacks[f->stack].ready == 1) {
                s.frames = &spprof__m.pool[spprof__m.stacks[f->stack].off]; s.nframes = spprof__m.stacks[f->stack].n;
            }
            if (fn(&s, user)) break;
        }
    }
    spprof__mt.busy--;
    return SPPROF_OK;
}

SPPROF_API spprof_result spprof_mem_foreach_stack(spprof_mem_stack_fn fn, void *user) {
    uint32_t i;
    if (!fn) return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "spprof_mem_foreach_stack: fn is NULL");
    if (!spprof__m.stacks || SPPROF__LOAD(&spprof__m.state) == 3 || SPPROF__LOAD(&spprof__m.state) == 0)
        return spprof__fail(SPPROF_ERR_NOT_STARTED, "spprof_mem_foreach_stack: the memory profiler has no session%s",
                            spprof__m.forked ? SPPROF__MEM_FORKED_HINT : "");
    for (i = 0; i <= spprof__m.stacks_mask; i++) {
        const spprof__mem_stack *s = &spprof__m.stacks[i];
        uint64_t samples, bytes, count_fx;
        if (SPPROF__LOAD(&s->ready) != 1) continue;
        /* the totals grow under allocations on other threads: relaxed atomic reads (each whole, not torn) */
        samples = SPPROF__LOADR(&s->samples);
        bytes = SPPROF__LOADR(&s->est_bytes);
        count_fx = SPPROF__LOADR(&s->est_count_fx);
        if (!samples) continue;
        if (fn(i, &spprof__m.pool[s->off], s->n, samples, (double)bytes, (double)count_fx / 1024.0, user)) break;
    }
    return SPPROF_OK;
}

typedef struct spprof__mem_sum { uint64_t live, bytes, count; } spprof__mem_sum;
static int spprof__mem_sum_cb(const spprof_mem_sample *s, void *user) {
    spprof__mem_sum *m = (spprof__mem_sum *)user;
    m->live++; m->bytes += (uint64_t)(s->est_bytes + 0.5); m->count += (uint64_t)(s->est_count + 0.5);
    return 0;
}
static int spprof__mem_alloc_sum_cb(uint32_t id, const spprof_frame *f, int n, uint64_t samples, double b, double c, void *user) {
    (void)id; (void)f; (void)n; (void)samples; (void)c;
    *(uint64_t *)user += (uint64_t)b;
    return 0;
}

SPPROF_API spprof_result spprof_mem_get_stats(spprof_mem_stats *o) {
    spprof__mem_sum sum = {0, 0, 0};
    uint32_t i;
    if (!o) return spprof__fail(SPPROF_ERR_INVALID_CONFIG, "spprof_mem_get_stats: out is NULL");
    memset(o, 0, sizeof *o);
    /* Under the lock: shutdown and start (another thread) change the state and the tables read below. */
    spprof__lock(&spprof__mem_lock);
    o->state = SPPROF__LOAD(&spprof__m.state);
    o->footprint_bytes = SPPROF__LOADR(&spprof__m.footprint);
    o->footprint_resident_bytes = spprof__mem_resident();
    if (o->state == 0 || o->state == 3 || !spprof__m.map) { spprof__unlock(&spprof__mem_lock); return SPPROF_OK; }
    spprof_mem_foreach_sample(SPPROF_MEM_LIVE, spprof__mem_sum_cb, &sum);
    spprof_mem_foreach_stack(spprof__mem_alloc_sum_cb, &o->estimated_allocated_bytes);
    o->samples = SPPROF__LOADR(&spprof__m.samples);
    o->frees_seen = SPPROF__LOADR(&spprof__m.frees_seen);
    o->live_samples = sum.live;
    o->estimated_live_bytes = sum.bytes;
    o->estimated_live_count = sum.count;
    o->heap_map_capacity = spprof__m.map_mask + 1u;
    o->heap_map_used = SPPROF__LOADR(&spprof__m.map_used);
    o->collisions = SPPROF__LOADR(&spprof__m.collisions);
    o->dropped_map_full = SPPROF__LOADR(&spprof__m.dropped_map);
    o->dropped_stacks_full = SPPROF__LOADR(&spprof__m.dropped_stacks);
    o->freed_dropped = SPPROF__LOADR(&spprof__m.freed_dropped);
    o->stale_reclaimed = SPPROF__LOADR(&spprof__m.stale);
    o->death_during_birth = SPPROF__LOADR(&spprof__m.ddb);
    for (i = 0; i <= spprof__m.bloom_mask; i++) o->bloom_saturated += SPPROF__LOADR(&spprof__m.bloom[i]) == 255;
    for (i = 0; i <= spprof__m.stacks_mask; i++) if (SPPROF__LOADR(&spprof__m.stacks[i].ready) == 1) o->unique_stacks++;
    o->frames_used = SPPROF__LOADR(&spprof__m.pool_used);
    if (o->frames_used > spprof__m.pool_cap) o->frames_used = spprof__m.pool_cap;
    o->got_entries_patched = spprof__m.got_patched;
    o->sampling_rate = spprof__m.cfg.sampling_rate;
    o->peak_estimated_bytes = SPPROF__LOADR(&spprof__m.peak_est);
    o->peak_time_ns = SPPROF__LOADR(&spprof__m.peak_t);
    o->native_walks = SPPROF__LOADR(&spprof__m.fp_walks);
    o->native_walks_rooted = SPPROF__LOADR(&spprof__m.fp_rooted);
    o->native_walks_truncated = SPPROF__LOADR(&spprof__m.fp_broken);
    spprof__unlock(&spprof__mem_lock);
    return SPPROF_OK;
}

static void spprof__mem_wc_line(FILE *f, const spprof_frame *fr, int n, uint64_t bytes) {
    int m;
    n = spprof__mem_trusted(fr, n);
    for (m = n; m-- > 0;) {
        spprof_symbol y;
        memset(&y, 0, sizeof y);
        if (!spprof_resolve(&fr[m], &y) && !y.name[0]) snprintf(y.name, sizeof y.name, "0x%llx", (unsigned long long)fr[m].addr);
        spprof__collapsed_name(f, y.name);
        if (y.line > 0) { fputs(" (", f); spprof__collapsed_name(f, y.file); fprintf(f, ":%d)", y.line); }
        if (m) fputc(';', f);
    }
    if (!n) fputs("[no stack]", f);
    fprintf(f, " %llu\n", (unsigned long long)bytes);
}
/* One line per distinct stack (the same aggregation as spprof_mem_write_pprof, @writers): the bytes live
   now, or with SPPROF_MEM_FREED everything the session allocated. */
SPPROF_API spprof_result spprof_mem_write_collapsed(const char *path, int which) {
    spprof__out o;
    spprof__mem_pp m;
    uint32_t i;
    int col = (which & SPPROF_MEM_FREED) ? 1 : 3;  /* alloc_space or inuse_space (live now, or at the peak) */
    spprof_result r = spprof__out_open(&o, path);
    if (r != SPPROF_OK) return r;
    memset(&m, 0, sizeof m);
    spprof_mem_enter();  /* the writer's own allocations are not sampled */
    r = spprof_mem_foreach_stack(spprof__mem_pp_stack, &m);
    if (r == SPPROF_OK) {
        int view = which == SPPROF_MEM_PEAK ? SPPROF_MEM_PEAK : SPPROF_MEM_LIVE;
        r = spprof_mem_foreach_sample(view, spprof__mem_pp_live, &m);
    }
    if (r == SPPROF_OK && m.oom) r = spprof__fail(SPPROF_ERR_NO_MEMORY, "out of memory while writing '%s'", path);
    if (r == SPPROF_OK)
        for (i = 0; i < m.nrows; i++)
            if (m.rows[4 * (size_t)i + (size_t)col]) spprof__mem_wc_line(o.f, m.frames + m.off[i], (int)m.len[i], m.rows[4 * (size_t)i + (size_t)col]);
    spprof__symbols_reset();
    spprof_mem_leave();
    SPPROF_FREE(m.ids.keys); SPPROF_FREE(m.ids.ids); SPPROF_FREE(m.rows); SPPROF_FREE(m.off); SPPROF_FREE(m.len);
    SPPROF_FREE(m.frames);
    if (r != SPPROF_OK) { spprof__out_abort(&o); return r; }
    return spprof__out_close(&o);
}

SPPROF_API const spprof_mem_api *spprof_mem_get_api(void) {
    static spprof_mem_api api;
    if (!api.version) {
        api.start = spprof_mem_start; api.stop = spprof_mem_stop; api.shutdown = spprof_mem_shutdown;
        api.state = spprof_mem_state; api.get_stats = spprof_mem_get_stats; api.foreach_sample = spprof_mem_foreach_sample;
        api.foreach_stack = spprof_mem_foreach_stack; api.record_alloc = spprof_mem_record_alloc;
        api.record_free = spprof_mem_record_free; api.enter = spprof_mem_enter; api.leave = spprof_mem_leave;
        api.set_walker = spprof_mem_set_walker; api.last_error = spprof_last_error;
        api.mem_tabs = (void *const *)(void *)&spprof__m.tabs;
        api.tabs_layout = SPPROF__MEM_TABS_LAYOUT;
        api.record_sample = spprof_mem_record_sample;
        SPPROF__STORE(&api.version, 2);
    }
    return &api;
}

/* ---- LD_PRELOAD library (SPPROF_ALLOC_SHIM) --------------------------------------------------------------
   Build: cc -shared -fPIC -fvisibility=hidden -O2 -D_GNU_SOURCE -DSPPROF_IMPLEMENTATION -DSPPROF_ALLOC_SHIM \
             -x c spprof.h -o libspprof_alloc.so -pthread -ldl
   (-fvisibility=hidden: only malloc & co. and spprof_alloc_shim_api are exported; exported spprof_* functions
   would take the place of those of another copy of spprof.h in the process, splitting its state.)
   Run:   LD_PRELOAD=./libspprof_alloc.so SPPROF_MEM_RATE=524288 program
   Defines malloc and friends for the whole process (on top of glibc's __libc_* functions) and starts sampling
   in its constructor, so allocations are seen from process start (with native stacks until a module sets
   another walker through spprof_alloc_shim_api(); spprof_python.h does). SPPROF_MEM_RATE=0 loads it without
   starting. A program that uses another allocator (jemalloc, tcmalloc) should not preload this. */
#if defined(SPPROF_ALLOC_SHIM) && !SPPROF__OS_LINUX
#  error "spprof.h: SPPROF_ALLOC_SHIM (LD_PRELOAD over glibc) is Linux only; macOS: hook_native=1 (malloc_logger)"
#endif
#ifdef SPPROF_ALLOC_SHIM
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
extern void *__libc_memalign(size_t, size_t);
extern void *__libc_valloc(size_t);
extern void *__libc_pvalloc(size_t);
#define SPPROF__SHIM_API __attribute__((visibility("default")))
#define SPPROF__SHIM_NAME(x) x
#define SPPROF__LIBC_REAL(x) __libc_##x
SPPROF__MEM_WRAPPERS(SPPROF__SHIM_API, SPPROF__SHIM_NAME, SPPROF__LIBC_REAL)
SPPROF__SHIM_API void *reallocarray(void *old, size_t a, size_t b) {
    if (b && a > (size_t)-1 / b) { errno = ENOMEM; return NULL; }
    return realloc(old, a * b);
}
SPPROF__SHIM_API void cfree(void *p) { free(p); }
SPPROF__SHIM_API int posix_memalign(void **out, size_t al, size_t n) {
    void *p;
    if (al < sizeof(void *) || (al & (al - 1))) return EINVAL;
    p = __libc_memalign(al, n);
    if (!p) return ENOMEM;
    SPPROF__MEM_ALLOCATED(p, n);
    *out = p;
    return 0;
}
SPPROF__SHIM_API void *aligned_alloc(size_t al, size_t n) { void *p = __libc_memalign(al, n); SPPROF__MEM_ALLOCATED(p, n); return p; }
SPPROF__SHIM_API const spprof_mem_api *spprof_alloc_shim_api(void) { return spprof_mem_get_api(); }

__attribute__((constructor)) static void spprof__shim_init(void) {
    const char *rate = getenv("SPPROF_MEM_RATE");
    spprof_mem_config c = spprof_mem_config_default();
    c.hook_native = 0;  /* this library is malloc: nothing to redirect */
    if (rate && *rate) c.sampling_rate = strtoull(rate, NULL, 10);
    if (rate && *rate && c.sampling_rate == 0) return;
    if (spprof_mem_start(&c) != SPPROF_OK) {
        static const char msg[] = "libspprof_alloc: not started (bad SPPROF_MEM_RATE?)\n";
        if (write(2, msg, sizeof msg - 1) < 0) { /* nothing else to do */ }
    }
}
#endif /* SPPROF_ALLOC_SHIM */

#ifdef __cplusplus
}
#endif
#endif /* SPPROF_IMPLEMENTATION */

/* ==== @license ========================================================================================
MIT License

Copyright (c) 2026 the spprof authors

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and
to permit persons to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions of
the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO
THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF
CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS
IN THE SOFTWARE.
*/
