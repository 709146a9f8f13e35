/* test_memprof.c - the memory profiler in C: bad input, unbiased estimates, exact bookkeeping under 8
   concurrent threads, "death during birth", heap-map and stack-table overflow, the GOT hooks (this program's
   malloc, and a library loaded later with dlopen), fork, late frees after shutdown, the collapsed writer, the high-water mark, frame-pointer health.
   Most checks feed spprof_mem_record_alloc/free with made-up addresses (a custom allocator's view), so the
   truth is known exactly. */
#include "testutil.h"
#include <sys/wait.h>

static spprof_mem_config t_mem(uint64_t rate) {
    spprof_mem_config c = spprof_mem_config_default();
    c.sampling_rate = rate;
    c.hook_native = 0;
    c.seed = 0;
    return c;
}

typedef struct { double bytes, count; uint64_t n, size_sum; } sums;
static int sum_cb(const spprof_mem_sample *s, void *u) {
    sums *m = (sums *)u;
    m->bytes += s->est_bytes; m->count += s->est_count; m->n++; m->size_sum += s->size;
    return 0;
}
static sums live_sums(void) {
    sums m;
    memset(&m, 0, sizeof m);
    spprof_mem_foreach_sample(SPPROF_MEM_LIVE, sum_cb, &m);
    return m;
}

static void test_bad_input(void) {
    spprof_mem_config c = t_mem(0);
    spprof_mem_stats st;
    CHECK(spprof_mem_start(&c) == SPPROF_ERR_INVALID_CONFIG && strstr(spprof_last_error(), "sampling_rate"), "rate 0 refused: %s", spprof_last_error());
    c = t_mem(4096); c.heap_map_capacity = 1000;
    CHECK(spprof_mem_start(&c) == SPPROF_ERR_INVALID_CONFIG, "heap map not a power of two refused");
    c = t_mem(4096); c.max_depth = 0;
    CHECK(spprof_mem_start(&c) == SPPROF_ERR_INVALID_CONFIG, "max_depth 0 refused");
    CHECK(spprof_mem_stop() == SPPROF_ERR_NOT_STARTED, "stop without start");
    CHECK(spprof_mem_foreach_sample(SPPROF_MEM_LIVE, sum_cb, NULL) == SPPROF_ERR_NOT_STARTED, "no samples before a start");
    CHECK(spprof_mem_get_stats(&st) == SPPROF_OK && st.state == 0, "stats before a start: state off");
    c = t_mem(4096);
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "start");
    CHECK(spprof_mem_start(&c) == SPPROF_ERR_ALREADY_STARTED, "double start refused");
    CHECK(spprof_mem_stop() == SPPROF_OK, "stop");
}

/* 200000 allocations of mixed sizes at 4 KiB: estimated count and bytes within 3 % (the standard deviation is
   about 0.7 %), then half freed: the live estimate follows. */
static void test_unbiased(void) {
    spprof_mem_config c = t_mem(4096);  /* up to 160000 samples live at once: room for them */
    spprof_mem_stats st;
    uint64_t i, n = (uint64_t)t_scaled(200000, 60000), truth = 0, truth_live = 0, live_count = 0;
    sums m;
    c.heap_map_capacity = 1u << 19;
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "start at 4 KiB");
    for (i = 0; i < n; i++) {
        size_t size = 16 + (size_t)((i * 2654435761u) % 20000);
        truth += size;
        spprof_mem_record_alloc((void *)(uintptr_t)(0x100000000ull + i * 64), size);
    }
    for (i = 0; i < n; i++) {
        size_t size = 16 + (size_t)((i * 2654435761u) % 20000);
        if (i % 2) spprof_mem_record_free((void *)(uintptr_t)(0x100000000ull + i * 64));
        else { truth_live += size; live_count++; }
    }
    spprof_mem_get_stats(&st);
    m = live_sums();
    CHECK(st.samples > 1000 && st.dropped_map_full == 0, "%llu samples", (unsigned long long)st.samples);
    CHECK(st.estimated_allocated_bytes > 0.97 * (double)truth && st.estimated_allocated_bytes < 1.03 * (double)truth,
          "allocated: estimated %llu, truth %llu", (unsigned long long)st.estimated_allocated_bytes, (unsigned long long)truth);
    CHECK(m.bytes > 0.96 * (double)truth_live && m.bytes < 1.04 * (double)truth_live, "live: estimated %.0f, truth %llu", m.bytes, (unsigned long long)truth_live);
    CHECK(m.count > 0.96 * (double)live_count && m.count < 1.04 * (double)live_count, "live count: estimated %.0f, truth %llu", m.count, (unsigned long long)live_count);
    CHECK(st.frees_seen + st.live_samples == st.samples, "every sample is live or freed (%llu + %llu == %llu)",
          (unsigned long long)st.frees_seen, (unsigned long long)st.live_samples, (unsigned long long)st.samples);
    spprof_mem_stop();
}

/* 8 threads, every allocation sampled, distinct addresses; each frees two thirds of its own. */
#define NT 8
static int t_per_thread;
static void *conc_thread(void *arg) {
    uintptr_t base = 0x200000000ull + (uintptr_t)arg * 0x10000000ull;
    int i;
    for (i = 0; i < t_per_thread; i++) {
        spprof_mem_record_alloc((void *)(base + (uintptr_t)i * 32), 100);
        if (i >= 2 && (i - 2) % 3 != 0) spprof_mem_record_free((void *)(base + (uintptr_t)(i - 2) * 32));
    }
    return NULL;
}
static void test_concurrent(void) {
    spprof_mem_config c = t_mem(1);
    pthread_t th[NT];
    spprof_mem_stats st;
    uint64_t expect_live, expect_freed;
    long k;
    int i;
    t_per_thread = t_scaled(20000, 5000);
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "start: every allocation sampled");
    for (k = 0; k < NT; k++) pthread_create(&th[k], NULL, conc_thread, (void *)k);
    for (k = 0; k < NT; k++) pthread_join(th[k], NULL);
    expect_freed = 0;
    for (i = 2; i < t_per_thread; i++) if ((i - 2) % 3 != 0) expect_freed++;
    expect_freed *= NT;
    expect_live = (uint64_t)NT * (uint64_t)t_per_thread - expect_freed;
    spprof_mem_get_stats(&st);
    CHECK(st.samples == (uint64_t)NT * (uint64_t)t_per_thread, "samples %llu", (unsigned long long)st.samples);
    CHECK(st.live_samples == expect_live, "live %llu, expected %llu", (unsigned long long)st.live_samples, (unsigned long long)expect_live);
    CHECK(st.frees_seen == expect_freed, "frees %llu, expected %llu", (unsigned long long)st.frees_seen, (unsigned long long)expect_freed);
    CHECK(st.estimated_live_bytes == expect_live * 100, "live bytes exact at rate 1 (%llu)", (unsigned long long)st.estimated_live_bytes);
    CHECK(st.dropped_map_full == 0 && st.collisions < st.samples * 4, "no drops, %llu collisions", (unsigned long long)st.collisions);
    spprof_mem_stop();
}

/* A free that arrives while its pointer's insert is in progress marks the key; the insert sees it. The
   in-progress state is set up by hand (the race itself is too narrow to hit on purpose). */
static void test_death_during_birth(void) {
    spprof_mem_config c = t_mem(1);
    uint64_t p = 0x300000000ull, h = spprof__mem_hash(p);
    spprof__mem_entry *e;
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "start");
    e = &spprof__m.map[(uint32_t)(h >> 32) & spprof__m.map_mask];
    e->key = p | SPPROF__MEM_BIRTH;
    spprof__bloom_add(spprof__m.tabs, h, 1);
    spprof_mem_record_free((void *)(uintptr_t)p);
    CHECK(e->key == (p | SPPROF__MEM_DIED), "the free marked the reserved key (died during birth)");
    e->key = SPPROF__MEM_TOMB;
    spprof_mem_stop();
}

/* The filter forgets a freed sample (counting filter), and an address allocated again without its free
   being seen is logged as freed then. */
static void test_filter_and_stale(void) {
    spprof_mem_config c = t_mem(1);
    spprof_mem_stats st;
    void *p = (void *)(uintptr_t)0x900000000ull;
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "start");
    spprof_mem_record_alloc(p, 64);
    CHECK(spprof__bloom_test(spprof__m.tabs, spprof__mem_hash((uint64_t)(uintptr_t)p)), "a sampled pointer passes the filter");
    spprof_mem_record_free(p);
    CHECK(!spprof__bloom_test(spprof__m.tabs, spprof__mem_hash((uint64_t)(uintptr_t)p)), "after its free it no longer does");
    spprof_mem_record_alloc(p, 64);
    spprof_mem_record_alloc(p, 128);  /* again, without a free in between */
    spprof_mem_get_stats(&st);
    CHECK(st.stale_reclaimed == 1 && st.live_samples == 1 && st.frees_seen == 2, "stale entry logged as freed (%llu stale, %llu live, %llu frees)",
          (unsigned long long)st.stale_reclaimed, (unsigned long long)st.live_samples, (unsigned long long)st.frees_seen);
    spprof_mem_stop();
}

/* The high-water mark: exact at rate 1 (every allocation a sample of weight 1). 100 blocks of 1000 bytes, 60
   freed, 20 more of 500, 30 of the first freed: the peak is 100000 bytes, reached at the 100th allocation,
   and SPPROF_MEM_PEAK gives back exactly the 100 blocks live then (live ones and freed ones). */
static void test_peak(void) {
    spprof_mem_config c = t_mem(1);
    spprof_mem_stats st;
    sums m;
    uintptr_t base = 0xa00000000ull;
    int i;
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "start");
    for (i = 0; i < 100; i++) spprof_mem_record_alloc((void *)(base + (uintptr_t)i * 4096), 1000);
    for (i = 0; i < 60; i++) spprof_mem_record_free((void *)(base + (uintptr_t)i * 4096));
    for (i = 0; i < 20; i++) spprof_mem_record_alloc((void *)(base + 0x1000000 + (uintptr_t)i * 4096), 500);
    for (i = 60; i < 90; i++) spprof_mem_record_free((void *)(base + (uintptr_t)i * 4096));
    spprof_mem_get_stats(&st);
    CHECK(st.peak_estimated_bytes == 100000, "peak %llu bytes, expected 100000", (unsigned long long)st.peak_estimated_bytes);
    CHECK(st.estimated_live_bytes == 20000, "live now %llu bytes, expected 20000", (unsigned long long)st.estimated_live_bytes);
    CHECK(st.peak_time_ns > 0, "the peak has a time");
    memset(&m, 0, sizeof m);
    CHECK(spprof_mem_foreach_sample(SPPROF_MEM_PEAK, sum_cb, &m) == SPPROF_OK, "foreach at the peak");
    CHECK(m.n == 100 && m.size_sum == 100000, "live at the peak: %llu samples, %llu bytes (expected 100, 100000)",
          (unsigned long long)m.n, (unsigned long long)m.size_sum);
    {   /* the collapsed writer's peak view: one stack, 100000 bytes */
        char path[64], line[512];
        FILE *f;
        unsigned long long total = 0;
        snprintf(path, sizeof path, "/tmp/spprof-peaktest-%d.collapsed", (int)getpid());
        CHECK(spprof_mem_write_collapsed(path, SPPROF_MEM_PEAK) == SPPROF_OK, "peak collapsed written");
        f = fopen(path, "r");
        while (f && fgets(line, sizeof line, f)) {
            const char *sp = strrchr(line, ' ');
            if (sp) total += strtoull(sp + 1, NULL, 10);
        }
        if (f) fclose(f);
        unlink(path);
        CHECK(total == 100000, "the collapsed peak view weighs %llu bytes (expected 100000)", total);
    }
    spprof_mem_stop();
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "a new session");
    spprof_mem_get_stats(&st);
    CHECK(st.peak_estimated_bytes == 0 && st.peak_time_ns == 0, "starts from 0 again");
    spprof_mem_stop();
}

/* Frame-pointer health: this program is built with frame pointers, so a walk from a thread of its own (entry
   clears the frame pointer) reaches the root; one cut at max_depth is neither rooted nor truncated. */
static void *fp_thread(void *arg) {
    spprof_mem_record_alloc(arg, 100);
    return NULL;
}
static void test_fp_health(void) {
    spprof_mem_config c = t_mem(1);
    spprof_mem_stats st;
    pthread_t th;
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "start");
    CHECK(pthread_create(&th, NULL, fp_thread, (void *)(uintptr_t)0xb00000000ull) == 0, "thread");
    pthread_join(th, NULL);
    spprof_mem_get_stats(&st);
#if defined(__SANITIZE_THREAD__)
    /* TSan starts every thread through its own wrapper, built without frame pointers: the chain breaks there */
    st.native_walks_rooted += st.native_walks_truncated;
    st.native_walks_truncated = 0;
#endif
    CHECK(st.native_walks == 1 && st.native_walks_rooted == 1 && st.native_walks_truncated == 0,
          "a thread's walk reaches its root (%llu walks, %llu rooted, %llu truncated)", (unsigned long long)st.native_walks,
          (unsigned long long)st.native_walks_rooted, (unsigned long long)st.native_walks_truncated);
    spprof_mem_stop();
    c.max_depth = 1;
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "start, max_depth 1");
    CHECK(pthread_create(&th, NULL, fp_thread, (void *)(uintptr_t)0xb00000000ull) == 0, "thread");
    pthread_join(th, NULL);
    spprof_mem_get_stats(&st);
    CHECK(st.native_walks == 1 && st.native_walks_rooted == 0 && st.native_walks_truncated == 0,
          "cut at max_depth: neither (%llu walks, %llu rooted, %llu truncated)", (unsigned long long)st.native_walks,
          (unsigned long long)st.native_walks_rooted, (unsigned long long)st.native_walks_truncated);
    spprof_mem_stop();
}

static void test_overflow(void) {
    spprof_mem_config c = t_mem(1);
    spprof_mem_stats st;
    int i;
    c.heap_map_capacity = 1024;
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "start with 1024 slots");
    for (i = 0; i < 5000; i++) spprof_mem_record_alloc((void *)(uintptr_t)(0x400000000ull + (uintptr_t)i * 16), 10);
    spprof_mem_get_stats(&st);
    CHECK(st.dropped_map_full > 0 && st.live_samples <= 512 && st.live_samples > 400, "full map: %llu dropped, %llu live",
          (unsigned long long)st.dropped_map_full, (unsigned long long)st.live_samples);
    for (i = 0; i < 5000; i++) spprof_mem_record_free((void *)(uintptr_t)(0x400000000ull + (uintptr_t)i * 16));
    spprof_mem_get_stats(&st);
    CHECK(st.live_samples == 0, "all freed: %llu live", (unsigned long long)st.live_samples);
    for (i = 0; i < 500; i++) spprof_mem_record_alloc((void *)(uintptr_t)(0x500000000ull + (uintptr_t)i * 16), 10);
    spprof_mem_get_stats(&st);
    CHECK(st.live_samples == 500, "tombstones are reused: %llu live", (unsigned long long)st.live_samples);
    spprof_mem_stop();
}

static uint64_t t_walk_counter;
static int distinct_walker(spprof_frame *f, int max, void *fp, void *user) {
    (void)fp; (void)user; (void)max;
    f[0].addr = ++t_walk_counter; f[0].aux = 0; f[0].kind = SPPROF_FRAME_USER;
    return 1;
}
static void test_stack_table_full(void) {
    spprof_mem_config c = t_mem(1);
    spprof_mem_stats st;
    int i;
    c.max_stacks = 256;
    c.walker = distinct_walker;
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "start with 256 stacks");
    for (i = 0; i < 1000; i++) spprof_mem_record_alloc((void *)(uintptr_t)(0x600000000ull + (uintptr_t)i * 16), 10);
    spprof_mem_get_stats(&st);
    CHECK(st.dropped_stacks_full > 0 && st.unique_stacks <= 256 && st.live_samples == 1000,
          "stack table full: %llu without a stack, %llu stacks, all %llu tracked", (unsigned long long)st.dropped_stacks_full,
          (unsigned long long)st.unique_stacks, (unsigned long long)st.live_samples);
    spprof_mem_stop();
}

/* The GOT hooks: this program's own malloc, and a library loaded afterwards. */
static void *volatile t_keep;
typedef struct { size_t size; int found; int native_frames; } find_t;
static int find_cb(const spprof_mem_sample *s, void *u) {
    find_t *f = (find_t *)u;
    if (s->size == f->size) { f->found++; f->native_frames = s->nframes; }
    return 0;
}
static __attribute__((noinline)) void *alloc_here(size_t n) { return malloc(n); }
static void test_got_hooks(void) {
    spprof_mem_config c = t_mem(1);
    spprof_mem_stats st;
    find_t f;
    void *z;
    c.hook_native = 1;
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "start with native hooks");
    spprof_mem_get_stats(&st);
    CHECK(st.got_entries_patched > 0, "%llu GOT entries redirected", (unsigned long long)st.got_entries_patched);
    t_keep = alloc_here(123457);
    memset(&f, 0, sizeof f); f.size = 123457;
    spprof_mem_foreach_sample(SPPROF_MEM_LIVE, find_cb, &f);
    CHECK(f.found == 1 && f.native_frames >= 2, "this program's malloc seen (%d, %d frames)", f.found, f.native_frames);
    free(t_keep);
    memset(&f, 0, sizeof f); f.size = 123457;
    spprof_mem_foreach_sample(SPPROF_MEM_FREED, find_cb, &f);
    CHECK(f.found == 1, "and its free");
    z = dlopen("libz.so.1", RTLD_NOW | RTLD_LOCAL);
    if (z) {
        typedef int (*compress2_fn)(unsigned char *, unsigned long *, const unsigned char *, unsigned long, int);
        compress2_fn cz;
        void *sym = dlsym(z, "compress2");
        static unsigned char in[4096], out[8192];
        unsigned long outlen = sizeof out;
        uint64_t before;
        memcpy(&cz, &sym, sizeof cz);
        spprof_mem_get_stats(&st);
        before = st.frees_seen;
        CHECK(cz && cz(out, &outlen, in, sizeof in, 6) == 0, "compress2 from a library loaded after start");
        spprof_mem_get_stats(&st);
        CHECK(st.frees_seen > before, "its internal allocations were seen (%llu frees)", (unsigned long long)(st.frees_seen - before));
    } else {
        printf("  skip libz.so.1 not loadable: %s\n", dlerror());
    }
    CHECK(spprof_mem_shutdown() == SPPROF_OK, "shutdown");
    spprof_mem_get_stats(&st);
    CHECK(st.state == 3 && st.got_entries_patched == 0, "GOT entries given back");
    t_keep = malloc(77);
    free(t_keep);
    CHECK(spprof_mem_start(&c) == SPPROF_ERR_BAD_STATE, "no start after shutdown (one-way)");
}

/* fork(): the parent's session stays the parent's. The child is not sampled, has no session ("off"): stop,
   the writers and the sample iterators say NOT_STARTED (naming the fork), so no file is written from the
   parent's samples; a session of its own starts clean (none of the parent's samples). */
static int t_count_sample(const spprof_mem_sample *s, void *user) {
    (void)s;
    (*(int *)user)++;
    return 0;
}
static void test_fork(void) {
    spprof_mem_config c = t_mem(64);
    spprof_mem_stats before, after;
    pid_t pid;
    int status = 0, i, n = 0;
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "start before fork");
    for (i = 0; i < 1000; i++) spprof_mem_record_alloc((void *)(uintptr_t)(0x700000000ull + (uintptr_t)i * 64), 100);
    spprof_mem_get_stats(&before);
    pid = fork();
    if (pid == 0) {
        spprof_mem_stats st;
        int own = 0;
        alarm(20);
        if (spprof_mem_state() != 0) _exit(2);
        for (i = 0; i < 1000; i++) spprof_mem_record_alloc((void *)(uintptr_t)(0x710000000ull + (uintptr_t)i * 64), 100);
        if (spprof_mem_stop() != SPPROF_ERR_NOT_STARTED || !strstr(spprof_last_error(), "forked")) _exit(3);
        if (spprof_mem_write_collapsed("/dev/null", SPPROF_MEM_LIVE) != SPPROF_ERR_NOT_STARTED) _exit(4);
        if (spprof_mem_foreach_sample(SPPROF_MEM_LIVE, t_count_sample, &own) != SPPROF_ERR_NOT_STARTED) _exit(5);
        if (spprof_mem_start(&c) != SPPROF_OK) _exit(6);
        for (i = 0; i < 500; i++) spprof_mem_record_alloc((void *)(uintptr_t)(0x720000000ull + (uintptr_t)i * 64), 100);
        spprof_mem_get_stats(&st);
        if (spprof_mem_foreach_sample(SPPROF_MEM_LIVE, t_count_sample, &own) != SPPROF_OK) _exit(7);
        if (own == 0 || (uint64_t)own != st.samples || st.samples > 500) _exit(8);  /* its own 500 calls only */
        if (spprof_mem_stop() != SPPROF_OK) _exit(9);
        _exit(spprof_mem_write_collapsed("/dev/null", SPPROF_MEM_LIVE) == SPPROF_OK ? 0 : 10);
    }
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "the child: off, stop/write/iterate say NOT_STARTED, its own session has only its samples (status %d)",
          status);
    spprof_mem_get_stats(&after);
    CHECK(after.state == 1 && after.samples == before.samples, "the parent's session goes on, unchanged");
    CHECK(spprof_mem_foreach_sample(SPPROF_MEM_LIVE, t_count_sample, &n) == SPPROF_OK && (uint64_t)n == after.live_samples,
          "the parent's samples are there (%d)", n);
    CHECK(spprof_mem_stop() == SPPROF_OK, "parent still fine");
}

static __attribute__((noinline)) void test_writer(void) {  /* its name is checked in the output */
    spprof_mem_config c = t_mem(1);
    char path[64];
    FILE *f;
    char line[512];
    int lines = 0, i;
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "start");
    for (i = 0; i < 10; i++) spprof_mem_record_alloc((void *)(uintptr_t)(0x800000000ull + (uintptr_t)i * 64), 1000);
    CHECK(spprof_mem_write_collapsed("/nonexistent/dir/heap.collapsed", SPPROF_MEM_LIVE) == SPPROF_ERR_IO &&
          strstr(spprof_last_error(), "kept"), "unwritable path: %s", spprof_last_error());
    snprintf(path, sizeof path, "/tmp/spprof-memtest-%d.collapsed", (int)getpid());
    CHECK(spprof_mem_write_collapsed(path, SPPROF_MEM_LIVE) == SPPROF_OK, "collapsed written");
    f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) lines += strstr(line, "test_writer") != NULL && strstr(line, " 10000\n") != NULL;
    if (f) fclose(f);
    CHECK(lines == 1, "one line per distinct stack, named and weighted (%d)", lines);
    if (lines != 1) { f = fopen(path, "r"); while (f && fgets(line, sizeof line, f)) printf("    | %s", line); if (f) fclose(f); }
    unlink(path);
    spprof_mem_stop();
}

/* Junk frames (issue 19): a frame-pointer walk through code without frame pointers reads whatever the
   register held as the next frame: small integers (0x122a), pointers to data (_PyRuntime), words that are no
   return address. The writers cut the stack at the first such "return address" (everything above it came
   from the same broken chain), and no address is named by a data symbol or shown bare. */
int t_data_word = 42;  /* a data symbol of this program */
static uintptr_t t_ret_ok;
static __attribute__((noinline)) void t_take_ret(void) { t_ret_ok = (uintptr_t)__builtin_return_address(0); }
static __attribute__((noinline)) void junk_caller(void) { t_take_ret(); __asm__ volatile("" ::: "memory"); }
static int junk_walker(spprof_frame *f, int max, void *fp, void *user) {
    (void)fp; (void)user; (void)max;
    f[0].addr = t_ret_ok;                      /* a real return address, in junk_caller */
    f[1].addr = 0x122a;                        /* a small integer read as a return address */
    f[2].addr = (uintptr_t)&t_data_word + 4;   /* a pointer to data */
    f[3].addr = t_ret_ok;                      /* looks fine, but above the break: not to be believed */
    f[0].aux = f[1].aux = f[2].aux = f[3].aux = SPPROF_AUX_RETADDR;
    f[0].kind = f[1].kind = f[2].kind = f[3].kind = SPPROF_FRAME_NATIVE;
    return 4;
}
static void test_junk_frames(void) {
    spprof_mem_config c = t_mem(1);
    spprof_symbol y;
    char path[64], line[512];
    FILE *f;
    int lines = 0, good = 0, junk = 0;
    junk_caller();
    memset(&y, 0, sizeof y);
    CHECK(!spprof_symbolize_native((uintptr_t)&t_data_word + 1, 0, &y) && strstr(y.name, "[unknown in ") == y.name &&
          !strstr(y.name, "t_data_word"), "an address in data is no function: '%s'", y.name);
    CHECK(!spprof_symbolize_native(0x122a, SPPROF_AUX_RETADDR, &y) && strcmp(y.name, "[unknown]") == 0,
          "an address in no object is not shown bare: '%s'", y.name);
    c.walker = junk_walker;
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "start");
    spprof_mem_record_alloc((void *)(uintptr_t)0x880000000ull, 3000);
    snprintf(path, sizeof path, "/tmp/spprof-memjunk-%d.collapsed", (int)getpid());
    CHECK(spprof_mem_write_collapsed(path, SPPROF_MEM_LIVE) == SPPROF_OK, "collapsed written");
    f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        lines++;
        good += strncmp(line, "junk_caller ", 12) == 0 && strstr(line, " 3000\n") != NULL;
        junk += strstr(line, "0x") != NULL || strstr(line, "unknown") != NULL || strstr(line, "t_data_word") != NULL;
    }
    if (f) fclose(f);
    CHECK(lines == 1 && good == 1 && junk == 0, "the stack is cut at the first bogus return address (%d lines, %d junk)",
          lines, junk);
    if (good != 1) { f = fopen(path, "r"); while (f && fgets(line, sizeof line, f)) printf("    | %s", line); if (f) fclose(f); }
    unlink(path);
    spprof_mem_stop();
}

int main(void) {
    test_bad_input();
    test_unbiased();
    test_concurrent();
    test_death_during_birth();
    test_filter_and_stale();
    test_peak();
    test_fp_health();
    test_overflow();
    test_stack_table_full();
    test_fork();
    test_writer();
    test_junk_frames();
    test_got_hooks();  /* last: shutdown is one-way */
    return TEST_DONE();
}
