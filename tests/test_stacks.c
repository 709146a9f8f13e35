/* test_stacks.c - are the stacks true? Ground truth comes from the test itself:
   - a known call chain outer() -> middle() -> leaf_a() / leaf_b() with the CPU time of every leaf call
     measured on the thread's CPU clock: every sample has exactly the real ancestors (no skipped or invented
     frame), and each leaf's share of the samples (by weight) matches its measured share of CPU time;
   - a sample belongs to its thread (CPU and wall mode);
   - max_depth truncation;
   - the writers: collapsed lines (plain and per thread), Speedscope, unwritable paths (error, nothing left
     behind, profile kept), and an empty session. */
#include "testutil.h"
#include <errno.h>
#include <dirent.h>
#include <regex.h>
#include <signal.h>
#include <sys/stat.h>
/* TSan (GCC defines __SANITIZE_THREAD__, Clang has __has_feature) */

/* TSan runs asynchronous signal handlers late: at the exit of the next intercepted call, with the context
   saved on arrival. A spin loop without such calls would have its samples walked after the function
   returned (its frames overwritten), so under TSan the loops make a cheap intercepted call now and then;
   the sampled function is then still on the stack when its sample is taken. Not needed elsewhere. */
#if defined(T_TSAN)
#  define TSAN_POLL(i) do { if (((i) & 4095) == 0) { struct timespec ts_; clock_gettime(CLOCK_MONOTONIC, &ts_); } } while (0)
#else
#  define TSAN_POLL(i) do { } while (0)
#endif
#define TSAN_POLL_END() TSAN_POLL(0)  /* also right before returning: a signal is never handled after its function returned */

static uint64_t lcg(uint64_t *s) { *s = *s * 6364136223846793005ull + 1442695040888963407ull; return *s >> 33; }

/* ==== the known call chain (static, noinline, distinct bodies; arguments through TLS so no IPA clone
   renames them; work after every call so none of them is a tail call) ==== */
static __thread long tls_na, tls_nb;
static __thread uint64_t tls_cpu_a, tls_cpu_b;
static __thread volatile uint64_t tls_sink_a, tls_sink_b, tls_sink_m, tls_sink_o;

static __attribute__((noinline)) void leaf_a(void) {
    uint64_t x = tls_sink_a;
    long i, n = tls_na;
    for (i = 0; i < n; i++) { x = x * 6364136223846793005ull + 1442695040888963407ull; TSAN_POLL(i); }
    tls_sink_a = x;
    TSAN_POLL_END();
}
static __attribute__((noinline)) void leaf_b(void) {
    uint64_t x = tls_sink_b;
    long i, n = tls_nb;
    for (i = 0; i < n; i++) { x = (x ^ (x >> 29)) * 0xbf58476d1ce4e5b9ull + 7; TSAN_POLL(i); }
    tls_sink_b = x;
    TSAN_POLL_END();
}
static __attribute__((noinline)) void middle(void) {
    uint64_t c0 = t_thread_cpu_ns(), c1, c2;
    leaf_a();
    c1 = t_thread_cpu_ns();
    leaf_b();
    c2 = t_thread_cpu_ns();
    tls_cpu_a += c1 - c0;
    tls_cpu_b += c2 - c1;
    tls_sink_m++;
    TSAN_POLL_END();
}
static __attribute__((noinline)) void outer(void) {
    middle();
    tls_sink_o++;
    TSAN_POLL_END();
}

static long g_base_iters;    /* leaf_b iterations for ~100 us of CPU (calibrated) */
static long g_base_iters_a;  /* leaf_a iterations for ~300 us of CPU (calibrated): a 3:1 split */
static int g_go_pipe[2];

typedef struct worker {
    pthread_t th;
    int tid, id;
    uint64_t cpu_target_ns, wall_limit_ns, cpu_total, wall_total, cpu_a, cpu_b, calls;
} worker;

static __attribute__((noinline)) void *worker_main(void *arg) {
    worker *w = (worker *)arg;
    uint64_t seed = 12345 + (uint64_t)w->id, end, c0;
    char ch, name[16];
    snprintf(name, sizeof name, "stk-worker-%d", w->id);
    pthread_setname_np(pthread_self(), name);
    __atomic_store_n(&w->tid, spprof_gettid(), __ATOMIC_RELEASE);
    while (read(g_go_pipe[0], &ch, 1) < 0 && errno == EINTR) {}
    c0 = t_thread_cpu_ns();
    w->wall_total = t_now_ns();
    end = w->wall_total + w->wall_limit_ns;
    /* run for a fixed amount of CPU time (the sample count depends on it), within a wall-clock limit */
    while (t_thread_cpu_ns() - c0 < w->cpu_target_ns && t_now_ns() < end) {
        /* irregular call lengths (50..150 us for leaf_b, 150..450 us for leaf_a): no aliasing with the tick */
        tls_nb = g_base_iters / 2 + (long)(lcg(&seed) % (uint64_t)g_base_iters);
        tls_na = g_base_iters_a / 2 + (long)(lcg(&seed) % (uint64_t)g_base_iters_a);
        outer();
        w->calls++;
    }
    w->cpu_total = t_thread_cpu_ns() - c0;
    w->wall_total = t_now_ns() - w->wall_total;
    w->cpu_a = tls_cpu_a;
    w->cpu_b = tls_cpu_b;
    tls_sink_o++;
    return NULL;
}

static void calibrate(void) {
    uint64_t c0, da = 0, db = 0;
    int k;
    tls_na = tls_nb = 1000000;
    for (k = 0; k < 3; k++) {  /* best of three: least disturbed */
        uint64_t d;
        c0 = t_thread_cpu_ns(); leaf_a(); d = t_thread_cpu_ns() - c0; if (!da || d < da) da = d;
        c0 = t_thread_cpu_ns(); leaf_b(); d = t_thread_cpu_ns() - c0; if (!db || d < db) db = d;
    }
    g_base_iters = (long)(1000000.0 * 100000.0 / (double)(db ? db : 1));
    g_base_iters_a = (long)(1000000.0 * 300000.0 / (double)(da ? da : 1));
    if (g_base_iters < 1000) g_base_iters = 1000;
    if (g_base_iters_a < 1000) g_base_iters_a = 1000;
    printf("calibration: leaf_a %ld iterations ~ 300 us, leaf_b %ld iterations ~ 100 us\n", g_base_iters_a, g_base_iters);
}

/* ---- symbolization (cached per address) ---- */
#define SYMCACHE 4096
typedef struct symc { uint64_t addr; uint32_t aux; int used; char name[256]; int in_exe, in_module; } symc;
static symc g_symc[SYMCACHE];
static uint64_t g_symc_full;
static int is_exe(const char *file) {  /* the symbolizer names this program by its real path */
    static char exe[4096];
    if (!exe[0] && !realpath("/proc/self/exe", exe)) return 0;
    return strcmp(file, exe) == 0;
}
static const symc *sym_of(const spprof_frame *f) {
    uint64_t h = (f->addr ^ (f->addr >> 17) ^ f->aux) * 0x9e3779b97f4a7c15ull;
    uint32_t i = (uint32_t)(h >> 40) & (SYMCACHE - 1), k;
    for (k = 0; k < SYMCACHE; k++, i = (i + 1) & (SYMCACHE - 1)) {
        symc *c = &g_symc[i];
        if (c->used && c->addr == f->addr && c->aux == f->aux) return c;
        if (!c->used) {
            spprof_symbol s;
            int found = spprof_resolve(f, &s);
            c->used = 1; c->addr = f->addr; c->aux = f->aux;
            snprintf(c->name, sizeof c->name, "%s", s.name);
            c->in_exe = found && is_exe(s.file);  /* a named function of this program */
            c->in_module = s.file[0] != 0;                                  /* inside some loaded object at all */
            return c;
        }
    }
    {   /* cache full: resolve without caching */
        static symc scratch;
        spprof_symbol s;
        int found = spprof_resolve(f, &s);
        scratch.used = 1; scratch.addr = f->addr; scratch.aux = f->aux;
        snprintf(scratch.name, sizeof scratch.name, "%s", s.name);
        scratch.in_exe = found && is_exe(s.file);
        scratch.in_module = s.file[0] != 0;
        g_symc_full++;
        return &scratch;
    }
}
static void symcache_reset(void) { memset(g_symc, 0, sizeof g_symc); }
static int is_fn(const spprof_frame *f, const char *fn) { return strcmp(sym_of(f)->name, fn) == 0; }

/* ==== 1. ancestry and shares ==== */
#define MAXW 2
typedef struct truth_scan {
    worker *w; int nw;
    uint64_t weight[MAXW], weight_a[MAXW], weight_b[MAXW], weight_other_exe[MAXW], weight_libc[MAXW];
    uint64_t checked, violations, libc_leaf, reached_root, outside;
    char first_violation[512], first_outside[512];
} truth_scan;

static void describe(const spprof_sample_view *v, char *out, size_t n) {
    int k;
    size_t len = 0;
    out[0] = 0;
    for (k = 0; k < v->nframes && k < 10 && len + 1 < n; k++)
        len += (size_t)snprintf(out + len, n - len, "%s%s", k ? " <- " : "", sym_of(&v->frames[k])->name);
}

static int truth_cb(const spprof_sample_view *v, void *user) {
    truth_scan *t = (truth_scan *)user;
    int wi, k, bad = 0, root = 0;
    for (wi = 0; wi < t->nw && t->w[wi].tid != v->tid; wi++) {}
    if (wi == t->nw || v->nframes == 0) return 0;
    for (k = 0; k < v->nframes; k++)  /* every frame, leaf to root, must at least be an address in loaded code */
        if (!sym_of(&v->frames[k])->in_module) {
            t->outside += v->count;
            if (!t->first_outside[0]) describe(v, t->first_outside, sizeof t->first_outside);
            break;
        }
    t->weight[wi] += v->weight;
    if (is_fn(&v->frames[0], "leaf_a")) t->weight_a[wi] += v->weight;
    else if (is_fn(&v->frames[0], "leaf_b")) t->weight_b[wi] += v->weight;
    else if (sym_of(&v->frames[0])->in_exe) t->weight_other_exe[wi] += v->weight;
    else t->weight_libc[wi] += v->weight;
    /* only samples whose leaf is one of the chain's functions are judged; a leaf in libc, the vDSO, a PLT
       stub or a sanitizer runtime (frames without frame pointers) is not */
    if (!is_fn(&v->frames[0], "leaf_a") && !is_fn(&v->frames[0], "leaf_b") && !is_fn(&v->frames[0], "middle") &&
        !is_fn(&v->frames[0], "outer") && !is_fn(&v->frames[0], "worker_main")) { t->libc_leaf += v->count; return 0; }
    t->checked += v->count;
    for (k = 0; k < v->nframes; k++) {
        const spprof_frame *f = &v->frames[k];
        const spprof_frame *up = k + 1 < v->nframes ? &v->frames[k + 1] : NULL;
        if (is_fn(f, "leaf_a") || is_fn(f, "leaf_b")) { if (k != 0 || !up || !is_fn(up, "middle")) bad = 1; }
        else if (is_fn(f, "middle")) { if (!up || !is_fn(up, "outer")) bad = 1; }
        else if (is_fn(f, "outer")) { if (!up || !is_fn(up, "worker_main")) bad = 1; }
        else if (is_fn(f, "worker_main")) root = 1;
        else if (k >= 1 && !root) bad = 1;  /* between the leaf and worker_main only the known chain */
        if (bad) break;
    }
    if (!root) bad = 1;  /* the walk must reach the thread's function */
    if (root) t->reached_root += v->count;
    if (bad) {
        t->violations += v->count;
        if (!t->first_violation[0]) describe(v, t->first_violation, sizeof t->first_violation);
    }
    return 0;
}

typedef struct weight_sum { uint64_t weight, count; } weight_sum;
static int weight_cb(const spprof_sample_view *v, void *user) {
    weight_sum *s = (weight_sum *)user;
    s->weight += v->weight; s->count += v->count;
    return 0;
}
static weight_sum profile_weight(void) { weight_sum s = {0, 0}; spprof_foreach_sample(weight_cb, &s); return s; }

/* ---- file helpers ---- */
static char g_dir[256];
static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = (char *)malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    if (buf) buf[n] = 0;
    if (len) *len = (size_t)n;
    fclose(f);
    return buf;
}
static int count_substr(const char *s, const char *sub) {
    int n = 0;
    size_t l = strlen(sub);
    while ((s = strstr(s, sub)) != NULL) { n++; s += l; }
    return n;
}
static int dir_entries(const char *dir, const char *must_contain) {  /* entries (except . and ..) containing the string */
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;
    if (!d) return -1;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && (!must_contain || strstr(de->d_name, must_contain))) n++;
    closedir(d);
    return n;
}

typedef struct collapsed_info {
    int lines, bad_lines, chain_a, chain_b, skipped, bad_thread_prefix;
    uint64_t total;
    char first_bad[256];
} collapsed_info;
static collapsed_info check_collapsed(const char *path, int threads) {
    collapsed_info ci;
    regex_t re;
    char *buf = slurp(path, NULL), *line, *save = NULL;
    memset(&ci, 0, sizeof ci);
    if (!buf) { ci.bad_lines = -1; return ci; }
    /* frames joined by ';' (a frame has no ';' and does not start or end with a space), a space, a count > 0 */
    regcomp(&re, "^[^; ]([^;]*[^; ])?(;[^; ]([^;]*[^; ])?)* [1-9][0-9]*$", REG_EXTENDED | REG_NOSUB);
    for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        const char *sp = strrchr(line, ' ');
        ci.lines++;
        if (regexec(&re, line, 0, NULL, 0) != 0) {
            ci.bad_lines++;
            if (!ci.first_bad[0]) snprintf(ci.first_bad, sizeof ci.first_bad, "%.200s", line);
            continue;
        }
        ci.total += strtoull(sp + 1, NULL, 10);
        if (strstr(line, ";outer;middle;leaf_a ")) ci.chain_a++;
        if (strstr(line, ";outer;middle;leaf_b ")) ci.chain_b++;
        if (strstr(line, "outer;leaf_") || strstr(line, "worker_main;middle") || strstr(line, "worker_main;leaf_")) ci.skipped++;
        if (threads && strstr(line, "leaf_a") && strncmp(line, "stk-worker-", 11) != 0) ci.bad_thread_prefix++;
        if (threads && !strstr(line, " (tid ")) ci.bad_thread_prefix++;
        if (threads) {  /* the first frame is "<name> (tid N)" */
            const char *semi = strchr(line, ';'), *tidp = strstr(line, " (tid ");
            if (!tidp || (semi && tidp > semi)) ci.bad_thread_prefix++;
        }
    }
    regfree(&re);
    free(buf);
    return ci;
}

static void test_truth_and_writers(void) {
    spprof_config cfg = t_config(1000000);
    worker w[MAXW];
    truth_scan ts;
    spprof_stats st, st2;
    weight_sum ws, ws2;
    int i, busy = 0;
    uint64_t cpu_a = 0, cpu_b = 0, cpu_all = 0, wsum = 0, wa = 0, wb = 0;
    char path[512], tmp[512];
    printf("ground truth: outer -> middle -> leaf_a (3 parts) / leaf_b (1 part), %d threads, CPU mode 1 kHz\n", MAXW);
    if (pipe(g_go_pipe) != 0) { CHECK(0, "pipe"); return; }
    memset(w, 0, sizeof w);
    for (i = 0; i < MAXW; i++) {
        w[i].id = i;
        w[i].cpu_target_ns = 3000000000u;   /* ~750 samples per thread at HZ=250 */
        w[i].wall_limit_ns = 20000000000u;  /* on a loaded machine: fewer samples, not a hang */
        pthread_create(&w[i].th, NULL, worker_main, &w[i]);
        while (!__atomic_load_n(&w[i].tid, __ATOMIC_ACQUIRE)) sched_yield();
    }
    CHECK(spprof_start(&cfg) == SPPROF_OK, "start");
    for (i = 0; i < MAXW; i++) if (write(g_go_pipe[1], "gg", 1) != 1) CHECK(0, "write");
    for (i = 0; i < MAXW; i++) pthread_join(w[i].th, NULL);
    CHECK(spprof_stop() == SPPROF_OK, "stop");
    close(g_go_pipe[0]); close(g_go_pipe[1]);

    memset(&ts, 0, sizeof ts);
    ts.w = w; ts.nw = MAXW;
    symcache_reset();
    spprof_foreach_sample(truth_cb, &ts);
    printf("  %llu samples judged, %llu with another leaf (libc, vdso, ...), %llu reached worker_main\n", (unsigned long long)ts.checked,
           (unsigned long long)ts.libc_leaf, (unsigned long long)ts.reached_root);
    for (i = 0; i < MAXW; i++) if ((double)w[i].cpu_total < 0.85 * (double)w[i].wall_total) busy = 1;
    if (busy)
        /* Threads competed for the CPUs. Linux then checks a thread's CPU-clock timer far less often than
           every tick, and at points biased towards scheduling events (reproduced without spprof: 0..8
           signals for 300 ms of CPU instead of ~75): the sample distribution is no ground truth then. */
        printf("  (machine busy: workers got %.0f%% and %.0f%% of a CPU; share checks skipped)\n",
               100.0 * (double)w[0].cpu_total / (double)w[0].wall_total, 100.0 * (double)w[1].cpu_total / (double)w[1].wall_total);
    CHECK(ts.checked >= (busy ? 20u : 200u), "enough samples to judge (%llu)", (unsigned long long)ts.checked);
    CHECK(ts.outside == 0, "no frame outside every loaded object, i.e. no invented frame past the root (%llu samples; first: %s)",
          (unsigned long long)ts.outside, ts.first_outside);
#if defined(T_TSAN)
    /* ThreadSanitizer defers an asynchronous signal to its next interceptor and hands the handler the ucontext
       saved at arrival. A signal that arrives in the last instructions of leaf_a (after TSAN_POLL_END's
       clock_gettime, before ret) is handled in middle's next clock_gettime, when leaf_a's frame is already
       overwritten: the registers are stale, not spprof's walk (seen once in 1,477 samples in CI). Allow that
       window, a few instructions of each ~300 us call, and nothing more. */
    CHECK(ts.violations * 200 <= ts.checked, "every stack is leaf_a|leaf_b <- middle <- outer <- worker_main, nothing skipped or invented "
          "(%llu violations in %llu, at most 0.5%% under TSan's deferred signals; first: %s)",
          (unsigned long long)ts.violations, (unsigned long long)ts.checked, ts.first_violation);
#else
    CHECK(ts.violations == 0, "every stack is leaf_a|leaf_b <- middle <- outer <- worker_main, nothing skipped or invented (%llu violations; first: %s)",
          (unsigned long long)ts.violations, ts.first_violation);
#endif
    for (i = 0; i < MAXW; i++) {
        double ta = (double)w[i].cpu_a / (double)w[i].cpu_total, tb = (double)w[i].cpu_b / (double)w[i].cpu_total;
        double sa = ts.weight[i] ? (double)ts.weight_a[i] / (double)ts.weight[i] : 0;
        double sb = ts.weight[i] ? (double)ts.weight_b[i] / (double)ts.weight[i] : 0;
        double expect_w = (double)w[i].cpu_total / 1e6;
        printf("  worker %d: %llu calls, CPU %.0f ms in %.0f ms; truth leaf_a %.1f%% leaf_b %.1f%%; sampled leaf_a %.1f%% leaf_b %.1f%% "
               "(other exe %.1f%%, libc %.1f%%); weight %llu, expected %.0f\n", i, (unsigned long long)w[i].calls,
               (double)w[i].cpu_total / 1e6, (double)w[i].wall_total / 1e6, 100 * ta, 100 * tb, 100 * sa, 100 * sb,
               ts.weight[i] ? 100.0 * (double)ts.weight_other_exe[i] / (double)ts.weight[i] : 0,
               ts.weight[i] ? 100.0 * (double)ts.weight_libc[i] / (double)ts.weight[i] : 0,
               (unsigned long long)ts.weight[i], expect_w);
        if (!busy)
            CHECK(ts.weight[i] > 0.75 * expect_w && ts.weight[i] < 1.25 * expect_w, "worker %d: total weight %llu ~ CPU time / interval %.0f",
                  i, (unsigned long long)ts.weight[i], expect_w);
        cpu_a += w[i].cpu_a; cpu_b += w[i].cpu_b; cpu_all += w[i].cpu_total;
        wa += ts.weight_a[i]; wb += ts.weight_b[i]; wsum += ts.weight[i];
    }
    {   /* shares over both workers: ~1500 samples at HZ=250, a standard error of ~1.1 points */
        double ta = (double)cpu_a / (double)cpu_all, tb = (double)cpu_b / (double)cpu_all;
        double sa = wsum ? (double)wa / (double)wsum : 0, sb = wsum ? (double)wb / (double)wsum : 0;
        CHECK(ta > 0.6 && ta < 0.85, "the workload has about the intended 3:1 split (leaf_a %.1f%% of CPU, leaf_b %.1f%%)", 100 * ta, 100 * tb);
        if (!busy) {
            CHECK(sa > ta - 0.05 && sa < ta + 0.05, "leaf_a share %.1f%% within 5 points of the truth %.1f%%", 100 * sa, 100 * ta);
            CHECK(sb > tb - 0.05 && sb < tb + 0.05, "leaf_b share %.1f%% within 5 points of the truth %.1f%%", 100 * sb, 100 * tb);
        }
    }

    /* ---- writers ---- */
    spprof_get_stats(&st);
    ws = profile_weight();
    {
        collapsed_info ci;
        snprintf(path, sizeof path, "%s/plain.collapsed", g_dir);
        { spprof_result r_ = spprof_write_collapsed(path, 0); CHECK(r_ == SPPROF_OK, "write_collapsed: %s", r_ ? spprof_last_error() : "ok"); }
        ci = check_collapsed(path, 0);
        CHECK(ci.lines > 0 && ci.bad_lines == 0, "collapsed: %d lines, all \"frame;frame;... count\" (%d bad: %s)", ci.lines, ci.bad_lines, ci.first_bad);
        CHECK(ci.chain_a > 0 && ci.chain_b > 0, "collapsed: has ...;outer;middle;leaf_a (%d lines) and ...;outer;middle;leaf_b (%d)", ci.chain_a, ci.chain_b);
        CHECK(ci.skipped == 0, "collapsed: no line with a skipped frame (outer;leaf_x, worker_main;middle) (%d)", ci.skipped);
        CHECK(ci.total == ws.weight, "collapsed: counts sum to the profile's total weight (%llu vs %llu)",
              (unsigned long long)ci.total, (unsigned long long)ws.weight);
        snprintf(path, sizeof path, "%s/threads.collapsed", g_dir);
        { spprof_result r_ = spprof_write_collapsed(path, SPPROF_COLLAPSED_THREADS); CHECK(r_ == SPPROF_OK, "write_collapsed(THREADS): %s", r_ ? spprof_last_error() : "ok"); }
        ci = check_collapsed(path, 1);
        CHECK(ci.lines > 0 && ci.bad_lines == 0, "collapsed/threads: %d well-formed lines (%d bad: %s)", ci.lines, ci.bad_lines, ci.first_bad);
        CHECK(ci.bad_thread_prefix == 0, "collapsed/threads: first frame is \"<thread name> (tid N)\", leaf_a lines under stk-worker-* (%d bad)", ci.bad_thread_prefix);
        CHECK(ci.chain_a > 0 && ci.total == ws.weight, "collapsed/threads: has outer;middle;leaf_a, counts sum to the total weight (%llu vs %llu)",
              (unsigned long long)ci.total, (unsigned long long)ws.weight);
    }
    {
        char *js;
        size_t len = 0;
        snprintf(path, sizeof path, "%s/out.speedscope.json", g_dir);
        { spprof_result r_ = spprof_write_speedscope(path); CHECK(r_ == SPPROF_OK, "write_speedscope: %s", r_ ? spprof_last_error() : "ok"); }
        js = slurp(path, &len);
        CHECK(js && strncmp(js, "{\"$schema\":\"https://www.speedscope.app/file-format-schema.json\"", 62) == 0,
              "speedscope: starts with the $schema (%zu bytes)", len);
        CHECK(js && strstr(js, "\"name\":\"leaf_a\"") && strstr(js, "\"name\":\"middle\"") && strstr(js, "\"name\":\"outer\""),
              "speedscope: frames include leaf_a, middle, outer");
        CHECK(js && count_substr(js, "\"type\":\"sampled\"") >= MAXW && len > 2 && js[len - 1] == '\n' && js[len - 2] == '}',
              "speedscope: a sampled profile per thread, complete file");
        free(js);
    }

    /* ---- unwritable paths: SPPROF_ERR_IO, path named, nothing left behind, profile kept ---- */
    {
        const char *bad = "/nonexistent-dir/x.json";
        struct stat sb;
        spprof_result r;
        spprof__errbuf[0] = 0;
        r = spprof_write_speedscope(bad);
        CHECK(r == SPPROF_ERR_IO && strstr(spprof_last_error(), bad), "speedscope to %s -> IO (%d), error names the path: \"%s\"", bad, (int)r, spprof_last_error());
        spprof__errbuf[0] = 0;
        r = spprof_write_collapsed(bad, 0);
        CHECK(r == SPPROF_ERR_IO && strstr(spprof_last_error(), bad), "collapsed to %s -> IO (%d): \"%s\"", bad, (int)r, spprof_last_error());
        CHECK(stat("/nonexistent-dir", &sb) != 0, "  and nothing was created");

        /* read-only: /proc accepts no new files, even for root */
        bad = "/proc/spprof-test-out.json";
        spprof__errbuf[0] = 0;
        r = spprof_write_speedscope(bad);
        CHECK(r == SPPROF_ERR_IO && strstr(spprof_last_error(), bad), "speedscope to %s -> IO (%d): \"%s\"", bad, (int)r, spprof_last_error());
        CHECK(dir_entries("/proc", "spprof-test-out") == 0, "  and no file or temp file in /proc");

        /* read-only directory (permissions; root ignores them, so only checked for other users) */
        snprintf(tmp, sizeof tmp, "%s/ro", g_dir);
        mkdir(tmp, 0755);
        chmod(tmp, 0555);
        snprintf(path, sizeof path, "%s/ro/x.json", g_dir);
        if (geteuid() != 0) {
            spprof__errbuf[0] = 0;
            r = spprof_write_collapsed(path, 0);
            CHECK(r == SPPROF_ERR_IO && strstr(spprof_last_error(), path), "collapsed into a read-only directory -> IO: \"%s\"", spprof_last_error());
            CHECK(dir_entries(tmp, NULL) == 0, "  and the directory is still empty");
        } else {
            printf("  (running as root: read-only directory permissions not checked)\n");
        }
        chmod(tmp, 0755);

        /* the temp file is written but cannot be renamed over the target (a directory): removed again */
        snprintf(tmp, sizeof tmp, "%s/adir", g_dir);
        mkdir(tmp, 0755);
        spprof__errbuf[0] = 0;
        r = spprof_write_speedscope(tmp);
        CHECK(r == SPPROF_ERR_IO && strstr(spprof_last_error(), tmp), "speedscope over a directory -> IO (%d): \"%s\"", (int)r, spprof_last_error());
        r = spprof_write_collapsed(tmp, SPPROF_COLLAPSED_THREADS);
        CHECK(r == SPPROF_ERR_IO, "collapsed over a directory -> IO (%d)", (int)r);
        CHECK(stat(tmp, &sb) == 0 && S_ISDIR(sb.st_mode) && dir_entries(tmp, NULL) == 0, "  the directory is untouched");
        CHECK(dir_entries(g_dir, ".tmp.") == 0, "  no temp file left behind (%d)", dir_entries(g_dir, ".tmp."));

        spprof__errbuf[0] = 0;
        r = spprof_write_collapsed("", 0);
        CHECK(r == SPPROF_ERR_INVALID_CONFIG && spprof_last_error()[0], "empty path -> INVALID_CONFIG (%d)", (int)r);
        r = spprof_write_speedscope(NULL);
        CHECK(r == SPPROF_ERR_INVALID_CONFIG, "NULL path -> INVALID_CONFIG (%d)", (int)r);

        /* the profile is intact: a good path afterwards has every sample */
        spprof_get_stats(&st2);
        ws2 = profile_weight();
        CHECK(st2.samples_in_profile == st.samples_in_profile && ws2.weight == ws.weight,
              "profile kept after failed writes (%llu samples before, %llu after)", (unsigned long long)st.samples_in_profile,
              (unsigned long long)st2.samples_in_profile);
        snprintf(path, sizeof path, "%s/again.collapsed", g_dir);
        CHECK(spprof_write_collapsed(path, 0) == SPPROF_OK, "write to a good path afterwards");
        {
            collapsed_info ci = check_collapsed(path, 0);
            CHECK(ci.bad_lines == 0 && ci.total == ws.weight, "  it has all samples (weight %llu of %llu)", (unsigned long long)ci.total,
                  (unsigned long long)ws.weight);
        }
        snprintf(path, sizeof path, "%s/again.speedscope.json", g_dir);
        CHECK(spprof_write_speedscope(path) == SPPROF_OK, "speedscope to a good path afterwards");
    }
}

/* ==== 2. a sample belongs to its thread ==== */
static __thread volatile uint64_t tls_sink_f;
static __attribute__((noinline)) void func_a(long n) {
    uint64_t x = tls_sink_f;
    long i;
    for (i = 0; i < n; i++) { x = x * 2862933555777941757ull + 3037000493ull; TSAN_POLL(i); }
    tls_sink_f = x;
    TSAN_POLL_END();
}
static __attribute__((noinline)) void func_b(long n) {
    uint64_t x = tls_sink_f;
    long i;
    for (i = 0; i < n; i++) { x = (x + 0x9e3779b97f4a7c15ull) ^ (x >> 31); TSAN_POLL(i); }
    tls_sink_f = x + 1;
    TSAN_POLL_END();
}
typedef struct owner { pthread_t th; int tid, which, stop; } owner;
static void *owner_main(void *arg) {  /* only its one function, until told to stop */
    owner *o = (owner *)arg;
    __atomic_store_n(&o->tid, spprof_gettid(), __ATOMIC_RELEASE);
    while (!__atomic_load_n(&o->stop, __ATOMIC_ACQUIRE)) {
        if (o->which == 0) func_a(g_base_iters * 5);
        else func_b(g_base_iters * 5);
    }
    tls_sink_f++;
    return NULL;
}
typedef struct owner_scan { int tid_a, tid_b; uint64_t a_has_a, a_has_b, b_has_a, b_has_b; } owner_scan;
static int owner_cb(const spprof_sample_view *v, void *user) {
    owner_scan *s = (owner_scan *)user;
    int k, ha = 0, hb = 0;
    for (k = 0; k < v->nframes; k++) { if (is_fn(&v->frames[k], "func_a")) ha = 1; if (is_fn(&v->frames[k], "func_b")) hb = 1; }
    if (v->tid == s->tid_a) { s->a_has_a += ha ? v->count : 0; s->a_has_b += hb ? v->count : 0; }
    if (v->tid == s->tid_b) { s->b_has_a += ha ? v->count : 0; s->b_has_b += hb ? v->count : 0; }
    return 0;
}
static void test_ownership(spprof_mode mode) {
    spprof_config cfg = t_config(1000000);
    owner o[2];
    owner_scan s;
    int i;
    const char *m = mode == SPPROF_MODE_WALL ? "wall" : "cpu";
    printf("a sample belongs to its thread (%s mode)\n", m);
    memset(o, 0, sizeof o);
    for (i = 0; i < 2; i++) {
        o[i].which = i;
        pthread_create(&o[i].th, NULL, owner_main, &o[i]);
        while (!__atomic_load_n(&o[i].tid, __ATOMIC_ACQUIRE)) sched_yield();
    }
    cfg.mode = mode;
    CHECK(spprof_start(&cfg) == SPPROF_OK, "%s: start", m);
    {   /* 300 ms, longer (up to 15 s) until both threads have 20 samples: CPU-clock timers can be slow to
           fire on a loaded machine */
        uint64_t end = t_now_ns() + 15000000000u;
        struct timespec t = {0, 300000000};
        while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
        for (;;) {
            spprof_flush();
            memset(&s, 0, sizeof s);
            s.tid_a = o[0].tid; s.tid_b = o[1].tid;
            symcache_reset();
            spprof_foreach_sample(owner_cb, &s);
            if ((s.a_has_a >= 20 && s.b_has_b >= 20) || t_now_ns() > end) break;
            t.tv_sec = 0; t.tv_nsec = 50000000;
            while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
        }
    }
    CHECK(spprof_stop() == SPPROF_OK, "%s: stop", m);
    for (i = 0; i < 2; i++) { __atomic_store_n(&o[i].stop, 1, __ATOMIC_RELEASE); pthread_join(o[i].th, NULL); }
    memset(&s, 0, sizeof s);
    s.tid_a = o[0].tid; s.tid_b = o[1].tid;
    symcache_reset();
    spprof_foreach_sample(owner_cb, &s);
    printf("  thread A: %llu samples in func_a, %llu in func_b; thread B: %llu in func_a, %llu in func_b\n",
           (unsigned long long)s.a_has_a, (unsigned long long)s.a_has_b, (unsigned long long)s.b_has_a, (unsigned long long)s.b_has_b);
    CHECK(s.a_has_a >= 20 && s.b_has_b >= 20, "%s: each thread has samples of its own function (20 or more)", m);
    CHECK(s.a_has_b == 0 && s.b_has_a == 0, "%s: no sample of thread A contains func_b, none of B contains func_a", m);
}

/* ==== 2b. a caller that works after its callee returned: never its own caller ====
   On aarch64 the link register still holds the return address of the last call the function made (into
   the function itself): the walker once took it for the caller and showed works_after_call twice in a row
   (found when the aarch64 walker first ran, under qemu-user; x86-64 has no such register). */
static __thread volatile uint64_t tls_sink_s;
static __attribute__((noinline)) void tiny_callee(void) { tls_sink_s++; }
static __attribute__((noinline)) void works_after_call(long n) {
    uint64_t x;
    long i;
    tiny_callee();
    x = tls_sink_s;
    for (i = 0; i < n; i++) { x = x * 6364136223846793005ull + 1; TSAN_POLL(i); }  /* most samples land here */
    tls_sink_s = x;
    TSAN_POLL_END();
}
static __attribute__((noinline)) void stale_outer(long n) { works_after_call(n); tls_sink_s++; }
static int g_stale_stop;
static void *stale_main(void *arg) {
    (void)arg;
    while (!__atomic_load_n(&g_stale_stop, __ATOMIC_ACQUIRE)) stale_outer(g_base_iters);
    return NULL;
}
typedef struct stale_scan { uint64_t in_fn, doubled, under_outer; char first_bad[512]; } stale_scan;
static int stale_cb(const spprof_sample_view *v, void *user) {
    stale_scan *s = (stale_scan *)user;
    int k;
    for (k = 0; k < v->nframes; k++) {
        if (!is_fn(&v->frames[k], "works_after_call")) continue;
        s->in_fn += v->count;
        if (k + 1 < v->nframes && is_fn(&v->frames[k + 1], "stale_outer")) s->under_outer += v->count;
        else if (!s->first_bad[0]) describe(v, s->first_bad, sizeof s->first_bad);
        if (k + 1 < v->nframes && is_fn(&v->frames[k + 1], "works_after_call")) s->doubled += v->count;
        break;
    }
    return 0;
}
static void test_stale_lr(void) {
    spprof_config cfg = t_config(1000000);
    stale_scan s;
    pthread_t th;
    uint64_t end = t_now_ns() + 15000000000u;
    printf("a caller working after its callee returned (aarch64: stale link register)\n");
    g_stale_stop = 0;
    CHECK(spprof_start(&cfg) == SPPROF_OK, "start");
    pthread_create(&th, NULL, stale_main, NULL);
    do {  /* until 100 samples in works_after_call (up to 15 s on a loaded machine) */
        t_sleep_ms(100);
        spprof_flush();
        memset(&s, 0, sizeof s);
        symcache_reset();
        spprof_foreach_sample(stale_cb, &s);
    } while (s.in_fn < 100 && t_now_ns() < end);
    CHECK(spprof_stop() == SPPROF_OK, "stop");
    __atomic_store_n(&g_stale_stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    memset(&s, 0, sizeof s);
    symcache_reset();
    spprof_foreach_sample(stale_cb, &s);
    printf("  %llu samples in works_after_call, %llu with stale_outer as the caller, %llu doubled; first other: %s\n",
           (unsigned long long)s.in_fn, (unsigned long long)s.under_outer, (unsigned long long)s.doubled, s.first_bad);
    CHECK(s.in_fn >= 100, "enough samples (%llu)", (unsigned long long)s.in_fn);
    CHECK(s.doubled == 0, "works_after_call never shown as its own caller (%llu times)", (unsigned long long)s.doubled);
    CHECK(s.under_outer == s.in_fn, "its caller is always stale_outer (%llu of %llu)", (unsigned long long)s.under_outer,
          (unsigned long long)s.in_fn);
}

/* ==== 3. max_depth ==== */
static __thread volatile uint64_t tls_sink_r;
static __attribute__((noinline)) void bottom_spin(long n) {
    uint64_t x = tls_sink_r;
    long i;
    for (i = 0; i < n; i++) { x = x * 3935559000370003845ull + 2691343689449507681ull; TSAN_POLL(i); }
    tls_sink_r = x;
    TSAN_POLL_END();
}
static __attribute__((noinline)) void recurse(int depth, long n) {
    if (depth <= 1) bottom_spin(n);
    else recurse(depth - 1, n);
    tls_sink_r++;  /* not a tail call */
    TSAN_POLL_END();
}
typedef struct depth_scan { int tid; uint64_t samples, too_deep, bottom, bottom_bad, bottom_short; int maxn; char bad[512], first[512]; } depth_scan;
static int depth_cb(const spprof_sample_view *v, void *user) {
    depth_scan *d = (depth_scan *)user;
    int k, ok = 1;
    d->samples += v->count;
    if (v->nframes > d->maxn) d->maxn = v->nframes;
    if (v->nframes > 50) d->too_deep += v->count;
    if (v->tid == d->tid && !d->first[0]) describe(v, d->first, sizeof d->first);
    if (v->tid != d->tid || v->nframes == 0 || !is_fn(&v->frames[0], "bottom_spin")) return 0;
    d->bottom += v->count;
    if (v->nframes != 50) d->bottom_short += v->count;
    for (k = 1; k < v->nframes; k++) if (!is_fn(&v->frames[k], "recurse")) ok = 0;
    if (!ok) { d->bottom_bad += v->count; if (!d->bad[0]) describe(v, d->bad, sizeof d->bad); }
    return 0;
}
static int g_deep_stop;
static void *deep_main(void *arg) {  /* at the bottom of a 300-deep recursion until told to stop */
    int *tidp = (int *)arg;
    __atomic_store_n(tidp, spprof_gettid(), __ATOMIC_RELEASE);
    while (!__atomic_load_n(&g_deep_stop, __ATOMIC_ACQUIRE)) recurse(300, g_base_iters * 20);
    return NULL;
}
static void test_max_depth(void) {
    spprof_config cfg = t_config(1000000);
    pthread_t th;
    int tid = 0;
    depth_scan d;
    spprof_stats st;
    printf("max_depth 50 with a 300-deep recursion\n");
    cfg.max_depth = 50;
    CHECK(spprof_start(&cfg) == SPPROF_OK, "start");
    pthread_create(&th, NULL, deep_main, &tid);
    {   /* until there are 100 truncated samples (about 400 ms of CPU), at most 15 s */
        uint64_t end = t_now_ns() + 15000000000u;
        do {
            struct timespec t = {0, 50000000};
            while (nanosleep(&t, &t) != 0 && errno == EINTR) {}
            spprof_get_stats(&st);
        } while (st.walk_truncated < 100 && t_now_ns() < end);
    }
    CHECK(spprof_stop() == SPPROF_OK, "stop");
    __atomic_store_n(&g_deep_stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    spprof_get_stats(&st);
    memset(&d, 0, sizeof d);
    d.tid = tid;
    symcache_reset();
    spprof_foreach_sample(depth_cb, &d);
    printf("  %llu samples, deepest %d frames, %llu in bottom_spin, walk_truncated %llu, %llu unique frames; first sample of the thread: %s\n",
           (unsigned long long)d.samples, d.maxn, (unsigned long long)d.bottom, (unsigned long long)st.walk_truncated,
           (unsigned long long)st.unique_frames, d.first);
    CHECK(d.too_deep == 0 && d.maxn <= 50, "no sample has more than 50 frames (max %d)", d.maxn);
    CHECK(st.walk_truncated > 0 && st.walk_truncated >= d.bottom, "walk_truncated %llu > 0 (at least the %llu bottom samples)",
          (unsigned long long)st.walk_truncated, (unsigned long long)d.bottom);
    CHECK(d.bottom >= 20 && d.bottom_short == 0 && d.bottom_bad == 0,
          "samples at the bottom are bottom_spin + 49 x recurse (%llu short, %llu wrong; %s)",
          (unsigned long long)d.bottom_short, (unsigned long long)d.bottom_bad, d.bad);
}

/* ==== 4. a session without samples ==== */
static void test_empty_session(void) {
    spprof_config cfg = t_config(1000000000);
    spprof_stats st;
    char path[512], *js;
    size_t len = 0;
    struct stat sb;
    printf("empty session\n");
    CHECK(spprof_start(&cfg) == SPPROF_OK, "start (1 s interval)");
    CHECK(spprof_stop() == SPPROF_OK, "stop at once");
    spprof_get_stats(&st);
    CHECK(st.samples_in_profile == 0, "no samples (%llu)", (unsigned long long)st.samples_in_profile);
    snprintf(path, sizeof path, "%s/empty.speedscope.json", g_dir);
    { spprof_result r_ = spprof_write_speedscope(path); CHECK(r_ == SPPROF_OK, "speedscope written: %s", r_ ? spprof_last_error() : "ok"); }
    js = slurp(path, &len);
    CHECK(js && strncmp(js, "{\"$schema\":\"https://www.speedscope.app/file-format-schema.json\"", 62) == 0, "  starts with the $schema");
    CHECK(js && count_substr(js, "\"type\":\"sampled\"") == 1 && strstr(js, "\"samples\":[],\"weights\":[]") &&
          strstr(js, "\"frames\":[]") && len > 2 && js[len - 2] == '}', "  exactly one empty profile, no frames, complete file");
    free(js);
    snprintf(path, sizeof path, "%s/empty.collapsed", g_dir);
    CHECK(spprof_write_collapsed(path, SPPROF_COLLAPSED_THREADS) == SPPROF_OK, "collapsed written");
    CHECK(stat(path, &sb) == 0 && sb.st_size == 0, "  and empty (%lld bytes)", (long long)sb.st_size);
}

static void rm_rf(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[1024];
    if (!d) return;
    while ((de = readdir(d)) != NULL) {
        struct stat sb;
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) { chmod(p, 0755); rm_rf(p); }
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

int main(void) {
    uint64_t t0 = t_now_ns(), t;
    const char *tmpdir = getenv("TMPDIR");
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(g_dir, sizeof g_dir, "%s/spprof-stacks-XXXXXX", tmpdir && tmpdir[0] ? tmpdir : "/tmp");
    if (!mkdtemp(g_dir)) { printf("mkdtemp failed\n"); return 2; }
    calibrate();
#define STEP(call) do { t = t_now_ns(); call; printf("  (%.2f s)\n", (double)(t_now_ns() - t) / 1e9); } while (0)
    STEP(test_truth_and_writers());
    STEP(test_ownership(SPPROF_MODE_CPU));
    STEP(test_ownership(SPPROF_MODE_WALL));
    STEP(test_stale_lr());
    STEP(test_max_depth());
    STEP(test_empty_session());
    rm_rf(g_dir);
    if (g_symc_full) printf("(symbol cache overflowed %llu times)\n", (unsigned long long)g_symc_full);
    printf("total %.2f s\n", (double)(t_now_ns() - t0) / 1e9);
    return TEST_DONE();
}
