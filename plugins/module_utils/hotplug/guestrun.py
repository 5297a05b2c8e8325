# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running one of a guest's own binaries from the host: in the guest's cgroup, bounded, and ended whole.

The hotplug agent tells a guest's sound server about a card by running the
guest's `pactl` or `systemctl` through nsenter. That binary is the guest
root's to replace, so it must get exactly what any guest process gets:

- Its cgroup. nsenter enters namespaces, not cgroups (platform facts:
  docs/docsite/rst/guide_platform.rst), so the child joins the cgroups of
  the guest's init *before it execs nsenter*: in every hierarchy the init
  is in (cgroup v1: each controller hierarchy, devices and memory among
  them; cgroup v2: the unified one). The guest's device rules and memory
  limit then apply to it and to everything it starts. In the hierarchy that
  decides device access (v1 devices, else v2) it joins a cgroup of its own
  made under the init's (`kiosk-run-<agent pid>-<n>`), which inherits the
  guest's rules and limits and lets the agent find every process the
  command left behind, wherever it moved in the process tree.
- A bound. The command has `timeout` seconds; its output is read up to
  OUTPUT_LIMIT bytes. At the end (timeout or not) its process group is
  killed and so is every process still in its own cgroup, which is then
  removed: a guest's pactl that never answers, or forks a process into a
  new session, leaves nothing behind.

The cgroup files are host files (cgroupfs has no links and a confined
guest cannot write its cgroups): the agent opens them before the fork, and
the child's only work between fork and exec is writing "0" (itself) to
each, no Python object made.

Plain Python, no ansible imports.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import selectors
import signal
import subprocess
import time

from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup import cgroupfs
from ansible_collections.kiosk.lxc.plugins.module_utils.common import procfs
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError

COMMAND_TIMEOUT = 4.0
OUTPUT_LIMIT = 65536
OWN_PREFIX = "kiosk-run-"
KILL_ROUNDS = 50
# A cgroup path as the kernel writes it in /proc/<pid>/cgroup: absolute, no control characters.
_CGROUP_PATH_RE = re.compile(r"/[^\x00-\x1f\x7f]*")
_seq = itertools.count(1)


def init_cgroups(init: int, proc: str = "/proc", mountinfo: str = procfs.MOUNTINFO) -> tuple[list[str], str]:
    """(the init's cgroup directory in every hierarchy mounted here, the one that decides device access).

    A hierarchy the init is in but that is not mounted on the host cannot be
    joined and is left out; the one deciding device access must be there.
    """
    v1_devices, v2 = cgroupfs.cgroup_mounts(mountinfo)
    mounts = [m for m in procfs.mountinfo(mountinfo) if m.fstype in ("cgroup", "cgroup2")]
    try:
        with open(os.path.join(proc, str(init), "cgroup"), encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise KioskError(f"Guest init {init}: cannot read its cgroups: {exc.strerror}") from exc
    dirs, deciding = [], None
    for line in lines:
        _num, controllers, path = line.split(":", 2)
        if not _CGROUP_PATH_RE.fullmatch(path) or ".." in path.split("/"):
            raise KioskError(f"Guest init {init}: cgroup path {path!r} is not one the kernel writes; refused")
        wanted = set(controllers.split(",")) if controllers else set()
        for mount in mounts:
            if (controllers == "" and mount.fstype == "cgroup2") or (
                wanted and mount.fstype == "cgroup" and wanted <= set(mount.super_options)
            ):
                where = os.path.join(mount.mountpoint, path.lstrip("/"))
                dirs.append(where)
                if mount.mountpoint == (v1_devices or v2):
                    deciding = where
                break
    if deciding is None:
        raise KioskError(f"Guest init {init}: not in the cgroup hierarchy that decides device access; refused")
    return dirs, deciding


def _open_procs(directory: str) -> int:
    return os.open(os.path.join(directory, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)


def _pids(directory: str) -> list[int]:
    try:
        with open(os.path.join(directory, "cgroup.procs"), encoding="ascii") as fh:
            return [int(p) for p in fh.read().split()]
    except FileNotFoundError:
        return []


def kill_cgroup(directory: str) -> list[int]:
    """SIGKILL every process in the cgroup until none is left (v2: cgroup.kill); the pids seen."""
    seen: list[int] = []
    if os.path.exists(os.path.join(directory, "cgroup.kill")):
        with contextlib.suppress(OSError), open(os.path.join(directory, "cgroup.kill"), "w", encoding="ascii") as fh:
            fh.write("1")
    for _round in range(KILL_ROUNDS):
        pids = _pids(directory)
        if not pids:
            break
        for pid in pids:
            seen.append(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    return seen


def remove_own(parent: str, tries: int = 20) -> None:
    """Remove the agent's own cgroups under parent that are empty (a killed process may take a moment)."""
    try:
        names = [n for n in os.listdir(parent) if n.startswith(OWN_PREFIX)]
    except OSError:
        return
    for name in names:
        path = os.path.join(parent, name)
        for _try in range(tries):
            kill_cgroup(path)
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    break
                time.sleep(0.02)


def _read_bounded(proc: subprocess.Popen, deadline: float) -> tuple[bytes, bytes, bool]:
    """stdout and stderr, each up to OUTPUT_LIMIT; whether the deadline passed before both closed."""
    got = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    with selectors.DefaultSelector() as sel:
        for stream in got:
            sel.register(stream, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(got[proc.stdout]), bytes(got[proc.stderr]), True
            ready = sel.select(min(left, 0.05))
            if not ready and proc.poll() is not None:
                break  # it ended; what it left holding the pipes open is killed by the caller
            for key, _events in ready:
                chunk = os.read(key.fileobj.fileno(), 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = got[key.fileobj]
                buf += chunk[: max(0, OUTPUT_LIMIT - len(buf))]
    return bytes(got[proc.stdout]), bytes(got[proc.stderr]), False


def run(init: int, argv: list[str], timeout: float = COMMAND_TIMEOUT, mountinfo: str = procfs.MOUNTINFO):
    """argv (nsenter into the guest) run in the cgroups of the guest's init; (rc, stdout, stderr).

    rc 124 when it timed out, 127 when it could not start. Whatever the
    command started is killed before this returns.
    """
    dirs, deciding = init_cgroups(init, mountinfo=mountinfo)
    remove_own(deciding)  # what an earlier run could not remove yet
    own = os.path.join(deciding, f"{OWN_PREFIX}{os.getpid()}-{next(_seq)}")
    os.mkdir(own, 0o755)
    fds: list[int] = []
    try:
        fds = [_open_procs(own if d == deciding else d) for d in dirs]

        def join() -> None:  # in the child, between fork and exec: no allocation beyond the write
            for fd in fds:
                os.write(fd, b"0")

        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=join,  # noqa: PLW1509 - only os.write on fds opened before the fork
                pass_fds=(),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return 127, "", f"{argv[0]}: {exc}"
        try:
            out, err, late = _read_bounded(proc, time.monotonic() + timeout)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            kill_cgroup(own)
            proc.stdout.close()
            proc.stderr.close()
            rc = proc.wait()
        if late:
            return 124, out.decode("utf-8", "replace"), f"no answer within {timeout:g} s: ended"
        return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    finally:
        for fd in fds:
            os.close(fd)
        remove_own(deciding)
