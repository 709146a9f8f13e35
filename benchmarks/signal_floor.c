/* benchmarks/signal_floor.c - the floor every signal-based sampler pays, for benchmarks/workloads/signal_floor.py.

   spprof_floor_arm(rate, cpu_clock) gives the calling thread a POSIX timer (SIGEV_THREAD_ID) that sends it a
   real-time signal `rate` times a second, handled by a handler that only counts: the timer interrupt, the
   signal's delivery and sigreturn, and nothing of a profiler. cpu_clock = 0: CLOCK_MONOTONIC (an hrtimer of
   its own, as perf's task-clock sampling and spprof at rates above the kernel's HZ); cpu_clock = 1: the
   thread's CPU clock (checked at the scheduler's tick: at most HZ signals per second, no timer interrupt of
   its own). Built by signal_floor.py with `cc -O2 -shared -fPIC`. */
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
