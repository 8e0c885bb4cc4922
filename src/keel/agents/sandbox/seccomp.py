"""The sandbox's seccomp filter, built once with libseccomp (the `pyseccomp` binding) as BPF bytes.

Default allow, with the kernel's attack surface a tool never needs refused (EPERM): tracing other
processes, mounting, namespaces (unshare, setns, clone with a namespace flag; clone3 answers ENOSYS so
libc falls back to clone, whose flags the filter can read), the keyring, BPF, perf, modules, kexec,
reboot, swap, clocks, userfaultfd, handle-based opens; and sockets of any family but AF_UNIX (the
sandbox's network namespace has no route out already; this is the second wall).
"""

from __future__ import annotations

import errno
import functools
import socket
import tempfile

DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsmount", "fsconfig", "move_mount", "open_tree",
    "mount_setattr", "unshare", "setns",
    "keyctl", "add_key", "request_key",
    "bpf", "perf_event_open", "userfaultfd", "open_by_handle_at", "name_to_handle_at",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "iopl", "ioperm",
)  # fmt: skip
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)


class SeccompUnavailable(RuntimeError):
    pass


@functools.cache
def filter_bpf() -> bytes:
    """The filter as BPF for `bwrap --seccomp FD`; SeccompUnavailable names what to install."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError) as exc:  # the binding, or libseccomp itself (ctypes), is missing
        raise SeccompUnavailable(
            f"the sandbox's seccomp filter needs libseccomp and its binding ({exc}): "
            "apt-get install libseccomp2 && pip install pyseccomp"
        ) from None
    f = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED:
        f.add_rule(sc.ERRNO(errno.EPERM), name)
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for flag in NAMESPACE_FLAGS:
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socket", sc.Arg(0, sc.NE, socket.AF_UNIX))
    f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), "socketpair", sc.Arg(0, sc.NE, socket.AF_UNIX))
    with tempfile.TemporaryFile() as out:  # export_bpf writes to a file descriptor
        f.export_bpf(out)
        out.seek(0)
        return out.read()
