/* lockdown.c - run a command the way a locked-down container runs it (tests/test_lockdown.py uses it).
   Usage, as root: lockdown [-n] [-e DIR]... -- PROGRAM [ARGS...]

   Before exec'ing PROGRAM (same pid, environment and descriptors) it
   - drops to uid/gid 65534 ("nobody") with no supplementary groups, so no capability is left
     (no CAP_PERFMON/CAP_SYS_ADMIN: perf_event_paranoid applies);
   - sets PR_SET_NO_NEW_PRIVS and installs a seccomp filter (raw BPF, no libseccomp) that makes
     perf_event_open, ptrace, process_vm_readv, process_vm_writev and bpf fail with EPERM, as Docker's default
     profile does for a container without CAP_SYS_ADMIN/CAP_PERFMON/CAP_SYS_PTRACE; system calls of another
     architecture (i386 on x86-64) kill the process, so they cannot bypass the filter;
   - checks that this took: uid and gid are 65534, setuid(0) fails, perf_event_open and ptrace fail with EPERM.
   -n: no seccomp filter (only the drop to nobody): perf_event_open is then refused, if at all, by the kernel's
   perf_event_paranoid (3 on Debian/Android kernels: no perf events without CAP_PERFMON).
   -e DIR makes DIR reachable for nobody when a directory above it is not searchable by others (an interpreter
   under a 0700 /root): in a private mount namespace, a tmpfs is mounted over the highest such directory,
   holding only the path down to DIR, and DIR is bind-mounted there. Nothing changes outside this process.
   Exit status 125 with a message: the lockdown could not be set up (the caller skips, it is not a failure of
   the program); otherwise PROGRAM's own status. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/perf_event.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#  define LOCKDOWN_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#  define LOCKDOWN_ARCH AUDIT_ARCH_AARCH64
#else
#  error "lockdown.c: add this architecture's AUDIT_ARCH_* value"
#endif

#define NOBODY 65534
#define MAX_DIRS 16

static void die(const char *what) {
    fprintf(stderr, "lockdown: %s: %s\n", what, strerror(errno));
    exit(125);
}

/* The highest ancestor of PATH (an absolute, resolved path) that others cannot search, written to TOP;
   0 if there is none (PATH is reachable as it is). */
static int unsearchable_top(const char *path, char *top) {
    char buf[PATH_MAX];
    size_t i;
    struct stat st;
    for (i = 1; path[i - 1]; i++) {
        if (path[i] != '/' && path[i] != 0) continue;
        memcpy(buf, path, i);
        buf[i] = 0;
        if (stat(buf, &st) != 0) die(buf);
        if (!(st.st_mode & S_IXOTH)) {
            strcpy(top, buf);
            return 1;
        }
        if (!path[i]) break;
    }
    return 0;
}

/* mkdir -p of PATH's components below TOP (in the fresh tmpfs). */
static void make_chain(const char *path, size_t top_len) {
    char buf[PATH_MAX];
    size_t i;
    for (i = top_len + 1; ; i++) {
        if (path[i] == '/' || path[i] == 0) {
            memcpy(buf, path, i);
            buf[i] = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) die(buf);
            if (!path[i]) break;
        }
    }
}

static void expose(char **dirs, int n) {
    char real[MAX_DIRS][PATH_MAX];
    char top[MAX_DIRS][PATH_MAX];
    int fd[MAX_DIRS];
    int hidden[MAX_DIRS];
    int i, j;
    if (unshare(CLONE_NEWNS) != 0) die("unshare(CLONE_NEWNS) (needed by -e)");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("mount --make-rprivate /");
    /* every DIR is opened before the first tmpfs hides it */
    for (i = 0; i < n; i++) {
        if (!realpath(dirs[i], real[i])) die(dirs[i]);
        hidden[i] = unsearchable_top(real[i], top[i]);
        fd[i] = open(real[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd[i] < 0) die(real[i]);
    }
    for (i = 0; i < n; i++) {
        char src[64];
        int mounted = 0;
        if (!hidden[i]) continue;
        for (j = 0; j < i; j++) if (hidden[j] && !strcmp(top[j], top[i])) mounted = 1;
        if (!mounted && mount("lockdown", top[i], "tmpfs", 0, "mode=0755") != 0) die("mount tmpfs");
        make_chain(real[i], strlen(top[i]));
        snprintf(src, sizeof src, "/proc/self/fd/%d", fd[i]);
        if (mount(src, real[i], NULL, MS_BIND | MS_REC, NULL) != 0) die("bind mount");
    }
    for (i = 0; i < n; i++) close(fd[i]);
}

static void drop_to_nobody(void) {
    if (setgroups(0, NULL) != 0) die("setgroups");
    if (setgid(NOBODY) != 0) die("setgid(65534)");
    if (setuid(NOBODY) != 0) die("setuid(65534)");
    if (getuid() != NOBODY || geteuid() != NOBODY || getgid() != NOBODY || getegid() != NOBODY) {
        fprintf(stderr, "lockdown: still uid %d/%d gid %d/%d\n", (int)getuid(), (int)geteuid(), (int)getgid(),
                (int)getegid());
        exit(125);
    }
    if (setuid(0) == 0) {
        fprintf(stderr, "lockdown: setuid(0) succeeded after dropping privileges\n");
        exit(125);
    }
}

static void install_filter(void) {
    static const long blocked[] = {
        __NR_perf_event_open, __NR_ptrace, __NR_process_vm_readv, __NR_process_vm_writev, __NR_bpf
    };
    enum { NB = sizeof blocked / sizeof blocked[0] };
    struct sock_filter prog[4 + NB + 2];
    struct sock_fprog fprog;
    int k = 0;
    int i;
    prog[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    prog[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, LOCKDOWN_ARCH, 1, 0);
    prog[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
    prog[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    /* blocked[i] jumps over the remaining NB-1-i comparisons and the ALLOW to the ERRNO return */
    for (i = 0; i < NB; i++)
        prog[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)blocked[i],
                                                 (unsigned char)(NB - i), 0);
    prog[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    prog[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA));
    fprog.len = (unsigned short)k;
    fprog.filter = prog;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("prctl(PR_SET_NO_NEW_PRIVS)");
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) die("prctl(PR_SET_SECCOMP)");
}

/* The filter must really refuse what it claims to: a task-clock event for this thread, and ptrace. */
static void check_filter(void) {
    struct perf_event_attr attr;
    long r;
    memset(&attr, 0, sizeof attr);
    attr.size = sizeof attr;
    attr.type = PERF_TYPE_SOFTWARE;
    attr.config = PERF_COUNT_SW_TASK_CLOCK;
    attr.exclude_kernel = 1;
    r = syscall(__NR_perf_event_open, &attr, 0, -1, -1, 0);
    if (r >= 0 || errno != EPERM) {
        fprintf(stderr, "lockdown: perf_event_open was not refused with EPERM (returned %ld: %s)\n", r,
                r >= 0 ? "an fd" : strerror(errno));
        exit(125);
    }
    r = syscall(__NR_ptrace, (long)PTRACE_TRACEME, 0L, 0L, 0L);
    if (r == 0 || errno != EPERM) {
        fprintf(stderr, "lockdown: ptrace was not refused with EPERM\n");
        exit(125);
    }
}

int main(int argc, char **argv) {
    char *dirs[MAX_DIRS];
    int ndirs = 0;
    int filter = 1;
    int i = 1;
    while (i < argc && strcmp(argv[i], "--") != 0) {
        if (!strcmp(argv[i], "-e") && i + 1 < argc && ndirs < MAX_DIRS) {
            dirs[ndirs++] = argv[i + 1];
            i += 2;
        } else if (!strcmp(argv[i], "-n")) {
            filter = 0;
            i++;
        } else {
            fprintf(stderr, "usage: lockdown [-n] [-e DIR]... -- PROGRAM [ARGS...] (at most %d -e)\n", MAX_DIRS);
            return 125;
        }
    }
    if (i + 1 >= argc) {
        fprintf(stderr, "usage: lockdown [-n] [-e DIR]... -- PROGRAM [ARGS...]\n");
        return 125;
    }
    if (geteuid() != 0) {
        fprintf(stderr, "lockdown: must start as root (it drops to uid 65534 itself)\n");
        return 125;
    }
    if (ndirs) expose(dirs, ndirs);
    drop_to_nobody();
    if (filter) {
        install_filter();
        check_filter();
        fprintf(stderr, "lockdown: uid/gid 65534, no_new_privs, seccomp: perf_event_open ptrace process_vm_readv "
                "process_vm_writev bpf -> EPERM\n");
    } else {
        fprintf(stderr, "lockdown: uid/gid 65534, no seccomp filter\n");
    }
    execvp(argv[i + 1], argv + i + 1);
    die(argv[i + 1]);
    return 125;
}
