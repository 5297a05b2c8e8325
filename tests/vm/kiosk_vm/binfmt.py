"""Run a foreign architecture's programs on this machine (binfmt_misc + qemu-user-static), and undo it.

An arm64 image is debootstrapped on this amd64 machine: debootstrap's second
stage runs the new tree's arm64 programs under chroot, which the kernel hands
to qemu-aarch64-static through a binfmt_misc entry with the F (fix binary) flag
(the interpreter is opened when the entry is registered, so it need not exist
inside the chroot).

Two ways, the first where the kernel has it:

- `private_command`: since Linux 6.7 binfmt_misc is per user namespace. The
  command runs in a new user namespace mapping every uid and gid to itself
  (files keep their real owners), with its own mount and pid namespaces, where
  a new binfmt_misc instance is mounted and the entry registered. Nothing of the
  machine changes and nothing is left to undo: the instance dies with the
  namespace, and another process's binfmt_misc (a test session's, a concurrent
  build's) is never touched. `private_supported()` tries it once.
- `enable`/`undo` (`foreign`) on older kernels: the machine's own binfmt_misc.
  A fresh Debian 12 without systemd has it unmounted and nothing registered:
  `enable` mounts it if need be and enables the entry if need be, and returns
  what it did; `undo` takes back exactly that, and nothing that was there
  before. That state is machine-wide: the test session's guard
  (tests/lib/machine.py) fails a session that leaves an entry behind.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator

BINFMT_DIR = "/proc/sys/fs/binfmt_misc"
# Debian architecture -> the binfmt-support name of its qemu-user-static entry.
QEMU_USER = {"arm64": "qemu-aarch64", "amd64": "qemu-x86_64"}
_MACHINE_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}

Runner = Callable[[list[str]], subprocess.CompletedProcess]


class BinfmtError(RuntimeError):
    pass


def host_arch() -> str:
    """This machine's Debian architecture (amd64, arm64)."""
    return _MACHINE_ARCH.get(platform.machine(), platform.machine())


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def entry_lines(name: str, binfmt_dir: str = BINFMT_DIR) -> list[str]:
    try:
        with open(os.path.join(binfmt_dir, name), encoding="utf-8") as f:
            return [line.strip() for line in f]
    except OSError:
        return []


def _usable(name: str, binfmt_dir: str) -> bool:
    lines = entry_lines(name, binfmt_dir)
    flags = next((ln.split(":", 1)[1] for ln in lines if ln.startswith("flags:")), "")
    return lines[:1] == ["enabled"] and "F" in flags


def enable(arch: str, binfmt_dir: str = BINFMT_DIR, run: Runner = _run) -> dict:
    """Make `arch` programs run here; returns {"mounted": bool, "enabled": [names]}: what undo() takes back."""
    done: dict = {"binfmt_dir": binfmt_dir, "mounted": False, "enabled": []}
    if arch == host_arch():
        return done
    if arch not in QEMU_USER:
        raise BinfmtError(f"arch: no qemu-user-static entry known for '{arch}' (one of {', '.join(sorted(QEMU_USER))})")
    name = QEMU_USER[arch]
    if _usable(name, binfmt_dir):
        return done
    for tool, package in ((f"{name}-static", "qemu-user-static"), ("update-binfmts", "binfmt-support")):
        if not shutil.which(tool):
            raise BinfmtError(f"arch {arch}: {tool} is missing: install {package} (bindep.txt, profile test)")
    try:
        if not os.path.exists(os.path.join(binfmt_dir, "status")):
            r = run(["mount", "-t", "binfmt_misc", "binfmt_misc", binfmt_dir])
            if r.returncode:
                raise BinfmtError(f"arch {arch}: cannot mount binfmt_misc on {binfmt_dir}: {r.stderr.strip()}")
            done["mounted"] = True
        if entry_lines(name, binfmt_dir)[:1] != ["enabled"]:
            r = run(["update-binfmts", "--enable", name])
            if r.returncode:
                raise BinfmtError(f"arch {arch}: update-binfmts --enable {name} failed: {r.stderr.strip()}")
            done["enabled"].append(name)
        if not _usable(name, binfmt_dir):
            raise BinfmtError(
                f"arch {arch}: the binfmt_misc entry {binfmt_dir}/{name} is not enabled with the F flag "
                f"({entry_lines(name, binfmt_dir)}): run 'update-binfmts --disable {name}' and "
                f"'update-binfmts --enable {name}' (qemu-user-static registers it with F)"
            )
    except BaseException:
        undo(done, run)
        raise
    return done


def undo(done: dict, run: Runner = _run) -> None:
    """Take back what enable() did (disable what it enabled, unmount what it mounted), nothing more."""
    for name in reversed(done.get("enabled", [])):
        run(["update-binfmts", "--disable", name])
    if done.get("mounted"):
        run(["umount", done.get("binfmt_dir", BINFMT_DIR)])


@contextlib.contextmanager
def foreign(arch: str, binfmt_dir: str = BINFMT_DIR, run: Runner = _run) -> Iterator[dict]:
    """`arch` programs run inside the block; the machine's binfmt_misc is as it was after it."""
    done = enable(arch, binfmt_dir, run)
    try:
        yield done
    finally:
        undo(done, run)


# ------------------------------------------------------------------ a private binfmt_misc
# Run by `python3 -c` as the parent of the namespace: the child unshares its user namespace, the
# parent (root in the machine's namespace) writes the identity uid/gid maps, the child goes on.
_USERNS = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
r, w = os.pipe(); r2, w2 = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r); os.close(w2)
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER (refused in a chroot, for one)
        sys.exit("unshare(CLONE_NEWUSER): " + os.strerror(ctypes.get_errno()))
    os.write(w, b"x"); os.read(r2, 1)
    os.execvp(sys.argv[1], sys.argv[1:])
os.close(w); os.close(r2)
if not os.read(r, 1):  # the child died before it had its namespace: its status is ours
    sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
try:
    for m in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{m}", "w") as f:
            f.write("0 0 4294967295\\n")
finally:
    os.write(w2, b"x")
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def private_command(arch: str, command: list[str]) -> list[str]:
    """`command` with `arch` programs running through qemu-user-static in namespaces of its own.

    debootstrap sees container=lxc there, so where mknod is refused (a user namespace may not
    make device nodes) it bind-mounts the host's /dev nodes into the tree instead; the kernel
    mounts its own devtmpfs over the image's /dev at boot. The shell stays the namespace's pid 1 (it
    reaps orphans, such as a daemonized qemu's parent), and every process left in it dies with it.
    """
    name = QEMU_USER[arch]
    inner = (
        f"mount -t binfmt_misc binfmt_misc {BINFMT_DIR} && "
        f"update-binfmts --enable {name} >/dev/null && "
        f'grep -q "^flags:.*F" {BINFMT_DIR}/{name} && env container=lxc "$@"'
    )
    return [
        sys.executable, "-c", _USERNS,
        "unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc",
        "sh", "-c", inner, "private-binfmt", *command,
    ]  # fmt: skip


def private_supported(arch: str, run: Runner = _run) -> bool:
    """True if the kernel gives a user namespace its own binfmt_misc (Linux 6.7+) and qemu-user-static is there."""
    if arch not in QEMU_USER or not shutil.which(f"{QEMU_USER[arch]}-static") or not shutil.which("update-binfmts"):
        return False
    return run(private_command(arch, ["true"])).returncode == 0
