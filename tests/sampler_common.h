/* What tests/windows_sampler.c and tests/macos_sampler.c share: the CHECK counter, the workload with a known
   3:1 split (leaf_a and leaf_b under middle and outer; g_t_a / g_t_b hold the wall time spent in each, the
   truth of the split), the per-thread scan of a profile's samples (scan_cb: weight in each leaf, leaf
   frames whose callers are not middle <- outer, frames of sleeper_main, the rest shown) and file_has. The
   includer defines wall_ns() (the clock of the truth) before including this file. */
#ifndef SPPROF_TESTS_SAMPLER_COMMON_H
#define SPPROF_TESTS_SAMPLER_COMMON_H
#include <stdio.h>
#include <string.h>

static int g_checks, g_failed;
#define CHECK(cond, ...) do { g_checks++; if (cond) { printf("  ok   "); } else { g_failed++; printf("  FAIL %s:%d: ", __FILE__, __LINE__); } \
    printf(__VA_ARGS__); printf("\n"); fflush(stdout); } while (0)

static volatile uint64_t g_sink;
__attribute__((noinline)) static void leaf_a(long n) { uint64_t x = g_sink; long i; for (i = 0; i < n; i++) x = x * 6364136223846793005ull + 1; g_sink = x; }
__attribute__((noinline)) static void leaf_b(long n) { uint64_t x = g_sink; long i; for (i = 0; i < n; i++) x = (x ^ (x >> 29)) * 0xbf58476d1ce4e5b9ull + 7; g_sink = x; }
static uint64_t g_t_a, g_t_b;  /* wall time in each leaf: the truth of the split */
__attribute__((noinline)) static void middle(long n) {
    uint64_t t0 = wall_ns(), t1, t2;
    leaf_a(3 * n);
    t1 = wall_ns();
    leaf_b(n);
    t2 = wall_ns();
    g_t_a += t1 - t0;
    g_t_b += t2 - t1;
}
__attribute__((noinline)) static void outer(long n) { middle(n); g_sink++; }

typedef struct scan { int tid; uint64_t total, a, b, other, bad_chain, sleep_frames; int other_shown; } scan;
static int is(const spprof_frame *f, const char *name) {
    spprof_symbol s;
    spprof_resolve(f, &s);
    return strcmp(s.name, name) == 0;
}
static int scan_cb(const spprof_sample_view *v, void *user) {
    scan *s = (scan *)user;
    int k;
    if (v->tid != s->tid || v->nframes == 0) return 0;
    s->total += v->weight;
    for (k = 0; k < v->nframes; k++) {
        if (is(&v->frames[k], "leaf_a") || is(&v->frames[k], "leaf_b")) {
            if (is(&v->frames[k], "leaf_a")) s->a += v->weight;
            else s->b += v->weight;
            if (k + 2 >= v->nframes || !is(&v->frames[k + 1], "middle") || !is(&v->frames[k + 2], "outer")) s->bad_chain += v->count;
            return 0;
        }
        if (is(&v->frames[k], "sleeper_main")) { s->sleep_frames += v->weight; return 0; }
    }
    s->other += v->weight;
    if (s->other_shown < 3) {  /* show a few, to say where the rest of the time went */
        spprof_symbol sy;
        s->other_shown++;
        printf("    other:");
        for (k = 0; k < v->nframes && k < 6; k++) { spprof_resolve(&v->frames[k], &sy); printf(" %s", sy.name); }
        printf(" (weight %u)\n", v->weight);
    }
    return 0;
}

static int file_has(const char *path, const char *needle) {
    static char buf[1 << 20];
    FILE *f = fopen(path, "rb");
    size_t n;
    if (!f) return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strstr(buf, needle) != NULL;
}

#endif
