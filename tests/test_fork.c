/* test_fork.c - fork() while profiling: the child starts stopped and clean (no timers or collector are
   inherited), can run its own session, and the parent's session continues undisturbed. */
#include "testutil.h"
#include <sys/wait.h>

static int child_main(void) {
    spprof_config cfg = t_config(1000000);
    spprof_stats st;
    int bad = 0;
    alarm(20);  /* a hang in the child fails the test instead of blocking it */
    if (spprof_is_active()) bad |= 1;
    if (spprof_stop() != SPPROF_ERR_NOT_STARTED) bad |= 2;
#if defined(__SANITIZE_THREAD__)
    /* TSan cannot start threads in the child of a multi-threaded fork ("dup thread with used id");
       the child's own session is checked by the plain and ASan builds. */
    return bad;
#endif
    if (spprof_start(&cfg) != SPPROF_OK) bad |= 4;
    t_burn_ns(300000000);
    if (spprof_stop() != SPPROF_OK) bad |= 8;
    spprof_get_stats(&st);
    if (st.samples_in_profile == 0) bad |= 16;
    return bad;
}

int main(void) {
    spprof_config cfg = t_config(1000000);
    spprof_stats before, after;
    int i, status = 0;
    CHECK(spprof_start(&cfg) == SPPROF_OK, "parent starts");
    t_burn_ns(200000000);
    for (i = 0; i < t_scaled(5, 2); i++) {
        pid_t pid;
        spprof_flush();
        spprof_get_stats(&before);
        pid = fork();
        if (pid == 0) _exit(child_main());
        CHECK(pid > 0, "fork %d", i);
        t_burn_ns(200000000);
        CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "child %d: not active after fork, stop says NOT_STARTED, own session samples (status 0x%x)", i, status);
        spprof_flush();
        spprof_get_stats(&after);
        CHECK(after.samples_in_profile > before.samples_in_profile, "parent keeps sampling across fork (%llu -> %llu)",
              (unsigned long long)before.samples_in_profile, (unsigned long long)after.samples_in_profile);
    }
    CHECK(spprof_stop() == SPPROF_OK, "parent stops");
    return TEST_DONE();
}
