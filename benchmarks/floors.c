/* benchmarks/floors.c - what any profiler of its kind pays, for benchmarks/workloads/floor.py.

   spprof_floor_arm(rate, cpu_clock) gives the calling thread a POSIX timer (SIGEV_THREAD_ID) that sends it a
   real-time signal `rate` times a second, handled by a handler that only counts: the timer interrupt, the
   signal's delivery and sigreturn, and nothing of a profiler. cpu_clock = 0: CLOCK_MONOTONIC (an hrtimer of
   its own, as perf's task-clock sampling and spprof at rates above the kernel's HZ); cpu_clock = 1: the
   thread's CPU clock (checked at the scheduler's tick: at most HZ signals per second, no timer interrupt of
   its own). Built by floor.py with `cc -O2 -shared -fPIC` and the running interpreter's include directory. */
#define _GNU_SOURCE
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile long spprof_floor_count;

static void spprof_floor_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    (void)uc;
    spprof_floor_count++;
}

long spprof_floor_signals(void) { return spprof_floor_count; }

int spprof_floor_arm(long rate, int cpu_clock) {
    struct sigaction sa;
    struct sigevent ev;
    struct itimerspec it;
    timer_t timer;
    long ns = 1000000000L / (rate > 0 ? rate : 1);
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = spprof_floor_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    if (sigaction(SIGRTMIN + 2, &sa, NULL)) return -1;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGRTMIN + 2;
    ev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    if (timer_create(cpu_clock ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ev, &timer)) return -1;
    it.it_interval.tv_sec = it.it_value.tv_sec = ns / 1000000000L;
    it.it_interval.tv_nsec = it.it_value.tv_nsec = ns % 1000000000L;
    return timer_settime(timer, 0, &it, NULL);
}

/* spprof_floor_pymem(): PyMem_SetAllocator hooks on the MEM and OBJ domains that only call the allocator
   they replaced: the floor of any profiler that sees Python's allocations through CPython's allocator API
   (an extra indirect call on every allocation and free, with its arguments passed along), without sampling,
   bookkeeping or a lookup on free. */
#include <Python.h>

static PyMemAllocatorEx spprof_floor_mem, spprof_floor_obj;

static void *spprof_floor_malloc(void *ctx, size_t n) {
    PyMemAllocatorEx *a = (PyMemAllocatorEx *)ctx;
    return a->malloc(a->ctx, n);
}
static void *spprof_floor_calloc(void *ctx, size_t k, size_t n) {
    PyMemAllocatorEx *a = (PyMemAllocatorEx *)ctx;
    return a->calloc(a->ctx, k, n);
}
static void *spprof_floor_realloc(void *ctx, void *p, size_t n) {
    PyMemAllocatorEx *a = (PyMemAllocatorEx *)ctx;
    return a->realloc(a->ctx, p, n);
}
static void spprof_floor_free(void *ctx, void *p) {
    PyMemAllocatorEx *a = (PyMemAllocatorEx *)ctx;
    a->free(a->ctx, p);
}

int spprof_floor_pymem(void) {
    PyMemAllocatorEx h;
    PyMem_GetAllocator(PYMEM_DOMAIN_MEM, &spprof_floor_mem);
    PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &spprof_floor_obj);
    h.malloc = spprof_floor_malloc;
    h.calloc = spprof_floor_calloc;
    h.realloc = spprof_floor_realloc;
    h.free = spprof_floor_free;
    h.ctx = &spprof_floor_mem;
    PyMem_SetAllocator(PYMEM_DOMAIN_MEM, &h);
    h.ctx = &spprof_floor_obj;
    PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &h);
    return 0;
}
