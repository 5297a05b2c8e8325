"""Busybox guests for tests: a root filesystem, an init that reports, probes.

A busybox-static rootfs boots as a libvirt LXC guest in well under a second.
Its init (a shell script) can write what it sees into /out, a directory of the
rootfs the test reads from the host. Device probes run inside the guest, as
children of its init, so they are in the guest's cgroup: a probe run with
`virsh lxc-enter-namespace` or nsenter would not be (docs/docsite/rst/guide_platform.rst,
"Entering a guest's namespaces is not entering its cgroup").
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

BUSYBOX = "/bin/busybox"

# What busybox `cat` prints when open() fails, by errno name.
ERRNO_TEXT = {
    "EPERM": "Operation not permitted",
    "ENXIO": "No such device or address",
    "ENOENT": "No such file or directory",
    "EACCES": "Permission denied",
    "EBUSY": "Device or resource busy",
}


def make_rootfs(root: Path, init_body: str = "", *, busybox: str = BUSYBOX) -> Path:
    """A busybox rootfs at root whose /init runs init_body, then sleeps forever.

    /out is where the guest writes what the test reads; init writes
    /out/started (its own pid, which must be 1) before init_body.
    """
    if not Path(busybox).exists():
        raise FileNotFoundError(f"{busybox} is missing: install busybox-static (bindep.txt)")
    for d in ("bin", "dev", "proc", "sys", "tmp", "out", "etc", "run"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if not link.exists() and not link.is_symlink():
            link.symlink_to("busybox")
    init = root / "init"
    init.write_text(
        "#!/bin/sh\n"
        "export PATH=/bin\n"
        'echo "$$" > /out/started.tmp && mv /out/started.tmp /out/started\n'
        f"{init_body}\n"
        "while true; do sleep 3600; done\n",
        encoding="utf-8",
    )
    init.chmod(0o755)
    return root


def probe_loop(paths: list[str], interval: float = 0.2) -> str:
    """Shell for an init that keeps trying to open each path, forever.

    The outcome for paths[i] is written atomically to /out/probe.<i>: "OK" when
    open() succeeded, otherwise busybox's error text for it.
    """
    lines = ["(", "while true; do"]
    for i, p in enumerate(paths):
        lines.append(
            f"  if cat {p} </dev/null >/dev/null 2>/out/probe.{i}.err; then echo OK;"
            f" else cat /out/probe.{i}.err; fi > /out/probe.{i}.tmp;"
            f" mv /out/probe.{i}.tmp /out/probe.{i}"
        )
    lines += [f"  sleep {interval}", "done", ") &"]
    return "\n".join(lines)


def mknod_char(path: Path, major: int, minor: int, mode: int = 0o666) -> Path:
    """A character device node made on the host (guests may not mknod)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mknod(path, mode | stat.S_IFCHR, os.makedev(major, minor))
    os.chmod(path, mode)
    return path


def wait_for_file(path: Path, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text(encoding="utf-8", errors="replace").strip()
        time.sleep(0.05)
    raise TimeoutError(f"{path} did not appear within {timeout} s")


def probe_result(root: Path, index: int, expect: str, timeout: float = 15.0) -> str:
    """Wait until probe <index> reports expect ("OK" or an errno name); return the last text.

    Returns whatever the probe last said if it never matched, so the test's
    assertion shows the real outcome.
    """
    want = "OK" if expect == "OK" else ERRNO_TEXT[expect]
    path = root / "out" / f"probe.{index}"
    deadline = time.monotonic() + timeout
    last = "<no probe result yet>"
    while time.monotonic() < deadline:
        if path.exists():
            last = path.read_text(encoding="utf-8", errors="replace").strip()
            if want in last:
                return last
        time.sleep(0.05)
    return last


def domain_xml(name: str, root: Path, *, memory_mib: int = 64, extra_devices: str = "") -> str:
    """Minimal libvirt LXC domain XML for a busybox guest (tests only)."""
    return (
        f"<domain type='lxc'><name>{name}</name>"
        f"<memory unit='MiB'>{memory_mib}</memory>"
        "<os><type>exe</type><init>/init</init></os>"
        f"<devices><filesystem type='mount'><source dir='{root}'/><target dir='/'/></filesystem>"
        f"<console type='pty'/>{extra_devices}</devices></domain>"
    )


def release_systemd_cgroups(names, start_ids) -> None:
    """Remove the guests' own name=systemd cgroups, and give back what libvirt chowned.

    On a host without systemd libvirt chowns the root of the name=systemd
    hierarchy to an idmapped guest's root (docs/least-privilege.md); the
    test puts it back to root.
    """
    top = Path("/sys/fs/cgroup/systemd")
    for name in names:
        own = top / "kiosk-lxc" / name
        if own.is_dir():
            for d in sorted((p for p in own.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                d.rmdir()
            own.rmdir()
    with contextlib.suppress(OSError):
        (top / "kiosk-lxc").rmdir()  # only when no other guest has one
    if not top.is_dir():
        return
    for path in [top, *top.iterdir(), *(top / "init.scope").glob("*"), *(top / "system.slice").rglob("*")]:
        try:
            if path.name != "kiosk-lxc" and os.lstat(path).st_uid in start_ids:
                os.lchown(path, 0, 0)
        except OSError:
            pass


def role_play(work: Path, bridge: str, guests: list[dict]) -> Path:
    """A playbook of the guest role over busybox guests on `bridge`, with a base at work/base."""
    play = [
        {
            "hosts": "all",
            "gather_facts": False,
            "vars": {
                "kiosk_rootfs_bases": {"": str(work / "base")},
                "kiosk_rootfs_packages": [],
                "kiosk_guest_dir": str(work / "guests"),
                "kiosk_guest_bridge": bridge,
                "kiosk_guest_init": "/init",
                "kiosk_guest_memory": "64MiB",
                "kiosk_guest_network_wait": 0,
                "kiosk_guest_autostart": False,
                "kiosk_guests": guests,
            },
            "roles": ["kiosk.lxc.guest"],
        }
    ]
    pb = work / "play.yml"
    pb.write_text(json.dumps(play))
    return pb
