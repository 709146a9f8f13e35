/* libunwind_check.c - the libunwind backend (SPPROF_USE_LIBUNWIND) walks code built without frame pointers.
   This file is compiled with -fomit-frame-pointer (see the Makefile; skipped where libunwind.h is missing):
   chain_a -> chain_b -> chain_c (busy) have no frame pointers, so the frame-pointer walker cannot connect
   chain_c to its callers, and DWARF unwinding must. Both walkers run on the same workload; checks: with
   libunwind, >= 90% of the samples in chain_c show chain_b and chain_a above it in order, and libunwind does
   better than frame pointers. */
#define SPPROF_USE_LIBUNWIND
#include "testutil.h"

static volatile int g_stop;
static volatile unsigned long g_sink;

__attribute__((noinline)) static void chain_c(void) {
    unsigned long x = 0, i;
    while (!g_stop) for (i = 0; i < 100000; i++) x = x * 6364136223846793005ul + i;
    g_sink = x;
}
__attribute__((noinline)) static void chain_b(void) { chain_c(); g_sink++; }
__attribute__((noinline)) static void chain_a(void) { chain_b(); g_sink++; }

typedef struct counts { int in_c, full; } counts;
static int name_is(const spprof_frame *f, const char *want) {
    spprof_symbol s;
    memset(&s, 0, sizeof s);
    spprof_resolve(f, &s);
    return strcmp(s.name, want) == 0;
}
static int count_cb(const spprof_sample_view *v, void *user) {
    counts *c = (counts *)user;
    int i, c_at = -1, b_at = -1, a_at = -1;
    for (i = 0; i < v->nframes; i++) {  /* leaf first */
        if (c_at < 0 && name_is(&v->frames[i], "chain_c")) c_at = i;
        else if (c_at >= 0 && b_at < 0 && name_is(&v->frames[i], "chain_b")) b_at = i;
        else if (b_at >= 0 && a_at < 0 && name_is(&v->frames[i], "chain_a")) a_at = i;
    }
    if (c_at == 0) { c->in_c += (int)v->weight; if (a_at > b_at && b_at > c_at) c->full += (int)v->weight; }
    return 0;
}

static void *stopper(void *arg) {
    (void)arg;
    t_sleep_ms(t_scaled(500, 1500));
    g_stop = 1;
    return NULL;
}

static counts run(spprof_walk_fn walker, const char *what) {
    spprof_config cfg = t_config(1000000);
    counts c = {0, 0};
    pthread_t th;
    cfg.walker = walker;
    cfg.guard_faults = 1;
    g_stop = 0;
    CHECK(spprof_start(&cfg) == SPPROF_OK, "%s: start (%s)", what, spprof_last_error());
    pthread_create(&th, NULL, stopper, NULL);
    chain_a();
    pthread_join(th, NULL);
    CHECK(spprof_stop() == SPPROF_OK, "%s: stop", what);
    spprof_foreach_sample(count_cb, &c);
    printf("  %s: %d intervals in chain_c, %d with chain_b and chain_a above it in order\n", what, c.in_c, c.full);
    return c;
}

int main(void) {
    counts fp, lu;
    fp = run(spprof_walk_native, "frame pointers");
    lu = run(spprof_walk_libunwind, "libunwind");
    CHECK(lu.in_c >= 50, "libunwind: enough samples in chain_c (%d)", lu.in_c);
    CHECK(lu.full >= 0.9 * lu.in_c, "libunwind: chain_c <- chain_b <- chain_a in %d of %d", lu.full, lu.in_c);
    CHECK(lu.full * (fp.in_c ? fp.in_c : 1) > fp.full * (lu.in_c ? lu.in_c : 1) || fp.full < 0.9 * fp.in_c,
          "frame pointers alone cannot see it (%d of %d), libunwind can", fp.full, fp.in_c);
    return TEST_DONE();
}
