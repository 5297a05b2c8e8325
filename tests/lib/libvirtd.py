"""Find or start a real libvirtd with the LXC driver, for the test session.

How libvirtd is started on these hosts is the collection's own code
(module_utils/host/libvirtd.py, also behind the kiosk.lxc.libvirtd module);
here it runs in the foreground as a child of the test session, so the session
can stop it at the end.

PrivateDaemon is a second libvirtd, fully separate from that one, for tests
that kill libvirtd (tests/integration/test_fault_libvirtd.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
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


# ------------------------------------------------------------ a second, private libvirtd

# libvirt's directories, each replaced by a directory of the private daemon's root.
PRIVATE_DIRS = {
    "run": "/run/libvirt",  # sockets, status files of running guests (/var/run is a link to /run)
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",  # libvirtd's and each guest's log (lxc/<name>.log)
    "etc": "/etc/libvirt",  # definitions, hooks; only the host's *.conf files are copied in
}

# A hook that holds libvirtd inside an operation while <root>/hold/<guest>.<op> exists.
_HOOK = """#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
cat >/dev/null
hold="{hold}/$1.$2"
[ -e "$hold" ] || exit 0
touch "$hold.reached"
n=0
while [ -e "$hold" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
exit 0
"""


class PrivateDaemon:
    """A second libvirtd that shares nothing with the machine's: for tests that kill it.

    A holder process keeps a private mount namespace in which <root>/run, lib,
    cache, log and etc are bound over libvirt's directories (and, on a hybrid
    cgroup host, the cgroup2 mount is removed: docs/docsite/rst/guide_platform.rst,
    "Hybrid cgroups break every start"). libvirtd runs in
    that namespace with its own pid file, so start(), kill(), start() gives the
    restarted daemon exactly the state the killed one left, and none of it is
    the machine's daemon's (its sockets, status files and definitions stay
    where they are). Clients reach it from outside the namespace at `uri`
    (<root>/run/libvirt-sock). No virtlogd: the LXC driver writes guest logs
    itself. Guests' controllers (libvirt_lxc) start in the namespace (each then
    makes a mount namespace of its own from it).

    hold(guest, op) makes libvirtd's LXC hook stop at `op` (prepare, start,
    started, stopped, release, reconnect) of that guest until release(): a test
    can kill libvirtd at a known point of an operation.
    """

    def __init__(self, root: Path | None = None):
        # A short root: a unix socket path may not exceed 107 bytes.
        self.root = Path(root or tempfile.mkdtemp(prefix="kiosk-lvd-", dir="/tmp"))
        self.holder: subprocess.Popen | None = None
        self.daemon: subprocess.Popen | None = None
        self.uri = f"{URI}?socket={self.root / 'run' / 'libvirt-sock'}"
        if len(str(self.root / "run" / "libvirt-sock")) > 107:
            raise HarnessError(f"{self.root} is too long a path for libvirtd's socket")

    # -- the namespace

    def _setup(self) -> None:
        for name in (*PRIVATE_DIRS, "hold"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        for conf in Path("/etc/libvirt").glob("*.conf"):
            shutil.copy2(conf, self.root / "etc" / conf.name)
        hooks = self.root / "etc" / "hooks"
        hooks.mkdir(exist_ok=True)
        (hooks / "lxc").write_text(_HOOK.format(hold=self.root / "hold"), encoding="utf-8")
        (hooks / "lxc").chmod(0o755)
        lines = ["set -e"]
        unified = host_libvirtd.hybrid_unified_mount()
        if unified:
            lines.append(f"umount {shlex.quote(unified)}")
        for name, target in PRIVATE_DIRS.items():
            lines.append(f"mkdir -p {target} && mount --bind {shlex.quote(str(self.root / name))} {target}")
        lines += [f"touch {shlex.quote(str(self.root / 'ready'))}", "exec sleep infinity"]
        (self.root / "ns.sh").write_text("\n".join(lines) + "\n", encoding="utf-8")
        log = open(self.root / "holder.log", "ab")  # noqa: SIM115 - kept for the holder's life
        self.holder = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", str(self.root / "ns.sh")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        ready = host_libvirtd.wait_until(
            lambda: True if (self.root / "ready").exists() else None, 10, alive=lambda: self.holder.poll() is None
        )
        if ready is None:
            raise HarnessError(f"private mount namespace not set up: {(self.root / 'holder.log').read_text()[-1000:]}")

    def _ours(self) -> list[int]:
        """Pids of the processes whose /run/libvirt is this daemon's (libvirtd, guests' controllers, hooks)."""
        mine = f"/{self.root.name}/run"
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == self.holder.pid:
                continue
            with contextlib.suppress(OSError):
                for line in (entry / "mountinfo").read_text().splitlines():
                    fields = line.split()
                    if fields[4] == "/run/libvirt" and fields[3].endswith(mine):
                        pids.append(int(entry.name))
                        break
        return pids

    # -- libvirtd

    def start(self, timeout: float = 30.0) -> libvirt.virConnect:
        """Start (or start again) libvirtd in the namespace; a connection to it."""
        if self.holder is None:
            self._setup()
        if self.daemon is not None and self.daemon.poll() is None:
            raise HarnessError("the private libvirtd is already running")
        log = open(self.root / "log" / "libvirtd.out", "ab")  # noqa: SIM115 - kept for the daemon's life
        argv = ["nsenter", "-t", str(self.holder.pid), "-m", "--", "libvirtd", "--pid-file", str(self.root / "pid")]
        self.daemon = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        conn = host_libvirtd.wait_until(lambda: try_connect(self.uri), timeout, alive=self._daemon_alive)
        if conn is None:
            tail = (self.root / "log" / "libvirtd.out").read_text(errors="replace")[-2000:]
            raise HarnessError(f"the private libvirtd did not answer on {self.uri} within {timeout:.0f} s: {tail}")
        return conn

    def _daemon_alive(self) -> bool:
        return self.daemon.poll() is None

    def kill(self) -> None:
        """SIGKILL libvirtd, as a crash would; its guests' controllers keep running."""
        self.daemon.kill()
        self.daemon.wait(timeout=10)

    def controllers(self) -> dict[int, str]:
        """{pid: guest name} of the libvirt_lxc controllers running in the namespace."""
        found = {}
        for pid in self._ours():
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                if argv[0].endswith("/libvirt_lxc") and "--name" in argv:
                    found[pid] = argv[argv.index("--name") + 1]
        return found

    # -- holding libvirtd inside an operation

    def hold(self, guest: str, op: str) -> None:
        (self.root / "hold" / f"{guest}.{op}").touch()

    def wait_held(self, guest: str, op: str, timeout: float, alive=lambda: True) -> bool:
        reached = self.root / "hold" / f"{guest}.{op}.reached"
        return host_libvirtd.wait_until(lambda: True if reached.exists() else None, timeout, alive, 0.05) is not None

    def release(self, guest: str, op: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / "hold" / f"{guest}.{op}").unlink()

    # -- the end

    def close(self) -> None:
        """Destroy every guest, stop libvirtd, end what is left in the namespace, remove the root."""
        for hold in (self.root / "hold").glob("*"):
            hold.unlink()
        if self.daemon is not None and self.daemon.poll() is not None and self.controllers():
            # Killed with guests running: a restarted libvirtd destroys them properly.
            with contextlib.suppress(HarnessError):
                self.start(timeout=15).close()
        names = {p.stem for p in (self.root / "etc" / "lxc").glob("*.xml")}
        if self.daemon is not None and self.daemon.poll() is None:
            conn = try_connect(self.uri)
            if conn is not None:
                names.update(remove_domains(conn, ""))
                conn.close()
            self.daemon.terminate()
            try:
                self.daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.holder is not None:
            names.update(self._end_leftovers())
            self.holder.kill()
            self.holder.wait()
        host_libvirtd.wait_until(lambda: True if _remove_cgroups(names) else None, 10)
        shutil.rmtree(self.root, ignore_errors=True)

    def _end_leftovers(self) -> set[str]:
        """SIGKILL what outlived libvirtd: guests' controllers and all below them; their names."""
        controllers = self.controllers()
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        doomed, todo = [], list(controllers)
        while todo:
            pid = todo.pop()
            doomed.append(pid)
            todo.extend(children.get(pid, []))
        for pid in [*doomed, *self._ours()]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        host_libvirtd.wait_until(lambda: None if self._ours() else True, 10)
        return set(controllers.values())


def _remove_cgroups(names) -> bool:
    """Remove the (empty) cgroups libvirt made for these guests; True when none is left.

    libvirt leaves a guest's cgroup behind when libvirtd dies while stopping the
    guest (the restarted libvirtd never finds it), and when a guest's controller
    is killed outside libvirt.
    """
    left = False
    # libvirt's machine name: lxc-<pid>-<name>, runs of '-' and '.' as one, at most 64 characters.
    wanted = {re.sub(r"([-.])[-.]*", r"\1", name) for name in names}
    for cg in Path("/sys/fs/cgroup").glob("*/machine/lxc-*.libvirt-lxc"):
        machine = cg.name[: -len(".libvirt-lxc")]
        found = re.fullmatch(r"lxc-\d+-(.+)", machine)
        if not found or not any(w == found[1] or (len(machine) == 64 and w.startswith(found[1])) for w in wanted):
            continue
        for sub in sorted((p for p in cg.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()
        try:
            cg.rmdir()
        except OSError:
            left = True
    return not left
