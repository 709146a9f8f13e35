/* test_ring.c - the lock-free sample ring on its own (internal API, no timers, no signals from spprof):
   - several producer threads push known sequences while one consumer (the real one, spprof__drain) drains
     concurrently: every published sample is seen exactly once, in per-producer order, with intact content;
   - producers inside signal handlers that interrupt other producers on the same thread (a claimed but not
     yet published cell must not block or corrupt anyone);
   - a full ring: claims fail once capacity is reached, and succeed again after a drain; a claimed but
     unpublished cell stops the consumer until it is published; walk-failed cells are consumed but dropped. */
#include "testutil.h"
#include <signal.h>
#include <sched.h>

#define DEPTH 16       /* max_depth of the test ring */
#define PERIOD 61      /* frame patterns repeat every PERIOD samples of a producer (bounds unique stacks) */
#define MAXPROD 16

/* ---- encoding of a sample: everything derives from (producer, seq) ---- */
static int enc_nframes(uint32_t prod, uint64_t seq) { return 1 + (int)((seq + prod) % DEPTH); }
static uint64_t enc_addr(uint32_t prod, uint64_t seq, int k) {
    return 0x100000000ull * (prod + 1) + (seq % PERIOD) * 0x1000u + (uint64_t)k * 8u + 0x40;
}
static void fill_sample(spprof__sample_hdr *c, uint32_t prod, uint32_t rec, uint64_t seq) {
    spprof_frame *fr = (spprof_frame *)(void *)(c + 1);
    int k, n = enc_nframes(prod, seq);
    c->ts = seq;              /* shows up as t_first_ns/t_last_ns of the run */
    c->tid = 1000 + (int32_t)prod;
    c->rec = rec;
    c->flags = 0;
    c->weight = 1;
    for (k = 0; k < n; k++) {
        fr[k].addr = enc_addr(prod, seq, k);
        fr[k].aux = prod;
        fr[k].kind = SPPROF_FRAME_USER + (uint32_t)(seq % PERIOD);
    }
    c->nframes = n;
}

/* ---- profile/ring set-up around the real consumer ---- */
static uint32_t g_rec_base;
static void setup_ring(uint32_t slots, int nprod) {
    int i;
    pthread_mutex_lock(&spprof__prof_lock);
    spprof__profile_free(&spprof__g.prof);
    spprof__g.cfg = spprof_config_default();
    spprof__g.cfg.memory_limit = 1ull << 40;
    spprof__g.max_depth = DEPTH;
    spprof__g.dropped_memory = 0;
    if (!spprof__ring_init(&spprof__g.ring, slots, DEPTH)) { printf("ring_init failed\n"); exit(2); }
    g_rec_base = spprof__g.prof.nrecs;
    for (i = 0; i < nprod; i++) {
        char name[32];
        snprintf(name, sizeof name, "prod-%d", i);
        spprof__new_record(1000 + i, name);
    }
    pthread_mutex_unlock(&spprof__prof_lock);
}
static void teardown_ring(void) {
    pthread_mutex_lock(&spprof__prof_lock);
    spprof__ring_free(&spprof__g.ring);
    spprof__profile_free(&spprof__g.prof);
    pthread_mutex_unlock(&spprof__prof_lock);
}
static void drain_now(void) {
    pthread_mutex_lock(&spprof__prof_lock);
    spprof__drain();
    pthread_mutex_unlock(&spprof__prof_lock);
}
static uint64_t ring_deq(void) { return SPPROF__LOAD(&spprof__g.ring.deq); }

/* A producer exactly like spprof's signal handler: claim, write in place, publish, look at the fill level.
   Returns 0 when the ring is full (or contended past the retry bound). With self_signal, the thread sends
   itself g_self_signo between claim and publish, so that a handler producer runs inside that window. */
static __thread volatile int tls_holding;  /* this thread holds a claimed, unpublished cell */
static int g_self_signo;
static int produce_ex(uint32_t prod, uint64_t seq, int dawdle, int self_signal);
static int produce(uint32_t prod, uint64_t seq, int dawdle) { return produce_ex(prod, seq, dawdle, 0); }
static int produce_ex(uint32_t prod, uint64_t seq, int dawdle, int self_signal) {
    uint64_t pos;
    spprof__sample_hdr *c = spprof__ring_claim(&spprof__g.ring, &pos);
    if (!c) return 0;
    tls_holding++;
    fill_sample(c, prod, g_rec_base + prod, seq);
    if (dawdle) { volatile int i; for (i = 0; i < dawdle; i++) {} }  /* widen the claimed-not-published window */
    if (self_signal) pthread_kill(pthread_self(), g_self_signo);  /* its handler produces before we publish */
    spprof__ring_publish(c, pos);
    tls_holding--;
    (void)spprof__ring_fill(&spprof__g.ring);
    return 1;
}

/* ---- verification through the profile (runs in consumption order per record) ---- */
typedef struct verify_state {
    int nprod;
    uint64_t next[MAXPROD];   /* next expected seq per producer */
    uint64_t bad_order, bad_content, bad_run, foreign;
    char first_err[256];
} verify_state;

static int verify_cb(const spprof_sample_view *v, void *user) {
    verify_state *vs = (verify_state *)user;
    uint32_t prod;
    uint64_t seq;
    int k, ok = 1;
    if (v->thread_index < g_rec_base || v->thread_index >= g_rec_base + (uint32_t)vs->nprod) { vs->foreign++; return 0; }
    prod = v->thread_index - g_rec_base;
    seq = v->t_first_ns;
    if (v->count != 1 || v->weight != 1 || v->t_last_ns != v->t_first_ns) {
        vs->bad_run++;
        if (!vs->first_err[0]) snprintf(vs->first_err, sizeof vs->first_err, "prod %u seq %llu: run count %u weight %u", prod, (unsigned long long)seq, v->count, v->weight);
    }
    if (seq != vs->next[prod]) {
        vs->bad_order++;
        if (!vs->first_err[0]) snprintf(vs->first_err, sizeof vs->first_err, "prod %u: got seq %llu, expected %llu", prod, (unsigned long long)seq, (unsigned long long)vs->next[prod]);
    }
    vs->next[prod] = seq + 1;
    if (v->tid != 1000 + (int)prod || v->nframes != enc_nframes(prod, seq)) ok = 0;
    for (k = 0; ok && k < v->nframes; k++)
        if (v->frames[k].addr != enc_addr(prod, seq, k) || v->frames[k].aux != prod ||
            v->frames[k].kind != SPPROF_FRAME_USER + (uint32_t)(seq % PERIOD)) ok = 0;
    if (!ok) {
        vs->bad_content++;
        if (!vs->first_err[0]) snprintf(vs->first_err, sizeof vs->first_err, "prod %u seq %llu: torn or wrong content (nframes %d)", prod, (unsigned long long)seq, v->nframes);
    }
    return 0;
}

/* ==== 1. concurrent producer threads, one concurrent consumer ==== */
typedef struct prod_arg { uint32_t id; uint64_t n; uint64_t full_retries; } prod_arg;
static volatile int g_go;
static int g_producers_done;
static uint64_t g_deadline;  /* producers stop early at this time (a loaded machine): n becomes what they made */

static void *producer_main(void *arg) {
    prod_arg *a = (prod_arg *)arg;
    uint64_t seq = 0;
    while (!__atomic_load_n(&g_go, __ATOMIC_ACQUIRE)) sched_yield();
    while (seq < a->n) {
        if (produce(a->id, seq, (seq % 7 == 0) ? 200 : 0)) seq++;
        else { a->full_retries++; sched_yield(); }
        if ((seq & 1023) == 0 && t_now_ns() > g_deadline) break;
    }
    a->n = seq;
    __atomic_fetch_add(&g_producers_done, 1, __ATOMIC_ACQ_REL);
    return NULL;
}

static void *consumer_main(void *arg) {
    int nprod = *(int *)arg;
    uint64_t loops = 0;
    for (;;) {
        int done = __atomic_load_n(&g_producers_done, __ATOMIC_ACQUIRE) == nprod;
        drain_now();
        loops++;
        if (done && ring_deq() == SPPROF__LOAD(&spprof__g.ring.enq)) break;
        if (loops % 4 == 0) sched_yield();
    }
    return NULL;
}

static void test_concurrent(int nprod, uint32_t slots) {
    pthread_t th[MAXPROD], cons;
    prod_arg args[MAXPROD];
    verify_state vs;
    uint64_t n = (uint64_t)t_scaled(300000, 30000), total = 0, retries = 0, in_profile = 0;
    uint32_t i;
    int j, all = 1;
    uint64_t t0 = t_now_ns();
    printf("concurrent: %d producers x %llu samples, ring of %u slots\n", nprod, (unsigned long long)n, slots);
    setup_ring(slots, nprod);
    g_go = 0;
    g_producers_done = 0;
    g_deadline = t_now_ns() + 8000000000u;
    for (j = 0; j < nprod; j++) {
        args[j].id = (uint32_t)j; args[j].n = n + (uint64_t)j * 17; args[j].full_retries = 0;
        pthread_create(&th[j], NULL, producer_main, &args[j]);
    }
    pthread_create(&cons, NULL, consumer_main, &nprod);
    __atomic_store_n(&g_go, 1, __ATOMIC_RELEASE);
    for (j = 0; j < nprod; j++) { pthread_join(th[j], NULL); retries += args[j].full_retries; total += args[j].n; }
    if (total < (uint64_t)nprod * n) printf("  (machine busy: stopped after %llu samples)\n", (unsigned long long)total);
    CHECK(total >= (uint64_t)nprod * 1024, "producers got through the ring many times (%llu samples)", (unsigned long long)total);
    pthread_join(cons, NULL);
    for (i = 0; i < spprof__g.prof.nrecs; i++) in_profile += spprof__g.prof.recs[i].nsamples;
    CHECK(ring_deq() == total, "consumer advanced over every published sample (%llu of %llu)",
          (unsigned long long)ring_deq(), (unsigned long long)total);
    CHECK(in_profile == total, "every published sample reached the profile (%llu of %llu; %llu full-ring retries)",
          (unsigned long long)in_profile, (unsigned long long)total, (unsigned long long)retries);
    memset(&vs, 0, sizeof vs);
    vs.nprod = nprod;
    spprof_foreach_sample(verify_cb, &vs);
    for (j = 0; j < nprod; j++) if (vs.next[j] != args[j].n) all = 0;
    CHECK(all && vs.bad_order == 0, "each producer's samples seen exactly once, in order (%llu order errors) %s",
          (unsigned long long)vs.bad_order, vs.first_err);
    CHECK(vs.bad_content == 0 && vs.bad_run == 0 && vs.foreign == 0, "content intact: no torn frames or headers (%llu bad, %llu bad runs, %llu foreign) %s",
          (unsigned long long)vs.bad_content, (unsigned long long)vs.bad_run, (unsigned long long)vs.foreign, vs.first_err);
    CHECK(spprof__g.dropped_memory == 0, "no sample dropped by the aggregator");
    teardown_ring();
    printf("  (%.2f s)\n", (double)(t_now_ns() - t0) / 1e9);
}

/* ==== 2. producers in signal handlers, interrupting producers on the same thread ==== */
#define NSIGTHREADS 2
static __thread int tls_sig_prod = -1;       /* handler producer id of this thread, -1: none */
static uint64_t g_sig_seq[MAXPROD];           /* next seq of each handler producer (written by its thread only) */
static uint64_t g_sig_full[MAXPROD];
static uint64_t g_sig_calls, g_sig_nested;

static void usr1_handler(int signo) {
    int saved = errno;
    int p = tls_sig_prod;
    (void)signo;
    __atomic_fetch_add(&g_sig_calls, 1, __ATOMIC_RELAXED);
    if (tls_holding) __atomic_fetch_add(&g_sig_nested, 1, __ATOMIC_RELAXED);  /* interrupted mid-produce */
    if (p >= 0) {
        if (produce((uint32_t)p, g_sig_seq[p], 0)) g_sig_seq[p]++;
        else g_sig_full[p]++;   /* a handler must not wait: a full ring drops, like spprof's handler */
    }
    errno = saved;
}

typedef struct sigprod_arg { uint32_t id; uint64_t n; int tid; } sigprod_arg;
static void *sig_producer_main(void *arg) {
    sigprod_arg *a = (sigprod_arg *)arg;
    uint64_t seq = 0;
    tls_sig_prod = (int)a->id + 1;            /* the handler on this thread produces as id + 1 */
    __atomic_store_n(&a->tid, spprof_gettid(), __ATOMIC_RELEASE);
    while (!__atomic_load_n(&g_go, __ATOMIC_ACQUIRE)) sched_yield();
    while (seq < a->n) {
        /* long dawdle: signals very likely land between this thread's claim and publish; and every 8th
           sample signals itself there, so that nesting happens however the threads are scheduled */
        if (produce_ex(a->id, seq, 2000, seq % 8 == 3)) seq++;
        else sched_yield();
        if ((seq & 1023) == 0 && t_now_ns() > g_deadline) break;
    }
    a->n = seq;
    tls_sig_prod = -1;
    __atomic_fetch_add(&g_producers_done, 1, __ATOMIC_ACQ_REL);
    return NULL;
}

static void test_signal_producers(void) {
    pthread_t th[NSIGTHREADS], cons;
    sigprod_arg args[NSIGTHREADS];
    int nthreads = NSIGTHREADS;
    struct sigaction sa, old;
    verify_state vs;
    int nprod = 2 * NSIGTHREADS, j, all = 1, kills = 0;
    uint64_t n = (uint64_t)t_scaled(60000, 6000), expect_total = 0, hsum = 0;
    uint64_t t0 = t_now_ns();
    printf("signal-handler producers: %d threads, each interrupted by SIGUSR1 producers\n", NSIGTHREADS);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = usr1_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, &old);
    g_self_signo = SIGUSR1;
    setup_ring(1024, nprod);
    memset(g_sig_seq, 0, sizeof g_sig_seq);
    memset(g_sig_full, 0, sizeof g_sig_full);
    g_go = 0;
    g_producers_done = 0;
    g_deadline = t_now_ns() + 8000000000u;
    for (j = 0; j < NSIGTHREADS; j++) {
        args[j].id = (uint32_t)(2 * j); args[j].n = n; args[j].tid = 0;
        pthread_create(&th[j], NULL, sig_producer_main, &args[j]);
    }
    for (j = 0; j < NSIGTHREADS; j++) while (!__atomic_load_n(&args[j].tid, __ATOMIC_ACQUIRE)) sched_yield();
    pthread_create(&cons, NULL, consumer_main, &nthreads);  /* ends when the producer threads are done and all is drained */
    __atomic_store_n(&g_go, 1, __ATOMIC_RELEASE);
    while (__atomic_load_n(&g_producers_done, __ATOMIC_ACQUIRE) < NSIGTHREADS) {
        for (j = 0; j < NSIGTHREADS; j++) { pthread_kill(th[j], SIGUSR1); kills++; }
        if (kills % 16 == 0) sched_yield();
    }
    for (j = 0; j < NSIGTHREADS; j++) pthread_join(th[j], NULL);  /* the handler producers' counters are final now */
    pthread_join(cons, NULL);
    sigaction(SIGUSR1, &old, NULL);
    for (j = 0; j < NSIGTHREADS; j++) { expect_total += args[j].n + g_sig_seq[2 * j + 1]; hsum += g_sig_seq[2 * j + 1]; }
    printf("  %d signals sent, %llu handler calls (%llu between a claim and its publish), %llu handler samples, %llu handler drops (ring full)\n", kills,
           (unsigned long long)g_sig_calls, (unsigned long long)g_sig_nested, (unsigned long long)hsum,
           (unsigned long long)(g_sig_full[1] + g_sig_full[3]));
    CHECK(hsum > 0, "signal handlers produced samples (%llu)", (unsigned long long)hsum);
    CHECK(g_sig_nested >= args[0].n / 8 && args[0].n >= 1024, "handlers ran between their thread's claim and publish (%llu times)", (unsigned long long)g_sig_nested);
    memset(&vs, 0, sizeof vs);
    vs.nprod = nprod;
    spprof_foreach_sample(verify_cb, &vs);
    for (j = 0; j < NSIGTHREADS; j++)
        if (vs.next[2 * j] != args[j].n || vs.next[2 * j + 1] != g_sig_seq[2 * j + 1]) all = 0;
    CHECK(ring_deq() == expect_total && all && vs.bad_order == 0,
          "thread and handler producers: every sample exactly once, in order (%llu consumed, %llu expected) %s",
          (unsigned long long)ring_deq(), (unsigned long long)expect_total, vs.first_err);
    CHECK(vs.bad_content == 0 && vs.bad_run == 0 && vs.foreign == 0, "content intact with nested producers (%llu bad) %s",
          (unsigned long long)vs.bad_content, vs.first_err);
    teardown_ring();
    printf("  (%.2f s)\n", (double)(t_now_ns() - t0) / 1e9);
}

/* ==== 3. full ring, unpublished cells, failed walks (single thread, no concurrent consumer) ==== */
static uint64_t profile_samples(void) {
    uint64_t s = 0;
    uint32_t i;
    pthread_mutex_lock(&spprof__prof_lock);
    for (i = 0; i < spprof__g.prof.nrecs; i++) s += spprof__g.prof.recs[i].nsamples;
    pthread_mutex_unlock(&spprof__prof_lock);
    return s;
}

static void test_full_ring(void) {
    const uint32_t slots = 16;
    uint64_t pos, posa, posb, seq = 0, d0;
    spprof__sample_hdr *c, *ca, *cb;
    uint32_t i;
    int ok, round;
    verify_state vs;
    printf("full ring: %u slots, no consumer\n", slots);
    setup_ring(slots, 1);
    for (round = 0; round < 3; round++) {  /* several times around the ring */
        ok = 1;
        for (i = 0; i < slots; i++) {
            c = spprof__ring_claim(&spprof__g.ring, &pos);
            if (!c || pos != seq) { ok = 0; break; }
            fill_sample(c, 0, g_rec_base, seq++);
            spprof__ring_publish(c, pos);
        }
        CHECK(ok, "round %d: %u claims succeed while the ring has room", round, slots);
        CHECK(spprof__ring_fill(&spprof__g.ring) == slots, "round %d: fill level is %u (%llu)", round, slots,
              (unsigned long long)spprof__ring_fill(&spprof__g.ring));
        c = spprof__ring_claim(&spprof__g.ring, &pos);
        CHECK(c == NULL, "round %d: claim %u returns NULL (full)", round, slots + 1);
        c = spprof__ring_claim(&spprof__g.ring, &pos);
        CHECK(c == NULL, "round %d: and again (no position was consumed by the failed claim)", round);
        drain_now();
        CHECK(ring_deq() == seq && profile_samples() == seq, "round %d: drain consumed all %llu samples so far", round,
              (unsigned long long)seq);
        c = spprof__ring_claim(&spprof__g.ring, &pos);
        CHECK(c != NULL && pos == seq, "round %d: claims succeed again after draining", round);
        if (c) { fill_sample(c, 0, g_rec_base, seq++); spprof__ring_publish(c, pos); drain_now(); }
    }

    /* A claimed but unpublished cell: the consumer stops there, later cells wait behind it. */
    d0 = ring_deq();
    ca = spprof__ring_claim(&spprof__g.ring, &posa);
    cb = spprof__ring_claim(&spprof__g.ring, &posb);
    CHECK(ca && cb && posb == posa + 1, "two claims get consecutive positions");
    if (ca && cb) {
        fill_sample(cb, 0, g_rec_base, seq + 1);
        spprof__ring_publish(cb, posb);
        drain_now();
        CHECK(ring_deq() == d0, "consumer does not pass a claimed, unpublished cell (deq %llu, expected %llu)",
              (unsigned long long)ring_deq(), (unsigned long long)d0);
        fill_sample(ca, 0, g_rec_base, seq);
        spprof__ring_publish(ca, posa);
        drain_now();
        CHECK(ring_deq() == d0 + 2, "after publishing it, both cells are consumed");
        seq += 2;
    }

    /* A failed walk (nframes = -1) is consumed (the cell is freed) but never reaches the profile. */
    {
        uint64_t before = profile_samples();
        c = spprof__ring_claim(&spprof__g.ring, &pos);
        if (c) { fill_sample(c, 0, g_rec_base, 999999); c->nframes = -1; spprof__ring_publish(c, pos); }
        drain_now();
        CHECK(c && ring_deq() == pos + 1 && profile_samples() == before, "walk-failed cell consumed and discarded");
    }

    memset(&vs, 0, sizeof vs);
    vs.nprod = 1;
    spprof_foreach_sample(verify_cb, &vs);
    CHECK(vs.next[0] == seq && vs.bad_order == 0 && vs.bad_content == 0, "all %llu samples in order and intact %s",
          (unsigned long long)seq, vs.first_err);
    teardown_ring();
}

int main(void) {
    uint64_t t0 = t_now_ns();
    test_full_ring();
    test_concurrent(4, 64);     /* small ring: full and wrapped constantly */
    test_concurrent(8, 1024);   /* more producers than cores: preempted between claim and publish */
    test_signal_producers();
    printf("total %.2f s\n", (double)(t_now_ns() - t0) / 1e9);
    return TEST_DONE();
}
