/* What a fresh cgroup costs a spawn, without eco: N clone3(CLONE_VFORK)
 * + execve of /usr/bin/sleep, timed in the parent (which waits for each
 * child's exec, as eco's vfork-style spawn does).
 *
 *   gcc -O2 -o /tmp/cgroup_clone bench/cgroup_clone.c
 *   R=/sys/fs/cgroup/unified/cgclone   # or /sys/fs/cgroup/... on a pure v2 host
 *   mkdir $R; for m in 0 1 2 3; do /tmp/cgroup_clone 1000 $m $R; done; rmdir $R
 *
 * mode 0: plain (the child stays in the parent's cgroup)
 * mode 1: each child cloned into a cgroup of its own, made (mkdir, not
 *         timed) before the loop: eco's case, one cgroup per instance
 * mode 2: every child cloned into one shared cgroup
 * mode 3: as mode 1, but each cgroup has held one short-lived process
 *         (cloned in and reaped) before the loop: a reused, empty cgroup
 * Run as root (or where the cgroup folder is writable). BENCHMARKS.md,
 * "Fourth round", has the figures.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s N MODE(0|1|2|3) CGROUP_DIR\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[1]), mode = atoi(argv[2]);
    const char *root = argv[3];
    char path[512];
    pid_t *pids = calloc(n, sizeof(pid_t));
    int *fds = calloc(n, sizeof(int));
    if (mode == 2) {
        snprintf(path, sizeof path, "%s/shared", root);
        mkdir(path, 0755);
        int fd = open(path, O_PATH | O_DIRECTORY);
        for (int i = 0; i < n; i++) fds[i] = fd;
    }
    if (mode == 1 || mode == 3) {
        for (int i = 0; i < n; i++) {
            snprintf(path, sizeof path, "%s/c%d", root, i);
            mkdir(path, 0755);
            fds[i] = open(path, O_PATH | O_DIRECTORY);
            if (mode == 3) {
                struct clone_args w;
                memset(&w, 0, sizeof w);
                w.flags = CLONE_VFORK | CLONE_INTO_CGROUP;
                w.exit_signal = SIGCHLD;
                w.cgroup = (unsigned long long)fds[i];
                long p = syscall(SYS_clone3, &w, sizeof w);
                if (p == 0) _exit(0);
                waitpid((pid_t)p, NULL, 0);
            }
        }
    }
    char *child_argv[] = {"/usr/bin/sleep", "1000", NULL};
    double start = now();
    for (int i = 0; i < n; i++) {
        struct clone_args args;
        memset(&args, 0, sizeof args);
        args.flags = CLONE_VFORK | (mode ? CLONE_INTO_CGROUP : 0);
        args.exit_signal = SIGCHLD;
        args.cgroup = mode ? (unsigned long long)fds[i] : 0;
        long pid = syscall(SYS_clone3, &args, sizeof args);
        if (pid == 0) {
            execve(child_argv[0], child_argv, environ);
            _exit(127);
        }
        if (pid < 0) {
            perror("clone3");
            return 1;
        }
        pids[i] = (pid_t)pid;
    }
    printf("mode %d: %.1f us per spawn\n", mode, (now() - start) / n * 1e6);
    for (int i = 0; i < n; i++) kill(pids[i], SIGKILL);
    for (int i = 0; i < n; i++) waitpid(pids[i], NULL, 0);
    for (int i = 0; i < n && (mode == 1 || mode == 3); i++) {
        snprintf(path, sizeof path, "%s/c%d", root, i);
        rmdir(path);
    }
    if (mode == 2) {
        snprintf(path, sizeof path, "%s/shared", root);
        rmdir(path);
    }
    return 0;
}
