/* syscall_probe LABEL...: for each LABEL, make one system call with HARMLESS arguments and print
 *
 *     LABEL SYSCALL NR RET ERRNO
 *
 * (one line each, flushed before the next call; ERRNO 0 when RET >= 0).  SYSCALL is the x86_64
 * name a seccomp report should give (libseccomp's), NR its number.
 *
 * Every call is chosen so that, when no seccomp filter stops it, the kernel refuses it without
 * doing anything (invalid fd, NULL or unmapped pointer, bad magic, invalid flag combination,
 * missing capability), so a run without a filter is harmless too.  Exceptions that succeed
 * unfiltered and only affect this process: unshare_newuser (a new user namespace for this
 * process alone), personality_linux32 (this process's personality), socket_netlink and the
 * allowed_* labels.  Never change an argument to a valid one (see SECURITY.md and
 * tests/integration/test_seccomp.py).
 *
 * Unknown LABEL: prints "LABEL ? -1 -1 -1" and exits 2 at the end.
 * Build: gcc -O1 -o syscall_probe syscall_probe.c (also with -static).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BAD ((long)1)          /* an unmapped, misaligned user address: EFAULT */
#define SELF ((long)-2)        /* replaced by this process's pid */
#define X32_SYSCALL_BIT 0x40000000L
#ifndef SYS_open_tree_attr
#define SYS_open_tree_attr 467
#endif

static long sc(long nr, long a, long b, long c, long d, long e, long f) {
    return syscall(nr, a, b, c, d, e, f);
}

/* getpid through the i386 entry point (int 0x80, eax = 20): a syscall of another architecture */
static long int80_getpid(void) {
    long ret = 20;
    __asm__ volatile("int $0x80" : "+a"(ret) : : "memory", "r8", "r9", "r10", "r11", "cc");
    return ret;
}

struct probe { const char *label, *sysname; long nr; long a, b, c, d, e, f; };

#define P(label, name, a, b, c, d, e, f) {label, #name, SYS_##name, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f)}

static const struct probe probes[] = {
    /* process inspection and injection */
    P("ptrace", ptrace, 16 /* PTRACE_ATTACH */, 1, 0, 0, 0, 0),
    P("process_vm_readv", process_vm_readv, SELF, 0, 1, 0, 1, 0),        /* NULL iovecs: EFAULT */
    P("process_vm_writev", process_vm_writev, SELF, 0, 1, 0, 1, 0),
    P("pidfd_getfd", pidfd_getfd, -1, 0, 0, 0, 0, 0),                 /* EBADF */
    P("kcmp", kcmp, SELF, SELF, 99 /* no such KCMP type */, 0, 0, 0),
    /* kernel attack surface */
    P("bpf", bpf, 0xffff /* no such command */, 0, 0, 0, 0, 0),
    P("perf_event_open", perf_event_open, 0 /* NULL attr */, 0, -1, -1, 0, 0),
    P("userfaultfd", userfaultfd, 0xffffffff /* invalid flags */, 0, 0, 0, 0, 0),
    P("io_uring_setup", io_uring_setup, 1, 0 /* NULL params */, 0, 0, 0, 0),
    P("io_uring_enter", io_uring_enter, -1, 0, 0, 0, 0, 0),
    P("io_uring_register", io_uring_register, -1, 0, 0, 0, 0, 0),
    P("keyctl", keyctl, 0xffff /* no such operation */, 0, 0, 0, 0, 0),
    P("add_key", add_key, 0, 0, 0, 0, 0, 0),
    P("request_key", request_key, 0, 0, 0, 0, 0, 0),
    /* mounts and namespaces */
    P("fsopen", fsopen, 0, 0, 0, 0, 0, 0),
    P("fsconfig", fsconfig, -1, 0, 0, 0, 0, 0),
    P("fsmount", fsmount, -1, 0, 0, 0, 0, 0),
    P("fspick", fspick, -1, 0, 0, 0, 0, 0),
    P("open_tree", open_tree, -1, 0, 0, 0, 0, 0),
    P("open_tree_attr", open_tree_attr, -1, 0, 0, 0, 0, 0),
    P("move_mount", move_mount, -1, 0, -1, 0, 0, 0),
    P("mount_setattr", mount_setattr, -1, 0, 0, 0, 0, 0),
    P("mount", mount, 0, 0, 0, 0, 0, 0),
    P("umount2", umount2, 0, 0, 0, 0, 0, 0),
    P("pivot_root", pivot_root, 0, 0, 0, 0, 0, 0),
    P("unshare_newuser", unshare, CLONE_NEWUSER, 0, 0, 0, 0, 0),
    P("unshare_newns", unshare, CLONE_NEWNS, 0, 0, 0, 0, 0),
    P("unshare_newnet", unshare, CLONE_NEWNET, 0, 0, 0, 0, 0),
    /* CLONE_NEWUSER|CLONE_FS and CLONE_NEWNS|CLONE_FS are refused by copy_process() with EINVAL
       before anything is created (kernel/fork.c); CLONE_PARENT_SETTID with a bad pointer would
       NOT do: the kernel ignores put_user()'s failure and the child runs */
    P("clone_newuser", clone, CLONE_NEWUSER | CLONE_FS | SIGCHLD, 0, 0, 0, 0, 0),
    P("clone_newns", clone, CLONE_NEWNS | CLONE_FS | SIGCHLD, 0, 0, 0, 0, 0),
    /* clone3(NULL, 0): EINVAL (size below CLONE_ARGS_SIZE_VER0) when it reaches the kernel */
    P("clone3", clone3, 0, 0, 0, 0, 0, 0),
    P("setns", setns, -1, 0, 0, 0, 0, 0),
    /* boot, modules, swap, accounting, time */
    P("kexec_load", kexec_load, 0, 0, 0, 0xffffffff /* invalid flags */, 0, 0),
    P("kexec_file_load", kexec_file_load, -1, -1, 0, 0, 0xffffffff, 0),
    P("reboot", reboot, 0 /* bad magic */, 0, 0, 0, 0, 0),
    P("init_module", init_module, 0, 0, 0, 0, 0, 0),
    P("finit_module", finit_module, -1, 0, 0, 0, 0, 0),
    P("delete_module", delete_module, BAD, 0, 0, 0, 0, 0),
    P("swapon", swapon, 0, 0, 0, 0, 0, 0),
    P("swapoff", swapoff, 0, 0, 0, 0, 0, 0),
    P("acct", acct, BAD, 0, 0, 0, 0, 0),                              /* never NULL: that switches accounting off */
    P("clock_settime", clock_settime, 0x7fff /* no such clock */, BAD, 0, 0, 0, 0),
    P("settimeofday", settimeofday, BAD, 0, 0, 0, 0, 0),              /* never a valid timeval */
    P("adjtimex", adjtimex, BAD, 0, 0, 0, 0, 0),
    P("clock_adjtime", clock_adjtime, 0x7fff, BAD, 0, 0, 0, 0),
    /* file handles, personality, LDT, old and odd interfaces */
    P("open_by_handle_at", open_by_handle_at, -1, 0, 0, 0, 0, 0),
    P("name_to_handle_at", name_to_handle_at, -1, BAD, BAD, BAD, 0, 0),
    P("personality_linux32", personality, 0x0008 /* PER_LINUX32 */, 0, 0, 0, 0, 0),
    P("modify_ldt", modify_ldt, 1 /* write */, 0, 0 /* wrong size: EINVAL */, 0, 0, 0),
    P("uselib", uselib, 0, 0, 0, 0, 0, 0),
    P("syslog", syslog, 9999 /* no such action */, 0, 0, 0, 0, 0),
    P("quotactl", quotactl, 0xffffffff /* bad type */, 0, 0, 0, 0, 0),
    P("quotactl_fd", quotactl_fd, -1, 0, 0, 0, 0, 0),
    P("lookup_dcookie", lookup_dcookie, 0, 0, 0, 0, 0, 0),
    /* terminal injection: fd -1, so EBADF when it reaches the kernel */
    P("ioctl_tiocsti", ioctl, -1, 0x5412 /* TIOCSTI */, 0, 0, 0, 0),
    P("ioctl_tiocsti_high", ioctl, -1, 0x100005412L /* TIOCSTI with bit 32 set */, 0, 0, 0, 0),
    P("ioctl_tioclinux", ioctl, -1, 0x541C /* TIOCLINUX */, 0, 0, 0, 0),
    /* socket families */
    P("socket_packet", socket, AF_PACKET, SOCK_RAW, 0, 0, 0, 0),
    P("socket_netlink", socket, AF_NETLINK, SOCK_RAW, 0 /* NETLINK_ROUTE */, 0, 0, 0),
    P("socket_bluetooth", socket, 31 /* AF_BLUETOOTH */, SOCK_RAW, 0, 0, 0, 0),
    /* the kill-rule test's target: EFAULT when it reaches the kernel */
    P("uname", uname, BAD, 0, 0, 0, 0, 0),
    /* calls every policy allows (controls) */
    P("allowed_getppid", getppid, 0, 0, 0, 0, 0, 0),
    P("allowed_socket_unix", socket, AF_UNIX, SOCK_STREAM, 0, 0, 0, 0),
    P("allowed_socket_inet", socket, AF_INET, SOCK_STREAM, 0, 0, 0, 0),
    P("allowed_ioctl_tcgets", ioctl, -1, 0x5401 /* TCGETS */, 0, 0, 0, 0),
    P("allowed_personality_query", personality, 0xffffffff, 0, 0, 0, 0, 0),
    P("allowed_unshare_zero", unshare, 0, 0, 0, 0, 0, 0),
};

int main(int argc, char **argv) {
    int status = 0;
    for (int i = 1; i < argc; i++) {
        const char *label = argv[i], *name = "?";
        long nr = -1, ret;
        int err = 0;
        errno = 0;
        if (strcmp(label, "x32_getpid") == 0) {
            name = "getpid";
            nr = X32_SYSCALL_BIT | SYS_getpid;
            ret = syscall(nr);
            err = ret < 0 ? errno : 0;
        } else if (strcmp(label, "int80_getpid") == 0) {
            name = "getpid";
            nr = 20;
            ret = int80_getpid();
            if (ret < 0 && ret > -4096) { err = (int)-ret; ret = -1; }
        } else {
            const struct probe *p = NULL;
            for (size_t j = 0; j < sizeof probes / sizeof probes[0]; j++)
                if (strcmp(probes[j].label, label) == 0) p = &probes[j];
            if (p == NULL) {
                printf("%s ? -1 -1 -1\n", label);
                fflush(stdout);
                status = 2;
                continue;
            }
            name = p->sysname;
            nr = p->nr;
            long a = p->a == SELF ? (long)getpid() : p->a, b = p->b == SELF ? (long)getpid() : p->b;
            ret = sc(p->nr, a, b, p->c, p->d, p->e, p->f);
            err = ret < 0 ? errno : 0;
            if (p->nr == SYS_modify_ldt && ret >= 0 && (int)ret < 0) {
                err = -(int)ret;          /* modify_ldt returns an int in eax (arch/x86/kernel/ldt.c) */
                ret = -1;
            }
            if (ret == 0 && p->nr == SYS_clone)
                _exit(0);                 /* a child after all (must not happen): leave at once */
            if (ret >= 0 && p->nr == SYS_socket)
                close((int)ret);
        }
        printf("%s %s %ld %ld %d\n", label, name, nr, ret, err);
        fflush(stdout);
    }
    return status;
}
