/* pprof_writer.c - known allocations through the memory profiler, written with spprof_mem_write_pprof and
   spprof_mem_write_collapsed, for tests/test_pprof.py (which reads the pprof back with `go tool pprof`).
   Every allocation is sampled (sampling_rate 1, sizes >= 1000 bytes: each sample stands for exactly its own
   size and count), so the truth is exact:
     alloc_small: 10 x 1000 bytes, 4 of them freed; alloc_large: 5 x 3000 bytes, none freed.
   Also a profile whose samples end in spprof_thread_unregister (own.*: the writers leave that frame out),
   a wall-mode profile of a 200 ms sleep (wall.pb.gz) and one without samples (empty.pb.gz).
   Usage: pprof_writer OUTDIR   (prints the truth as "name alloc_objects alloc_space inuse_objects inuse_space")
          pprof_writer --deflate IN OUT   (the header's deflate encoder, for tests/test_pprof.py) */
#define SPPROF_IMPLEMENTATION
#include "../spprof.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* made-up addresses (a custom allocator's view): distinct, 64 bytes apart, never dereferenced */
#define ADDR(i) ((void *)(uintptr_t)(0x100000000ull + (uint64_t)(i) * 64))

static __attribute__((noinline)) void alloc_small(void) {
    int i;
    for (i = 0; i < 10; i++) spprof_mem_record_alloc(ADDR(i), 1000);
    for (i = 0; i < 4; i++) spprof_mem_record_free(ADDR(i));
    __asm__ volatile("" ::: "memory");  /* not a tail call: this frame stays on the stack */
}

static __attribute__((noinline)) void alloc_large(void) {
    int i;
    for (i = 0; i < 5; i++) spprof_mem_record_alloc(ADDR(32 + i), 3000);
    __asm__ volatile("" ::: "memory");
}

/* Samples whose leaf is one of spprof's own functions (as when a registered thread is sampled inside
   spprof_thread_unregister at its exit), made by a walker that reports a fixed stack. */
static volatile unsigned long g_spin;
static __attribute__((noinline)) void own_caller(void) {
    unsigned long i;
    for (i = 0; i < 100000; i++) g_spin += i;
}
static int own_walker(const spprof_walk_ctx *ctx, spprof_frame *fr, int max) {  /* signal-safe: constants */
    (void)ctx;
    if (max < 2) return -1;
    fr[0].addr = (uint64_t)(uintptr_t)&spprof_thread_unregister + 1;
    fr[0].aux = 0;
    fr[0].kind = SPPROF_FRAME_NATIVE;
    fr[1].addr = (uint64_t)(uintptr_t)&own_caller + 1;
    fr[1].aux = 0;
    fr[1].kind = SPPROF_FRAME_NATIVE;
    return 2;
}
static int own_frames(const char *dir) {
    spprof_config oc = spprof_config_default();
    char path[4096];
    uint64_t end;
    struct timespec ts;
    oc.walker = own_walker;
    oc.interval_ns = 1000000;
    if (spprof_start(&oc) != SPPROF_OK) return 1;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    end = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + 300000000u;
    do {
        own_caller();
        clock_gettime(CLOCK_MONOTONIC, &ts);
    } while ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec < end);
    spprof_stop();
    snprintf(path, sizeof path, "%s/own.collapsed", dir);
    if (spprof_write_collapsed(path, 0) != SPPROF_OK) return 1;
    snprintf(path, sizeof path, "%s/own.json", dir);
    if (spprof_write_speedscope(path) != SPPROF_OK) return 1;
    snprintf(path, sizeof path, "%s/own.pb.gz", dir);
    return spprof_write_pprof(path) != SPPROF_OK;
}

/* pprof_writer --deflate IN OUT: the header's deflate encoder (spprof__deflate) on IN, raw deflate to OUT. */
static int deflate_file(const char *in, const char *out) {
    FILE *f = fopen(in, "rb");
    spprof__pb src, z;
    unsigned char buf[65536];
    size_t n;
    memset(&src, 0, sizeof src);
    memset(&z, 0, sizeof z);
    if (!f) return 1;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) spprof__pb_put(&src, buf, n);
    fclose(f);
    if (src.oom || !spprof__deflate(src.d, src.n, &z)) return 1;
    f = fopen(out, "wb");
    if (!f || fwrite(z.d, 1, z.n, f) != z.n) return 1;
    fclose(f);
    free(src.d);
    free(z.d);
    return 0;
}

int main(int argc, char **argv) {
    spprof_mem_config c = spprof_mem_config_default();
    char path[4096];
    const char *dir = argc > 1 ? argv[1] : ".";
    if (argc == 4 && !strcmp(argv[1], "--deflate")) return deflate_file(argv[2], argv[3]);
    if (own_frames(dir) != 0) {
        fprintf(stderr, "own frames: %s\n", spprof_last_error());
        return 1;
    }
    {   /* a wall-mode profile (the main thread sleeps: off-CPU time), then one without samples */
        spprof_config wc = spprof_config_default();
        struct timespec ts = {0, 200000000};
        wc.mode = SPPROF_MODE_WALL;
        wc.interval_ns = 2000000;
        if (spprof_start(&wc) != SPPROF_OK) {
            fprintf(stderr, "spprof_start: %s\n", spprof_last_error());
            return 1;
        }
        nanosleep(&ts, NULL);
        spprof_stop();
        snprintf(path, sizeof path, "%s/wall.pb.gz", dir);
        if (spprof_write_pprof(path) != SPPROF_OK) return 1;
        wc.mode = SPPROF_MODE_CPU;
        wc.interval_ns = 1000000000;
        if (spprof_start(&wc) != SPPROF_OK) return 1;
        spprof_stop();
        snprintf(path, sizeof path, "%s/empty.pb.gz", dir);
        if (spprof_write_pprof(path) != SPPROF_OK) return 1;
    }
    c.sampling_rate = 1;
    c.hook_native = 0;
    snprintf(path, sizeof path, "%s/none.pb.gz", dir);
    if (spprof_mem_write_pprof(path) != SPPROF_ERR_NOT_STARTED) {
        fprintf(stderr, "writing before a session must fail\n");
        return 1;
    }
    if (spprof_mem_start(&c) != SPPROF_OK) {
        fprintf(stderr, "spprof_mem_start: %s\n", spprof_last_error());
        return 1;
    }
    alloc_small();
    alloc_large();
    snprintf(path, sizeof path, "%s/mem.pb.gz", dir);
    if (spprof_mem_write_pprof(path) != SPPROF_OK) {
        fprintf(stderr, "%s\n", spprof_last_error());
        return 1;
    }
    snprintf(path, sizeof path, "%s/mem.collapsed", dir);
    if (spprof_mem_write_collapsed(path, SPPROF_MEM_LIVE) != SPPROF_OK) {
        fprintf(stderr, "%s\n", spprof_last_error());
        return 1;
    }
    spprof_mem_stop();
    spprof_mem_shutdown();
    printf("alloc_small 10 10000 6 6000\n");
    printf("alloc_large 5 15000 5 15000\n");
    return 0;
}
