/* test_fork.c - fork() while profiling. The parent's session goes on undisturbed and its profile holds only
   its own samples. The child is not sampled (no timers or collector are inherited: /proc/self/timers is
   empty), has no profile: stop, pause, spprof_foreach_sample and the writers return SPPROF_ERR_NOT_STARTED
   with a message naming the fork, and write no file (not an empty profile over the parent's); a session of
   its own works and holds only the child's samples. */
#include "testutil.h"
#include <sys/wait.h>

static int t_tid_seen(const spprof_sample_view *v, void *user) {
    int *want = (int *)user;  /* [0]: tid, [1]: its samples, [2]: samples of other tids */
    if (v->tid == want[0]) want[1]++;
    else want[2]++;
    return 0;
}

static int timers_of_this_process(void) {  /* POSIX timers alive here (Linux: /proc/self/timers) */
    FILE *f = fopen("/proc/self/timers", "r");
    char line[256];
    int n = 0;
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "ID:", 3)) n++;
    fclose(f);
    return n;
}

static int child_main(const char *path) {
    spprof_config cfg = t_config(1000000);
    spprof_stats st;
    int bad = 0, seen[3];
    alarm(20);  /* a hang in the child fails the test instead of blocking it */
    if (spprof_is_active()) bad |= 1;
    if (spprof_stop() != SPPROF_ERR_NOT_STARTED || !strstr(spprof_last_error(), "forked")) bad |= 2;
    if (spprof_pause() != SPPROF_ERR_NOT_STARTED) bad |= 2;
    if (spprof_write_collapsed(path, 0) != SPPROF_ERR_NOT_STARTED || access(path, F_OK) == 0) bad |= 32;
    if (spprof_write_speedscope(path) != SPPROF_ERR_NOT_STARTED || access(path, F_OK) == 0) bad |= 32;
    if (spprof_write_pprof(path) != SPPROF_ERR_NOT_STARTED || access(path, F_OK) == 0) bad |= 32;
    seen[0] = (int)getpid(); seen[1] = seen[2] = 0;
    if (spprof_foreach_sample(t_tid_seen, seen) != SPPROF_ERR_NOT_STARTED) bad |= 64;
    t_burn_ns(100000000);
    if (timers_of_this_process() > 0) bad |= 128;  /* not sampled: no timer of the parent's came along */
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
    seen[1] = seen[2] = 0;
    if (spprof_foreach_sample(t_tid_seen, seen) != SPPROF_OK || seen[1] == 0 || seen[2] != 0) bad |= 256;
    if (spprof_write_collapsed(path, 0) != SPPROF_OK || access(path, F_OK) != 0) bad |= 512;  /* its own: written */
    return bad;
}

int main(void) {
    spprof_config cfg = t_config(1000000);
    spprof_stats before, after;
    char path[64];
    int i, status = 0, seen[3];
    pid_t kids[8];
    int nkids = 0;
    CHECK(spprof_start(&cfg) == SPPROF_OK, "parent starts");
    t_burn_ns(200000000);
    for (i = 0; i < t_scaled(5, 2); i++) {
        pid_t pid;
        snprintf(path, sizeof path, "/tmp/spprof-test-fork-%d-%d.collapsed", (int)getpid(), i);
        unlink(path);
        spprof_flush();
        spprof_get_stats(&before);
        pid = fork();
        if (pid == 0) _exit(child_main(path));
        CHECK(pid > 0, "fork %d", i);
        kids[nkids++] = pid;
        t_burn_ns(200000000);
        CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "child %d: not sampled, no profile (stop/pause/write/foreach: NOT_STARTED, no file), its own session "
              "has only its own samples (status 0x%x)", i, status);
        unlink(path);
        spprof_flush();
        spprof_get_stats(&after);
        CHECK(after.samples_in_profile > before.samples_in_profile, "parent keeps sampling across fork (%llu -> %llu)",
              (unsigned long long)before.samples_in_profile, (unsigned long long)after.samples_in_profile);
    }
    CHECK(spprof_stop() == SPPROF_OK, "parent stops");
    for (i = 0; i < nkids; i++) {
        seen[0] = (int)kids[i]; seen[1] = seen[2] = 0;
        spprof_foreach_sample(t_tid_seen, seen);
        CHECK(seen[1] == 0 && seen[2] > 0, "the parent's profile has none of child %d's samples (%d of %d)", i,
              seen[1], seen[2]);
    }
    /* stopped with a profile, then forked: the child has none of it either (no file from it) */
    snprintf(path, sizeof path, "/tmp/spprof-test-fork-%d-s.collapsed", (int)getpid());
    unlink(path);
    {
        pid_t pid = fork();
        if (pid == 0) {
            int r = spprof_write_collapsed(path, 0) == SPPROF_ERR_NOT_STARTED && access(path, F_OK) != 0 ? 0 : 1;
            if (spprof_clear() != SPPROF_OK || spprof_write_collapsed(path, 0) != SPPROF_OK) r |= 2;  /* after clear: empty */
            _exit(r);
        }
        CHECK(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "forked after stop: the child writes no file of the parent's profile; after spprof_clear() it may (0x%x)",
              status);
        unlink(path);
    }
    CHECK(spprof_write_collapsed("/dev/null", 0) == SPPROF_OK, "the parent still writes its profile");
    return TEST_DONE();
}
