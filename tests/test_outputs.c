/* test_outputs.c - the writers' output policy (spprof.h @writers, spprof__out_open): a regular file is
   replaced atomically, a symlink stays a symlink and its target gets the profile, a FIFO's reader gets the
   profile, a character device stays a device and /dev/full gives a clear I/O error (root: copies of their
   nodes, 1:3 and 1:7, made with mknod), /dev/fd/N writes to that descriptor, and an existing file keeps its permissions. */
#include "testutil.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

static char dir[256];

static long file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (long)st.st_size : -1;
}

static int read_all(int fd, char *buf, int cap) {
    int n = 0;
    ssize_t r;
    while (n < cap - 1 && (r = read(fd, buf + n, (size_t)(cap - 1 - n))) > 0) n += (int)r;
    buf[n] = 0;
    return n;
}

static void test_symlink(void) {
    char target[300], link[300];
    struct stat ls;
    printf("symlink\n");
    snprintf(target, sizeof target, "%s/target.collapsed", dir);
    snprintf(link, sizeof link, "%s/link.collapsed", dir);
    CHECK(symlink("target.collapsed", link) == 0, "relative symlink to a file that does not exist yet");
    CHECK(spprof_write_collapsed(link, 0) == SPPROF_OK, "write through the dangling link");
    CHECK(lstat(link, &ls) == 0 && S_ISLNK(ls.st_mode), "the link is still a link");
    CHECK(file_size(target) > 0, "its target got the profile (%ld bytes)", file_size(target));
    chmod(target, 0600);
    CHECK(spprof_write_speedscope(link) == SPPROF_OK, "write again through the link");
    CHECK(lstat(link, &ls) == 0 && S_ISLNK(ls.st_mode), "still a link");
    CHECK(stat(target, &ls) == 0 && (ls.st_mode & 07777) == 0600, "the target kept mode 0600 (%o)", ls.st_mode & 07777);
    unlink(link);
    unlink(target);
}

static void test_fifo(void) {
    char fifo[300], buf[1 << 16];
    int fds[2];
    pid_t pid;
    printf("FIFO with a reader\n");
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    CHECK(mkfifo(fifo, 0600) == 0, "mkfifo");
    if (pipe(fds) != 0) return;
    pid = fork();
    if (pid == 0) {  /* the reader: forwards what the FIFO gives to the pipe */
        int fd = open(fifo, O_RDONLY);
        int n = read_all(fd, buf, sizeof buf);
        if (write(fds[1], buf, (size_t)n) != n) _exit(1);
        _exit(0);
    }
    close(fds[1]);
    CHECK(spprof_write_speedscope(fifo) == SPPROF_OK, "write to the FIFO");
    {
        int n = read_all(fds[0], buf, sizeof buf);
        struct stat st;
        CHECK(n > 0 && strstr(buf, "\"$schema\"") != NULL, "the reader got the profile (%d bytes)", n);
        CHECK(stat(fifo, &st) == 0 && S_ISFIFO(st.st_mode), "the FIFO is still a FIFO");
    }
    close(fds[0]);
    waitpid(pid, NULL, 0);
    unlink(fifo);
}

/* Device nodes are copies (1:3, 1:7) made with mknod in the test directory (needs root; else skipped): a regression
   must not clobber the machine's real /dev/null or /dev/full. */
static void test_devices(void) {
    static const char *names[2] = {"/dev/null", "/dev/full"};
    static const unsigned minors[2] = {3, 7};  /* Linux's mem devices: major 1 */
    int i;
    printf("devices\n");
    for (i = 0; i < 2; i++) {
        struct stat st;
        char dev[300];
        spprof_result r;
        snprintf(dev, sizeof dev, "%s/%s", dir, names[i] + 5);
        if (mknod(dev, S_IFCHR | 0666, makedev(1, minors[i])) != 0) {
            printf("  skip %s (mknod: %s): not root\n", names[i], strerror(errno));
            continue;
        }
        r = spprof_write_speedscope(dev);
        if (i == 0)
            CHECK(r == SPPROF_OK, "write to a copy of /dev/null's node (%s)", r ? spprof_last_error() : "ok");
        else
            CHECK(r == SPPROF_ERR_IO && strstr(spprof_last_error(), dev) && strstr(spprof_last_error(), "space"),
                  "a copy of /dev/full's node: an I/O error naming it (%s)", r ? spprof_last_error() : "ok");
        CHECK(stat(dev, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, minors[i]),
              "the copy of %s is still the same character device", names[i]);
        unlink(dev);
    }
}

static void test_fd_path(void) {
    char file[300], fdpath[64], buf[1 << 16];
    int fd;
    printf("/dev/fd/N\n");
    snprintf(file, sizeof file, "%s/viafd.txt", dir);
    fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (write(fd, "before\n", 7) != 7) return;
    snprintf(fdpath, sizeof fdpath, "/dev/fd/%d", fd);
    CHECK(spprof_write_collapsed(fdpath, 0) == SPPROF_OK, "write to %s", fdpath);
    lseek(fd, 0, SEEK_SET);
    read_all(fd, buf, sizeof buf);
    CHECK(strncmp(buf, "before\n", 7) == 0 && strlen(buf) > 7,
          "appended at the descriptor's offset, what was there kept (%d bytes)", (int)strlen(buf));
    close(fd);
    unlink(file);
}

int main(void) {
    spprof_config cfg = t_config(1000000);
    uint64_t end;
    volatile unsigned x = 0;
    snprintf(dir, sizeof dir, "/tmp/spprof-outputs-%d", (int)getpid());
    mkdir(dir, 0700);
    if (spprof_start(&cfg) != SPPROF_OK) {
        printf("start: %s\n", spprof_last_error());
        return 1;
    }
    end = t_now_ns() + 200000000u;
    while (t_now_ns() < end) x = x * 31 + 7;
    spprof_stop();
    test_symlink();
    test_fifo();
    test_devices();
    test_fd_path();
    rmdir(dir);
    return TEST_DONE();
}
