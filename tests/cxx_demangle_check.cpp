// cxx_demangle_check.cpp - spprof.h in a C++ program: native frames of C++ functions come out demangled
// ("spprof_test::Worker::spin(int)"), the mangled name never. Built with $(CXX) by `make test-c`.
#include "testutil.h"

static volatile unsigned long g_sink;
static volatile int g_stop;

namespace spprof_test {
struct Worker {
    __attribute__((noinline)) void spin(int rounds) {
        unsigned long x = 0;
        while (!g_stop) for (int i = 0; i < rounds; i++) x = x * 6364136223846793005ul + (unsigned long)i;
        g_sink = x;
    }
};
}

static void *stopper(void *) { t_sleep_ms(300); g_stop = 1; return NULL; }

struct found { int demangled, mangled; };
static int cb(const spprof_sample_view *v, void *user) {
    found *f = (found *)user;
    for (int i = 0; i < v->nframes; i++) {
        spprof_symbol s;
        spprof_resolve(&v->frames[i], &s);
        /* GCC may clone it: "spprof_test::Worker::spin(int) [clone .isra.0]" */
        if (strncmp(s.name, "spprof_test::Worker::spin(int)", 30) == 0) f->demangled += (int)v->weight;
        if (strstr(s.name, "_ZN11spprof_test6Worker4spinEi")) f->mangled += (int)v->weight;
    }
    return 0;
}

int main() {
    spprof_config cfg = t_config(1000000);
    spprof_test::Worker w;
    pthread_t th;
    found f = {0, 0};
    CHECK(spprof_start(&cfg) == SPPROF_OK, "start");
    pthread_create(&th, NULL, stopper, NULL);
    w.spin(100000);
    pthread_join(th, NULL);
    CHECK(spprof_stop() == SPPROF_OK, "stop");
    spprof_foreach_sample(cb, &f);
    CHECK(f.demangled > 50, "samples show spprof_test::Worker::spin(int) (%d intervals)", f.demangled);
    CHECK(f.mangled == 0, "no mangled name left (%d)", f.mangled);
    return TEST_DONE();
}
