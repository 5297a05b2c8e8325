"""Find or start a real libvirtd with the LXC driver, for the test session.

How libvirtd is started on these hosts is the collection's own code
(module_utils/host/libvirtd.py, also behind the kiosk.lxc.libvirtd module);
here it runs in the foreground as a child of the test session, so the session
can stop it at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

import libvirt
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.host import libvirtd as host_libvirtd

URI = host_libvirtd.DEFAULT_URI


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
        try:
            argv = host_libvirtd.libvirtd_argv(daemonize=False)
        except KioskError as exc:
            raise HarnessError(exc.msg) from exc
        host_libvirtd.prepare_runtime_dirs()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logd = host_libvirtd.virtlogd_argv(daemonize=False)
        if logd:
            self._spawn(logd, "virtlogd.log")
        daemon = self._spawn(argv, "libvirtd.log")
        conn = host_libvirtd.wait_until(lambda: try_connect(uri), timeout, alive=lambda: daemon.poll() is None)
        if conn is not None:
            return conn
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
