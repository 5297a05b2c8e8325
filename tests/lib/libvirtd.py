"""Find or start a real libvirtd with the LXC driver, for tests and the demo.

On these machines nothing starts libvirtd (no systemd), and the hybrid cgroup
layout (v1 controllers plus cgroup2 at /sys/fs/cgroup/unified) makes libvirt
9.0's LXC driver fail every guest start with "Unable to create directory
/sys/fs/cgroup/unified". Starting libvirtd in a private mount namespace with
that one mount removed works and touches nothing outside the namespace
(PLATFORM.md). On a pure v2 or pure v1 host the daemon is started as it is.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import libvirt

URI = "lxc:///system"


class HarnessError(RuntimeError):
    """libvirtd could not be found or started; the message says why."""


def _quiet(_ctx, _err):
    # libvirt prints every failed call to stderr by default; the harness
    # reports its own errors.
    return None


libvirt.registerErrorHandler(_quiet, None)


def try_connect(uri: str = URI) -> libvirt.virConnect | None:
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError:
        return None


def hybrid_unified_mount() -> str | None:
    """The cgroup2 mount point beside v1 controllers, if this host has one."""
    v1 = False
    unified = None
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            left, right = line.split(" - ", 1)
            fstype = right.split()[0]
            mountpoint = left.split()[4]
            if fstype == "cgroup":
                v1 = True
            elif fstype == "cgroup2" and mountpoint != "/sys/fs/cgroup":
                unified = mountpoint
    return unified if v1 else None


class Daemon:
    """A libvirtd (and virtlogd) this process started; stop() ends both."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen] = []

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.log_dir / log_name, "ab")  # noqa: SIM115 - kept for the daemon's life
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self, uri: str = URI, timeout: float = 30.0) -> libvirt.virConnect:
        for tool in ("libvirtd", "virtlogd", "unshare"):
            if not shutil.which(tool):
                raise HarnessError(f"{tool} is not installed (see bindep.txt)")
        for d in ("/var/log/libvirt", "/run/libvirt", "/var/lib/libvirt"):
            os.makedirs(d, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not Path("/run/libvirt/virtlogd-sock").exists():
            self._spawn(["virtlogd"], "virtlogd.log")
        unified = hybrid_unified_mount()
        if unified:
            argv = [
                "unshare", "-m", "--propagation", "private", "sh", "-c",
                f"umount {unified} && exec libvirtd",
            ]  # fmt: skip
        else:
            argv = ["libvirtd"]
        daemon = self._spawn(argv, "libvirtd.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            conn = try_connect(uri)
            if conn is not None:
                return conn
            if daemon.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        tail = (self.log_dir / "libvirtd.log").read_text(errors="replace")[-2000:]
        raise HarnessError(f"libvirtd did not answer on {uri} within {timeout:.0f} s: {tail}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        self.procs.clear()


def remove_domains(conn: libvirt.virConnect, prefix: str) -> list[str]:
    """Destroy and undefine every domain whose name starts with prefix."""
    gone = []
    for dom in conn.listAllDomains():
        if not dom.name().startswith(prefix):
            continue
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefine()
        gone.append(dom.name())
    return gone
